/* What a fresh page of memory costs this machine: maps PAGES pages, writes
 * one byte to each (the kernel then has to supply and zero a page), and
 * prints "us_per_page <median over ROUNDS>". A run that grows its heap pays
 * this for every new page; on some virtual machines it dwarfs the work done
 * with the page. Usage: page_touch [PAGES [ROUNDS]] */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int by_value(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
  long pages = argc > 1 ? atol(argv[1]) : 2048, page = sysconf(_SC_PAGESIZE), i;
  int rounds = argc > 2 ? atoi(argv[2]) : 9, r;
  double us[64], t0;
  if (pages < 1 || rounds < 1 || rounds > 64)
    return 2;
  for (r = 0; r < rounds; r++) {
    volatile char *p = mmap(NULL, (size_t)(pages * page), PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      return 1;
    t0 = now();
    for (i = 0; i < pages; i++)
      p[i * page] = 1;
    us[r] = (now() - t0) / pages * 1e6;
    munmap((void *)p, (size_t)(pages * page));
  }
  qsort(us, (size_t)rounds, sizeof us[0], by_value);
  printf("us_per_page %.2f\n", us[rounds / 2]);
  return 0;
}
