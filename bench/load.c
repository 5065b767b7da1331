/* Concurrent load on one HTTP endpoint: REQUESTS POSTs of BODY_FILE through
 * curl_multi with CONCURRENCY kept-alive connections, each one sending its next
 * request as soon as the previous answer is in (closed loop, like wrk).
 * Usage: load URL BODY_FILE CONCURRENCY REQUESTS
 * Prints "rps <requests per second>", "p50_ms", "p99_ms", "max_ms" and
 * "non200 <answers that were not HTTP 200>". Loopback benchmarks only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>

#define MAX_CONC 256
#define MAX_REQUESTS 1000000L

typedef struct conn {
  CURL *easy;
  double started;
} conn;

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t discard(char *p, size_t size, size_t nmemb, void *ud)
{
  (void)p;
  (void)ud;
  return size * nmemb;
}

static int by_value(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static char *read_file(const char *path, long *len)
{
  FILE *f = fopen(path, "rb");
  char *s = NULL;
  if (f != NULL && fseek(f, 0, SEEK_END) == 0 && (*len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0
      && (s = malloc((size_t)*len + 1)) != NULL && fread(s, 1, (size_t)*len, f) != (size_t)*len) {
    free(s);
    s = NULL;
  }
  if (f != NULL)
    fclose(f);
  return s;
}

static void start(CURLM *m, conn *c)
{
  c->started = now();
  curl_multi_add_handle(m, c->easy);
}

int main(int argc, char **argv)
{
  static conn conns[MAX_CONC];
  struct curl_slist *headers;
  long body_len = 0, requests, next = 0, done = 0, non200 = 0;
  int conc, i, running = 0, rc = 0;
  double t0, *lat;
  char *body;
  CURLM *m;
  if (argc != 5) {
    fprintf(stderr, "usage: load URL BODY_FILE CONCURRENCY REQUESTS\n");
    return 2;
  }
  conc = atoi(argv[3]);
  requests = atol(argv[4]);
  if (conc < 1 || conc > MAX_CONC || requests < 1 || requests > MAX_REQUESTS) {
    fprintf(stderr, "load: 1 <= CONCURRENCY <= %d, 1 <= REQUESTS <= %ld\n", MAX_CONC, MAX_REQUESTS);
    return 2;
  }
  body = read_file(argv[2], &body_len);
  lat = malloc((size_t)requests * sizeof *lat);
  if (body == NULL || lat == NULL) {
    fprintf(stderr, "load: cannot read %s\n", argv[2]);
    free(body);
    free(lat);
    return 2;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  headers = curl_slist_append(NULL, "Content-Type: application/json");
  m = curl_multi_init();
  curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conc);
  for (i = 0; i < conc; i++) {
    conns[i].easy = curl_easy_init();
    curl_easy_setopt(conns[i].easy, CURLOPT_URL, argv[1]);
    curl_easy_setopt(conns[i].easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(conns[i].easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(conns[i].easy, CURLOPT_POSTFIELDSIZE, body_len);
    curl_easy_setopt(conns[i].easy, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(conns[i].easy, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(conns[i].easy, CURLOPT_PRIVATE, &conns[i]);
  }
  t0 = now();
  for (i = 0; i < conc && next < requests; i++, next++)
    start(m, &conns[i]);
  while (done < requests) {
    CURLMsg *msg;
    int left;
    curl_multi_perform(m, &running);
    while ((msg = curl_multi_info_read(m, &left)) != NULL) {
      conn *c;
      long status = 0;
      if (msg->msg != CURLMSG_DONE)
        continue;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
      if (msg->data.result != CURLE_OK) {
        fprintf(stderr, "load: %s\n", curl_easy_strerror(msg->data.result));
        rc = 1;
        requests = done; /* stop: a transfer failed */
        break;
      }
      curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
      non200 += status != 200;
      lat[done++] = (now() - c->started) * 1000;
      curl_multi_remove_handle(m, c->easy);
      if (next < requests) {
        next++;
        start(m, c);
      }
    }
    if (done < requests)
      curl_multi_poll(m, NULL, 0, 1000, NULL);
  }
  if (done > 0) {
    double secs = now() - t0;
    qsort(lat, (size_t)done, sizeof *lat, by_value);
    printf("requests %ld\nseconds %.6f\nrps %.1f\np50_ms %.3f\np99_ms %.3f\nmax_ms %.3f\nnon200 %ld\n", done,
           secs, (double)done / secs, lat[done / 2], lat[(done * 99) / 100],
           lat[done - 1], non200);
  }
  for (i = 0; i < conc; i++) {
    curl_multi_remove_handle(m, conns[i].easy);
    curl_easy_cleanup(conns[i].easy);
  }
  curl_multi_cleanup(m);
  curl_slist_free_all(headers);
  curl_global_cleanup();
  free(lat);
  free(body);
  return rc;
}
