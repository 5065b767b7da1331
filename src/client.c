/* The client object: options, lifetime and methods.
 *
 * A client is a full userdata that owns one libcurl handle (so connections
 * and TLS sessions are reused across calls), its request-id generator and a
 * scratch array for duplicate checks. Its options are checked and applied
 * once, here, at creation. */
#include <stdlib.h>
#include <string.h>

#include "kp.h"

#define KP_DEFAULT_ENDPOINT "https://koophone.myhuaweicloud.com"
/* Seconds a kept-alive connection may idle and still be reused: below the
 * 5 s keep-alive timeout of common servers and gateways (Apache, Node.js),
 * so that a request never crosses the server's close (libcurl would resend
 * it silently, and the first copy may have been applied). */
#define KP_DEFAULT_MAX_IDLE 2L

static const char *const option_names[] = {
  "endpoint", "timeout", "connect_timeout", "cafile", "capath", "insecure", "proxy",
  "user_agent", "max_response_bytes", "max_pairs", "low_speed_limit", "low_speed_time",
  "max_idle", "on_event", NULL
};

static void set_string_option(lua_State *L, kp_client *c, CURLoption opt, const char *value,
                              const char *what)
{
  if (curl_easy_setopt(c->conn.easy, opt, value) != CURLE_OK)
    luaL_error(L, "%s: not enough memory", what);
}

/* Checks the endpoint with libcurl's own URL parser and stores it, without
 * trailing slashes, in c->endpoint (call.c appends each call's path). */
