/* Time for the Lua layer: plain Lua has neither a sleep nor a monotonic clock, and retry
 * delays, rate limits and progress reports need both. */
#include <errno.h>
#include <time.h>

#include "kp.h"

#define KP_SLEEP_SLICE 0.05 /* seconds: how late an interruption may be seen */

double kp_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* sleep(seconds [, cancel]) -> true, or false when interrupted (interrupt.c) or cancelled (the
 * cancel handle given): blocks the calling OS thread, in slices, so that a signal that lands
 * between the check and nanosleep, or a cancel from another thread, still ends the sleep soon
 * (a slice is the latency of both). OpenResty code passes ngx.sleep instead. */
static int clock_sleep(lua_State *L)
{
  lua_Number s;
  struct timespec ts, rem = { 0, 0 };
  const kp_cancel *c = lua_isnoneornil(L, 2) ? NULL
                                             : kp_check_cancel(L, 2, "koophone.sleep", 2, "cancel");
  if (lua_type(L, 1) != LUA_TNUMBER)
    kp_argerror(L, "koophone.sleep", 1, "seconds", "expected a number from 0 to 86400, got %s",
                luaL_typename(L, 1));
  s = lua_tonumber(L, 1);
  if (!(s >= 0 && s <= 86400))
    kp_argerror(L, "koophone.sleep", 1, "seconds", "expected a number from 0 to 86400, got %s",
                kp_number_text(L, 1));
  while (!kp_interrupted() && !kp_cancel_raised(c) && s > 0) {
    lua_Number slice = s < KP_SLEEP_SLICE ? s : KP_SLEEP_SLICE;
    ts.tv_sec = 0;
    ts.tv_nsec = (long)(slice * 1e9);
    rem.tv_nsec = 0; /* unchanged when the slice is slept whole */
    if (nanosleep(&ts, &rem) != 0 && errno != EINTR)
      break;
    s -= slice - (lua_Number)rem.tv_nsec / 1e9; /* EINTR: the flag, or another signal */
  }
  lua_pushboolean(L, !kp_interrupted() && !kp_cancel_raised(c));
  return 1;
}

/* now(): seconds from an arbitrary start, monotonic (never jumps with the wall clock). */
static int clock_now(lua_State *L)
{
  lua_pushnumber(L, (lua_Number)kp_now());
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
