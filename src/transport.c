/* Transport: one reused libcurl easy handle per connection slot.
 *
 * Everything that does not change between calls is set once in
 * kp_conn_init; kp_conn_prepare sets only what a call changes. The header
 * list is made of our own nodes, so a call rewrites two strings instead of
 * allocating a new list. */
#include <stdlib.h>
#include <string.h>

#include "kp.h"

/* Big responses are rare; do not keep their memory for the client's life. */
#define KP_KEEP_RESPONSE_BYTES (64 * 1024)

static char header_content_type[] = "Content-Type: application/json";
static char header_accept[] = "Accept: application/json";
static char header_no_expect[] = "Expect:"; /* saves a round trip per large body */

static int buf_reserve(kp_buf *b, size_t need)
{
  size_t cap = b->cap ? b->cap : 256;
  char *p;
  if (need <= b->cap)
    return 0;
  while (cap < need)
    cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
  p = realloc(b->data, cap);
  if (p == NULL)
    return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}

static void buf_free(kp_buf *b)
{
  if (b->data != NULL) {
    volatile char *p = b->data;
    size_t i;
    for (i = 0; i < b->cap; i++)
      p[i] = 0;
    free(b->data);
  }
  b->data = NULL;
  b->len = b->cap = 0;
}

static size_t read_body(char *dst, size_t size, size_t nmemb, void *ud)
{
  kp_conn *k = ud;
  size_t room = size * nmemb, left = k->body_len - k->body_pos;
  size_t n = left < room ? left : room;
  memcpy(dst, k->body + k->body_pos, n);
  k->body_pos += n;
  if (n > 0)
    k->body_started = 1;
  return n;
}

/* libcurl rewinds the body only to send the request again: on a reused
 * connection that closed without an answer it silently resends once. The
 * first copy may have been applied, so the caller must know. */
static int seek_body(void *ud, curl_off_t offset, int origin)
{
  kp_conn *k = ud;
  if (origin != SEEK_SET || offset < 0 || (curl_off_t)k->body_len < offset)
    return CURL_SEEKFUNC_CANTSEEK;
  if (k->body_pos > 0)
    k->rewinds++;
  k->body_pos = (size_t)offset;
  k->response.len = 0;
  return CURL_SEEKFUNC_OK;
}

static size_t write_response(char *src, size_t size, size_t nmemb, void *ud)
{
  kp_conn *k = ud;
  size_t n = size * nmemb;
  if (n > k->max_response_bytes - k->response.len) {
    k->too_large = 1;
    return 0; /* aborts the transfer: the rest is never read */
  }
  if (buf_reserve(&k->response, k->response.len + n) != 0) {
    k->out_of_memory = 1;
    return 0;
  }
  memcpy(k->response.data + k->response.len, src, n);
  k->response.len += n;
  return n;
}

int kp_conn_init(kp_conn *k)
{
  CURL *e;
  int i;
  kp_global_init();
  e = k->easy = curl_easy_init();
  if (e == NULL)
    return -1;
  k->headers[0].data = k->id_header;
  k->headers[1].data = NULL; /* the token header, set per call */
  k->headers[2].data = header_content_type;
  k->headers[3].data = header_accept;
  k->headers[4].data = header_no_expect;
  for (i = 0; i < 4; i++)
    k->headers[i].next = &k->headers[i + 1];
  k->headers[4].next = NULL;
  if (curl_easy_setopt(e, CURLOPT_ERRORBUFFER, k->errbuf) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_READFUNCTION, read_body) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_READDATA, k) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, seek_body) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_SEEKDATA, k) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_response) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEDATA, k) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HTTPHEADER, k->headers) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK)
    return -1;
  return 0;
}

void kp_conn_close(kp_conn *k)
{
  if (k->easy != NULL)
    curl_easy_cleanup(k->easy);
  k->easy = NULL;
  buf_free(&k->token_header);
  buf_free(&k->response);
}

static int set_token_header(kp_conn *k, const char *token, size_t len)
{
  static const char prefix[] = "X-Auth-Token: ";
  const size_t plen = sizeof prefix - 1;
  kp_buf *b = &k->token_header;
  if (b->len == plen + len && memcmp(b->data + plen, token, len) == 0)
    return 0; /* the same token as the last call: the usual case */
  if (buf_reserve(b, plen + len + 1) != 0)
    return -1;
  memcpy(b->data, prefix, plen);
  memcpy(b->data + plen, token, len);
  b->data[plen + len] = '\0';
  b->len = plen + len;
  k->headers[1].data = b->data;
  return 0;
}

int kp_conn_prepare(kp_conn *k, const char *token, size_t token_len,
                    const char *request_id, size_t request_id_len,
                    const char *body, size_t body_len, long timeout_ms)
{
  static const char prefix[] = "x-request-id: ";
  if (set_token_header(k, token, token_len) != 0)
    return -1;
  memcpy(k->id_header, prefix, sizeof prefix - 1);
  memcpy(k->id_header + sizeof prefix - 1, request_id, request_id_len);
  k->id_header[sizeof prefix - 1 + request_id_len] = '\0';
  k->body = body;
  k->body_len = body_len;
  k->body_pos = 0;
  k->rewinds = k->body_started = 0;
  k->too_large = k->out_of_memory = 0;
  k->response.len = 0;
  k->errbuf[0] = '\0';
  curl_easy_setopt(k->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  curl_easy_setopt(k->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
  return 0;
}

void kp_conn_finish(kp_conn *k, CURLcode code, kp_result *r)
{
  long status = 0;
  curl_off_t retry_after = 0;
  curl_easy_getinfo(k->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(k->easy, CURLINFO_RETRY_AFTER, &retry_after);
  r->code = code;
  r->status = status;
  r->retry_after = retry_after > 0 ? retry_after : 0;
  r->attempts = 1 + k->rewinds;
  r->sent = k->body_started;
  r->too_large = k->too_large || code == CURLE_FILESIZE_EXCEEDED;
  r->out_of_memory = k->out_of_memory;
  r->body = k->response.data != NULL ? k->response.data : "";
  r->body_len = k->response.len;
  r->curl_message = k->errbuf[0] ? k->errbuf : curl_easy_strerror(code);
  k->body = NULL;
}

/* Called once the result has been turned into Lua values. */
void kp_conn_release_response(kp_conn *k)
{
  if (k->response.cap > KP_KEEP_RESPONSE_BYTES)
    buf_free(&k->response);
  k->response.len = 0;
}

void kp_conn_perform(kp_conn *k, kp_result *r)
{
  kp_conn_finish(k, curl_easy_perform(k->easy), r);
}
