/* Shared part of the C floor programs; see floor_common.h. */
#include "floor_common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static void die(const char *what)
{
  fprintf(stderr, "floor: %s\n", what);
  exit(2);
}

char *floor_read_token(const char *path)
{
  FILE *f = fopen(path, "rb");
  char *s = malloc(65536);
  size_t n;
  if (f == NULL || s == NULL)
    die("cannot read the token file");
  n = fread(s, 1, 65535, f);
  fclose(f);
  while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
    n--;
  s[n] = '\0';
  return s;
}

static size_t on_data(char *src, size_t size, size_t nmemb, void *ud)
{
  floor_req *r = ud;
  size_t n = size * nmemb;
  if (r->resp_len + n + 1 > r->resp_cap) {
    size_t cap = (r->resp_len + n + 1) * 2;
    char *p = realloc(r->resp, cap);
    if (p == NULL)
      return 0;
    r->resp = p;
    r->resp_cap = cap;
  }
  memcpy(r->resp + r->resp_len, src, n);
  r->resp_len += n;
  return n;
}

void floor_req_init(floor_req *r, const char *url, const char *token, const char *cafile)
{
  static const char id_prefix[] = "x-request-id: ";
  char line[70000];
  struct curl_slist *h = NULL, *node;
  memset(r, 0, sizeof *r);
  r->easy = curl_easy_init();
  if (r->easy == NULL)
    die("curl_easy_init failed");
  snprintf(line, sizeof line, "X-Auth-Token: %s", token);
  h = curl_slist_append(h, line);
  snprintf(line, sizeof line, "%s%036d", id_prefix, 0); /* placeholder of the right length */
  h = curl_slist_append(h, line);
  h = curl_slist_append(h, "Content-Type: application/json");
  h = curl_slist_append(h, "Accept: application/json");
  h = curl_slist_append(h, "Expect:");
  if (h == NULL)
    die("out of memory");
  r->headers = h;
  node = h->next;
  r->id = node->data + sizeof id_prefix - 1;
  curl_easy_setopt(r->easy, CURLOPT_URL, url);
  curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(r->easy, CURLOPT_USERAGENT, "koophone-lua/0.1.0 libcurl/" LIBCURL_VERSION);
  curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(r->easy, CURLOPT_POST, 1L);
  curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
  curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, 30000L);
  curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
  if (cafile != NULL)
    curl_easy_setopt(r->easy, CURLOPT_CAINFO, cafile);
}

void floor_req_free(floor_req *r)
{
  curl_easy_cleanup(r->easy);
  curl_slist_free_all(r->headers);
  free(r->resp);
}

static void put_hex(char *out, uint64_t v, int digits)
{
  static const char hex[] = "0123456789abcdef";
  while (digits-- > 0) {
    out[digits] = hex[v & 15];
    v >>= 4;
  }
}

static uint64_t mix(uint64_t z)
{
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* UUIDv4 from a key read once and a counter, as koophone does: no system
 * call per id. */
static void next_uuid(char *out)
{
  static uint64_t key[2], counter;
  uint64_t hi, lo;
  if (key[0] == 0 && getrandom(key, sizeof key, 0) != sizeof key)
    die("getrandom failed");
  counter += 0x9e3779b97f4a7c15ULL;
  hi = (mix(key[0] + counter) & ~0xf000ULL) | 0x4000ULL;
  lo = (mix(key[1] ^ counter) & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
  put_hex(out, hi >> 32, 8);
  out[8] = '-';
  put_hex(out + 9, (hi >> 16) & 0xffff, 4);
  out[13] = '-';
  put_hex(out + 14, hi & 0xffff, 4);
  out[18] = '-';
  put_hex(out + 19, lo >> 48, 4);
  out[23] = '-';
  put_hex(out + 24, lo & 0xffffffffffffULL, 12);
}

void floor_req_next(floor_req *r, const char *user_prefix, int npairs)
{
  size_t n = 0;
  int k;
  next_uuid(r->id);
  n += (size_t)snprintf(r->body, sizeof r->body, "{\"user_instances\":[");
  for (k = 1; k <= npairs; k++)
    n += (size_t)snprintf(r->body + n, sizeof r->body - n,
                          "%s{\"user_id\":\"%s%d\",\"instance_id\":\"bench%04d\"}",
                          k > 1 ? "," : "", user_prefix, k, k);
  n += (size_t)snprintf(r->body + n, sizeof r->body - n, "]}");
  r->body_len = n;
  r->resp_len = 0;
  curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long)n);
}

int floor_req_check(floor_req *r, int npairs)
{
  long status = 0;
  int jobs = 0;
  const char *p;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200 || r->resp == NULL)
    return -1;
  r->resp[r->resp_len] = '\0';
  if (strstr(r->resp, "\"error_code\":\"0\"") == NULL ||
      strstr(r->resp, "{\"instance_id\":\"bench0001\",\"job_id\":\"") == NULL)
    return -1;
  for (p = r->resp; (p = strstr(p, "\"job_id\":\"")) != NULL; p++)
    jobs++;
  return jobs == npairs ? 0 : -1;
}

double floor_now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}
