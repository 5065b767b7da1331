/* Transport: one reused libcurl easy handle per connection slot.
 *
 * Everything that does not change between calls is set once in
 * kp_conn_init; kp_conn_prepare sets only what a call changes. The header
 * list is made of our own nodes, so a call rewrites two strings instead of
 * allocating a new list. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kp.h"

/* Big responses are rare; do not keep their memory for the client's life. */
#define KP_KEEP_RESPONSE_BYTES (64 * 1024)

static char header_content_type[] = "Content-Type: application/json";
static char header_accept[] = "Accept: application/json";
static char header_no_expect[] = "Expect:"; /* saves a round trip per large body */

/* libcurl calls this once the connection (and TLS) is up, right before it
 * sends the request, and again when it sends the request a second time by
 * itself: on a reused connection that closed without an answer it silently
 * resends once. The first copy may have been applied, so the caller must
 * know how many copies left. */
static int before_request(void *ud, char *ip, char *local_ip, int port, int local_port)
{
  kp_conn *k = ud;
  (void)ip, (void)local_ip, (void)port, (void)local_port;
  k->attempts++;
  k->response.len = 0;
  k->subject_token.len = 0;
  return CURL_PREREQFUNC_OK;
}

/* Keeps the X-Subject-Token answer header (IAM's token), up to
 * KP_SUBJECT_TOKEN_MAX bytes; other headers are not kept. */
static size_t read_header(char *src, size_t size, size_t nmemb, void *ud)
{
  static const char name[] = "X-Subject-Token:";
  kp_conn *k = ud;
  size_t n = size * nmemb, len;
  const char *v = src + sizeof name - 1, *end = src + n;
  if (n < sizeof name || (src[0] != 'X' && src[0] != 'x') ||
      strncasecmp(src, name, sizeof name - 1) != 0)
    return n;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
    end--;
  len = (size_t)(end - v);
  k->subject_token.len = 0;
  if (len > KP_SUBJECT_TOKEN_MAX) {
    k->subject_too_large = 1;
    return n; /* no token: the answer is then refused as malformed */
  }
  if (kp_buf_reserve(&k->subject_token, len + 1) != 0)
    return n;
  memcpy(k->subject_token.data, v, len);
  k->subject_token.data[len] = '\0';
  k->subject_token.len = len;
  return n;
}

static size_t write_response(char *src, size_t size, size_t nmemb, void *ud)
{
  kp_conn *k = ud;
  size_t n = size * nmemb;
  if (n > k->max_response_bytes - k->response.len) {
    k->too_large = 1;
    return 0; /* aborts the transfer: the rest is never read */
  }
  if (kp_buf_reserve(&k->response, k->response.len + n) != 0) {
    k->out_of_memory = 1;
    return 0;
  }
  memcpy(k->response.data + k->response.len, src, n);
  k->response.len += n;
  return n;
}

/* The CURLOPT_XFERINFOFUNCTION of every handle, called about once a second while idle and on
 * every transfer of data: non-zero aborts the transfer (CURLE_ABORTED_BY_CALLBACK) once the
 * process-wide flag or the request's cancel handle is raised. The deadline needs no check
 * here: it cuts the request's CURLOPT_TIMEOUT_MS (call.c). */
static int progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                    curl_off_t ulnow)
{
  const kp_conn *k = ud;
  (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
  return kp_interrupted() || kp_cancel_raised(k->cancel);
}

/* The last credentials' header in use is followed by the fixed ones, from
 * Content-Type on, or from Accept for a GET (no body, no Content-Type). */
static void link_fixed_headers(kp_conn *k)
{
  k->headers[k->auth_last].next = &k->headers[KP_AUTH_HEADERS_MAX + (k->get ? 2 : 1)];
}

/* Points the handle's callbacks, error buffer and header list at k: what a
 * handle copied by curl_easy_duphandle would otherwise share with its source. */
static int bind_handle(kp_conn *k)
{
  CURL *e = k->easy;
  int i;
  k->headers[0].data = k->id_header;
  k->headers[1].data = k->token_header.data; /* the credentials' headers, set per call */
  k->headers[KP_AUTH_HEADERS_MAX + 1].data = header_content_type;
  k->headers[KP_AUTH_HEADERS_MAX + 2].data = header_accept;
  k->headers[KP_AUTH_HEADERS_MAX + 3].data = header_no_expect;
  for (i = 0; i < KP_AUTH_HEADERS_MAX + 3; i++)
    k->headers[i].next = &k->headers[i + 1];
  k->headers[KP_AUTH_HEADERS_MAX + 3].next = NULL;
  link_fixed_headers(k);
  if (curl_easy_setopt(e, CURLOPT_ERRORBUFFER, k->errbuf) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, before_request) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PREREQDATA, k) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_response) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_WRITEDATA, k) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, read_header) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HEADERDATA, k) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_XFERINFODATA, k) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_HTTPHEADER, k->headers) != CURLE_OK)
    return -1;
  return 0;
}

