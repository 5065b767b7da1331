/* koophone.aksk: an access key pair (AK/SK) with its project id, and the
 * security token of temporary keys, as a userdata the pipeline signs with.
 *
 * The secrets live in one malloc'd block, never in a Lua string made by us:
 * close (also __gc and __close) zeroes and frees it. Every field becomes a
 * header (or the signature's key), so CR, LF and NUL are refused. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "kp.h"

#define KP_AKSK_MT "koophone.aksk"
#define FNAME "koophone.aksk"

enum { F_AK, F_SK, F_PROJECT_ID, F_SECURITY_TOKEN, F_N };
static const char *const option_names[F_N + 1] = { "ak", "sk", "project_id", "security_token",
                                                   NULL };
static const char *const env_names[F_N] = { "HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK",
                                            "HUAWEICLOUD_SDK_PROJECT_ID",
                                            "HUAWEICLOUD_SDK_SECURITY_TOKEN" };

/* close zeroes the secrets; only collection frees the block: a call in progress
 * (unassign_many's callbacks may close the credentials) keeps pointers into it. */
static void release(kp_aksk *c, int free_block)
{
  if (c->block != NULL)
    OPENSSL_cleanse(c->block, c->block_len);
  c->closed = 1;
  if (free_block) {
    free(c->block);
    memset(c, 0, sizeof(*c));
    c->closed = 1;
  }
}

kp_aksk *kp_test_aksk(lua_State *L, int idx)
{
  kp_aksk *c = luaL_testudata(L, idx, KP_AKSK_MT);
  if (c != NULL && c->closed)
    luaL_error(L, FNAME ": the credentials are closed");
  return c;
}

/* cred:close(), also __close: idempotent */
static int aksk_close(lua_State *L)
{
  release(luaL_checkudata(L, 1, KP_AKSK_MT), 0);
  return 0;
}

static int aksk_gc(lua_State *L)
{
  release(luaL_checkudata(L, 1, KP_AKSK_MT), 1);
  return 0;
}

static void add_start(luaL_Buffer *b, const char *s, size_t len)
{
  luaL_addlstring(b, s, len < 4 ? len : 4);
  if (len > 4)
    luaL_addstring(b, "\xe2\x80\xa6"); /* … */
}

/* "koophone.aksk (AK ABCD…, project 0a1b…)": never more than 4 bytes of the
 * AK or the project id, nothing of the SK or the security token. */
static int aksk_tostring(lua_State *L)
{
  kp_aksk *c = luaL_checkudata(L, 1, KP_AKSK_MT);
  luaL_Buffer b;
  if (c->closed) {
    lua_pushliteral(L, FNAME " (closed)");
    return 1;
  }
  luaL_buffinit(L, &b);
  luaL_addstring(&b, FNAME " (AK ");
  add_start(&b, c->ak, c->ak_len);
  luaL_addstring(&b, ", project ");
  add_start(&b, c->project_id, c->project_id_len);
  luaL_addstring(&b, c->security_token != NULL ? ", temporary)" : ")");
  luaL_pushresult(&b);
  return 1;
}

/* cred.ak, cred.project_id, cred.temporary and cred:close; the SK and the
 * security token are not readable. */
static int aksk_index(lua_State *L)
{
  kp_aksk *c = luaL_checkudata(L, 1, KP_AKSK_MT);
  const char *k = luaL_checkstring(L, 2);
  lua_pushnil(L);
  if (strcmp(k, "close") == 0)
    lua_pushcfunction(L, aksk_close);
  else if (!c->closed && strcmp(k, "ak") == 0)
    lua_pushlstring(L, c->ak, c->ak_len);
  else if (!c->closed && strcmp(k, "project_id") == 0)
    lua_pushlstring(L, c->project_id, c->project_id_len);
  else if (!c->closed && strcmp(k, "temporary") == 0)
    lua_pushboolean(L, c->security_token != NULL);
  return 1; /* the last value pushed: nil for any other key */
}

/* Made on first use: the module's entry point needs no call of its own. */
static void push_metatable(lua_State *L)
{
  static const luaL_Reg meta[] = {
    { "__gc", aksk_gc },
    { "__close", aksk_close },
    { "__tostring", aksk_tostring },
    { "__index", aksk_index },
    { NULL, NULL }
  };
  if (luaL_newmetatable(L, KP_AKSK_MT))
    luaL_setfuncs(L, meta, 0);
}

/* KooPhone is a project-level service: its gateway refuses an AK/SK request
 * without X-Project-Id, so credentials without a project would only fail
 * after sending. */
#define PROJECT_NOTE " (KooPhone is a project-level API: every request carries X-Project-Id)"

/* Checks the string at idx for field f ("what" names where it came from);
 * an absent or empty security token is NULL, every other field is required. */
