/* Allocation-failure torture: runs fuzz/torture.lua in a fresh Lua state
 * again and again, making the 1st, then the 2nd, ... nth allocation fail,
 * until a run makes fewer than n allocations. Three sources share one
 * count: the Lua allocator (lua_newstate), our own malloc/realloc/calloc
 * (wrapped at link time: -Wl,--wrap=...) and libcurl's (curl_global_init_mem).
 *
 * Every run must end in a Lua error or in the script's own return, never a
 * crash; after lua_close the Lua heap and our own heap must be empty
 * (checked here), and LeakSanitizer checks everything else at exit.
 *
 * usage: [TORTURE_CURL=0] torture SCRIPT   (exit 0: every failure point passed) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp.h"
#include "lualib.h"

void *__real_malloc(size_t n);
void *__real_realloc(void *p, size_t n);
void *__real_calloc(size_t n, size_t size);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_calloc(size_t n, size_t size);
void __wrap_free(void *p);

static unsigned long fail_at, counted;
static int armed;
static long own_blocks; /* our malloc'ed blocks alive */
static size_t lua_bytes; /* the Lua heap */

/* 1 when this allocation is the one to fail. */
static int should_fail(void)
{
  if (!armed)
    return 0;
  return ++counted == fail_at;
}

void *__wrap_malloc(size_t n)
{
  void *p = should_fail() ? NULL : __real_malloc(n);
  own_blocks += p != NULL;
  return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
  void *p = should_fail() ? NULL : __real_calloc(n, size);
  own_blocks += p != NULL;
  return p;
}

void *__wrap_realloc(void *p, size_t n)
{
  void *q;
  if (p == NULL)
    return __wrap_malloc(n);
  if (n == 0) {
    __wrap_free(p);
    return NULL;
  }
  q = should_fail() ? NULL : __real_realloc(p, n);
  return q;
}

void __wrap_free(void *p)
{
  own_blocks -= p != NULL;
  __real_free(p);
}

/* libcurl's allocations: counted, not tracked (curl keeps global caches).
 * TORTURE_CURL=0 leaves them alone: libcurl 7.88.1 double-frees when an
 * allocation of its TLS session cache fails (a libcurl bug, not ours). */
static int curl_counted = 1;

static int curl_should_fail(void)
{
  return curl_counted && should_fail();
}

static void *curl_malloc(size_t n) { return curl_should_fail() ? NULL : __real_malloc(n); }
static void curl_free_cb(void *p) { __real_free(p); }
static void *curl_realloc(void *p, size_t n) { return curl_should_fail() ? NULL : __real_realloc(p, n); }
static char *curl_strdup(const char *s)
{
  size_t n = strlen(s) + 1;
  char *p = curl_malloc(n);
  if (p != NULL)
    memcpy(p, s, n);
  return p;
}
static void *curl_calloc(size_t n, size_t size) { return curl_should_fail() ? NULL : __real_calloc(n, size); }

/* Lua assumes that shrinking never fails, so only growth is counted. */
static void *lua_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
  void *q;
  (void)ud;
  if (p == NULL)
    osize = 0;
  if (nsize == 0) {
    __real_free(p);
    lua_bytes -= osize;
    return NULL;
  }
  if (nsize > osize && should_fail())
    return NULL;
  q = __real_realloc(p, nsize);
  if (q != NULL)
    lua_bytes += nsize - osize;
  return q;
}

/* One run; returns how many allocations it counted. */
static unsigned long run(const char *script, unsigned long n, int *failed_with_error)
{
  lua_State *L = lua_newstate(lua_alloc, NULL);
  int status;
  if (L == NULL) {
    fprintf(stderr, "torture: cannot make a Lua state\n");
    exit(2);
  }
  luaL_openlibs(L);
  luaL_requiref(L, "koophone.core", luaopen_koophone_core, 0);
  lua_pop(L, 1);
  if (luaL_loadfile(L, script) != LUA_OK) {
    fprintf(stderr, "torture: %s\n", lua_tostring(L, -1));
    exit(2);
  }
  fail_at = n;
  counted = 0;
  armed = 1;
  status = lua_pcall(L, 0, 0, 0);
  armed = 0;
  *failed_with_error = status != LUA_OK;
  if (n == 0 && status != LUA_OK) {
    fprintf(stderr, "torture: the script fails without injected failures: %s\n",
            lua_tostring(L, -1));
    exit(2);
  }
  lua_close(L);
  if (lua_bytes != 0 || own_blocks != 0) {
    fprintf(stderr, "torture: run %lu leaked: %zu Lua bytes, %ld own blocks\n", n, lua_bytes,
            own_blocks);
    exit(1);
  }
  return counted;
}

int main(int argc, char **argv)
{
  unsigned long n, total;
  int errors = 0, failed;
  const char *curl_env = getenv("TORTURE_CURL");
  if (argc != 2) {
    fprintf(stderr, "usage: torture SCRIPT\n");
    return 2;
  }
  curl_counted = curl_env == NULL || strcmp(curl_env, "0") != 0;
  if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, curl_malloc, curl_free_cb, curl_realloc,
                           curl_strdup, curl_calloc) != CURLE_OK)
    return 2;
  total = run(argv[1], 0, &failed);
  for (n = 1; n <= total; n++) {
    run(argv[1], n, &failed);
    errors += failed;
  }
  printf("torture %s%s: %lu allocations, %lu runs each failing one of them: "
         "%d ended in a Lua error, %lu returned normally (nil, err or a result), "
         "0 crashes, 0 leaks\n", argv[1], curl_counted ? "" : " (libcurl's not failed)", total, total, errors, total - (unsigned long)errors);
  curl_global_cleanup();
  return 0;
}
