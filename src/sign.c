/* The API Gateway's "SDK-HMAC-SHA256" AK/SK signature, and koophone.sign.
 *
 * Canonical request (six lines joined by "\n"): method, URI (each segment
 * percent-decoded then encoded, a trailing "/"), query (pairs encoded,
 * sorted by decoded name then decoded value as the SDKs sort), "name:
 * trimmed value\n" per signed header (lower-case, sorted), the signed
 * names joined by ";", hex SHA-256 of the body. String to sign:
 * "SDK-HMAC-SHA256\n<X-Sdk-Date>\n<hex SHA-256 of the canonical request>";
 * signature: hex HMAC-SHA256 keyed with the SK as is.
 * (auth-notes.md 1.2-1.4; the simulator's verifier, sim/sim_aksk.lua, is an
 * independent implementation of the same text.)
 *
 * The C part is what the pipeline calls at send time: no Lua, one buffer
 * reserved once per call (none in steady state), hashes from libcrypto. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "kp.h"

#define ALGORITHM "SDK-HMAC-SHA256"
#define UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define HEX_SHA256 64
#define FNAME "koophone.sign"
#define SCRATCH_KEY "koophone.sign scratch" /* registry: the buffer koophone.sign reuses */

static const char hexdigits[] = "0123456789abcdef";
static const char *const option_names[] = { "ak", "sk", "method", "url", "headers", "body",
                                            "debug", NULL };

static void hex(char *out, const unsigned char *in, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++) {
    out[2 * i] = hexdigits[in[i] >> 4];
    out[2 * i + 1] = hexdigits[in[i] & 15];
  }
}

static int sha256_hex(char out[HEX_SHA256], const char *s, size_t len)
{
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!EVP_Digest(s, len, md, &n, EVP_sha256(), NULL) || n != HEX_SHA256 / 2)
    return -1;
  hex(out, md, n);
  return 0;
}

size_t kp_percent_encode(char out[3], unsigned char c)
{
  if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
      c == '_' || c == '.' || c == '~') {
    out[0] = (char)c;
    return 1;
  }
  out[0] = '%';
  out[1] = "0123456789ABCDEF"[c >> 4];
  out[2] = "0123456789ABCDEF"[c & 15];
  return 3;
}

static int hexval(unsigned char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  c = (unsigned char)(c | 0x20);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Writes s percent-decoded (no double encoding; a stray "%" is a byte) and
 * encoded again with the unreserved set; at most 3 bytes per input byte. */
static size_t encode(char *out, const char *s, size_t len)
{
  size_t i, n = 0;
  for (i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '%' && i + 2 < len && hexval((unsigned char)s[i + 1]) >= 0 &&
        hexval((unsigned char)s[i + 2]) >= 0) {
      c = (unsigned char)(hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]));
      i += 2;
    }
    n += kp_percent_encode(out + n, c);
  }
  return n;
}

static size_t canonical_uri(char *out, const char *path, size_t len)
{
  size_t n = 0, i = 0;
  while (i < len) {
    const char *slash = memchr(path + i, '/', len - i);
    size_t seg = slash != NULL ? (size_t)(slash - (path + i)) : len - i;
    n += encode(out + n, path + i, seg);
    i += seg;
    if (i < len) {
      out[n++] = '/';
      i++;
    }
  }
  if (n == 0 || out[n - 1] != '/')
    out[n++] = '/';
  return n;
}

/* The byte at *i of canonical text s (an escape "%XY" is the byte it
 * stands for), advancing *i past it. */
static int decoded_at(const char *s, size_t *i)
{
  int c = (unsigned char)s[*i];
  if (c == '%') { /* the canonical text has only complete escapes */
    c = hexval((unsigned char)s[*i + 1]) * 16 + hexval((unsigned char)s[*i + 2]);
    *i += 3;
  } else {
    (*i)++;
  }
  return c;
}

/* Orders two encoded texts by their decoded bytes: the SDKs sort the
 * names and values they are given, before encoding them, and the orders
 * differ ("%7C" < "_" but "_" < "|"). */