int kp_conn_init(kp_conn *k)
{
  CURL *e;
  kp_global_init();
  e = k->easy = curl_easy_init();
  if (e == NULL || bind_handle(k) != 0)
    return -1;
  if (curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK ||
      /* an interruption or a cancel aborts the transfer; copied by duphandle */
      curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, progress) != CURLE_OK ||
      curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L) != CURLE_OK)
    return -1;
  return 0;
}

int kp_conn_clone(kp_conn *k, const kp_conn *from)
{
  k->max_response_bytes = from->max_response_bytes;
  k->easy = curl_easy_duphandle(from->easy);
  return k->easy != NULL ? bind_handle(k) : -1;
}

void kp_conn_close(kp_conn *k)
{
  if (k->multi != NULL)
    curl_multi_cleanup(k->multi); /* no handle is in it between two requests */
  k->multi = NULL;
  if (k->easy != NULL)
    curl_easy_cleanup(k->easy);
  k->easy = NULL;
  kp_buf_free(&k->token_header);
  kp_buf_free(&k->auth_headers);
  kp_buf_free(&k->subject_token);
  kp_buf_free(&k->sign);
  kp_buf_free(&k->response);
  kp_buf_free(&k->url);
  k->method = NULL;
}

static int set_token_header(kp_conn *k, const char *token, size_t len)
{
  static const char prefix[] = "X-Auth-Token: ";
  const size_t plen = sizeof prefix - 1;
  kp_buf *b = &k->token_header;
  k->headers[0].next = &k->headers[1];
  k->auth_last = 1;
  link_fixed_headers(k);
  if (b->len != plen + len || memcmp(b->data + plen, token, len) != 0) {
    if (kp_buf_reserve(b, plen + len + 1) != 0)
      return -1;
    memcpy(b->data, prefix, plen);
    memcpy(b->data + plen, token, len);
    b->data[plen + len] = '\0';
    b->len = plen + len;
  } /* else the same token as the last call: the usual case */
  k->headers[1].data = b->data;
  return 0;
}

int kp_conn_set_auth_headers(kp_conn *k, const char *const nv[], int n)
{
  kp_buf *b = &k->auth_headers;
  size_t need = 0, at = 0, len;
  int i, used = 0;
  for (i = 0; i < 2 * n; i += 2)
    need += nv[i + 1] != NULL ? strlen(nv[i]) + 2 + strlen(nv[i + 1]) + 1 : 0;
  if (kp_buf_reserve(b, need) != 0)
    return -1;
  for (i = 0; i < 2 * n && used < KP_AUTH_HEADERS_MAX; i += 2) {
    if (nv[i + 1] == NULL)
      continue;
    k->headers[1 + used].data = b->data + at;
    k->headers[1 + used].next = &k->headers[2 + used];
    used++;
    len = strlen(nv[i]);
    memcpy(b->data + at, nv[i], len);
    memcpy(b->data + at + len, ": ", 2);
    at += len + 2;
    len = strlen(nv[i + 1]) + 1;
    memcpy(b->data + at, nv[i + 1], len);
    at += len;
  }
  b->len = at;
  k->headers[0].next = &k->headers[1];
  k->auth_last = used;
  link_fixed_headers(k);
  return 0;
}

/* The URL is base + path, set only when it changes (libcurl copies and
 * parses it again on every set). */
static int set_url(kp_conn *k, const char *base, const char *path)
{
  size_t blen = strlen(base), plen = strlen(path);
  kp_buf *b = &k->url;
  if (b->len == blen + plen && memcmp(b->data, base, blen) == 0 &&
      memcmp(b->data + blen, path, plen) == 0)
    return 0;
  if (kp_buf_reserve(b, blen + plen + 1) != 0)
    return -1;
  memcpy(b->data, base, blen);
  memcpy(b->data + blen, path, plen + 1);
  b->len = blen + plen;
  return curl_easy_setopt(k->easy, CURLOPT_URL, b->data) == CURLE_OK ? 0 : -1;
}

/* Only when the method changes: a request without a body is a plain GET
 * (CURLOPT_HTTPGET also drops the POST state) and its header list skips
 * Content-Type; one with a body is a POST of it. */
