/* core.pairset(): the set of (user_id, instance_id) pairs a bulk run has
 * seen, to spot rows that repeat an earlier pair. core.row_entry (rows.c)
 * adds each row's pair; #set is the number of pairs.
 *
 * A Lua table keyed by "user_id\0instance_id" costs ~80 bytes a pair (the
 * key string plus the table slot); a million-row file then needs ~80 MiB.
 * Here every pair is one record in a byte arena (its row number and key
 * bytes, varint-prefixed, ~25 bytes for typical ids) plus a 4-byte slot of
 * an open-addressing index (at most 3/4 full): ~30 MiB for a million pairs.
 * The set is exact: keys are compared byte for byte, so no pair is ever
 * taken for another. From Lua, set:add(u, i, value) and set:get(u, i) use it
 * as a map to an integer (koophone.journal: pair -> offset of its outcome).
 * set:close() (also __close and __gc) frees the memory at once: a bulk run
 * closes its sets when it ends, rather than leaving ~30 MiB to the GC. */
#include <stdlib.h>
#include <string.h>

#include "kp.h"

#define KP_PAIRSET_MT "koophone.pairset"
#define ALIGN 4          /* records start at multiples of 4: a slot holds offset / 4 + 1 */
#define MAX_OFFSET ((size_t)(UINT32_MAX - 1) * ALIGN)
#define MIN_SLOTS 1024

struct kp_pairset {
  uint32_t *slots; /* 0: empty, else offset / ALIGN + 1 of a record */
  size_t nslots, count;
  unsigned char *arena; /* records: varint row, varint key length, key bytes */
  size_t len, cap;
  int closed;
};

uint64_t kp_fnv1a(uint64_t h, const unsigned char *s, size_t n)
{
  size_t i;
  for (i = 0; i < n; i++)
    h = (h ^ s[i]) * UINT64_C(0x100000001b3);
  return h;
}

/* FNV-1a over user_id, a NUL, instance_id: the same bytes the key holds. */
static uint64_t hash_pair(const char *u, size_t ul, const char *inst, size_t il)
{
  static const unsigned char nul = 0;
  uint64_t h = kp_fnv1a(KP_FNV1A_BASIS, (const unsigned char *)u, ul);
  h = kp_fnv1a(h, &nul, 1);
  h = kp_fnv1a(h, (const unsigned char *)inst, il);
  return h ^ (h >> 29); /* mixes the high bits into the index bits */
}

static size_t put_varint(unsigned char *p, uint64_t v)
{
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (unsigned char)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (unsigned char)v;
  return n;
}

static size_t get_varint(const unsigned char *p, uint64_t *v)
{
  size_t n = 0;
  int shift = 0;
  *v = 0;
  do {
    *v |= (uint64_t)(p[n] & 0x7f) << shift;
    shift += 7;
  } while (p[n++] & 0x80);
  return n;
}

/* The record at offset: its row, and its key at *key (*key_len bytes). */
static uint64_t record(const kp_pairset *s, size_t offset, const unsigned char **key,
                       size_t *key_len)
{
  uint64_t row, len;
  const unsigned char *p = s->arena + offset;
  p += get_varint(p, &row);
  p += get_varint(p, &len);
  *key = p;
  *key_len = (size_t)len;
  return row;
}

static size_t slot_offset(uint32_t slot)
{
  return (size_t)(slot - 1) * ALIGN;
}

/* Puts offset into the first free slot of its probe sequence (no compare). */
static void place(uint32_t *slots, size_t nslots, uint64_t h, size_t offset)
{
  size_t i = (size_t)h & (nslots - 1);
  while (slots[i] != 0)
    i = (i + 1) & (nslots - 1);
  slots[i] = (uint32_t)(offset / ALIGN + 1);
}

/* Doubles the index (the arena stays); 0, or -1 when out of memory. */
static int grow_index(kp_pairset *s)
{
  size_t n = s->nslots ? s->nslots * 2 : MIN_SLOTS, i;
  uint32_t *slots = calloc(n, sizeof *slots);
  if (slots == NULL)
    return -1;
  for (i = 0; i < s->nslots; i++)
    if (s->slots[i] != 0) {
      size_t offset = slot_offset(s->slots[i]), key_len, ul;
      const unsigned char *key;
      record(s, offset, &key, &key_len);
      ul = strlen((const char *)key); /* user_id ends at the NUL (ids hold none) */
      place(slots, n, hash_pair((const char *)key, ul, (const char *)key + ul + 1,
                                key_len - ul - 1), offset);
    }
  free(s->slots);
  s->slots = slots;
  s->nslots = n;
  return 0;
}

/* Appends a record; its offset, or (size_t)-1 when out of memory. */
static size_t append(kp_pairset *s, uint64_t row, const char *u, size_t ul, const char *inst,
                     size_t il)
{
  size_t offset = (s->len + ALIGN - 1) / ALIGN * ALIGN, need = offset - s->len + 20 + ul + 1 + il;
  unsigned char *p;
  if (s->cap - s->len < need) {
    size_t cap = s->cap ? s->cap : 4096;
    while (cap - s->len < need) {
      if (cap > (size_t)-1 / 2)
        return (size_t)-1;
      cap *= 2;
    }
    p = realloc(s->arena, cap);
    if (p == NULL)
      return (size_t)-1;
    s->arena = p;
    s->cap = cap;
  }
  p = s->arena + offset;
  p += put_varint(p, row);
  p += put_varint(p, (uint64_t)(ul + 1 + il));
  memcpy(p, u, ul);
  p[ul] = 0;
  memcpy(p + ul + 1, inst, il);
  s->len = (size_t)(p + ul + 1 + il - s->arena);
  return offset;
}

