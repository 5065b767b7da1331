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

#define FZ_PIECE 16 /* bytes of a long secret that must never come back */

const char *fz_token = FZ_TOKEN;
size_t fz_token_len = sizeof FZ_TOKEN - 1;

/* Tokens that occur in the syntax or values of an answer: they must change nothing it says. */
static const char *const short_tokens[] = { "0", "t", "data", "job", "{", ":" };

/* 1 when s holds 16 bytes from anywhere in the secret (all of a shorter one); memmem is not C99
 * and the strings may hold NUL bytes. */
static int holds_secret(const char *s, size_t len, const char *secret, size_t n)
{
  size_t piece = n < FZ_PIECE ? n : FZ_PIECE, i, o;
  for (i = 0; i + piece <= len; i++)
    for (o = 0; o + piece <= n; o++)
      if (memcmp(s + i, secret + o, piece) == 0)
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
    if (holds_secret(s, len, FZ_TOKEN, sizeof FZ_TOKEN - 1))
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

/* The free text field `name` of table t, when a string, must not hold fz_token. */
static void check_free_text(lua_State *L, int t, const char *name)
{
  size_t len;
  const char *s;
  lua_getfield(L, t, name);
  s = lua_tolstring(L, -1, &len);
  if (lua_type(L, -1) == LUA_TSTRING && holds_secret(s, len, fz_token, fz_token_len))
    fz_fail("token leaked into free text", name);
  lua_pop(L, 1);
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
  check_free_text(L, err, "code");
  check_free_text(L, err, "message");
  /* tostring(err) must work and must not leak either (its own ": " and "request_id" hold
   * some short tokens: only FZ_TOKEN is looked for there) */
  lua_getglobal(L, "tostring");
  lua_pushvalue(L, err);
  lua_call(L, 1, 1);
  if (fz_token_len >= FZ_PIECE) {
    fz_check_no_token(L, -1);
    fz_check_no_token(L, err);
  }
  lua_pop(L, 1);
}

int fz_list;

/* A JSON null (light userdata) as a field of the instance at idx is a finding: the list's
 * mapping leaves them out (a nested value is kept as sent). */
static void check_no_null(lua_State *L, int idx)
{
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_type(L, -1) == LUA_TLIGHTUSERDATA)
      fz_fail("list", "a JSON null was kept");
    lua_pop(L, 1);
  }
}

static void check_count(lua_State *L, int res, const char *name)
{
  lua_getfield(L, res, name);
  if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 0 ||
      lua_tonumber(L, -1) != (lua_Number)lua_tointeger(L, -1))
    fz_fail("list: not an integer >= 0", name);
  lua_pop(L, 1);
}

/* A ListInstances page: a 2xx, instances an array of tables with a string instance_id. */
static void check_list(lua_State *L, int res, long status)
{
  int i, n;
  if (status < 200 || status > 299)
    fz_fail("list", "a page from a non-2xx status");
  check_count(L, res, "total_count");
  check_count(L, res, "page_no");
  check_count(L, res, "page_size");
  lua_getfield(L, res, "instances");
  if (lua_type(L, -1) != LUA_TTABLE)
    fz_fail("list", "instances is not a table");
  n = (int)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (lua_type(L, -1) != LUA_TTABLE)
      fz_fail("list", "an instance is not a table");
    (void)string_field(L, lua_gettop(L), "instance_id");
    check_no_null(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
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
  if (fz_list) {
    check_list(L, res, status);
    return;
  }
  lua_getfield(L, res, "jobs");
  if (lua_type(L, -1) != LUA_TTABLE)
    fz_fail("res.jobs", "not a table");
  lua_pop(L, 1);
  check_free_text(L, res, "error_msg"); /* task_id and the jobs are data, kept as sent */
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

/* Pushes what an outcome at base+1..base+n says: result or error, outcome or kind, status,
 * task_id, total_count and the number of jobs or instances (not the free text, which depends on
 * the token). */
static void push_summary(lua_State *L, int base, int n)
{
  static const char *const fields[] = { "outcome", "kind", "status", "task_id", "sent",
                                        "total_count", NULL };
  int t = base + n, i;
  lua_pushstring(L, n == 2 ? "err|" : "res|");
  for (i = 0; fields[i] != NULL; i++) {
    lua_getfield(L, t, fields[i]);
    if (lua_type(L, -1) == LUA_TBOOLEAN) {
      int b = lua_toboolean(L, -1);
      lua_pop(L, 1);
      lua_pushstring(L, b ? "true" : "false");
    } else if (!lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushliteral(L, "-");
    }
    lua_pushliteral(L, "|");
  }
  lua_getfield(L, t, fz_list ? "instances" : "jobs");
  lua_pushinteger(L, lua_type(L, -1) == LUA_TTABLE ? (lua_Integer)lua_rawlen(L, -1) : -1);
  lua_remove(L, -2);
  lua_concat(L, 2 + 2 * i);
}

int fz_map_unassign(lua_State *L, const kp_result *r)
{
  kp_secrets sec;
  sec.n = 0;
  kp_secrets_add(&sec, fz_token, fz_token_len);
  /* a request of 1 or 2 pairs (from the body's length: any bit of the input would do), so a
   * 2210 after a resend reaches both of its mappings */
  return kp_map_unassign(L, r, FZ_REQUEST_ID, &sec, 1 + (lua_Integer)(r->body_len & 1));
}

/* Runs map once with token, checks its outcome, and returns how many values it left. */
static int map_once(lua_State *L, lua_CFunction map, long status, const char *token, size_t len)
{
  int top = lua_gettop(L), n;
  fz_token = token;
  fz_token_len = len;
  fz_push_core_closure(L, map);
  if (lua_pcall(L, 0, LUA_MULTRET, 0) != LUA_OK)
    fz_fail("the mapping raised", lua_tostring(L, -1));
  n = lua_gettop(L) - top;
  fz_check_outcome(L, top, n, status, FZ_REQUEST_ID);
  return n;
}

int fz_run_mapping(lua_State *L, lua_CFunction map, long status, unsigned pick)
{
  const char *token = short_tokens[pick % (sizeof short_tokens / sizeof short_tokens[0])];
  int n, m;
  lua_settop(L, 0);
  n = map_once(L, map, status, FZ_TOKEN, sizeof FZ_TOKEN - 1);
  push_summary(L, 0, n);
  m = map_once(L, map, status, token, strlen(token));
  push_summary(L, n + 1, m);
  if (!lua_rawequal(L, -1, n + 1))
    fz_fail("the answer reads differently with the token", token);
  lua_settop(L, n);
  fz_token = FZ_TOKEN;
  fz_token_len = sizeof FZ_TOKEN - 1;
  return n;
}