static int set_method(kp_conn *k, const kp_request *req)
{
  int get = req->body == NULL;
  if (curl_easy_setopt(k->easy, get ? CURLOPT_HTTPGET : CURLOPT_POST, 1L) != CURLE_OK ||
      curl_easy_setopt(k->easy, CURLOPT_CUSTOMREQUEST, req->method) != CURLE_OK)
    return -1;
  k->get = get;
  link_fixed_headers(k);
  k->method = req->method;
  return 0;
}

int kp_conn_prepare(kp_conn *k, const kp_request *req)
{
  static const char prefix[] = "x-request-id: ";
  if (set_url(k, req->base, req->path) != 0 ||
      (req->token != NULL && set_token_header(k, req->token, req->token_len) != 0))
    return -1;
  if (k->method != req->method && set_method(k, req) != 0)
    return -1;
  memcpy(k->id_header, prefix, sizeof prefix - 1);
  memcpy(k->id_header + sizeof prefix - 1, req->request_id, req->request_id_len);
  k->id_header[sizeof prefix - 1 + req->request_id_len] = '\0';
  k->attempts = 0;
  k->cancel = req->cancel;
  k->too_large = k->out_of_memory = k->subject_too_large = 0;
  k->response.len = 0;
  k->subject_token.len = 0;
  k->errbuf[0] = '\0';
  /* The body is sent from the caller's string, without a copy, and in the
   * same packet as the headers (a read callback would cost a second send
   * and, on loopback, a second wake-up of the server). Size first: setting
   * it drops a copied body, which this handle never has. */
  if (req->body != NULL) {
    curl_easy_setopt(k->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    curl_easy_setopt(k->easy, CURLOPT_POSTFIELDS, req->body);
  }
  curl_easy_setopt(k->easy, CURLOPT_TIMEOUT_MS, req->timeout_ms);
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
  r->attempts = k->attempts > 0 ? k->attempts : 1;
  r->sent = k->attempts > 0; /* false: DNS, connect or TLS failed first */
  r->too_large = k->too_large || code == CURLE_FILESIZE_EXCEEDED;
  r->out_of_memory = k->out_of_memory;
  r->body = k->response.data != NULL ? k->response.data : "";
  r->body_len = k->response.len;
  r->subject_token = k->subject_token.len > 0 ? k->subject_token.data : NULL;
  r->subject_token_len = k->subject_token.len;
  r->subject_too_large = k->subject_too_large;
  r->cancelled = code == CURLE_ABORTED_BY_CALLBACK && kp_cancel_raised(k->cancel);
  r->curl_message = k->errbuf[0] ? k->errbuf : curl_easy_strerror(code);
  r->easy = k->easy;
}

/* Called once the result has been turned into Lua values. */
void kp_conn_release_response(kp_conn *k)
{
  if (k->response.cap > KP_KEEP_RESPONSE_BYTES)
    kp_buf_free(&k->response);
  k->response.len = 0;
  if (k->subject_token.cap > 0)
    kp_buf_free(&k->subject_token); /* a secret: zeroed as soon as it is in Lua */
}

/* A request with a cancel handle runs on the connection's own multi handle, polled in slices
 * of KP_CANCEL_SLICE_MS with the flags checked between them: curl_easy_perform may wait a whole
 * second between two progress callbacks while the server is silent, too late for a host that
 * cancels to unblock its caller. Removing the handle aborts the transfer. */
#define KP_CANCEL_SLICE_MS 20

static CURLcode perform_cancellable(kp_conn *k)
{
  CURLcode code = CURLE_ABORTED_BY_CALLBACK;
  CURLMsg *msg;
  int running = 1, left;
  if (k->multi == NULL && (k->multi = curl_multi_init()) == NULL)
    return curl_easy_perform(k->easy);
  if (curl_multi_add_handle(k->multi, k->easy) != CURLM_OK)
    return CURLE_OUT_OF_MEMORY;
  while (running && !kp_interrupted() && !kp_cancel_raised(k->cancel)) {
    if (curl_multi_perform(k->multi, &running) != CURLM_OK) {
      code = CURLE_OUT_OF_MEMORY; /* libcurl's own failure: nothing better to say */
      break;
    }
    if (running && curl_multi_poll(k->multi, NULL, 0, KP_CANCEL_SLICE_MS, NULL) != CURLM_OK) {
      code = CURLE_OUT_OF_MEMORY;
      break;
    }
  }
  while ((msg = curl_multi_info_read(k->multi, &left)) != NULL)
    if (msg->msg == CURLMSG_DONE && msg->easy_handle == k->easy)
      code = msg->data.result;
  curl_multi_remove_handle(k->multi, k->easy);
  return code;
}

void kp_conn_perform(kp_conn *k, kp_result *r)
{
  kp_conn_finish(k, k->cancel != NULL ? perform_cancellable(k) : curl_easy_perform(k->easy), r);
}