kp_pairset *kp_check_pairset(lua_State *L, int idx)
{
  kp_pairset *s = luaL_checkudata(L, idx, KP_PAIRSET_MT);
  if (s->closed)
    luaL_error(L, "koophone.pairset: the set is closed");
  return s;
}

/* The probe of the pair: 1 with *i its slot and *row its row when the set
 * has it, else 0 with *i the free slot where it goes. The index is not empty. */
static int find(const kp_pairset *s, uint64_t h, const char *u, size_t ul, const char *inst,
                size_t il, size_t *i, uint64_t *row)
{
  size_t key_len;
  const unsigned char *key;
  for (*i = (size_t)h & (s->nslots - 1); s->slots[*i] != 0; *i = (*i + 1) & (s->nslots - 1)) {
    *row = record(s, slot_offset(s->slots[*i]), &key, &key_len);
    if (key_len == ul + 1 + il && memcmp(key, u, ul) == 0 && key[ul] == 0 &&
        memcmp(key + ul + 1, inst, il) == 0)
      return 1;
  }
  return 0;
}

int kp_pairset_add(kp_pairset *s, const char *u, size_t ul, const char *inst, size_t il,
                   uint64_t row, uint64_t *first)
{
  size_t i, offset;
  if ((s->count + 1) * 4 > s->nslots * 3 && grow_index(s) != 0)
    return -1;
  if (find(s, hash_pair(u, ul, inst, il), u, ul, inst, il, &i, first))
    return 1;
  offset = append(s, row, u, ul, inst, il);
  if (offset == (size_t)-1 || offset > MAX_OFFSET)
    return -1;
  s->slots[i] = (uint32_t)(offset / ALIGN + 1);
  s->count++;
  return 0;
}

/* The two ids of a Lua call (no NUL: the key separates them with one). */
static void check_ids(lua_State *L, const char **u, size_t *ul, const char **inst, size_t *il)
{
  *u = luaL_checklstring(L, 2, ul);
  *inst = luaL_checklstring(L, 3, il);
  luaL_argcheck(L, memchr(*u, 0, *ul) == NULL, 2, "expected an id without NUL");
  luaL_argcheck(L, memchr(*inst, 0, *il) == NULL, 3, "expected an id without NUL");
}

/* set:add(user_id, instance_id, value) -> nil when added with the value (an
 * integer >= 0), else the value the set holds for the pair. */
static int pairset_add(lua_State *L)
{
  kp_pairset *s = kp_check_pairset(L, 1);
  const char *u, *inst;
  size_t ul, il;
  uint64_t first;
  lua_Integer value = luaL_checkinteger(L, 4);
  int seen;
  check_ids(L, &u, &ul, &inst, &il);
  luaL_argcheck(L, value >= 0, 4, "expected an integer >= 0");
  seen = kp_pairset_add(s, u, ul, inst, il, (uint64_t)value, &first);
  if (seen < 0)
    return luaL_error(L, "koophone.pairset: not enough memory");
  if (seen)
    lua_pushinteger(L, (lua_Integer)first);
  else
    lua_pushnil(L);
  return 1;
}

/* set:get(user_id, instance_id) -> the pair's value, or nil */
static int pairset_get(lua_State *L)
{
  kp_pairset *s = kp_check_pairset(L, 1);
  const char *u, *inst;
  size_t ul, il, i;
  uint64_t value;
  check_ids(L, &u, &ul, &inst, &il);
  if (s->count > 0 && find(s, hash_pair(u, ul, inst, il), u, ul, inst, il, &i, &value))
    lua_pushinteger(L, (lua_Integer)value);
  else
    lua_pushnil(L);
  return 1;
}

static int pairset_len(lua_State *L)
{
  kp_pairset *s = kp_check_pairset(L, 1);
  lua_pushinteger(L, (lua_Integer)s->count);
  return 1;
}

/* set:close(), __close and __gc: frees the memory; closing again does nothing. */
static int pairset_close(lua_State *L)
{
  kp_pairset *s = luaL_checkudata(L, 1, KP_PAIRSET_MT);
  free(s->slots);
  free(s->arena);
  memset(s, 0, sizeof *s);
  s->closed = 1;
  return 0;
}

/* core.pairset() -> an empty set */
static int pairset_new(lua_State *L)
{
  kp_pairset *s = lua_newuserdata(L, sizeof *s);
  memset(s, 0, sizeof *s);
  luaL_getmetatable(L, KP_PAIRSET_MT);
  lua_setmetatable(L, -2);
  return 1;
}

void kp_pairset_open(lua_State *L)
{
  static const luaL_Reg methods[] = {
    { "add", pairset_add },
    { "get", pairset_get },
    { "close", pairset_close },
    { NULL, NULL }
  };
  if (luaL_newmetatable(L, KP_PAIRSET_MT)) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, pairset_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, pairset_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, pairset_close);
    lua_setfield(L, -2, "__close"); /* Lua 5.4's <close>; unused elsewhere */
  }
  lua_pop(L, 1);
  lua_pushcfunction(L, pairset_new);
  lua_setfield(L, -2, "pairset");
}
