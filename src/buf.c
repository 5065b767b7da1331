/* Growable byte buffers (kp_buf): one way to grow them and one way to free
 * them. They hold tokens, signatures and canonical requests, so freeing
 * zeroes the whole capacity first. */
#include <stdlib.h>

#include "kp.h"

int kp_buf_reserve(kp_buf *b, size_t need)
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

void kp_buf_free(kp_buf *b)
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
