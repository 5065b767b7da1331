/* The C floor of a sequential call: one reused libcurl easy handle sending
 * what koophone sends (same headers, same body) and checking each answer.
 * Usage: floor URL CALLS WARMUP TOKEN_FILE [CAFILE]
 * Prints "us_per_call <microseconds>" (wall clock) and "cpu_us_per_call
 * <microseconds>" (process CPU time) for the CALLS timed calls. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "floor_common.h"

static void call(floor_req *r)
{
  CURLcode rc;
  floor_req_next(r, "u-", 1);
  rc = curl_easy_perform(r->easy);
  if (rc != CURLE_OK || floor_req_check(r, 1) != 0) {
    fprintf(stderr, "floor: bad answer (%s)\n", curl_easy_strerror(rc));
    exit(1);
  }
}

int main(int argc, char **argv)
{
  floor_req r;
  long calls, warmup, i;
  double t0;
  clock_t c0;
  char *token;
  if (argc < 5) {
    fprintf(stderr, "usage: floor URL CALLS WARMUP TOKEN_FILE [CAFILE]\n");
    return 2;
  }
  calls = atol(argv[2]);
  warmup = atol(argv[3]);
  token = floor_read_token(argv[4]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  floor_req_init(&r, argv[1], token, argc > 5 ? argv[5] : NULL);
  for (i = 0; i < warmup; i++)
    call(&r);
  t0 = floor_now();
  c0 = clock();
  for (i = 0; i < calls; i++)
    call(&r);
  printf("us_per_call %.3f\ncpu_us_per_call %.3f\n", (floor_now() - t0) * 1e6 / (calls > 0 ? calls : 1),
         (double)(clock() - c0) * 1e6 / CLOCKS_PER_SEC / (calls > 0 ? calls : 1));
  floor_req_free(&r);
  free(token);
  curl_global_cleanup();
  return 0;
}
