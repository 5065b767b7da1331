/* Time for the Lua layer: plain Lua has neither a sleep nor a monotonic clock, and retry
 * delays, rate limits and progress reports need both. */
#include <errno.h>
#include <time.h>

#include "kp.h"

/* sleep(seconds): blocks the calling OS thread; OpenResty code passes ngx.sleep instead. */
static int clock_sleep(lua_State *L)
{
  lua_Number s = luaL_checknumber(L, 1);
  struct timespec ts;
  luaL_argcheck(L, s >= 0 && s <= 86400, 1, "expected seconds between 0 and 86400");
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
  return 0;
}

/* now(): seconds from an arbitrary start, monotonic (never jumps with the wall clock). */
static int clock_now(lua_State *L)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

void kp_clock_open(lua_State *L)
{
  static const luaL_Reg functions[] = {
    { "sleep", clock_sleep },
    { "now", clock_now },
    { NULL, NULL }
  };
  luaL_setfuncs(L, functions, 0);
}
