/* Interruption: one process-wide flag that stops sleeps, transfers and bulk
 * runs at the next check.
 *
 * A signal handler may only set a volatile sig_atomic_t, so SIGINT and
 * SIGTERM set the flag and the code that waits (core.sleep, the transfer
 * progress callback, unassign_many's loop) looks at it. Handlers are
 * installed only by catch_signals(), which the CLI calls: a program that
 * embeds koophone keeps its own signal dispositions. The flag can be raised
 * without a signal (interrupt()), e.g. when the CLI's output fails. */
#include <signal.h>
#include <string.h>

#include "kp.h"

#define KP_INTERRUPT_OTHER (-1) /* raised by interrupt(), not by a signal */

static volatile sig_atomic_t interrupted = 0;

static void on_signal(int sig)
{
  interrupted = sig;
}

int kp_interrupted(void)
{
  return interrupted != 0;
}

/* The CURLOPT_XFERINFOFUNCTION of every handle: non-zero aborts the
 * transfer (CURLE_ABORTED_BY_CALLBACK). */
int kp_interrupt_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                          curl_off_t ulnow)
{
  (void)ud, (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
  return interrupted != 0;
}

/* Pushes why the flag is up ("SIGINT", "SIGTERM", "interrupted"), or nil. */
void kp_push_interrupted(lua_State *L)
{
  int sig = interrupted;
  if (sig == 0)
    lua_pushnil(L);
  else if (sig == SIGINT)
    lua_pushliteral(L, "SIGINT");
  else if (sig == SIGTERM)
    lua_pushliteral(L, "SIGTERM");
  else
    lua_pushliteral(L, "interrupted");
}

/* Pushes nil and the error of a call not sent because the flag is up:
 * kind "interrupted", code "INTERRUPTED", sent false. Returns 2. */
int kp_push_interrupted_error(lua_State *L, const char *request_id)
{
  kp_error e;
  kp_secrets none;
  memset(&e, 0, sizeof e);
  memset(&none, 0, sizeof none); /* a fixed message: nothing to redact */
  kp_push_interrupted(L);
  lua_pushfstring(L, "interrupted (%s): not sent", lua_tostring(L, -1));
  e.kind = "interrupted";
  e.code = "INTERRUPTED";
  e.code_len = sizeof "INTERRUPTED" - 1;
  e.message = lua_tolstring(L, -1, &e.message_len);
  e.request_id = request_id;
  e.attempts = 0;
  lua_pushnil(L);
  kp_push_error(L, &e, &none);
  lua_remove(L, -3); /* the reason and the message, below nil and err */
  lua_remove(L, -3);
  return 2;
}

/* catch_signals(): the first SIGINT or SIGTERM raises the flag instead of
 * killing the process, a second one kills it as usual (an operator's way
 * out of a stop that hangs; the journal is written ahead, so it stays true);
 * SIGPIPE and SIGXFSZ are ignored, so a write to a closed pipe or beyond the
 * file size limit (ulimit -f) fails with EPIPE or EFBIG where the caller can
 * see it, instead of killing the process with its journal and output half
 * told. For command-line programs. */
static int interrupt_catch_signals(lua_State *L)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; /* no SA_RESTART: a blocking call returns EINTR */
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
    return luaL_error(L, "koophone.catch_signals: sigaction failed");
  sa.sa_handler = SIG_IGN;
  sa.sa_flags = 0;
  if (sigaction(SIGPIPE, &sa, NULL) != 0 || sigaction(SIGXFSZ, &sa, NULL) != 0)
    return luaL_error(L, "koophone.catch_signals: sigaction failed");
  return 0;
}

/* interrupt(): raises the flag as a signal would (reason "interrupted"). */
static int interrupt_raise(lua_State *L)
{
  (void)L;
  if (interrupted == 0)
    interrupted = KP_INTERRUPT_OTHER;
  return 0;
}

/* interrupted() -> "SIGINT" | "SIGTERM" | "interrupted" | nil */
static int interrupt_get(lua_State *L)
{
  kp_push_interrupted(L);
  return 1;
}

/* clear_interrupt(): lowers the flag, for a program that goes on after it. */
static int interrupt_clear(lua_State *L)
{
  (void)L;
  interrupted = 0;
  return 0;
}

void kp_interrupt_open(lua_State *L)
{
  static const luaL_Reg functions[] = {
    { "catch_signals", interrupt_catch_signals },
    { "interrupt", interrupt_raise },
    { "interrupted", interrupt_get },
    { "clear_interrupt", interrupt_clear },
    { NULL, NULL }
  };
  luaL_setfuncs(L, functions, 0);
}
