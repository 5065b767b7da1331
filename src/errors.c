/* koophone.Error objects and the names of libcurl's codes.
 *
 * libcurl has no function that returns a CURLE_* name, so the names, and the
 * error kind each code stands for, live in this one table. */
#include <string.h>

#include "kp.h"

#define KP_REDACTED "[REDACTED]"
#define KP_MESSAGE_MAX 512 /* server text quoted in a message, at most */
#define KP_TOKEN_PIECE 16  /* this many leading token bytes already count as the token */

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

/* Length of the run at s that repeats the token from its start, when it is long
 * enough to be the secret (all of a short token, 16 bytes or more of a long one,
 * so a server that echoes the token cut short does not leak most of it); else 0. */
static size_t token_run(const char *s, size_t len, const char *token, size_t token_len)
{
  size_t n = 0, enough = token_len < KP_TOKEN_PIECE ? token_len : KP_TOKEN_PIECE;
  while (n < len && n < token_len && s[n] == token[n])
    n++;
  return n >= enough && n > 0 ? n : 0;
}

/* Pushes s with every run of the token replaced by KP_REDACTED, nothing else
 * changed: a response body is redacted before it is decoded, so no field of
 * a result (error_msg, task_id, jobs) can carry the secret back. */
void kp_push_redacted(lua_State *L, const char *s, size_t len, const char *token,
                      size_t token_len)
{
  luaL_Buffer b;
  const char *p = token_len > 0 ? memchr(s, token[0], len) : NULL;
  size_t i = 0, run;
  while (p != NULL && token_run(p, len - (size_t)(p - s), token, token_len) == 0)
    p = memchr(p + 1, token[0], len - (size_t)(p + 1 - s));
  if (p == NULL) { /* the usual case: no copy */
    lua_pushlstring(L, s, len);
    return;
  }
  luaL_buffinit(L, &b);
  while (i < len) {
    if (s[i] == token[0] && (run = token_run(s + i, len - i, token, token_len)) > 0) {
      luaL_addstring(&b, KP_REDACTED);
      i += run;
    } else {
      luaL_addchar(&b, s[i++]);
    }
  }
  luaL_pushresult(&b);
}

/* Pushes s with the token redacted and control characters turned into
 * spaces, cut at about KP_MESSAGE_MAX bytes: server text must not smuggle
 * the secret or forge log lines. Redaction runs over the whole text first so
 * that the cut can never leave a piece of the token behind. */
static void push_clean(lua_State *L, const char *s, size_t len,
                       const char *token, size_t token_len)
{
  luaL_Buffer b;
  size_t i = 0, out = 0, run;
  luaL_buffinit(L, &b);
  while (i < len && out < KP_MESSAGE_MAX) {
    unsigned char ch = (unsigned char)s[i];
    if (token_len > 0 && (run = token_run(s + i, len - i, token, token_len)) > 0) {
      luaL_addstring(&b, KP_REDACTED);
      out += sizeof KP_REDACTED - 1;
      i += run;
      continue;
    }
    luaL_addchar(&b, (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch);
    out++;
    i++;
  }
  luaL_pushresult(&b);
}

void kp_push_error(lua_State *L, const kp_error *e, const char *token, size_t token_len)
{
  lua_createtable(L, 0, 9);
  lua_pushstring(L, e->kind);
  lua_setfield(L, -2, "kind");
  if (e->status > 0) {
    lua_pushinteger(L, (lua_Integer)e->status);
    lua_setfield(L, -2, "status");
  }
  push_clean(L, e->code, e->code_len, token, token_len);
  lua_setfield(L, -2, "code");
  push_clean(L, e->message, e->message_len, token, token_len);
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

void kp_errors_open(lua_State *L)
{
  luaL_newmetatable(L, KP_ERROR_MT);
  lua_pushcfunction(L, error_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, KP_ERROR_MT);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}
