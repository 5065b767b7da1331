/* What the C floor programs share: the same request a koophone call sends
 * (headers, body) and the same minimal check of the answer. */
#ifndef FLOOR_COMMON_H
#define FLOOR_COMMON_H

#include <stddef.h>
#include <curl/curl.h>

#define FLOOR_UUID_LEN 36

typedef struct floor_req {
  CURL *easy;
  struct curl_slist *headers;
  char *id; /* points into the x-request-id header node: rewritten per call */
  char body[16384];
  size_t body_len;
  char *resp;
  size_t resp_len, resp_cap;
} floor_req;

/* Exits with a message when the file cannot be read; the result ends in NUL. */
char *floor_read_token(const char *path);
/* Sets up r->easy for url with the token; cafile may be NULL. Exits on failure. */
void floor_req_init(floor_req *r, const char *url, const char *token, const char *cafile);
void floor_req_free(floor_req *r);
/* A new request id and the body of npairs pairs: user_id "<user_prefix><k>",
 * instance_id "bench%04d" (k = 1..npairs), as the bench's Lua clients send them. */
void floor_req_next(floor_req *r, const char *user_prefix, int npairs);
/* 0 when the answer is HTTP 200, error_code "0", and npairs jobs whose first
 * is for bench0001. */
int floor_req_check(floor_req *r, int npairs);
double floor_now(void);

#endif
