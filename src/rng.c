/* Request ids: UUIDv4 without a system call per id.
 *
 * Each client keeps a 128-bit key read once from the OS random source and a
 * counter. An id is the counter pushed through a bijective 64-bit mixer under
 * each half of the key, so one client never repeats an id, and two clients
 * (threads, processes) differ by their random keys. A child process after
 * fork() would inherit the parent's key and counter: a fork generation,
 * bumped by a pthread_atfork handler, makes the child draw a new key. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/random.h>

#include "kp.h"

static volatile unsigned fork_generation;
static pthread_once_t global_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
  fork_generation++;
}

static void global_init_once(void)
{
  /* Nothing useful can be done if these fail: curl_easy_init reports it
   * later, and without the atfork hook a child only loses fork safety. */
  (void)curl_global_init(CURL_GLOBAL_DEFAULT);
  (void)pthread_atfork(NULL, NULL, on_fork_child);
}

void kp_global_init(void)
{
  pthread_once(&global_once, global_init_once);
}

static int os_random(void *buf, size_t len)
{
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* The splitmix64 finalizer: a bijection on 64-bit values. */
static uint64_t mix64(uint64_t z)
{
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static void put_hex(char *out, uint64_t v, int digits)
{
  static const char hex[] = "0123456789abcdef";
  while (digits-- > 0) {
    out[digits] = hex[v & 15];
    v >>= 4;
  }
}

int kp_uuid4(kp_rng *rng, char out[KP_UUID_LEN + 1])
{
  uint64_t hi, lo;
  if (!rng->seeded || rng->fork_generation != fork_generation) {
    if (os_random(rng->key, sizeof rng->key) != 0)
      return -1;
    rng->counter = 0;
    rng->fork_generation = fork_generation;
    rng->seeded = 1;
  }
  rng->counter += 0x9e3779b97f4a7c15ULL;
  hi = mix64(rng->key[0] + rng->counter);
  lo = mix64(rng->key[1] ^ rng->counter);
  hi = (hi & ~0xf000ULL) | 0x4000ULL;                    /* version 4 */
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; /* RFC 4122 variant */
  put_hex(out, hi >> 32, 8);
  out[8] = '-';
  put_hex(out + 9, (hi >> 16) & 0xffff, 4);
  out[13] = '-';
  put_hex(out + 14, hi & 0xffff, 4);
  out[18] = '-';
  put_hex(out + 19, lo >> 48, 4);
  out[23] = '-';
  put_hex(out + 24, lo & 0xffffffffffffULL, 12);
  out[KP_UUID_LEN] = '\0';
  return 0;
}

/* random(): a float in [0, 1) from the OS source, for retry jitter. A system call
 * per value is fine there (only retries ask), and unlike math.random it needs no
 * seeding: Lua 5.1 and LuaJIT would give every process the same jitter. */
int kp_lua_random(lua_State *L)
{
  uint64_t bits;
  if (os_random(&bits, sizeof bits) != 0)
    return luaL_error(L, "koophone.random: the OS random source failed");
  lua_pushnumber(L, (lua_Number)(bits >> 11) * (1.0 / 9007199254740992.0));
  return 1;
}