static int decoded_cmp(const char *a, size_t al, const char *b, size_t bl)
{
  size_t i = 0, j = 0;
  while (i < al && j < bl) {
    int ca = decoded_at(a, &i), cb = decoded_at(b, &j);
    if (ca != cb)
      return ca - cb;
  }
  return (i < al) - (j < bl);
}

/* Orders two encoded "name=value" pairs by decoded name, then decoded
 * value (encoded names and values hold no raw "=" or "&"). */
static int pair_cmp(const char *a, size_t al, const char *b, size_t bl)
{
  size_t an = (size_t)((const char *)memchr(a, '=', al) - a);
  size_t bn = (size_t)((const char *)memchr(b, '=', bl) - b);
  int c = decoded_cmp(a, an, b, bn);
  return c != 0 ? c : decoded_cmp(a + an + 1, al - an - 1, b + bn + 1, bl - bn - 1);
}

/* Writes the sorted query at out, each pair encoded first at tmp (room for
 * the longest pair) and inserted in order: the text is its own index. */
static size_t canonical_query(char *out, char *tmp, const char *q, size_t len)
{
  size_t n = 0, i = 0;
  while (i < len) {
    const char *amp = memchr(q + i, '&', len - i);
    size_t plen = amp != NULL ? (size_t)(amp - (q + i)) : len - i, tl, pos;
    const char *eq = memchr(q + i, '=', plen);
    size_t nl = eq != NULL ? (size_t)(eq - (q + i)) : plen;
    if (plen > 0) {
      tl = encode(tmp, q + i, nl);
      tmp[tl++] = '=';
      if (eq != NULL)
        tl += encode(tmp + tl, eq + 1, plen - nl - 1);
      for (pos = 0; pos < n;) { /* out holds "p1&p2&...&" */
        size_t el = (size_t)((char *)memchr(out + pos, '&', n - pos) - (out + pos));
        if (pair_cmp(tmp, tl, out + pos, el) < 0)
          break;
        pos += el + 1;
      }
      memmove(out + pos + tl + 1, out + pos, n - pos);
      memcpy(out + pos, tmp, tl);
      out[pos + tl] = '&';
      n += tl + 1;
    }
    i += plen + 1;
  }
  return n > 0 ? n - 1 : 0; /* without the last "&" */
}

