/* Request mapping: the checks that turn programmer mistakes into clear
 * errors before anything is sent, the JSON body, a path with an id, and a
 * read's query.
 *
 * The body is encoded by our private cjson instance from one request table
 * per client that every call refills in place, so a call builds no tables. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp.h"

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if invalid;
 * its code point in *cp. */
static size_t utf8_sequence(const unsigned char *s, size_t n, unsigned *cp)
{
  size_t len, i;
  unsigned min;
  if (s[0] < 0x80)
    return *cp = s[0], 1;
  if (s[0] >= 0xc2 && s[0] <= 0xdf) {
    len = 2; *cp = s[0] & 0x1f; min = 0x80;
  } else if ((s[0] & 0xf0) == 0xe0) {
    len = 3; *cp = s[0] & 0x0f; min = 0x800;
  } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
    len = 4; *cp = s[0] & 0x07; min = 0x10000;
  } else {
    return 0;
  }
  if (len > n)
    return 0;
  for (i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    *cp = (*cp << 6) | (s[i] & 0x3f);
  }
  if (*cp < min || *cp > 0x10ffff || (*cp >= 0xd800 && *cp <= 0xdfff))
    return 0;
  return len;
}

/* Code points an id never holds: they do not show (or show as a plain
 * space) yet make an id another one, so a copy-paste slip would cancel or
 * miss a binding that looks right. docs/hardening.md lists them. */
static const char *refused_code_point(unsigned cp)
{
  static const char control[] = "a control character", space[] = "a space other than U+0020",
                    invisible[] = "an invisible character",
                    bidi[] = "a bidirectional text control";
  static const struct { unsigned lo, hi; const char *what; } refused[] = {
    { 0x80, 0x9f, control },     { 0xa0, 0xa0, space },         { 0xad, 0xad, invisible },
    { 0x34f, 0x34f, invisible }, { 0x61c, 0x61c, bidi },        { 0x115f, 0x1160, invisible },
    { 0x1680, 0x1680, space },   { 0x180e, 0x180e, invisible }, { 0x2000, 0x200a, space },
    { 0x200b, 0x200d, invisible }, { 0x200e, 0x200f, bidi },    { 0x2028, 0x2029, space },
    { 0x202a, 0x202e, bidi },    { 0x202f, 0x202f, space },     { 0x205f, 0x205f, space },
    { 0x2060, 0x2064, invisible }, { 0x2066, 0x2069, bidi },    { 0x206a, 0x206f, invisible },
    { 0x3000, 0x3000, space },   { 0x3164, 0x3164, invisible }, { 0xfeff, 0xfeff, invisible },
    { 0xffa0, 0xffa0, invisible }, { 0xfff9, 0xfffb, invisible }, { 0xe0000, 0xe007f, invisible },
  };
  size_t i;
  for (i = 0; i < sizeof(refused) / sizeof(refused[0]) && cp >= refused[i].lo; i++)
    if (cp <= refused[i].hi)
      return refused[i].what;
  return NULL;
}

/* Checks the id at the top of the stack. When it is acceptable, replaces it
 * by its string (user_id may be an integer) and returns 0; else pushes the
 * reason above it and returns 1. */
