/* Module entry: koophone.core, its functions and the default client.
 *
 * unassign(token, pairs [, opts]) is one request, no retries; the module-level
 * function uses a default client made on first use (or by configure), and
 * client:unassign is the same call on a client of one's own. */
#include "kp.h"

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
  return kp_unassign(L, default_client(L), "koophone.unassign", 1);
}

/* koophone.<read>(token, arg [, opts]) on the default client: koophone.get_task,
 * koophone.list_instances, a function per read row of kp_call_types */
static int module_read(lua_State *L)
{
  lua_settop(L, 3);
  return kp_call_read(L, default_client(L), (int)lua_tointeger(L, KP_UV_CALL), 1);
}

/* koophone.new(opts) -> client */
static int module_new(lua_State *L)
{
  lua_settop(L, 1);
  return kp_client_create(L, 1, "koophone.new");
}

/* core.new_as(fname, opts) -> client: koophone.new for a Lua wrapper that
 * takes the same options (koophone.client, koophone.ngx.new), so that an
 * option error names the function the user called. */
static int module_new_as(lua_State *L)
{
  const char *fname = luaL_checkstring(L, 1); /* stays on the stack while in use */
  lua_settop(L, 2);
  return kp_client_create(L, 2, fname);
}

/* core.iam_token_request(client, body, password [, bounds]) (call.c): koophone.iam_token's
 * request on its own client */
static int module_iam_token_request(lua_State *L)
{
  kp_client *c = kp_check_client(L, 1);
  lua_settop(L, 4);
  return kp_iam_token(L, c, "koophone.iam_token", 2);
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
    { "new_as", module_new_as },
    { "configure", module_configure },
    { "validate_pair", kp_validate_pair },
    { "task_id_problem", kp_lua_task_id_problem },
    { "random", kp_lua_random },
    { "row_entry", kp_row_entry },
    { "sign", kp_lua_sign }, { "aksk", kp_lua_aksk },
    { "is_aksk", kp_lua_is_aksk }, { "aksk_export", kp_lua_aksk_export },
    { "iam_token_request", module_iam_token_request },
    { NULL, NULL }
  };
  kp_global_init();
  kp_errors_open(L);
  lua_newtable(L); /* the module */
  push_private_cjson(L);
  lua_newtable(L); /* state: the default client */
  kp_client_open(L);
  kp_call_set_reads(L, -4, -3, module_read);
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