static int is_space(char c)
{
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* A header's value as signed: without white space around it; sets *end. */
static const char *trimmed(const kp_sign_header *x, const char **end)
{
  const char *v = x->value, *ve = x->value + x->value_len;
  while (v < ve && is_space(*v))
    v++;
  while (ve > v && is_space(ve[-1]))
    ve--;
  *end = ve;
  return v;
}

static int name_cmp(const kp_sign_header *a, const kp_sign_header *b)
{
  size_t i, n = a->name_len < b->name_len ? a->name_len : b->name_len;
  for (i = 0; i < n; i++) {
    int ca = (unsigned char)a->name[i], cb = (unsigned char)b->name[i];
    ca = ca >= 'A' && ca <= 'Z' ? ca + 32 : ca;
    cb = cb >= 'A' && cb <= 'Z' ? cb + 32 : cb;
    if (ca != cb)
      return ca - cb;
  }
  return (a->name_len > b->name_len) - (a->name_len < b->name_len);
}

static int is_signed(const kp_sign_header *h)
{
  static const kp_sign_header authorization = { "authorization", NULL, 13, 0 };
  return memchr(h->name, '_', h->name_len) == NULL && name_cmp(h, &authorization) != 0;
}

static char *lower(char *out, const char *s, size_t len)
{
  size_t i;
  for (i = 0; i < len; i++)
    out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
  return out + len;
}

const char *kp_sign_check_ak(const char *ak, size_t len)
{
  size_t i;
  for (i = 0; i < len; i++)
    if ((unsigned char)ak[i] <= 0x20 || (unsigned char)ak[i] >= 0x7f || ak[i] == ',')
      return "only printable ASCII without spaces or commas"; /* it goes in a header as is */
  return NULL;
}

const char *kp_sign_url(kp_sign_input *in, const char *url, size_t len)
{
  const char *end = url + len, *p, *auth, *auth_end, *port = NULL;
  const char *default_port;
  size_t i;
  for (i = 0; i < len; i++)
    if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f)
      return "expected a URL of printable ASCII without spaces";
  in->host = NULL;
  in->host_len = 0;
  if (len > 0 && url[0] == '/') { /* origin form: no host to sign */
    p = url;
  } else {
    if (len > 7 && strncasecmp(url, "http://", 7) == 0) { /* a scheme is case-insensitive */
      auth = url + 7;
      default_port = "80";
    } else if (len > 8 && strncasecmp(url, "https://", 8) == 0) {
      auth = url + 8;
      default_port = "443";
    } else {
      return "expected an http:// or https:// URL, or a path starting with /";
    }
    for (auth_end = auth; auth_end < end && *auth_end != '/' && *auth_end != '?' &&
                          *auth_end != '#'; auth_end++) {
      if (*auth_end == '@')
        return "a URL with user information cannot be signed";
      if (*auth_end == ':')
        port = auth_end;
      else if (*auth_end == ']')
        port = NULL; /* a colon inside an IPv6 literal */
    }
    if (auth_end == auth || port == auth)
      return "the URL has no host";
    in->host = auth;
    in->host_len = (size_t)(auth_end - auth);
    if (port != NULL && (size_t)(auth_end - port - 1) == strlen(default_port) &&
        memcmp(port + 1, default_port, strlen(default_port)) == 0)
      in->host_len = (size_t)(port - auth);
    p = auth_end;
  }
  in->path = p;
  while (p < end && *p != '?' && *p != '#')
    p++;
  in->path_len = (size_t)(p - in->path);
  in->query = p < end && *p == '?' ? p + 1 : p;
  for (p = in->query; p < end && *p != '#'; p++)
    ;
  in->query_len = (size_t)(p - in->query);
  return NULL;
}

void kp_sign_date(char out[KP_SIGN_DATE_LEN + 1], time_t t)
{
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, KP_SIGN_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm);
}

static const char *sign_canonical(kp_buf *buf, const kp_sign_input *in)
{
  kp_sign_header h[KP_SIGN_HEADERS_MAX + 2];
  size_t nh = 0, i, j, need;
  int unsigned_payload = 0;
  char *p;

  if (in->nheaders > KP_SIGN_HEADERS_MAX)
    return "too many headers to sign";
  need = in->method_len + 3 * in->path_len + 2 + 6 * in->query_len + 8 + HEX_SHA256 +
         2 * (sizeof("host:\n") + in->host_len + sizeof("x-sdk-date:\n") + KP_SIGN_DATE_LEN);
  if (in->host != NULL)
    h[nh++] = (kp_sign_header){ "host", in->host, 4, in->host_len };
  h[nh++] = (kp_sign_header){ "x-sdk-date", in->date, 10, KP_SIGN_DATE_LEN };
  for (i = 0; i < in->nheaders; i++) {
    const kp_sign_header *x = &in->headers[i];
    need += 2 * x->name_len + x->value_len + 3;
    if (!is_signed(x))
      continue;
    for (j = nh; j > 0 && name_cmp(&h[j - 1], x) > 0; j--) /* insertion sort: a few headers */
      h[j] = h[j - 1];
    if (j > 0 && name_cmp(&h[j - 1], x) == 0)
      return "two headers have the same name (names are case-insensitive)";
    h[j] = *x;
    nh++;
    if (x->value_len >= sizeof(UNSIGNED_PAYLOAD) - 1 && name_cmp(x, &(kp_sign_header){
          "x-sdk-content-sha256", NULL, 20, 0 }) == 0) {
      const char *ve, *v = trimmed(x, &ve);
      unsigned_payload = (size_t)(ve - v) == sizeof(UNSIGNED_PAYLOAD) - 1 &&
                         memcmp(v, UNSIGNED_PAYLOAD, sizeof(UNSIGNED_PAYLOAD) - 1) == 0;
    }
  }
  /* the query's pairs are encoded into the room after the worst case */
  if (kp_buf_reserve(buf, need + 3 * in->query_len + 2) != 0)
    return "not enough memory";
  p = buf->data;
  for (i = 0; i < in->method_len; i++)
    *p++ = (char)(in->method[i] >= 'a' && in->method[i] <= 'z' ? in->method[i] - 32 : in->method[i]);
  *p++ = '\n';
  p += canonical_uri(p, in->path, in->path_len);
  *p++ = '\n';
  p += canonical_query(p, buf->data + need, in->query, in->query_len);
  *p++ = '\n';
  for (i = 0; i < nh; i++) {
    const char *ve, *v = trimmed(&h[i], &ve);
    p = lower(p, h[i].name, h[i].name_len);
    *p++ = ':';
    memcpy(p, v, (size_t)(ve - v));
    p += ve - v;
    *p++ = '\n';
  }
  *p++ = '\n';
  for (i = 0; i < nh; i++) {
    p = lower(p, h[i].name, h[i].name_len);
    *p++ = i + 1 < nh ? ';' : '\n';
  }
  if (unsigned_payload) {
    memcpy(p, UNSIGNED_PAYLOAD, sizeof(UNSIGNED_PAYLOAD) - 1);
    p += sizeof(UNSIGNED_PAYLOAD) - 1;
  } else {
    if (sha256_hex(p, in->body != NULL ? in->body : "", in->body_len) != 0)
      return "SHA-256 failed";
    p += HEX_SHA256;
  }
  buf->len = (size_t)(p - buf->data);
  return NULL;
}