static int id_problem(lua_State *L, int number_ok)
{
  const unsigned char *s;
  size_t len, i, step;
  int type = lua_type(L, -1);
  if (type == LUA_TNUMBER && number_ok) {
    lua_Number n = lua_tonumber(L, -1);
    char digits[32];
    if (lua_isinteger(L, -1))
      snprintf(digits, sizeof digits, "%lld", (long long)lua_tointeger(L, -1));
    else if (n == floor(n) && fabs(n) < 9007199254740992.0) /* 2^53: exact */
      snprintf(digits, sizeof digits, "%.0f", (double)n);
    else
      return lua_pushliteral(L, "expected a string or an integer, got a fractional number"), 1;
    lua_pop(L, 1);
    lua_pushstring(L, digits);
    return 0;
  }
  if (type == LUA_TNIL)
    return lua_pushliteral(L, "missing"), 1;
  if (type != LUA_TSTRING)
    return lua_pushfstring(L, "expected a string%s, got %s", number_ok ? " or an integer" : "",
                           lua_typename(L, type)), 1;
  s = (const unsigned char *)lua_tolstring(L, -1, &len);
  if (len == 0)
    return lua_pushliteral(L, "empty"), 1;
  if (len > KP_ID_MAX)
    return lua_pushfstring(L, "longer than %d bytes (%d)", KP_ID_MAX, (int)len), 1;
  if (s[0] == ' ' || s[len - 1] == ' ') /* a copy-paste slip: never sent as it is */
    return lua_pushliteral(L, "leading or trailing space"), 1;
  for (i = 0; i < len; i += step) {
    unsigned cp;
    const char *what;
    if (s[i] < 0x20 || s[i] == 0x7f)
      return lua_pushliteral(L, "contains a control character"), 1;
    step = utf8_sequence(s + i, len - i, &cp);
    if (step == 0)
      return lua_pushliteral(L, "not valid UTF-8"), 1;
    what = cp >= 0x80 ? refused_code_point(cp) : NULL;
    if (what != NULL) {
      char u[16];
      snprintf(u, sizeof u, "U+%04X", cp);
      return lua_pushfstring(L, "contains %s (%s)", what, u), 1;
    }
  }
  return 0;
}

int kp_pair_problem(lua_State *L, int idx, const char **field)
{
  idx = lua_absindex(L, idx);
  *field = NULL;
  if (lua_type(L, idx) != LUA_TTABLE) {
    lua_pushfstring(L, "expected a table, got %s", luaL_typename(L, idx));
    return 1;
  }
  lua_getfield(L, idx, "user_id");
  if (id_problem(L, 1)) {
    lua_remove(L, -2);
    *field = "user_id";
    return 1;
  }
  lua_getfield(L, idx, "instance_id");
  if (id_problem(L, 0)) {
    lua_replace(L, -3);
    lua_pop(L, 1);
    *field = "instance_id";
    return 1;
  }
  return 0;
}

int kp_pair_message(lua_State *L, int idx)
{
  const char *field;
  if (!kp_pair_problem(L, idx, &field))
    return 0;
  if (field != NULL)
    lua_pushfstring(L, "%s: %s", field, lua_tostring(L, -1));
  return 1;
}

/* koophone.validate_pair(p) -> true | false, message */
int kp_validate_pair(lua_State *L)
{
  if (lua_isnone(L, 1))
    kp_argerror(L, "koophone.validate_pair", 1, "pair", "expected a value, got no value");
  lua_settop(L, 1);
  if (!kp_pair_message(L, 1)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  return 2;
}

static int compare_pairs(const void *a, const void *b)
{
  const kp_pair_ref *x = a, *y = b;
  int c;
  if (x->user_id_len != y->user_id_len)
    return x->user_id_len < y->user_id_len ? -1 : 1;
  if (x->instance_id_len != y->instance_id_len)
    return x->instance_id_len < y->instance_id_len ? -1 : 1;
  c = memcmp(x->user_id, y->user_id, x->user_id_len);
  if (c == 0)
    c = memcmp(x->instance_id, y->instance_id, x->instance_id_len);
  if (c == 0)
    c = x->index < y->index ? -1 : (x->index > y->index);
  return c;
}

static int same_pair(const kp_pair_ref *a, const kp_pair_ref *b)
{
  return a->user_id_len == b->user_id_len && a->instance_id_len == b->instance_id_len &&
         memcmp(a->user_id, b->user_id, a->user_id_len) == 0 &&
         memcmp(a->instance_id, b->instance_id, a->instance_id_len) == 0;
}

/* Raises naming the first element that repeats an earlier one. Sorting
 * puts equal pairs together, earliest first. */
static void check_duplicates(lua_State *L, kp_pair_ref *refs, lua_Integer n, const char *fname,
                             int argn, const char *arg)
{
  lua_Integer i, group = 0, repeat = 0, first = 0;
  qsort(refs, (size_t)n, sizeof *refs, compare_pairs);
  for (i = 1; i < n; i++) {
    if (!same_pair(&refs[group], &refs[i]))
      group = i;
    else if (repeat == 0 || refs[i].index < repeat) {
      repeat = refs[i].index;
      first = refs[group].index;
    }
  }
  if (repeat != 0) {
    lua_pushfstring(L, "%s[%d]", arg, (int)repeat);
    kp_argerror(L, fname, argn, lua_tostring(L, -1), "repeats %s[%d]", arg, (int)first);
  }
}

/* Leaves the reusable request table's user_instances array on the stack. */
static int push_instances_array(lua_State *L, const kp_body *b)
{
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->ref);
  lua_getfield(L, -1, "user_instances");
  lua_remove(L, -2);
  return lua_gettop(L);
}

