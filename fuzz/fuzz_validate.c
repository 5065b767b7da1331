/* libFuzzer harness: input validation with arbitrary Lua values built from
 * the fuzz bytes: koophone.validate_pair(p) and the checks and body of
 * unassign (kp_check_token + kp_push_request_body), with no request sent.
 *
 * Checks: validation raises only "koophone.unassign: bad argument ..."
 * errors; validate_pair answers true or false, message; a body is made
 * only when every pair is valid, and it holds exactly those pairs. */
#include <string.h>

#include "fuzz.h"

#define MAX_PAIRS 8
#define MAX_DEPTH 5

typedef struct reader {
  const uint8_t *p;
  size_t left;
} reader;

static unsigned next_byte(reader *r)
{
  if (r->left == 0)
    return 0;
  r->left--;
  return *r->p++;
}

static void push_bytes(lua_State *L, reader *r, size_t n)
{
  if (n > r->left)
    n = r->left;
  lua_pushlstring(L, (const char *)r->p, n);
  r->p += n;
  r->left -= n;
}

/* Strings that sit on the edges of the rules. */
static const char *const samples[] = {
  "", "u-1", "a44uhlf7", "1123422", "0123456789abcdef0123456789abcdef",
  "0123456789abcdef0123456789abcdef0", "a\r\nX-Evil: 1", "\xc3\xa9t\xc3\xa9", "\xff\xfe",
  "\xed\xa0\x80", "user_id", "instance_id", "x\x7f", FZ_TOKEN,
};

static void push_value(lua_State *L, reader *r, int depth);

static void push_pair(lua_State *L, reader *r, int depth)
{
  static const char *const keys[] = { "user_id", "instance_id", "other" };
  unsigned n = next_byte(r) % 4, i;
  lua_createtable(L, 0, 3);
  for (i = 0; i < n; i++) {
    push_value(L, r, depth + 1);
    lua_setfield(L, -2, keys[next_byte(r) % 3]);
  }
}

static void push_value(lua_State *L, reader *r, int depth)
{
  unsigned op = next_byte(r) % 10, n, i;
  lua_Integer integer = 0;
  double number = 0;
  if (depth > MAX_DEPTH)
    op = 0;
  switch (op) {
  case 0: lua_pushnil(L); break;
  case 1: lua_pushboolean(L, (int)(next_byte(r) & 1)); break;
  case 2:
    for (i = 0; i < 8; i++)
      integer = (lua_Integer)(((lua_Unsigned)integer << 8) | next_byte(r));
    lua_pushinteger(L, integer);
    break;
  case 3:
    if (r->left >= sizeof number) {
      memcpy(&number, r->p, sizeof number);
      r->p += sizeof number;
      r->left -= sizeof number;
    }
    lua_pushnumber(L, (lua_Number)number);
    break;
  case 4: push_bytes(L, r, next_byte(r) % 48); break;
  case 5: lua_pushstring(L, samples[next_byte(r) % (sizeof samples / sizeof samples[0])]); break;
  case 6: case 7: push_pair(L, r, depth); break;
  case 8:
    n = next_byte(r) % (MAX_PAIRS + 3);
    lua_createtable(L, (int)n, 0);
    for (i = 1; i <= n; i++) {
      push_value(L, r, depth + 1);
      lua_rawseti(L, -2, (lua_Integer)i);
    }
    break;
  default: lua_pushlightuserdata(L, r); break;
  }
}

static int is_bad_argument(const char *message)
{
  static const char prefix[] = "koophone.unassign: bad argument #";
  return message != NULL && strncmp(message, prefix, sizeof prefix - 1) == 0;
}

/* (client, token, pairs) -> body; raises like unassign does */
static int build_body(lua_State *L)
{
  kp_client *c = kp_check_client(L, 1);
  size_t len;
  kp_check_token(L, 2, "koophone.unassign", 1, &len);
  kp_push_request_body(L, &c->body, 3, "koophone.unassign", 2, "pairs");
  return 1;
}

static int check_pair(lua_State *L, int idx)
{
  int valid;
  lua_getfield(L, LUA_REGISTRYINDEX, "fz.core");
  lua_getfield(L, -1, "validate_pair");
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK)
    fz_fail("validate_pair raised", lua_tostring(L, -1));
  if (lua_type(L, -2) != LUA_TBOOLEAN)
    fz_fail("validate_pair", "first result not a boolean");
  valid = lua_toboolean(L, -2);
  if (!valid && lua_type(L, -1) != LUA_TSTRING)
    fz_fail("validate_pair", "false without a message");
  lua_pop(L, 3);
  return valid;
}

static void push_client(lua_State *L)
{
  lua_getfield(L, LUA_REGISTRYINDEX, "fz.client");
  if (!lua_isnil(L, -1))
    return;
  lua_pop(L, 1);
  lua_getfield(L, LUA_REGISTRYINDEX, "fz.core");
  lua_getfield(L, -1, "new");
  lua_createtable(L, 0, 2);
  lua_pushliteral(L, "http://127.0.0.1:9");
  lua_setfield(L, -2, "endpoint");
  lua_pushinteger(L, MAX_PAIRS);
  lua_setfield(L, -2, "max_pairs");
  lua_call(L, 1, 1);
  lua_remove(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "fz.client");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  lua_State *L = fz_state();
  reader r = { data, size };
  int token, pairs, all_valid = 1, ok;
  lua_Integer i, n = 0;
  lua_settop(L, 0);
  push_value(L, &r, 0);
  token = lua_gettop(L);
  push_value(L, &r, 0);
  pairs = lua_gettop(L);
  if (lua_type(L, pairs) == LUA_TTABLE) {
    n = (lua_Integer)lua_rawlen(L, pairs);
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, pairs, i);
      all_valid &= check_pair(L, lua_gettop(L));
      lua_pop(L, 1);
    }
  } else {
    all_valid &= check_pair(L, pairs);
  }

  fz_push_core_closure(L, build_body);
  push_client(L);
  lua_pushvalue(L, token);
  lua_pushvalue(L, pairs);
  ok = lua_pcall(L, 3, 1, 0) == LUA_OK;
  if (!ok) {
    if (!is_bad_argument(lua_tostring(L, -1)))
      fz_fail("unassign raised something else", lua_tostring(L, -1));
    fz_check_no_token(L, -1);
  } else {
    if (!all_valid || n < 1 || n > MAX_PAIRS)
      fz_fail("body made from invalid arguments", lua_tostring(L, -1));
    /* the body decodes to exactly n pairs of strings */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson.safe");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "decode");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 1);
    if (lua_type(L, -1) != LUA_TTABLE)
      fz_fail("body", "not JSON");
    lua_getfield(L, -1, "user_instances");
    if (lua_type(L, -1) != LUA_TTABLE || (lua_Integer)lua_rawlen(L, -1) != n)
      fz_fail("body", "user_instances does not hold every pair");
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      lua_getfield(L, -1, "user_id");
      lua_getfield(L, -2, "instance_id");
      if (lua_type(L, -1) != LUA_TSTRING || lua_type(L, -2) != LUA_TSTRING)
        fz_fail("body", "an id is not a string");
      lua_pop(L, 3);
    }
  }
  lua_settop(L, 0);
  return 0;
}