static const char *sign_finish(kp_buf *buf, const kp_sign_input *in)
{
  static const char prefix[] = ALGORITHM " Access=", mid[] = ", SignedHeaders=",
                    tail[] = ", Signature=";
  char sts[sizeof(ALGORITHM "\n\n") + KP_SIGN_DATE_LEN + HEX_SHA256];
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  size_t sts_len = sizeof(ALGORITHM) - 1, cr_len = buf->len, sh, sh_len, at, total;
  const char *ok;

  /* the signed names are the canonical request's line before the last */
  sh_len = cr_len - HEX_SHA256 - 1;
  if (cr_len >= sizeof(UNSIGNED_PAYLOAD) &&
      memcmp(buf->data + cr_len - sizeof(UNSIGNED_PAYLOAD) + 1, UNSIGNED_PAYLOAD,
             sizeof(UNSIGNED_PAYLOAD) - 1) == 0)
    sh_len = cr_len - sizeof(UNSIGNED_PAYLOAD);
  for (sh = sh_len; sh > 0 && buf->data[sh - 1] != '\n'; sh--)
    ;
  sh_len -= sh;

  memcpy(sts, ALGORITHM "\n", sts_len + 1);
  memcpy(sts + sts_len + 1, in->date, KP_SIGN_DATE_LEN);
  sts_len += 1 + KP_SIGN_DATE_LEN;
  sts[sts_len++] = '\n';
  if (sha256_hex(sts + sts_len, buf->data, cr_len) != 0)
    return "SHA-256 failed";
  sts_len += HEX_SHA256;
  ok = HMAC(EVP_sha256(), in->sk, (int)in->sk_len, (const unsigned char *)sts, sts_len, mac,
            &maclen) != NULL && maclen == HEX_SHA256 / 2 ? NULL : "HMAC-SHA256 failed";
  if (ok == NULL) {
    total = sizeof(prefix) - 1 + in->ak_len + sizeof(mid) - 1 + sh_len + sizeof(tail) - 1 +
            HEX_SHA256;
    if (kp_buf_reserve(buf, total + 1) != 0) {
      ok = "not enough memory";
    } else {
      at = sizeof(prefix) - 1 + in->ak_len + sizeof(mid) - 1;
      memmove(buf->data + at, buf->data + sh, sh_len);
      memcpy(buf->data, prefix, sizeof(prefix) - 1);
      memcpy(buf->data + sizeof(prefix) - 1, in->ak, in->ak_len);
      memcpy(buf->data + at - (sizeof(mid) - 1), mid, sizeof(mid) - 1);
      at += sh_len;
      memcpy(buf->data + at, tail, sizeof(tail) - 1);
      hex(buf->data + at + sizeof(tail) - 1, mac, HEX_SHA256 / 2);
      buf->len = total;
      buf->data[total] = '\0';
      if (cr_len > total + 1) /* header values (a security token) of the canonical request */
        OPENSSL_cleanse(buf->data + total + 1, cr_len - total - 1);
    }
  }
  OPENSSL_cleanse(mac, sizeof(mac));
  return ok;
}