void kp_push_request_body(lua_State *L, const kp_body *b, int pairs, const char *fname, int argn,
                          const char *arg)
{
  int array;
  lua_Integer n, i, old_n;
  pairs = lua_absindex(L, pairs);
  if (lua_type(L, pairs) != LUA_TTABLE)
    kp_argerror(L, fname, argn, arg, "expected a non-empty array of pairs, got %s",
                luaL_typename(L, pairs));
  n = (lua_Integer)lua_rawlen(L, pairs);
  if (!kp_is_array(L, pairs))
    kp_argerror(L, fname, argn, arg, "expected an array of pairs, got a table with keys other "
                "than 1..%d (a hole, or a single pair not wrapped in { })", (int)n);
  if (n == 0)
    kp_argerror(L, fname, argn, arg, "expected a non-empty array of pairs, got an empty table");
  if (n > b->max_pairs)
    kp_argerror(L, fname, argn, arg, "%d pairs, more than max_pairs (%d)", (int)n,
                (int)b->max_pairs);
  array = push_instances_array(L, b);
  old_n = (lua_Integer)lua_rawlen(L, array);
  for (i = 1; i <= n; i++) {
    const char *field;
    kp_pair_ref *ref = &b->scratch[i - 1];
    lua_rawgeti(L, pairs, (int)i);
    if (kp_pair_problem(L, -1, &field)) {
      lua_pushfstring(L, "%s[%d]%s%s", arg, (int)i, field ? "." : "", field ? field : "");
      kp_argerror(L, fname, argn, lua_tostring(L, -1), "%s", lua_tostring(L, -2));
    }
    /* stack: pair, user_id, instance_id; the entry keeps the strings alive */
    lua_rawgeti(L, array, (int)i);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_createtable(L, 0, 2);
      lua_pushvalue(L, -1);
      lua_rawseti(L, array, (int)i);
    }
    ref->user_id = lua_tolstring(L, -3, &ref->user_id_len);
    ref->instance_id = lua_tolstring(L, -2, &ref->instance_id_len);
    ref->index = i;
    lua_insert(L, -3);
    lua_setfield(L, -3, "instance_id");
    lua_setfield(L, -2, "user_id");
    lua_pop(L, 2);
  }
  for (i = n + 1; i <= old_n; i++) {
    lua_pushnil(L);
    lua_rawseti(L, array, (int)i);
  }
  if (n > 1)
    check_duplicates(L, b->scratch, n, fname, argn, arg);
  lua_pop(L, 1);
  lua_pushvalue(L, KP_UV_ENCODE);
  lua_rawgeti(L, LUA_REGISTRYINDEX, b->ref);
  lua_call(L, 1, 1);
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "%s: cannot encode the request body", fname);
}

static void add_encoded(luaL_Buffer *b, const char *s, size_t len)
{
  char enc[3];
  size_t i;
  for (i = 0; i < len; i++)
    luaL_addlstring(b, enc, kp_percent_encode(enc, (unsigned char)s[i]));
}

