/* koophone.Error objects and the names of libcurl's codes.
 *
 * libcurl has no function that returns a CURLE_* name, so the names, and the
 * error kind each code stands for, live in this one table. */
#include "kp.h"

static const struct curl_code_info {
  CURLcode code;
  const char *name;
  const char *kind;
} curl_codes[] = {
#define KP_CODE(c, kind) { c, #c, kind }
  KP_CODE(CURLE_OK, "network"),
  KP_CODE(CURLE_UNSUPPORTED_PROTOCOL, "network"),
  KP_CODE(CURLE_FAILED_INIT, "network"),
  KP_CODE(CURLE_URL_MALFORMAT, "network"),
  KP_CODE(CURLE_COULDNT_RESOLVE_PROXY, "network"),
  KP_CODE(CURLE_COULDNT_RESOLVE_HOST, "network"),
  KP_CODE(CURLE_COULDNT_CONNECT, "network"),
  KP_CODE(CURLE_WEIRD_SERVER_REPLY, "network"),
  KP_CODE(CURLE_HTTP2, "network"),
  KP_CODE(CURLE_PARTIAL_FILE, "network"),
  KP_CODE(CURLE_WRITE_ERROR, "network"),
  KP_CODE(CURLE_READ_ERROR, "network"),
  KP_CODE(CURLE_OUT_OF_MEMORY, "network"),
  KP_CODE(CURLE_OPERATION_TIMEDOUT, "timeout"),
  KP_CODE(CURLE_RANGE_ERROR, "network"),
  KP_CODE(CURLE_HTTP_POST_ERROR, "network"),
  KP_CODE(CURLE_SSL_CONNECT_ERROR, "tls"),
  KP_CODE(CURLE_ABORTED_BY_CALLBACK, "network"),
  KP_CODE(CURLE_BAD_FUNCTION_ARGUMENT, "network"),
  KP_CODE(CURLE_INTERFACE_FAILED, "network"),
  KP_CODE(CURLE_TOO_MANY_REDIRECTS, "network"),
  KP_CODE(CURLE_GOT_NOTHING, "network"),
  KP_CODE(CURLE_SSL_ENGINE_NOTFOUND, "tls"),
  KP_CODE(CURLE_SSL_ENGINE_SETFAILED, "tls"),
  KP_CODE(CURLE_SEND_ERROR, "network"),
  KP_CODE(CURLE_RECV_ERROR, "network"),
  KP_CODE(CURLE_SSL_CERTPROBLEM, "tls"),
  KP_CODE(CURLE_SSL_CIPHER, "tls"),
  KP_CODE(CURLE_PEER_FAILED_VERIFICATION, "tls"),
  KP_CODE(CURLE_BAD_CONTENT_ENCODING, "network"),
  KP_CODE(CURLE_FILESIZE_EXCEEDED, "decode"),
  KP_CODE(CURLE_USE_SSL_FAILED, "tls"),
  KP_CODE(CURLE_SEND_FAIL_REWIND, "network"),
  KP_CODE(CURLE_SSL_ENGINE_INITFAILED, "tls"),
  KP_CODE(CURLE_SSL_CACERT_BADFILE, "tls"),
  KP_CODE(CURLE_SSL_SHUTDOWN_FAILED, "tls"),
  KP_CODE(CURLE_AGAIN, "network"),
  KP_CODE(CURLE_SSL_CRL_BADFILE, "tls"),
  KP_CODE(CURLE_SSL_ISSUER_ERROR, "tls"),
  KP_CODE(CURLE_NO_CONNECTION_AVAILABLE, "network"),
  KP_CODE(CURLE_SSL_PINNEDPUBKEYNOTMATCH, "tls"),
  KP_CODE(CURLE_SSL_INVALIDCERTSTATUS, "tls"),
  KP_CODE(CURLE_HTTP2_STREAM, "network"),
  KP_CODE(CURLE_RECURSIVE_API_CALL, "network"),
  KP_CODE(CURLE_AUTH_ERROR, "network"),
  KP_CODE(CURLE_HTTP3, "network"),
  KP_CODE(CURLE_QUIC_CONNECT_ERROR, "network"),
  KP_CODE(CURLE_PROXY, "network"),
  KP_CODE(CURLE_SSL_CLIENTCERT, "tls"),
  KP_CODE(CURLE_UNRECOVERABLE_POLL, "network"),
#undef KP_CODE
};