const char *kp_sign(kp_buf *buf, const kp_sign_input *in)
{
  const char *err = sign_canonical(buf, in);
  return err != NULL ? err : sign_finish(buf, in);
}

/* ---- koophone.sign ---- */

static int sign_error(lua_State *L, int argn, const char *path, const char *msg)
{
  return kp_argerror(L, FNAME, argn, path, "%s", msg);
}

static const char *string_field(lua_State *L, int t, const char *name, size_t *len)
{
  const char *s;
  lua_getfield(L, t, name); /* stays on the stack: the string is used later */
  if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0) {
    const char *got = lua_type(L, -1) == LUA_TSTRING ? "an empty one" : luaL_typename(L, -1);
    kp_argerror(L, FNAME, 1, lua_pushfstring(L, "opts.%s", name),
                "expected a non-empty string, got %s", got);
  }
  s = lua_tolstring(L, -1, len);
  return s;
}

static int is_token_char(unsigned char c)
{
  return c > 0x20 && c < 0x7f && strchr("\"(),/:;<=>?@[\\]{}", c) == NULL;
}

/* Reads opts.headers into h (the strings stay referenced by the table
 * and by the stack), pulling X-Sdk-Date out into date; 1 when a Host
 * header is given (it is then signed instead of the URL's). */
static int check_headers(lua_State *L, int t, kp_sign_input *in, kp_sign_header *h,
                         char date[KP_SIGN_DATE_LEN + 1])
{
  int host_given = 0;
  size_t i;
  in->nheaders = 0;
  date[0] = '\0';
  if (lua_isnil(L, t))
    return 0;
  if (!lua_istable(L, t))
    kp_argerror(L, FNAME, 1, "opts.headers", "expected a table, got %s",
               luaL_typename(L, t));
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    kp_sign_header x;
    if (lua_type(L, -2) != LUA_TSTRING)
      kp_argerror(L, FNAME, 1, "opts.headers", "names must be strings, got %s",
                 luaL_typename(L, -2));
    x.name = lua_tolstring(L, -2, &x.name_len);
    for (i = 0; i < x.name_len; i++)
      if (!is_token_char((unsigned char)x.name[i]))
        break;
    if (x.name_len == 0 || i < x.name_len)
      kp_argerror(L, FNAME, 1, "opts.headers", "a name is empty or holds CR, LF, "
                 "NUL, a space or a separator");
    if (lua_type(L, -1) != LUA_TSTRING) {
      const char *got = luaL_typename(L, -1);
      kp_argerror(L, FNAME, 1, lua_pushfstring(L, "opts.headers['%s']", x.name),
                  "expected a string, got %s", got);
    }
    x.value = lua_tolstring(L, -1, &x.value_len);
    if (kp_has_crlf_nul(x.value, x.value_len))
      kp_argerror(L, FNAME, 1, lua_pushfstring(L, "opts.headers['%s']", x.name),
                  "contains CR, LF or NUL");
    lua_pop(L, 1);
    if (x.name_len == 10 && strncasecmp(x.name, "x-sdk-date", 10) == 0) {
      for (i = 0; i < x.value_len && i < KP_SIGN_DATE_LEN; i++)
        if (!((i == 8 && x.value[i] == 'T') || (i == 15 && x.value[i] == 'Z') ||
              (i != 8 && i != 15 && x.value[i] >= '0' && x.value[i] <= '9')))
          break;
      if (x.value_len != KP_SIGN_DATE_LEN || i < KP_SIGN_DATE_LEN)
        kp_argerror(L, FNAME, 1, lua_pushfstring(L, "opts.headers['%s']", x.name),
                    "expected UTC as YYYYMMDDTHHMMSSZ");
      memcpy(date, x.value, KP_SIGN_DATE_LEN + 1);
      continue;
    }
    host_given |= x.name_len == 4 && strncasecmp(x.name, "host", 4) == 0;
    if (in->nheaders == KP_SIGN_HEADERS_MAX)
      kp_argerror(L, FNAME, 1, "opts.headers", "more than %d headers",
                 KP_SIGN_HEADERS_MAX);
    h[in->nheaders++] = x;
  }
  in->headers = h;
  return host_given;
}

