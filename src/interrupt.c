/* Interruption: one process-wide flag that stops sleeps, transfers and bulk
 * runs at the next check, and cancel handles that stop one call each.
 *
 * A signal handler may only set a volatile sig_atomic_t, so SIGINT and
 * SIGTERM set the flag and the code that waits (core.sleep, the transfer
 * progress callback, unassign_many's loop) looks at it. Handlers are
 * installed only by catch_signals(), which the CLI calls: a program that
 * embeds koophone keeps its own signal dispositions. The flag can be raised
 * without a signal (interrupt()), e.g. when the CLI's output fails.
 *
 * A cancel handle (cancel_handle()) is the same kind of flag for the calls it
 * is given to ({ cancel = c }): a host raises it from another thread or a
 * signal handler through its address (koophone_cancel in koophone.h, a
 * lock-free atomic store), so a lua_State that belongs to one thread can be
 * stopped from outside it without touching the state. */
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

/* The flag is an int written by koophone_cancel (koophone.h) from any thread
 * or a signal handler; the GCC/Clang builtins are lock-free for an int, so
 * both sides stay async-signal-safe. */
#if defined(__GNUC__) || defined(__clang__)
#define KP_LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define KP_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#else
#define KP_LOAD(p) (*(volatile int *)(p))
#define KP_STORE(p, v) (*(volatile int *)(p) = (v))
#endif

int kp_cancel_raised(const kp_cancel *c)
{
  return c != NULL && KP_LOAD(&c->raised) != 0;
}

kp_cancel *kp_check_cancel(lua_State *L, int idx, const char *fname, int argn, const char *path)
{
  kp_cancel *c = luaL_testudata(L, idx, KP_CANCEL_MT);
  if (c == NULL)
    kp_argerror(L, fname, argn, path, "expected a koophone.cancel_handle, got %s",
                luaL_typename(L, idx));
  return c;
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

int kp_push_unsent_error(lua_State *L, const char *request_id, const char *kind,
                         const char *code, const char *message)
{
  kp_error e;
  kp_secrets none;
  memset(&e, 0, sizeof e);
  memset(&none, 0, sizeof none); /* our own message: nothing to redact */
  e.kind = kind;
  e.code = code;
  e.code_len = strlen(code);
  e.message = message;
  e.message_len = strlen(message);
  e.request_id = request_id;
  e.attempts = 0;
  lua_pushnil(L);
  kp_push_error(L, &e, &none);
  return 2;
}

/* Pushes nil and the error of a call not sent because the flag is up:
 * kind "interrupted", code "INTERRUPTED", sent false. Returns 2. */
int kp_push_interrupted_error(lua_State *L, const char *request_id)
{
  kp_push_interrupted(L);
  lua_pushfstring(L, "interrupted (%s): not sent", lua_tostring(L, -1));
  kp_push_unsent_error(L, request_id, "interrupted", "INTERRUPTED", lua_tostring(L, -1));
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

/* cancel_handle() -> a handle, lowered: pass it as a call's opts.cancel */
static int cancel_new(lua_State *L)
{
  kp_cancel *c = lua_newuserdata(L, sizeof *c);
  KP_STORE(&c->raised, 0);
  luaL_getmetatable(L, KP_CANCEL_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* c:cancel(): the calls given c stop at their next check (a sleep, the transfer) */
static int cancel_raise(lua_State *L)
{
  KP_STORE(&((kp_cancel *)luaL_checkudata(L, 1, KP_CANCEL_MT))->raised, 1);
  return 0;
}

/* c:cancelled() -> boolean */
static int cancel_get(lua_State *L)
{
  lua_pushboolean(L, kp_cancel_raised(luaL_checkudata(L, 1, KP_CANCEL_MT)));
  return 1;
}

/* c:reset(): lowered again, for the next call */
static int cancel_reset(lua_State *L)
{
  KP_STORE(&((kp_cancel *)luaL_checkudata(L, 1, KP_CANCEL_MT))->raised, 0);
  return 0;
}

/* c:pointer() -> light userdata, the address koophone_cancel takes; valid while c is alive */
static int cancel_pointer(lua_State *L)
{
  lua_pushlightuserdata(L, luaL_checkudata(L, 1, KP_CANCEL_MT));
  return 1;
}

static int cancel_tostring(lua_State *L)
{
  kp_cancel *c = luaL_checkudata(L, 1, KP_CANCEL_MT);
  lua_pushfstring(L, "koophone.cancel_handle (%s)",
                  kp_cancel_raised(c) ? "cancelled" : "not cancelled");
  return 1;
}

static void cancel_open(lua_State *L)
{
  static const luaL_Reg methods[] = {
    { "cancel", cancel_raise },
    { "cancelled", cancel_get },
    { "reset", cancel_reset },
    { "pointer", cancel_pointer },
    { NULL, NULL }
  };
  luaL_newmetatable(L, KP_CANCEL_MT);
  lua_pushliteral(L, KP_CANCEL_MT);
  lua_setfield(L, -2, "__name");
  lua_pushcfunction(L, cancel_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

void kp_interrupt_open(lua_State *L)
{
  static const luaL_Reg functions[] = {
    { "cancel_handle", cancel_new },
    { "catch_signals", interrupt_catch_signals },
    { "interrupt", interrupt_raise },
    { "interrupted", interrupt_get },
    { "clear_interrupt", interrupt_clear },
    { NULL, NULL }
  };
  cancel_open(L);
  luaL_setfuncs(L, functions, 0);
}
