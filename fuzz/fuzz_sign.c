/* libFuzzer harness: the AK/SK signer's C API (kp_sign_url, kp_sign) on
 * arbitrary URLs, headers and bodies, as the pipeline will call it.
 *
 * Input: NUL-separated fields: the URL, then name, value, name, value, ...;
 * the last field is the body. Checks: a URL kp_sign_url accepts gives a host,
 * path and query inside it; kp_sign answers NULL or a message, and its value
 * is "SDK-HMAC-SHA256 Access=<ak>, SignedHeaders=<names>, Signature=<64 hex>"
 * with sorted lower-case names, host and x-sdk-date among them. */
#include <string.h>
#include <strings.h>

#include "fuzz.h"

#define MAX_FIELDS (2 * KP_SIGN_HEADERS_MAX + 4)
#define PREFIX "SDK-HMAC-SHA256 Access=AK-fuzz, SignedHeaders="

static kp_buf buf; /* reused, as the pipeline reuses its own */

/* The pipeline signs header names of its own: HTTP tokens only. */
static int is_token(const char *s, size_t len)
{
  size_t i;
  for (i = 0; i < len; i++)
    if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f ||
        strchr("\"(),/:;<=>?@[\\]{}", s[i]) != NULL)
      return 0;
  return len > 0;
}

static void check_value(const kp_sign_input *in)
{
  const char *names = buf.data + sizeof(PREFIX) - 1, *sig = strstr(names, ", Signature=");
  const char *p, *prev = NULL;
  size_t i, prev_len = 0;
  if (strncmp(buf.data, PREFIX, sizeof(PREFIX) - 1) != 0 || sig == NULL ||
      strlen(sig) != sizeof(", Signature=") - 1 + 64 || buf.len != strlen(buf.data)) {
    fz_fail("kp_sign: malformed Authorization value", buf.data);
    return;
  }
  for (i = sizeof(", Signature=") - 1; sig[i] != '\0'; i++)
    if (strchr("0123456789abcdef", sig[i]) == NULL)
      fz_fail("kp_sign: the signature is not lower-case hex", buf.data);
  for (p = names; p < sig;) {
    const char *end = memchr(p, ';', (size_t)(sig - p));
    size_t len = end != NULL ? (size_t)(end - p) : (size_t)(sig - p);
    for (i = 0; i < len; i++)
      if ((p[i] >= 'A' && p[i] <= 'Z') || p[i] == '_')
        fz_fail("kp_sign: a signed name is upper-case or holds _", buf.data);
    if (prev != NULL && (memcmp(prev, p, prev_len < len ? prev_len : len) > 0 ||
                         (memcmp(prev, p, prev_len < len ? prev_len : len) == 0 && prev_len >= len)))
      fz_fail("kp_sign: signed names not sorted or repeated", buf.data);
    prev = p;
    prev_len = len;
    p += len + 1;
  }
  if (strstr(names, "x-sdk-date") == NULL || (in->host != NULL && strstr(names, "host") == NULL))
    fz_fail("kp_sign: host or x-sdk-date not signed", buf.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  kp_sign_header h[KP_SIGN_HEADERS_MAX];
  const char *field[MAX_FIELDS], *end = (const char *)data + size, *p = (const char *)data;
  size_t len[MAX_FIELDS], n = 0, i;
  kp_sign_input in;
  const char *err;

  while (n < MAX_FIELDS) {
    const char *z = memchr(p, '\0', (size_t)(end - p));
    field[n] = p;
    len[n] = z != NULL ? (size_t)(z - p) : (size_t)(end - p);
    n++;
    if (z == NULL)
      break;
    p = z + 1;
  }
  memset(&in, 0, sizeof(in));
  if (kp_sign_url(&in, field[0], len[0]) != NULL)
    return 0;
  if ((in.host != NULL && (in.host < field[0] || in.host + in.host_len > field[0] + len[0])) ||
      in.path < field[0] || in.path + in.path_len > field[0] + len[0] ||
      in.query < field[0] || in.query + in.query_len > field[0] + len[0])
    fz_fail("kp_sign_url: a part outside the URL", field[0]);
  in.method = "POST";
  in.method_len = 4;
  in.ak = "AK-fuzz";
  in.ak_len = 7;
  in.sk = "SK-fuzz";
  in.sk_len = 7;
  in.date = "20250101T000000Z";
  in.body = n > 1 ? field[n - 1] : "";
  in.body_len = n > 1 ? len[n - 1] : 0;
  for (i = 1; i + 1 < n - 1 && in.nheaders < KP_SIGN_HEADERS_MAX; i += 2) {
    if (!is_token(field[i], len[i]) || memchr(field[i + 1], '\r', len[i + 1]) != NULL ||
        memchr(field[i + 1], '\n', len[i + 1]) != NULL || (len[i] == 4 && strncasecmp(field[i], "host", 4) == 0) ||
        (len[i] == 10 && strncasecmp(field[i], "x-sdk-date", 10) == 0))
      continue; /* the pipeline never passes these */
    h[in.nheaders++] = (kp_sign_header){ field[i], field[i + 1], len[i], len[i + 1] };
  }
  in.headers = h;
  err = kp_sign(&buf, &in);
  if (err == NULL)
    check_value(&in);
  else if (strcmp(err, "two headers have the same name (names are case-insensitive)") != 0)
    fz_fail("kp_sign failed", err);
  return 0;
}