static int scratch_gc(lua_State *L)
{
  kp_buf_free(lua_touserdata(L, 1));
  return 0;
}

/* The buffer koophone.sign reuses, owned by a userdata in the registry: a
 * Lua error never leaves it behind. */
static kp_buf *scratch(lua_State *L)
{
  kp_buf *b;
  lua_getfield(L, LUA_REGISTRYINDEX, SCRATCH_KEY);
  b = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (b == NULL) {
    b = lua_newuserdata(L, sizeof(*b));
    memset(b, 0, sizeof(*b));
    lua_newtable(L);
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, SCRATCH_KEY);
  }
  return b;
}

/* koophone.sign(opts) -> Authorization value, X-Sdk-Date [, canonical request] */
int kp_lua_sign(lua_State *L)
{
  kp_sign_header h[KP_SIGN_HEADERS_MAX];
  kp_sign_input in;
  char date[KP_SIGN_DATE_LEN + 1];
  const char *url, *err;
  size_t url_len, i;
  int debug, host_given;
  kp_buf *b;

  lua_settop(L, 1);
  if (!lua_istable(L, 1))
    return kp_argerror(L, FNAME, 1, "opts", "expected a table, got %s",
                      luaL_typename(L, 1));
  kp_check_opts(L, 1, FNAME, 1, option_names);
  luaL_checkstack(L, 16, NULL);
  in.ak = string_field(L, 1, "ak", &in.ak_len);
  err = kp_sign_check_ak(in.ak, in.ak_len);
  if (err != NULL)
    return sign_error(L, 1, "opts.ak", err);
  in.sk = string_field(L, 1, "sk", &in.sk_len);
  in.method = string_field(L, 1, "method", &in.method_len);
  for (i = 0; i < in.method_len; i++)
    if (!is_token_char((unsigned char)in.method[i]))
      return sign_error(L, 1, "opts.method", "expected an HTTP method such as \"POST\"");
  url = string_field(L, 1, "url", &url_len);
  err = kp_sign_url(&in, url, url_len);
  if (err != NULL)
    return sign_error(L, 1, "opts.url", err);
  lua_getfield(L, 1, "body");
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
    return kp_argerror(L, FNAME, 1, "opts.body", "expected a string, got %s",
                      luaL_typename(L, -1));
  in.body = lua_tolstring(L, -1, &in.body_len);
  lua_getfield(L, 1, "debug");
  debug = lua_toboolean(L, -1);
  lua_getfield(L, 1, "headers");
  host_given = check_headers(L, lua_gettop(L), &in, h, date);
  if (host_given)
    in.host = NULL; /* the Host header given is signed as it is */
  if (date[0] == '\0')
    kp_sign_date(date, time(NULL));
  in.date = date;

  b = scratch(L);
  if (debug) {
    err = sign_canonical(b, &in);
    if (err != NULL)
      return luaL_error(L, FNAME ": %s", err);
    lua_pushlstring(L, b->data, b->len);
    err = sign_finish(b, &in);
  } else {
    err = kp_sign(b, &in); /* what the pipeline calls */
  }
  if (err != NULL)
    return luaL_error(L, FNAME ": %s", err);
  lua_pushlstring(L, b->data, b->len);
  lua_pushstring(L, date);
  if (debug)
    lua_pushvalue(L, -3); /* the canonical request */
  return debug ? 3 : 2;
}
