/* Argument checks: every programmer mistake a call can make raises here, in
 * one shape modelled on luaL_argerror:
 *
 *   <function>: bad argument #<n> (<path>): <what is wrong>
 *
 * <function> is what the user called (koophone.unassign_many, koophone.new),
 * <n> counts the arguments as the user wrote them (a method's self is not
 * counted: in client:unassign(token, pairs) the token is #1), and <path>
 * names the value inside the argument (token, opts.timeout, pairs[3].user_id).
 * These run before anything is owned in C, so raising leaks nothing. */
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "kp.h"

int kp_argerror(lua_State *L, const char *fname, int argn, const char *path, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  lua_pushfstring(L, "%s: bad argument #%d (%s): ", fname, argn, path);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  return lua_error(L);
}

/* Tokens are several KB and checked on every call: memchr and strlen scan
 * a word or more at a time where a byte loop costs ~50k instructions. s is a
 * Lua string (NUL-terminated after its len bytes). */
int kp_has_crlf_nul(const char *s, size_t len)
{
  return strlen(s) != len || memchr(s, '\r', len) != NULL || memchr(s, '\n', len) != NULL;
}

const char *kp_check_token(lua_State *L, int idx, const char *fname, int argn, size_t *len)
{
  const char *s;
  if (lua_type(L, idx) != LUA_TSTRING)
    kp_argerror(L, fname, argn, "token", "expected a non-empty string, got %s",
                luaL_typename(L, idx));
  s = lua_tolstring(L, idx, len);
  if (*len == 0)
    kp_argerror(L, fname, argn, "token", "expected a non-empty string, got an empty one");
  if (kp_has_crlf_nul(s, *len))
    kp_argerror(L, fname, argn, "token", "contains CR, LF or NUL");
  return s;
}

const char *kp_check_request_id(lua_State *L, int idx, const char *fname, int argn,
                                const char *path, size_t *len)
{
  const char *s;
  size_t i;
  if (lua_type(L, idx) != LUA_TSTRING)
    kp_argerror(L, fname, argn, path, "expected a string, got %s", luaL_typename(L, idx));
  s = lua_tolstring(L, idx, len);
  if (*len == 0 || *len > KP_REQUEST_ID_MAX)
    kp_argerror(L, fname, argn, path, "expected 1 to %d bytes, got %d", KP_REQUEST_ID_MAX,
                (int)*len);
  for (i = 0; i < *len; i++)
    if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
      kp_argerror(L, fname, argn, path, "only printable ASCII without spaces is allowed");
  return s;
}

/* True when s, cut at "/" and "\\", has a part "." or "..". The id goes
 * into the path with "/" percent-encoded, yet libcurl and servers resolve
 * dot segments (nginx after decoding %2F): GET tasks/..%2Funassign reaches
 * /v1/instances/unassign. */
static int has_dot_segment(const char *s, size_t len)
{
  size_t start = 0, i;
  for (i = 0; i <= len; i++) {
    if (i == len || s[i] == '/' || s[i] == '\\') {
      size_t n = i - start;
      if ((n == 1 || n == 2) && s[start] == '.' && s[i - 1] == '.')
        return 1;
      start = i + 1;
    }
  }
  return 0;
}

/* What makes a task id of 1 to KP_TASK_ID_MAX bytes unusable in a path, or NULL when it is
 * fine. */
