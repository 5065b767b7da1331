/* Shared by the libFuzzer harnesses: the Lua state and the output checks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "lualib.h"

static lua_State *state;

lua_State *fz_state(void)
{
  if (state != NULL)
    return state;
  state = luaL_newstate();
  if (state == NULL)
    fz_fail("luaL_newstate", "no memory");
  luaL_openlibs(state);
  luaL_requiref(state, "koophone.core", luaopen_koophone_core, 0);
  lua_setfield(state, LUA_REGISTRYINDEX, "fz.core");
  return state;
}

void fz_push_core_closure(lua_State *L, lua_CFunction f)
{
  int i;
  lua_getfield(L, LUA_REGISTRYINDEX, "fz.core");
  lua_getfield(L, -1, "validate_pair"); /* any module function carries the upvalues */
  for (i = 1; i <= KP_NUPVALUES; i++)
    if (lua_getupvalue(L, -i, i) == NULL)
      fz_fail("fz_push_core_closure", "module function without upvalues");
  lua_pushcclosure(L, f, KP_NUPVALUES);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

void fz_fail(const char *what, const char *detail)
{
  fprintf(stderr, "FUZZ CHECK FAILED: %s: %s\n", what, detail != NULL ? detail : "");
  abort();
}

/* memmem is not C99: strings from the core may hold NUL bytes. */
static int contains(const char *s, size_t len, const char *needle, size_t n)
{
  size_t i;
  for (i = 0; n <= len && i <= len - n; i++)
    if (memcmp(s + i, needle, n) == 0)
      return 1;
  return 0;
}

static void check_no_token(lua_State *L, int idx, int depth)
{
  size_t len;
  const char *s;
  if (depth > 64)
    return;
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) == LUA_TSTRING) {
    s = lua_tolstring(L, idx, &len);
    if (contains(s, len, FZ_TOKEN, sizeof FZ_TOKEN - 1))
      fz_fail("token leaked", s);
    return;
  }
  if (lua_type(L, idx) != LUA_TTABLE)
    return;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    check_no_token(L, -2, depth + 1);
    check_no_token(L, -1, depth + 1);
    lua_pop(L, 1);
  }
}

void fz_check_no_token(lua_State *L, int idx)
{
  check_no_token(L, idx, 0);
}

static const char *string_field(lua_State *L, int t, const char *name)
{
  const char *s;
  lua_getfield(L, t, name);
  if (lua_type(L, -1) != LUA_TSTRING)
    fz_fail("expected a string field", name);
  s = lua_tostring(L, -1);
  lua_pop(L, 1); /* still anchored by the table */
  return s;
}

static void check_error(lua_State *L, int err, long status, const char *request_id)
{
  static const char *const kinds[] = { "api", "http", "network", "timeout", "tls", "decode", NULL };
  const char *kind;
  int i, known = 0;
  if (lua_type(L, err) != LUA_TTABLE || !lua_getmetatable(L, err))
    fz_fail("err", "not a table with a metatable");
  luaL_getmetatable(L, KP_ERROR_MT);
  if (!lua_rawequal(L, -1, -2))
    fz_fail("err", "metatable is not koophone.Error");
  lua_pop(L, 2);
  kind = string_field(L, err, "kind");
  for (i = 0; kinds[i] != NULL; i++)
    known |= strcmp(kind, kinds[i]) == 0;
  if (!known)
    fz_fail("err.kind unknown", kind);
  if (strcmp(string_field(L, err, "request_id"), request_id) != 0)
    fz_fail("err.request_id", "is not the id that was sent");
  if (strcmp(kind, "api") == 0 && strcmp(string_field(L, err, "code"), "0") == 0)
    fz_fail("err", "kind api with error_code 0");
  (void)string_field(L, err, "code");
  (void)string_field(L, err, "message");
  lua_getfield(L, err, "status");
  if (status > 0 ? lua_tointeger(L, -1) != status : !lua_isnil(L, -1))
    fz_fail("err.status", "differs from the HTTP status");
  lua_pop(L, 1);
  /* tostring(err) must work and must not leak either */
  lua_getglobal(L, "tostring");
  lua_pushvalue(L, err);
  lua_call(L, 1, 1);
  fz_check_no_token(L, -1);
  lua_pop(L, 1);
  fz_check_no_token(L, err);
}

void fz_check_outcome(lua_State *L, int base, int n, long status, const char *request_id)
{
  int res = base + 1;
  if (lua_gettop(L) != base + n)
    fz_fail("outcome", "result count differs from the stack");
  if (n == 2) {
    if (!lua_isnil(L, res))
      fz_fail("outcome", "two results whose first is not nil");
    check_error(L, res + 1, status, request_id);
    return;
  }
  if (n != 1 || lua_type(L, res) != LUA_TTABLE)
    fz_fail("outcome", "neither res nor nil, err");
  if (strcmp(string_field(L, res, "request_id"), request_id) != 0)
    fz_fail("res.request_id", "is not the id that was sent");
  lua_getfield(L, res, "jobs");
  if (lua_type(L, -1) != LUA_TTABLE)
    fz_fail("res.jobs", "not a table");
  lua_pop(L, 1);
  if (strcmp(string_field(L, res, "outcome"), "unassigned") == 0) {
    if (status < 200 || status > 299)
      fz_fail("res", "unassigned outcome from a non-2xx status");
    if (strcmp(string_field(L, res, "error_code"), "0") != 0)
      fz_fail("res", "unassigned outcome with error_code other than 0");
  } else if (strcmp(string_field(L, res, "outcome"), "assumed_unassigned") == 0) {
    lua_getfield(L, res, "err");
    check_error(L, lua_gettop(L), status, request_id);
    lua_pop(L, 1);
  } else {
    fz_fail("res.outcome", string_field(L, res, "outcome"));
  }
}

int fz_run_mapping(lua_State *L, lua_CFunction map, long status)
{
  int n;
  lua_settop(L, 0);
  fz_push_core_closure(L, map);
  if (lua_pcall(L, 0, LUA_MULTRET, 0) != LUA_OK)
    fz_fail("kp_push_outcome raised", lua_tostring(L, -1));
  n = lua_gettop(L);
  fz_check_outcome(L, 0, n, status, FZ_REQUEST_ID);
  return n;
}