void kp_push_path(lua_State *L, const char *prefix, const char *id, size_t len)
{
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, prefix);
  add_encoded(&b, id, len);
  luaL_pushresult(&b);
}

/* Raises unless every key of the query table at t names a parameter the caller gives. */
static void check_query_keys(lua_State *L, const kp_query_param *params, int t, const char *fname,
                             int argn)
{
  const kp_query_param *p;
  lua_pushnil(L);
  while (lua_next(L, t) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      kp_argerror(L, fname, argn, "query", "parameter names must be strings, got %s",
                  luaL_typename(L, -1));
    for (p = params; p->name != NULL; p++)
      if (p->kind != KP_QUERY_REQUEST_ID && strcmp(p->name, lua_tostring(L, -1)) == 0)
        break;
    if (p->name == NULL)
      kp_argerror(L, fname, argn, lua_pushfstring(L, "query.%s", lua_tostring(L, -1)),
                  "unknown parameter");
  }
}

/* Checks query[p->name] and pushes it as the text sent, or nil when it is not sent. */
static void push_query_value(lua_State *L, const kp_query_param *p, int t, const char *fname,
                             int argn)
{
  const char *path;
  lua_getfield(L, t, p->name);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    if (p->kind == KP_QUERY_COUNT)
      lua_pushfstring(L, "%d", (int)p->dflt);
    else
      lua_pushnil(L);
    return;
  }
  path = lua_pushfstring(L, "query.%s", p->name); /* only for a value given: most are not */
  if (p->kind == KP_QUERY_COUNT) {
    lua_pushfstring(L, "%d", (int)kp_check_count(L, -2, fname, argn, path, p->min, p->max));
  } else {
    kp_check_header_safe(L, -2, fname, argn, path);
    if (lua_rawlen(L, -2) == 0) /* an empty instance_id would match every instance */
      kp_argerror(L, fname, argn, path, "expected a non-empty string, got an empty one");
    lua_pushvalue(L, -2);
    /* an id filter gets the pair ids' check: an invisible or bidi character would match
     * nothing, or another instance than the one the caller reads */
    if (p->kind == KP_QUERY_ID && id_problem(L, 0))
      kp_argerror(L, fname, argn, path, "%s", lua_tostring(L, -1));
  }
  lua_replace(L, -3);
  lua_pop(L, 1);
}

void kp_push_query(lua_State *L, const char *path, const kp_query_param *params, int t,
                   const char *fname, int argn, const char *request_id, size_t request_id_len)
{
  const kp_query_param *p;
  luaL_Buffer b;
  size_t len;
  const char *s, *sep = "?";
  int first, n = 0;
  t = lua_absindex(L, t);
  if (lua_type(L, t) != LUA_TTABLE)
    kp_argerror(L, fname, argn, "query", "expected a table, got %s", luaL_typename(L, t));
  check_query_keys(L, params, t, fname, argn);
  for (p = params; p->name != NULL; p++)
    n++;
  luaL_checkstack(L, n + LUA_MINSTACK, fname);
  first = lua_gettop(L) + 1;
  /* every value checked and pushed first: a buffer in use leaves the stack alone */
  for (p = params; p->name != NULL; p++) {
    if (p->kind == KP_QUERY_REQUEST_ID)
      lua_pushlstring(L, request_id, request_id_len);
    else
      push_query_value(L, p, t, fname, argn);
  }
  luaL_buffinit(L, &b);
  luaL_addstring(&b, path);
  for (p = params; p->name != NULL; p++) {
    s = lua_tolstring(L, first + (int)(p - params), &len);
    if (s == NULL)
      continue;
    luaL_addstring(&b, sep);
    luaL_addstring(&b, p->name);
    luaL_addchar(&b, '=');
    add_encoded(&b, s, len);
    sep = "&";
  }
  luaL_pushresult(&b);
  lua_replace(L, first);
  lua_settop(L, first);
}
