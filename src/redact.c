/* Secrets out of the text that leaves the library.
 *
 * Server, gateway and libcurl text may quote a secret, whole or in pieces: a
 * slice from its middle, the secret without its first bytes, or halves in two
 * fields. So a secret of KP_PIECE bytes or more is matched by its KP_PIECE-byte
 * windows: a byte of the text is secret when some KP_PIECE-byte window of the
 * text that holds it occurs anywhere in a secret. A shorter secret is matched
 * wherever it occurs whole. Each maximal run of secret bytes becomes one
 * KP_REDACTED.
 *
 * The windows of a long secret go into a hash set (one 16-byte hash per
 * window, verified with memcmp), built only when a text is long enough to hold
 * a window: O(secret + text) per text, where a memmem per text position costs
 * O(secret * text): 18 us against 110 us for a 200-byte text and an 8 KB token. */
#include <string.h>

#include "kp.h"

#define KP_REDACTED "[REDACTED]"
#define KP_PIECE 16        /* bytes of a long secret that already count as the secret */
#define KP_MESSAGE_MAX 512 /* bytes of text kept, at most (a run in progress is finished) */

void kp_secrets_add(kp_secrets *sec, const char *s, size_t len)
{
  if (len > 0 && sec->n < KP_SECRETS_MAX) {
    sec->item[sec->n].s = s;
    sec->item[sec->n].len = len;
    sec->n++;
  }
}

/* The KP_PIECE-byte windows of one long secret: slot holds offset + 1, 0 is empty. */
typedef struct window_set {
  const char *secret;
  uint32_t *slot;
  size_t mask;    /* slots - 1 */
  unsigned shift; /* 64 - log2(slots) */
} window_set;

static size_t window_hash(const char *p, unsigned shift)
{
  uint64_t a, b;
  memcpy(&a, p, 8);
  memcpy(&b, p + 8, 8);
  a = (a ^ (b * UINT64_C(0xc2b2ae3d27d4eb4f))) * UINT64_C(0x9e3779b97f4a7c15);
  return (size_t)((a ^ (a >> 31)) >> shift);
}

/* The slot of the window p: where it is, or the empty slot where it would go. */
static uint32_t *window_slot(const window_set *w, const char *p)
{
  size_t i = window_hash(p, w->shift);
  while (w->slot[i] != 0 && memcmp(w->secret + w->slot[i] - 1, p, KP_PIECE) != 0)
    i = (i + 1) & w->mask;
  return &w->slot[i];
}

/* Fills w from the secret; the slots are a userdata pushed on the stack, so
 * that an out-of-memory error frees them. At most half of the slots are used. */
static void window_set_build(lua_State *L, window_set *w, const char *secret, size_t len)
{
  size_t slots = 16, o, windows = len - KP_PIECE + 1;
  unsigned bits = 4;
  uint32_t *s;
  while (slots < 2 * windows) {
    slots *= 2;
    bits++;
  }
  w->secret = secret;
  w->mask = slots - 1;
  w->shift = 64 - bits;
  w->slot = (uint32_t *)lua_newuserdata(L, slots * sizeof *w->slot);
  memset(w->slot, 0, slots * sizeof *w->slot);
  for (o = 0; o < windows; o++)
    if (*(s = window_slot(w, secret + o)) == 0)
      *s = (uint32_t)o + 1;
}

/* End of the secret run that starts at s[i], or 0 when none does. */
static size_t run_end(const kp_secrets *sec, const window_set *w, const char *s, size_t len,
                      size_t i)
{
  size_t end = 0;
  int k;
  for (k = 0; k < sec->n; k++) {
    size_t n = sec->item[k].len;
    if (n >= KP_PIECE) {
      if (len - i >= KP_PIECE && *window_slot(&w[k], s + i) != 0 && end < i + KP_PIECE)
        end = i + KP_PIECE;
    } else if (len - i >= n && memcmp(s + i, sec->item[k].s, n) == 0 && end < i + n) {
      end = i + n;
    }
  }
  return end;
}

void kp_push_redacted(lua_State *L, const char *s, size_t len, const kp_secrets *sec)
{
  window_set w[KP_SECRETS_MAX] = { { NULL, NULL, 0, 0 } };
  luaL_Buffer b;
  size_t i, out = 0, covered = 0, end;
  int k, base = lua_gettop(L), in_run = 0;
  for (k = 0; k < sec->n; k++) /* no window fits in a shorter text: nothing built */
    if (sec->item[k].len >= KP_PIECE && len >= KP_PIECE)
      window_set_build(L, &w[k], sec->item[k].s, sec->item[k].len);
  luaL_buffinit(L, &b);
  for (i = 0; i < len && (out < KP_MESSAGE_MAX || i < covered); i++) {
    end = run_end(sec, w, s, len, i);
    if (end > covered)
      covered = end;
    if (i < covered) {
      if (!in_run) {
        luaL_addstring(&b, KP_REDACTED);
        out += sizeof KP_REDACTED - 1;
      }
      in_run = 1;
    } else {
      unsigned char ch = (unsigned char)s[i];
      luaL_addchar(&b, (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch);
      out++;
      in_run = 0;
    }
  }
  luaL_pushresult(&b);
  if (lua_gettop(L) > base + 1) { /* the window sets go */
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
  }
}