static const struct curl_code_info *curl_code_info(CURLcode code)
{
  size_t i;
  for (i = 0; i < sizeof curl_codes / sizeof curl_codes[0]; i++)
    if (curl_codes[i].code == code)
      return &curl_codes[i];
  return NULL;
}

const char *kp_curl_code_name(CURLcode code)
{
  const struct curl_code_info *info = curl_code_info(code);
  return info != NULL ? info->name : "CURLE_UNKNOWN";
}

const char *kp_curl_code_kind(CURLcode code)
{
  const struct curl_code_info *info = curl_code_info(code);
  return info != NULL ? info->kind : "network";
}

void kp_push_error(lua_State *L, const kp_error *e, const kp_secrets *sec)
{
  lua_createtable(L, 0, 11);
  lua_pushstring(L, e->kind);
  lua_setfield(L, -2, "kind");
  if (e->status > 0) {
    lua_pushinteger(L, (lua_Integer)e->status);
    lua_setfield(L, -2, "status");
  }
  kp_push_redacted(L, e->code, e->code_len, sec);
  lua_setfield(L, -2, "code");
  kp_push_redacted(L, e->message, e->message_len, sec);
  lua_setfield(L, -2, "message");
  lua_pushstring(L, e->request_id);
  lua_setfield(L, -2, "request_id");
  if (e->retry_after > 0) {
    lua_pushnumber(L, (lua_Number)e->retry_after);
    lua_setfield(L, -2, "retry_after");
  }
  lua_pushboolean(L, e->sent);
  lua_setfield(L, -2, "sent");
  lua_pushinteger(L, e->attempts);
  lua_setfield(L, -2, "attempts");
  lua_pushinteger(L, e->resends);
  lua_setfield(L, -2, "resends");
  if (e->maybe_applied) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "maybe_applied");
  }
  luaL_getmetatable(L, KP_ERROR_MT);
  lua_setmetatable(L, -2);
}

/* Pushes before..field..after when the field is a string or number, and
 * returns how many values it pushed. */
static int push_field(lua_State *L, const char *name, const char *before, const char *after)
{
  lua_getfield(L, 1, name);
  if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushstring(L, before);
  lua_insert(L, -2);
  lua_pushstring(L, after);
  return 3;
}

/* "koophone: KOOPHONE.API.2210 (HTTP 400): binding does not exist
 *  [request_id=...]", built from the fields, so an error changed or made in
 * Lua prints the same way. */
static int error_tostring(lua_State *L)
{
  int n = 1;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_pushliteral(L, "koophone:");
  n += push_field(L, "code", " ", "");
  n += push_field(L, "status", " (HTTP ", ")");
  n += push_field(L, "message", ": ", "");
  n += push_field(L, "request_id", " [request_id=", "]");
  lua_concat(L, n);
  return 1;
}

/* 1 when the value at idx is a table with the koophone.Error metatable */
static int is_error(lua_State *L, int idx)
{
  int same;
  if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx))
    return 0;
  luaL_getmetatable(L, KP_ERROR_MT);
  same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same;
}

/* "failed: " .. err and err .. "!": either side may be the error, the
 * other a string or a number (anything else raises as a plain concat would). */
static int error_concat(lua_State *L)
{
  int i;
  lua_settop(L, 2);
  for (i = 1; i <= 2; i++)
    if (is_error(L, i)) {
      lua_pushcfunction(L, error_tostring);
      lua_pushvalue(L, i);
      lua_call(L, 1, 1);
      lua_replace(L, i);
    } else if (!lua_isstring(L, i)) {
      return luaL_error(L, "attempt to concatenate a %s value with a koophone.Error",
                        luaL_typename(L, i));
    }
  lua_concat(L, 2);
  return 1;
}

void kp_errors_open(lua_State *L)
{
  luaL_newmetatable(L, KP_ERROR_MT);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushcfunction(L, error_concat);
  lua_setfield(L, -2, "__concat");
  lua_pushliteral(L, KP_ERROR_MT);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}
