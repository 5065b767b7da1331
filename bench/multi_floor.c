/* The C floor of the bulk run: REQUESTS requests of PAIRS pairs through
 * curl_multi with CONCURRENCY reused easy handles, each answer checked.
 * Usage: multi_floor URL REQUESTS PAIRS CONCURRENCY TOKEN_FILE [CAFILE]
 * Prints "seconds <s>" for the whole run. */
#include <stdio.h>
#include <stdlib.h>

#include "floor_common.h"

#define MAX_CONC 64

/* Batch b carries users "u<b>-1".. "u<b>-PAIRS", as bench/bulk.lua makes them. */
static void launch(CURLM *m, floor_req *r, long batch, int pairs)
{
  char prefix[32];
  snprintf(prefix, sizeof prefix, "u%ld-", batch);
  floor_req_next(r, prefix, pairs);
  curl_multi_add_handle(m, r->easy);
}

int main(int argc, char **argv)
{
  static floor_req reqs[MAX_CONC];
  long requests, next = 0, done = 0;
  int pairs, conc, i, running = 0;
  double t0;
  char *token;
  CURLM *m;
  if (argc < 6) {
    fprintf(stderr, "usage: multi_floor URL REQUESTS PAIRS CONCURRENCY TOKEN_FILE [CAFILE]\n");
    return 2;
  }
  requests = atol(argv[2]);
  pairs = atoi(argv[3]);
  conc = atoi(argv[4]);
  if (conc < 1 || conc > MAX_CONC)
    return 2;
  token = floor_read_token(argv[5]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  m = curl_multi_init();
  curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conc);
  t0 = floor_now();
  for (i = 0; i < conc; i++) {
    floor_req_init(&reqs[i], argv[1], token, argc > 6 ? argv[6] : NULL);
    curl_easy_setopt(reqs[i].easy, CURLOPT_PRIVATE, &reqs[i]);
  }
  for (i = 0; i < conc && next < requests; i++)
    launch(m, &reqs[i], next++, pairs);
  while (done < requests) {
    CURLMsg *msg;
    int left;
    curl_multi_perform(m, &running);
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
      floor_req *r;
      if (msg->msg != CURLMSG_DONE)
        continue;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
      if (msg->data.result != CURLE_OK || floor_req_check(r, pairs) != 0) {
        fprintf(stderr, "multi_floor: bad answer (%s)\n", curl_easy_strerror(msg->data.result));
        return 1;
      }
      done++;
      curl_multi_remove_handle(m, r->easy);
      if (next < requests)
        launch(m, r, next++, pairs);
    }
    if (done < requests)
      curl_multi_poll(m, NULL, 0, 1000, NULL);
  }
  printf("seconds %.6f\n", floor_now() - t0);
  for (i = 0; i < conc; i++)
    floor_req_free(&reqs[i]);
  curl_multi_cleanup(m);
  free(token);
  curl_global_cleanup();
  return 0;
}