static const char *check_field(lua_State *L, int idx, int f, const char *what, size_t *len)
{
  const char *s, *note = f == F_PROJECT_ID ? PROJECT_NOTE : "";
  *len = 0;
  if (f == F_SECURITY_TOKEN && (lua_isnil(L, idx) || (lua_type(L, idx) == LUA_TSTRING &&
                                                      lua_rawlen(L, idx) == 0)))
    return NULL;
  if (lua_type(L, idx) != LUA_TSTRING || lua_rawlen(L, idx) == 0)
    luaL_error(L, FNAME ": %s: expected a non-empty string, got %s%s", what,
               lua_type(L, idx) == LUA_TSTRING ? "an empty one" : luaL_typename(L, idx), note);
  s = lua_tolstring(L, idx, len);
  if (kp_has_crlf_nul(s, *len))
    luaL_error(L, FNAME ": %s: contains CR, LF or NUL", what);
  if (f == F_AK && kp_sign_check_ak(s, *len) != NULL)
    luaL_error(L, FNAME ": %s: %s", what, kp_sign_check_ak(s, *len));
  return s;
}

/* koophone.aksk{ ak =, sk =, project_id =, security_token = } or
 * koophone.aksk() from the HUAWEICLOUD_SDK_* environment variables. */
int kp_lua_aksk(lua_State *L)
{
  const char *s[F_N];
  size_t len[F_N], total = 0;
  kp_aksk *c;
  char *p;
  int f, from_env;

  lua_settop(L, 1);
  from_env = lua_isnil(L, 1);
  if (!from_env && !lua_istable(L, 1))
    return kp_argerror(L, FNAME, 1, "opts", "expected a table or nothing, got %s",
                      luaL_typename(L, 1));
  if (!from_env)
    kp_check_opts(L, 1, FNAME, 1, option_names);
  for (f = 0; f < F_N; f++) {
    if (from_env) {
      lua_pushstring(L, getenv(env_names[f]));
      lua_pushstring(L, env_names[f]);
    } else {
      lua_getfield(L, 1, option_names[f]);
      lua_pushfstring(L, "bad argument #1 (opts.%s)", option_names[f]);
    }
    s[f] = check_field(L, -2, f, lua_tostring(L, -1), &len[f]);
    lua_pop(L, 1); /* the value stays on the stack while s[f] is in use */
    total += s[f] != NULL ? len[f] + 1 : 0;
  }

  c = lua_newuserdata(L, sizeof(*c));
  memset(c, 0, sizeof(*c));
  push_metatable(L);
  lua_setmetatable(L, -2); /* from here on, __gc releases the block */
  c->block = malloc(total);
  if (c->block == NULL)
    return luaL_error(L, FNAME ": not enough memory");
  c->block_len = total;
  p = c->block;
  for (f = 0; f < F_N; f++) {
    const char **dst[F_N] = { &c->ak, &c->sk, &c->project_id, &c->security_token };
    size_t *dst_len[F_N] = { &c->ak_len, &c->sk_len, &c->project_id_len,
                             &c->security_token_len };
    if (s[f] == NULL)
      continue;
    memcpy(p, s[f], len[f] + 1);
    *dst[f] = p;
    *dst_len[f] = len[f];
    p += len[f] + 1;
  }
  return 1;
}

/* core.is_aksk(v): true for open koophone.aksk credentials (for the Lua layers' checks) */
int kp_lua_is_aksk(lua_State *L)
{
  kp_aksk *c = luaL_testudata(L, 1, KP_AKSK_MT);
  lua_pushboolean(L, c != NULL && !c->closed);
  return 1;
}

/* core.aksk_export(cred) -> { ak =, sk =, project_id =, security_token = }: what
 * koophone.aksk{} takes to make the same credentials in another Lua VM (koophone.ngx's
 * worker threads copy only plain values). Not part of the API: the SK is not readable
 * through the object itself. */
int kp_lua_aksk_export(lua_State *L)
{
  kp_aksk *c = kp_test_aksk(L, 1);
  if (c == NULL)
    return luaL_argerror(L, 1, "expected koophone.aksk credentials");
  lua_createtable(L, 0, F_N);
  lua_pushlstring(L, c->ak, c->ak_len);
  lua_setfield(L, -2, "ak");
  lua_pushlstring(L, c->sk, c->sk_len);
  lua_setfield(L, -2, "sk");
  lua_pushlstring(L, c->project_id, c->project_id_len);
  lua_setfield(L, -2, "project_id");
  if (c->security_token != NULL) {
    lua_pushlstring(L, c->security_token, c->security_token_len);
    lua_setfield(L, -2, "security_token");
  }
  return 1;
}