static void apply_endpoint(lua_State *L, kp_client *c, const char *endpoint, const char *what)
{
  CURLU *u = curl_url();
  char *scheme = NULL, *part = NULL;
  const char *problem = NULL;
  size_t len = strlen(endpoint);
  if (u == NULL)
    luaL_error(L, "%s: not enough memory", what);
  if (curl_url_set(u, CURLUPART_URL, endpoint, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
    problem = "not a valid URL";
  else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
    problem = "must start with http:// or https://";
  else if (curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK)
    problem = "must not carry credentials";
  else if (curl_url_get(u, CURLUPART_QUERY, &part, 0) == CURLUE_OK ||
           curl_url_get(u, CURLUPART_FRAGMENT, &part, 0) == CURLUE_OK)
    problem = "must not have a query or fragment";
  curl_free(scheme);
  curl_free(part);
  curl_url_cleanup(u);
  if (problem != NULL)
    kp_argerror(L, what, 1, "opts.endpoint", "%s", problem);
  while (len > 0 && endpoint[len - 1] == '/')
    len--;
  c->endpoint = malloc(len + 1);
  if (c->endpoint == NULL) {
    luaL_error(L, "%s: not enough memory", what);
    return; /* not reached: says so to the static analysers */
  }
  memcpy(c->endpoint, endpoint, len);
  c->endpoint[len] = '\0';
}

static void apply_user_agent(lua_State *L, kp_client *c, int idx, const char *what)
{
  if (lua_isnil(L, idx)) {
    lua_pushfstring(L, "koophone-lua/%s libcurl/%s", KP_VERSION,
                    curl_version_info(CURLVERSION_NOW)->version);
    idx = lua_gettop(L);
  }
  set_string_option(L, c, CURLOPT_USERAGENT,
                    kp_check_header_safe(L, idx, what, 1, "opts.user_agent"), what);
}

static void apply_tls(lua_State *L, kp_client *c, int opts, const char *what)
{
  lua_getfield(L, opts, "cafile");
  if (!lua_isnil(L, -1))
    set_string_option(L, c, CURLOPT_CAINFO,
                      kp_check_header_safe(L, -1, what, 1, "opts.cafile"), what);
  lua_getfield(L, opts, "capath");
  if (!lua_isnil(L, -1))
    set_string_option(L, c, CURLOPT_CAPATH,
                      kp_check_header_safe(L, -1, what, 1, "opts.capath"), what);
  lua_getfield(L, opts, "insecure");
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TBOOLEAN)
    kp_argerror(L, what, 1, "opts.insecure", "expected a boolean, got %s", luaL_typename(L, -1));
  if (lua_toboolean(L, -1)) {
    curl_easy_setopt(c->conn.easy, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c->conn.easy, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  lua_pop(L, 3);
}

static void apply_proxy(lua_State *L, kp_client *c, int opts, const char *what)
{
  lua_getfield(L, opts, "proxy");
  if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
    set_string_option(L, c, CURLOPT_PROXY, "", what); /* "" turns proxies off, env included */
  else if (!lua_isnil(L, -1))
    set_string_option(L, c, CURLOPT_PROXY,
                      kp_check_header_safe(L, -1, what, 1, "opts.proxy"), what);
  lua_pop(L, 1);
}

static void apply_limits(lua_State *L, kp_client *c, int opts, const char *what)
{
  lua_Integer max_bytes = 1024 * 1024, speed_time = 10;
  lua_getfield(L, opts, "timeout");
  c->timeout_ms = lua_isnil(L, -1) ? 30000 : kp_check_seconds(L, -1, what, 1, "opts.timeout");
  lua_getfield(L, opts, "connect_timeout");
  curl_easy_setopt(c->conn.easy, CURLOPT_CONNECTTIMEOUT_MS,
                   lua_isnil(L, -1) ? 10000L
                                    : kp_check_seconds(L, -1, what, 1, "opts.connect_timeout"));
  lua_getfield(L, opts, "max_response_bytes");
  if (!lua_isnil(L, -1))
    max_bytes = kp_check_count(L, -1, what, 1, "opts.max_response_bytes", 1,
                               1024 * 1024 * 1024);
  c->conn.max_response_bytes = (size_t)max_bytes;
  curl_easy_setopt(c->conn.easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max_bytes);
  lua_getfield(L, opts, "max_pairs");
  c->body.max_pairs =
      lua_isnil(L, -1) ? 100 : kp_check_count(L, -1, what, 1, "opts.max_pairs", 1, 100000);
  lua_getfield(L, opts, "low_speed_time");
  if (!lua_isnil(L, -1))
    speed_time = kp_check_count(L, -1, what, 1, "opts.low_speed_time", 1, 3600);
  lua_getfield(L, opts, "low_speed_limit");
  if (!lua_isnil(L, -1)) {
    curl_easy_setopt(c->conn.easy, CURLOPT_LOW_SPEED_LIMIT,
                     (long)kp_check_count(L, -1, what, 1, "opts.low_speed_limit", 1, 1 << 30));
    curl_easy_setopt(c->conn.easy, CURLOPT_LOW_SPEED_TIME, (long)speed_time);
  }
  /* max_idle: whole seconds, as libcurl counts them (CURLOPT_MAXAGE_CONN): a
   * connection idle for max_idle + 1 s or more is closed instead of reused. */
  lua_getfield(L, opts, "max_idle");
  curl_easy_setopt(c->conn.easy, CURLOPT_MAXAGE_CONN,
                   lua_isnil(L, -1)
                       ? KP_DEFAULT_MAX_IDLE
                       : (long)kp_check_count(L, -1, what, 1, "opts.max_idle", 0, 3600));
  lua_pop(L, 7);
}

static void close_client(lua_State *L, kp_client *c)
{
  if (c->closed)
    return;
  c->closed = 1;
  kp_multi_free(c->multi);
  c->multi = NULL;
  kp_conn_close(&c->conn);
  free(c->endpoint);
  c->endpoint = NULL;
  free(c->body.scratch);
  c->body.scratch = NULL;
  luaL_unref(L, LUA_REGISTRYINDEX, c->body.ref);
  c->body.ref = LUA_NOREF;
  luaL_unref(L, LUA_REGISTRYINDEX, c->hook.ref);
  c->hook.ref = LUA_NOREF;
}

int kp_client_create(lua_State *L, int opts, const char *what)
{
  kp_client *c;
  const char *endpoint;
  int top;
  opts = lua_absindex(L, opts);
  if (lua_isnoneornil(L, opts)) {
    lua_newtable(L);
    lua_replace(L, opts);
  }
  kp_check_opts(L, opts, what, 1, option_names);

  c = lua_newuserdata(L, sizeof *c);
  memset(c, 0, sizeof *c);
  c->body.ref = c->hook.ref = LUA_NOREF;
  luaL_getmetatable(L, KP_CLIENT_MT);
  lua_setmetatable(L, -2); /* from here on, __gc releases whatever was made */
  top = lua_gettop(L);
  if (kp_conn_init(&c->conn) != 0)
    luaL_error(L, "%s: cannot create a libcurl handle", what);

  lua_getfield(L, opts, "endpoint");
  endpoint = getenv("KOOPHONE_ENDPOINT");
  if (!lua_isnil(L, -1))
    endpoint = kp_check_header_safe(L, -1, what, 1, "opts.endpoint");
  apply_endpoint(L, c, endpoint != NULL && *endpoint ? endpoint : KP_DEFAULT_ENDPOINT, what);
  lua_getfield(L, opts, "user_agent");
  apply_user_agent(L, c, lua_gettop(L), what);
  lua_settop(L, top);
  apply_tls(L, c, opts, what);
  apply_proxy(L, c, opts, what);
  apply_limits(L, c, opts, what);
  lua_getfield(L, opts, "on_event");
  kp_check_type(L, -1, LUA_TFUNCTION, what, 1, "opts.on_event", "a function");
  if (lua_isnil(L, -1))
    lua_pop(L, 1);
  else
    c->hook.ref = luaL_ref(L, LUA_REGISTRYINDEX);

  c->body.scratch = malloc((size_t)c->body.max_pairs * sizeof *c->body.scratch);
  if (c->body.scratch == NULL)
    luaL_error(L, "%s: not enough memory", what);
  lua_createtable(L, 0, 1);
  lua_newtable(L);
  lua_setfield(L, -2, "user_instances");
  c->body.ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 1;
}

/* Whether an on_event hook of c's exchange runs now: its own, or the one it was lent (a token
 * provider's client, mid-exchange for another client's call). */
static int in_hook(const kp_client *c)
{
  return c->hook.running || (c->lent != NULL && c->lent->running);
}

/* Raises when c cannot be used now: closed, or inside its on_event hook. */
static void check_usable(lua_State *L, const kp_client *c)
{
  if (c->closed)
    luaL_error(L, "koophone: client is closed");
  if (in_hook(c))
    luaL_error(L, "koophone: a client cannot be used from its own on_event hook");
}

kp_client *kp_check_client(lua_State *L, int idx)
{
  kp_client *c = luaL_checkudata(L, idx, KP_CLIENT_MT);
  check_usable(L, c);
  return c;
}

/* client:unassign(token, pairs [, opts]) */
static int client_unassign(lua_State *L)
{
  kp_client *c = kp_check_client(L, 1);
  lua_settop(L, 4);
  return kp_unassign(L, c, "koophone.unassign", 2);
}

/* client:<read>(token, arg [, opts]): client:get_task(token, task_id [, opts]),
 * client:list_instances(token, query [, opts]), a method per read row of kp_call_types */
static int client_read(lua_State *L)
{
  kp_client *c = kp_check_client(L, 1);
  lua_settop(L, 4);
  return kp_call_read(L, c, (int)lua_tointeger(L, KP_UV_CALL), 2);
}

/* client:unassign_many(token, batches [, opts]) (multi.c) */
static int client_unassign_many(lua_State *L)
{
  return kp_unassign_many(L, kp_check_client(L, 1));
}

/* client:start_many(token, batches [, opts]) -> a transfer set (multi.c) */
static int client_start_many(lua_State *L)
{
  return kp_start_many(L, kp_check_client(L, 1));
}

/* set:next(): its client is checked as its own methods are, so the set cannot be driven from
 * inside itself (the client's on_event hook runs inside next()) */
static int many_next(lua_State *L)
{
  kp_many *m = luaL_checkudata(L, 1, KP_MANY_MT);
  if (kp_many_client(m) != NULL)
    check_usable(L, kp_many_client(m));
  return kp_many_next(L, m);
}

/* set:close(), also __close; __gc is many_gc */
static int many_close(lua_State *L)
{
  kp_many *m = luaL_checkudata(L, 1, KP_MANY_MT);
  if (kp_many_client(m) != NULL && in_hook(kp_many_client(m)))
    return luaL_error(L, "koophone: a transfer set cannot be closed from its client's on_event hook");
  kp_many_close(L, m);
  return 0;
}

static int many_gc(lua_State *L)
{
  kp_many_close(L, luaL_checkudata(L, 1, KP_MANY_MT));
  return 0;
}

/* client:request_id() -> a fresh UUIDv4, for a caller that must fix a call's
 * x-request-id before its first attempt (the retry policy, the journal). */
static int client_request_id(lua_State *L)
{
  kp_client *c = kp_check_client(L, 1);
  char uuid[KP_UUID_LEN + 1];
  if (kp_uuid4(&c->rng, uuid) != 0)
    return luaL_error(L, "koophone.client:request_id: the OS random source failed");
  lua_pushlstring(L, uuid, KP_UUID_LEN);
  return 1;
}

/* client:close(), also __gc and __close: idempotent */
static int client_close(lua_State *L)
{
  kp_client *c = luaL_checkudata(L, 1, KP_CLIENT_MT);
  if (in_hook(c))
    return luaL_error(L, "koophone: a client cannot be closed from its own on_event hook");
  close_client(L, c);
  return 0;
}

static int client_tostring(lua_State *L)
{
  kp_client *c = luaL_checkudata(L, 1, KP_CLIENT_MT);
  if (c->closed)
    lua_pushliteral(L, "koophone.client (closed)");
  else
    lua_pushfstring(L, "koophone.client (%s%s)", c->endpoint, /* the URL unassign calls */
                    kp_call_types[KP_CALL_UNASSIGN].path);
  return 1;
}

/* Registers the metatable `name`: metamethods, and methods as __index (and, given `read`, a
 * method per read of the call table), with the module's upvalues (the KP_NUPVALUES values
 * ending at stack index top). */
static void new_class(lua_State *L, const char *name, const luaL_Reg *metamethods,
                      const luaL_Reg *methods, int top, lua_CFunction read)
{
  int i;
  luaL_newmetatable(L, name);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  luaL_setfuncs(L, metamethods, 0);
  lua_newtable(L);
  for (i = KP_NUPVALUES - 1; i >= 0; i--)
    lua_pushvalue(L, top - i);
  luaL_setfuncs(L, methods, KP_NUPVALUES);
  if (read != NULL)
    kp_call_set_reads(L, -1, top - KP_NUPVALUES + 1, read);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

void kp_client_open(lua_State *L)
{
  static const luaL_Reg methods[] = {
    { "unassign", client_unassign },
    { "unassign_many", client_unassign_many },
    { "start_many", client_start_many },
    { "request_id", client_request_id },
    { "close", client_close },
    { NULL, NULL }
  };
  static const luaL_Reg metamethods[] = {
    { "__gc", client_close },
    { "__close", client_close },
    { "__tostring", client_tostring },
    { NULL, NULL }
  };
  static const luaL_Reg many_methods[] = {
    { "next", many_next },
    { "started", kp_many_started },
    { "stop", kp_many_stop },
    { "close", many_close },
    { NULL, NULL }
  };
  static const luaL_Reg many_metamethods[] = {
    { "__gc", many_gc },
    { "__close", many_close },
    { NULL, NULL }
  };
  int top = lua_gettop(L);
  new_class(L, KP_CLIENT_MT, metamethods, methods, top, client_read);
  new_class(L, KP_MANY_MT, many_metamethods, many_methods, top, NULL);
}
