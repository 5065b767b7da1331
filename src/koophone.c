/* Module entry: koophone.core.
 *
 * unassign(token, pairs [, opts]) is one request, no retries; the module-level
 * function uses a default client made on first use (or by configure), and
 * client:unassign is the same call on a client of one's own. */
#include <string.h>

#include "kp.h"

#define KP_FNAME "koophone.unassign"

static const char *const call_option_names[] = { "request_id", "timeout", NULL };

const char *kp_check_request_id(lua_State *L, int idx, size_t *len, const char *what)
{
  const char *s;
  size_t i;
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "%s: expected a string, got %s", what, luaL_typename(L, idx));
  s = lua_tolstring(L, idx, len);
  if (*len == 0 || *len > KP_REQUEST_ID_MAX)
    luaL_error(L, "%s: expected 1 to %d bytes, got %d", what, KP_REQUEST_ID_MAX, (int)*len);
  for (i = 0; i < *len; i++)
    if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
      luaL_error(L, "%s: only printable ASCII without spaces is allowed", what);
  return s;
}

int kp_unassign(lua_State *L, kp_client *c, int base)
{
  int opts = base + 2, results;
  size_t token_len, body_len, request_id_len = KP_UUID_LEN;
  const char *token, *body, *request_id = NULL;
  char uuid[KP_UUID_LEN + 1];
  long timeout_ms = c->timeout_ms;
  kp_result r;

  token = kp_check_token(L, base, &token_len);
  if (!lua_isnil(L, opts)) {
    luaL_checktype(L, opts, LUA_TTABLE);
    kp_check_option_names(L, opts, call_option_names, KP_FNAME ": bad argument #3 (opts)");
    lua_getfield(L, opts, "request_id");
    if (!lua_isnil(L, -1))
      request_id = kp_check_request_id(L, -1, &request_id_len,
                                       KP_FNAME ": bad argument #3 (opts.request_id)");
    lua_getfield(L, opts, "timeout");
    if (!lua_isnil(L, -1))
      timeout_ms = kp_check_seconds(L, -1, KP_FNAME, "timeout");
    lua_pop(L, 1); /* the request id string stays on the stack while in use */
  }
  kp_push_request_body(L, c, base + 1, KP_FNAME, "pairs");
  body = lua_tolstring(L, -1, &body_len);
  if (request_id == NULL) {
    if (kp_uuid4(&c->rng, uuid) != 0)
      return luaL_error(L, KP_FNAME ": the OS random source failed");
    request_id = uuid;
  }
  if (kp_interrupted()) /* e.g. a retry after a sleep cut short by SIGINT */
    return kp_push_interrupted_error(L, request_id);
  if (kp_conn_prepare(&c->conn, token, token_len, request_id, request_id_len, body, body_len,
                      timeout_ms) != 0)
    return luaL_error(L, KP_FNAME ": not enough memory");
  kp_conn_perform(&c->conn, &r);
  results = kp_push_outcome(L, &r, request_id, token, token_len);
  kp_conn_release_response(&c->conn);
  return results;
}

static kp_client *default_client(lua_State *L)
{
  kp_client *c;
  lua_getfield(L, KP_UV_STATE, "default");
  c = luaL_testudata(L, -1, KP_CLIENT_MT);
  if (c == NULL) {
    lua_pop(L, 1);
    lua_pushnil(L); /* no options: environment and defaults */
    kp_client_create(L, lua_gettop(L), "koophone.configure");
    c = lua_touserdata(L, -1);
    lua_pushvalue(L, -1);
    lua_setfield(L, KP_UV_STATE, "default");
  }
  return c;
}

/* koophone.unassign(token, pairs [, opts]) on the default client */
static int module_unassign(lua_State *L)
{
  lua_settop(L, 3);
  return kp_unassign(L, default_client(L), 1);
}

/* koophone.new(opts) -> client */
static int module_new(lua_State *L)
{
  lua_settop(L, 1);
  return kp_client_create(L, 1, "koophone.new");
}

/* koophone.configure(opts): replaces the default client */
static int module_configure(lua_State *L)
{
  lua_settop(L, 1);
  kp_client_create(L, 1, "koophone.configure");
  lua_getfield(L, KP_UV_STATE, "default");
  if (luaL_testudata(L, -1, KP_CLIENT_MT) != NULL) {
    lua_getfield(L, -1, "close");
    lua_insert(L, -2);
    lua_call(L, 1, 0);
  } else {
    lua_pop(L, 1);
  }
  lua_setfield(L, KP_UV_STATE, "default");
  return 0;
}

/* Pushes the encode and decode functions of a private cjson instance, so
 * no other code's cjson settings change what we send or read. */
static void push_private_cjson(lua_State *L)
{
  lua_getglobal(L, "require");
  lua_pushliteral(L, "cjson.safe");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
  lua_call(L, 0, 1);
  lua_getfield(L, -1, "encode");
  lua_getfield(L, -2, "decode");
  lua_remove(L, -3);
  lua_remove(L, -3);
}

LUALIB_API int luaopen_koophone_core(lua_State *L)
{
  static const luaL_Reg functions[] = {
    { "unassign", module_unassign },
    { "new", module_new },
    { "configure", module_configure },
    { "validate_pair", kp_validate_pair },
    { "random", kp_lua_random },
    { "row_entry", kp_row_entry },
    { "sign", kp_lua_sign }, { "aksk", kp_lua_aksk },
    { NULL, NULL }
  };
  kp_global_init();
  kp_errors_open(L);
  lua_newtable(L); /* the module */
  push_private_cjson(L);
  lua_newtable(L); /* state: the default client */
  kp_client_open(L);
  luaL_setfuncs(L, functions, KP_NUPVALUES);
  kp_clock_open(L);
  kp_interrupt_open(L);
  kp_pairset_open(L);
  kp_jfile_open(L);
  lua_pushliteral(L, KP_VERSION);
  lua_setfield(L, -2, "_VERSION");
  lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
  lua_setfield(L, -2, "curl_version");
  luaL_getmetatable(L, KP_ERROR_MT);
  lua_setfield(L, -2, "Error");
  return 1;
}
