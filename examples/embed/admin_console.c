/* admin_console: a stand-in for a game server's admin console that embeds Lua.
 *
 *   admin_console [-t THREADS] SCRIPT [WORD...]
 *
 * Runs SCRIPT in THREADS OS threads (default 1), each with a lua_State of its
 * own, as SCRIPT(thread_index, thread_count, WORD...). A lua_State, and any
 * koophone client made in it, belongs to one thread; separate states in
 * separate threads need no locking.
 *
 * koophone is found in the build tree: KP_LUA_DIR (lua/) on package.path and,
 * unless it is linked in, KP_CORE_DIR (build/<runtime>/) on package.cpath.
 * Built with KOOPHONE_STATIC the core is linked into this program and
 * registered in package.preload, which works on every Lua from 5.1 on
 * (luaL_requiref is the 5.2+ alternative). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

#ifdef KOOPHONE_STATIC
int luaopen_koophone_core(lua_State *L);
#endif

#define MAX_THREADS 64

typedef struct job {
  pthread_t thread;
  int index, count;
  int nwords;
  char **words;
  const char *script;
  int ok;
} job;

/* package[field] = prefix .. ";" .. package[field] */
static void prepend_path(lua_State *L, const char *field, const char *prefix)
{
  lua_getglobal(L, "package");
  lua_getfield(L, -1, field);
  lua_pushfstring(L, "%s;%s", prefix, lua_tostring(L, -1));
  lua_setfield(L, -3, field);
  lua_pop(L, 2);
}

static void find_koophone(lua_State *L)
{
  prepend_path(L, "path", KP_LUA_DIR "/?.lua;" KP_LUA_DIR "/?/init.lua");
#ifdef KOOPHONE_STATIC
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_koophone_core);
  lua_setfield(L, -2, "koophone.core");
  lua_pop(L, 2);
#else
  prepend_path(L, "cpath", KP_CORE_DIR "/?.so");
#endif
}

/* Loads and runs the script; ok when it returned true. Errors get a traceback. */
static int run_script(lua_State *L, job *j)
{
  int i, base;
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_remove(L, -2);
  base = lua_gettop(L);
  if (luaL_loadfile(L, j->script) != 0) {
    fprintf(stderr, "admin_console: %s\n", lua_tostring(L, -1));
    return 0;
  }
  lua_pushinteger(L, j->index);
  lua_pushinteger(L, j->count);
  for (i = 0; i < j->nwords; i++)
    lua_pushstring(L, j->words[i]);
  if (lua_pcall(L, 2 + j->nwords, 2, base) != 0) {
    fprintf(stderr, "admin_console: thread %d: %s\n", j->index, lua_tostring(L, -1));
    return 0;
  }
  if (!lua_toboolean(L, -2)) {
    fprintf(stderr, "admin_console: thread %d: %s\n", j->index,
            lua_isstring(L, -1) ? lua_tostring(L, -1) : "the script returned false");
    return 0;
  }
  return 1;
}

static void *thread_main(void *arg)
{
  job *j = arg;
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "admin_console: thread %d: no memory for a Lua state\n", j->index);
    return NULL;
  }
  luaL_openlibs(L);
  find_koophone(L);
  j->ok = run_script(L, j);
  lua_close(L); /* collects this thread's koophone clients: their handles are freed here */
  return NULL;
}

int main(int argc, char **argv)
{
  job jobs[MAX_THREADS];
  int i, count = 1, first = 1, failed = 0;
  if (argc > 2 && strcmp(argv[1], "-t") == 0) {
    count = atoi(argv[2]);
    first = 3;
  }
  if (argc <= first || count < 1 || count > MAX_THREADS) {
    fprintf(stderr, "usage: admin_console [-t THREADS(1..%d)] SCRIPT [WORD...]\n", MAX_THREADS);
    return 2;
  }
  for (i = 0; i < count; i++) {
    jobs[i] = (job){ .index = i + 1, .count = count, .nwords = argc - first - 1,
                     .words = argv + first + 1, .script = argv[first], .ok = 0 };
    if (pthread_create(&jobs[i].thread, NULL, thread_main, &jobs[i]) != 0) {
      fprintf(stderr, "admin_console: cannot start thread %d\n", i + 1);
      count = i;
      failed = 1;
      break;
    }
  }
  for (i = 0; i < count; i++) {
    pthread_join(jobs[i].thread, NULL);
    failed |= !jobs[i].ok;
  }
  return failed;
}