static const char *task_id_problem(const char *s, size_t len)
{
  size_t i;
  for (i = 0; i < len; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return "contains a control character (CR, LF, NUL, ...)";
  if (has_dot_segment(s, len))
    return "'.' or '..' as the id or between slashes: the request would go to another path";
  return NULL;
}

const char *kp_check_task_id(lua_State *L, int idx, const char *fname, int argn, size_t *len)
{
  const char *s, *problem;
  if (lua_type(L, idx) != LUA_TSTRING)
    kp_argerror(L, fname, argn, "task_id", "expected a non-empty string, got %s",
                luaL_typename(L, idx));
  s = lua_tolstring(L, idx, len);
  if (*len == 0 || *len > KP_TASK_ID_MAX)
    kp_argerror(L, fname, argn, "task_id", "expected 1 to %d bytes, got %d", KP_TASK_ID_MAX,
                (int)*len);
  problem = task_id_problem(s, *len);
  if (problem != NULL)
    kp_argerror(L, fname, argn, "task_id", "%s", problem);
  return s;
}

/* core.task_id_problem(id) -> nil, or why get_task would refuse id: for ids that come from an
 * answer (wait_jobs), which are data, not the caller's mistake. */
int kp_lua_task_id_problem(lua_State *L)
{
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *problem = len == 0 || len > KP_TASK_ID_MAX ? "empty or too long"
                                                         : task_id_problem(s, len);
  if (problem == NULL)
    lua_pushnil(L);
  else
    lua_pushstring(L, problem);
  return 1;
}

void kp_check_opts(lua_State *L, int t, const char *fname, int argn, const char *const names[])
{
  if (lua_type(L, t) != LUA_TTABLE)
    kp_argerror(L, fname, argn, "opts", "expected a table, got %s", luaL_typename(L, t));
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    int i, known = 0;
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING)
      for (i = 0; names[i] != NULL && !known; i++)
        known = strcmp(lua_tostring(L, -1), names[i]) == 0;
    if (!known) {
      if (lua_type(L, -1) == LUA_TSTRING)
        kp_argerror(L, fname, argn, "opts", "unknown option '%s'", lua_tostring(L, -1));
      kp_argerror(L, fname, argn, "opts", "option names must be strings, got %s",
                  luaL_typename(L, -1));
    }
  }
}

const char *kp_number_text(lua_State *L, int idx)
{
  lua_pushvalue(L, idx); /* converted on a copy: the caller's value stays a number */
  return lua_tostring(L, -1);
}

long kp_check_seconds(lua_State *L, int idx, const char *fname, int argn, const char *path)
{
  lua_Number s;
  if (lua_type(L, idx) != LUA_TNUMBER)
    kp_argerror(L, fname, argn, path, "expected a number > 0, got %s", luaL_typename(L, idx));
  s = lua_tonumber(L, idx);
  if (!(s > 0) || s > 86400.0 * 365)
    kp_argerror(L, fname, argn, path, "expected a number > 0 and at most a year, got %s",
                kp_number_text(L, idx));
  return (long)ceil(s * 1000.0);
}

lua_Integer kp_check_count(lua_State *L, int idx, const char *fname, int argn, const char *path,
                           lua_Integer min, lua_Integer max)
{
  lua_Number n;
  if (lua_type(L, idx) != LUA_TNUMBER)
    kp_argerror(L, fname, argn, path, "expected an integer from %d to %d, got %s", (int)min,
                (int)max, luaL_typename(L, idx));
  n = lua_tonumber(L, idx);
  if (n != floor(n) || n < (lua_Number)min || n > (lua_Number)max)
    kp_argerror(L, fname, argn, path, "expected an integer from %d to %d, got %s", (int)min,
                (int)max, kp_number_text(L, idx));
  return (lua_Integer)n;
}

const char *kp_check_header_safe(lua_State *L, int idx, const char *fname, int argn,
                                 const char *path)
{
  size_t len, i;
  const char *s;
  if (lua_type(L, idx) != LUA_TSTRING)
    kp_argerror(L, fname, argn, path, "expected a string, got %s", luaL_typename(L, idx));
  s = lua_tolstring(L, idx, &len);
  for (i = 0; i < len; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      kp_argerror(L, fname, argn, path, "contains a control character");
  return s;
}

void kp_check_type(lua_State *L, int idx, int type, const char *fname, int argn,
                   const char *path, const char *expected)
{
  if (!lua_isnil(L, idx) && lua_type(L, idx) != type)
    kp_argerror(L, fname, argn, path, "expected %s, got %s", expected, luaL_typename(L, idx));
}

int kp_is_array(lua_State *L, int t)
{
  size_t keys = 0;
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    keys++;
    lua_pop(L, 1);
  }
  return keys == (size_t)lua_rawlen(L, t);
}
