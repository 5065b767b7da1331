/* client:start_many(token, batches [, opts]) and client:unassign_many: several calls at once.
 *
 * Plain Lua has no threads, so the concurrency lives here; the loop does not. start_many checks
 * and encodes every batch and returns a transfer set; each set:next() drives libcurl until one
 * batch ends and returns it (as curl_multi_perform and curl_multi_info_read do in C). The
 * caller's code runs between two next() calls, never inside one: whatever it raises needs
 * nothing undone here, and there is no callback to re-enter from. The one Lua function that
 * runs inside next() is the client's on_event hook, protected, and the client refuses to be
 * used from it (client.c). unassign_many is the same set driven to its end in C.
 *
 * A libcurl multi handle drives up to `concurrency` transfers, each on an easy handle of a pool
 * the client owns; one set at a time uses the pool, so a client with a set open refuses to
 * start another. The pool's handles are copies of the client's own handle, so every client
 * option applies to them, and they run the same call sequence as client:unassign (call.c: the
 * same checks, request ids, send-time step and mapping): each batch gets exactly the res or err
 * that client:unassign would give it. The multi handle keeps the connections alive between
 * sets and multiplexes over HTTP/2 when the server offers it; a share handle lets the pool
 * resume each other's TLS sessions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kp.h"

#define KP_START_FNAME "koophone.start_many"
#define KP_MULTI_FNAME "koophone.unassign_many"
#define KP_MULTI_MAX 64          /* most transfers in flight */
#define KP_DEFAULT_CONCURRENCY 4
#define KP_POLL_MS 1000          /* wake-up bound; libcurl's own timeouts end transfers */

/* Stack slots of start_many and unassign_many (self is 1, so the user's argument #n is at
 * n + 1), then what start_many builds above them. */
#define ARG_TOKEN 2
#define ARG_BATCHES 3
#define ARG_OPTS 4
#define SLOT_REQUEST_IDS 5 /* opts.request_ids or nil */
#define SLOT_TOKEN 6       /* a token provider's token, or nil */
#define SLOT_ANCHOR 7      /* the set's anchor (below) */

/* The anchor: a table, referenced from the registry while the set is open, that keeps alive
 * what its requests point to (the client, the credentials, and per batch its JSON body, its
 * x-request-id and its number of pairs). */
enum { A_CLIENT = 1, A_CRED, A_TOKEN, A_BODIES, A_IDS, A_PAIRS };

struct kp_multi {
  CURLM *multi;
  CURLSH *share;
  kp_conn *conns[KP_MULTI_MAX]; /* made on first need, kept for the client's life */
  int batch[KP_MULTI_MAX];      /* the batch a handle carries, 0 when it is idle */
  kp_many *open;                /* the set using the pool, NULL when none */
};

struct kp_many {
  kp_client *c;   /* NULL once the set ended */
  kp_call call;   /* what every request of the set shares: credentials, secrets, timeout */
  int anchor;     /* registry reference, LUA_NOREF once the set ended */
  lua_Integer n, started;
  int concurrency, active, stopped;
};

static const char *const option_names[] = { "concurrency", "request_ids", "timeout", "deadline",
                                             NULL };

/* Takes every handle out of the multi handle: the transfers in flight are abandoned (as when
 * the process dies, they may have been sent). Lets go of every answer too: one whose mapping
 * raised was not released. */
static void detach_all(kp_multi *m)
{
  int i;
  for (i = 0; i < KP_MULTI_MAX; i++) {
    if (m->batch[i] != 0) {
      curl_multi_remove_handle(m->multi, m->conns[i]->easy);
      m->batch[i] = 0;
    }
    if (m->conns[i] != NULL)
      kp_conn_release_response(m->conns[i]);
  }
}

void kp_multi_free(kp_multi *m)
{
  int i;
  if (m == NULL)
    return;
  detach_all(m); /* an open set sees its client closed and touches the pool no more */
  curl_multi_cleanup(m->multi); /* closes the pooled connections */
  for (i = 0; i < KP_MULTI_MAX; i++)
    if (m->conns[i] != NULL) {
      kp_conn_close(m->conns[i]);
      free(m->conns[i]);
    }
  if (m->share != NULL)
    curl_share_cleanup(m->share); /* last: no handle uses it any more */
  free(m);
}

static kp_multi *new_multi(void)
{
  kp_multi *m = calloc(1, sizeof *m);
  if (m == NULL)
    return NULL;
  m->multi = curl_multi_init();
  m->share = curl_share_init();
  if (m->multi == NULL || m->share == NULL ||
      curl_multi_setopt(m->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX) != CURLM_OK ||
      curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
    kp_multi_free(m);
    return NULL;
  }
  return m;
}

static kp_conn *new_pool_conn(kp_client *c)
{
  kp_conn *k = calloc(1, sizeof *k);
  if (k == NULL)
    return NULL;
  if (kp_conn_clone(k, &c->conn) != 0 ||
      curl_easy_setopt(k->easy, CURLOPT_SHARE, c->multi->share) != CURLE_OK ||
      /* over TLS, wait for the first connection's ALPN to tell whether it
       * multiplexes (HTTP/2) rather than open one connection per transfer at
       * once; plain HTTP is HTTP/1.1 here, and waiting would mean waiting for
       * the first answer */
      curl_easy_setopt(k->easy, CURLOPT_PIPEWAIT,
                       strncmp(c->endpoint, "https:", 6) == 0 ? 1L : 0L) != CURLE_OK) {
    kp_conn_close(k);
    free(k);
    return NULL;
  }
  return k;
}

/* Makes the multi handle and the first n pool handles when missing. */
static void check_pool(lua_State *L, kp_client *c, int n, const char *fname)
{
  int i;
  if (c->multi == NULL && (c->multi = new_multi()) == NULL)
    luaL_error(L, "%s: cannot create a libcurl multi handle", fname);
  for (i = 0; i < n; i++)
    if (c->multi->conns[i] == NULL && (c->multi->conns[i] = new_pool_conn(c)) == NULL)
      luaL_error(L, "%s: cannot create a libcurl handle", fname);
}

/* Fills the anchor's bodies, ids and pair counts: every batch is checked and encoded before
 * anything is sent, so a programmer mistake sends nothing. */
static void prepare_batches(lua_State *L, kp_call *call, lua_Integer n)
{
  int ids = lua_isnil(L, SLOT_REQUEST_IDS) ? 0 : SLOT_REQUEST_IDS;
  int bodies = lua_gettop(L) - 2; /* A_BODIES, A_IDS, A_PAIRS are the three tables on top */
  lua_Integer i;
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, ARG_BATCHES, (int)i);
    lua_pushfstring(L, "batches[%d]", (int)i);
    kp_push_request_body(L, &call->c->body, -2, call->fname, 2, lua_tostring(L, -1));
    lua_rawseti(L, bodies, (int)i);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -2)); /* checked: a table */
    lua_rawseti(L, bodies + 2, (int)i);
    lua_pop(L, 2);
    if (ids != 0)
      lua_rawgeti(L, ids, (int)i);
    else
      lua_pushnil(L);
    lua_pushfstring(L, "opts.request_ids[%d]", (int)i);
    kp_call_push_request_id(L, call, -2, 3, lua_tostring(L, -1));
    lua_rawseti(L, bodies + 1, (int)i);
    lua_pop(L, 2);
  }
}

/* Ends the set: abandons the transfers in flight and lets go of the pool and of what the
 * anchor kept alive. Idempotent. */
static void end_set(lua_State *L, kp_many *m)
{
  if (m->c == NULL)
    return;
  if (!m->c->closed) { /* closed, the client freed the pool itself */
    detach_all(m->c->multi);
    m->c->multi->open = NULL;
  }
  m->c = NULL;
  m->active = 0;
  luaL_unref(L, LUA_REGISTRYINDEX, m->anchor);
  m->anchor = LUA_NOREF;
}

/* Pushes anchor[slot][b]. */
static void push_anchored(lua_State *L, const kp_many *m, int slot, lua_Integer b)
{
  lua_rawgeti(L, LUA_REGISTRYINDEX, m->anchor);
  lua_rawgeti(L, -1, slot);
  lua_rawgeti(L, -1, (int)b);
  lua_replace(L, -3);
  lua_pop(L, 1);
}

/* Starts the next batch on pool handle i; NULL, or why it cannot. */
static const char *start(lua_State *L, kp_many *m, int i)
{
  kp_multi *mu = m->c->multi;
  kp_conn *k = mu->conns[i];
  lua_Integer b = m->started + 1;
  const char *why;
  push_anchored(L, m, A_BODIES, b); /* the anchor keeps the strings alive */
  m->call.req.body = lua_tolstring(L, -1, &m->call.req.body_len);
  push_anchored(L, m, A_IDS, b);
  m->call.req.request_id = lua_tolstring(L, -1, &m->call.req.request_id_len);
  lua_pop(L, 2);
  why = kp_call_arm(&m->call, k);
  if (why == NULL && curl_multi_add_handle(mu->multi, k->easy) != CURLM_OK)
    why = "cannot start a transfer";
  if (why != NULL)
    return why;
  mu->batch[i] = (int)b;
  m->started = b;
  m->active++;
  return NULL;
}

/* Reads the transfers libcurl finished until one has an outcome: pushes it (res, or nil and
 * err, as client:unassign returns them; *results says which) and returns its batch; 0 when
 * none is left to read. A transfer aborted by the interruption is abandoned: no answer. */
static lua_Integer take_done(lua_State *L, kp_many *m, int *results)
{
  kp_multi *mu = m->c->multi;
  CURLMsg *msg;
  CURLcode code;
  kp_result r;
  lua_Integer b;
  int i, queued, top, first;
  while ((msg = curl_multi_info_read(mu->multi, &queued)) != NULL) {
    for (i = 0; i < KP_MULTI_MAX && (mu->conns[i] == NULL || mu->conns[i]->easy != msg->easy_handle);
         i++)
      ;
    if (msg->msg != CURLMSG_DONE || i == KP_MULTI_MAX || mu->batch[i] == 0)
      continue; /* not one of ours: cannot happen */
    b = mu->batch[i];
    code = msg->data.result; /* msg is gone once its handle is removed */
    kp_conn_finish(mu->conns[i], code, &r);
    curl_multi_remove_handle(mu->multi, mu->conns[i]->easy);
    mu->batch[i] = 0;
    m->active--;
    if (code == CURLE_ABORTED_BY_CALLBACK && kp_interrupted()) {
      kp_conn_release_response(mu->conns[i]);
      continue; /* abandoned: it may or may not have been applied */
    }
    top = lua_gettop(L);
    push_anchored(L, m, A_IDS, b); /* stays below the outcome while the mapping reads it */
    m->call.req.request_id = lua_tolstring(L, -1, &m->call.req.request_id_len);
    push_anchored(L, m, A_PAIRS, b);
    m->call.pairs = lua_tointeger(L, -1);
    *results = kp_call_map(L, &m->call, &r);
    kp_conn_release_response(mu->conns[i]);
    first = lua_gettop(L) - *results + 1; /* the mapping leaves work values below its outcome */
    for (i = 0; i < *results; i++) {
      lua_pushvalue(L, first + i);
      lua_replace(L, top + 1 + i);
    }
    lua_settop(L, top + *results);
    return b;
  }
  return 0;
}

/* The batch after the last started could not start (why): nothing more starts, the batches in
 * flight still end through next(). Pushes nil and its error (sent false) and returns it. */
static lua_Integer not_started(lua_State *L, kp_many *m, const char *why, int *results)
{
  m->stopped = 1;
  push_anchored(L, m, A_IDS, m->started + 1);
  lua_pushfstring(L, "%s: %s: not sent", m->call.fname, why);
  kp_push_unsent_error(L, lua_tostring(L, -2), "network", "NOT_STARTED", lua_tostring(L, -1));
  lua_remove(L, -3); /* the id and the message, below nil and err */
  lua_remove(L, -3);
  *results = 2;
  return m->started + 1;
}

/* libcurl's multi handle failed (mc): raises "<fname>: why", naming the batches in flight, which
 * may have been sent; the caller ends the set. */
static lua_Integer fail(lua_State *L, kp_many *m, CURLMcode mc)
{
  const kp_multi *mu = m->c->multi;
  luaL_Buffer b;
  char num[32];
  int i, n = 0;
  lua_pushfstring(L, "%s: %s; batches in flight, maybe sent:", m->call.fname,
                  curl_multi_strerror(mc));
  luaL_buffinit(L, &b);
  luaL_addvalue(&b);
  for (i = 0; i < KP_MULTI_MAX; i++)
    if (mu->batch[i] != 0) {
      snprintf(num, sizeof num, "%s %d", n++ == 0 ? "" : ",", mu->batch[i]);
      luaL_addstring(&b, num);
    }
  if (n == 0)
    luaL_addstring(&b, " none");
  luaL_pushresult(&b);
  return lua_error(L);
}

/* Drives the set until a batch ends: returns it with its outcome pushed (*results values); 0
 * when every batch started has ended and no other will start; -1 when the interruption flag
 * (interrupt.c) ended the set: nothing more starts, the transfers in flight are abandoned.
 * A batch that cannot start is returned with its error (not_started). Raises when libcurl's
 * multi handle fails or a mapping raises (out of memory): run it protected and end the set. */
static lua_Integer step(lua_State *L, kp_many *m, int *results)
{
  int fresh = 1, i, running;
  CURLMcode mc = CURLM_OK;
  const char *why = NULL;
  lua_Integer b;
  kp_multi *mu;
  while (m->c != NULL) {
    if ((b = take_done(L, m, results)) != 0)
      return b;
    if (kp_interrupted()) {
      end_set(L, m);
      return -1;
    }
    mu = m->c->multi;
    if (kp_call_expired(&m->call)) /* opts.deadline: nothing more starts, the rest ends by it */
      m->stopped = 1;
    for (i = 0; i < m->concurrency && m->started < m->n && !m->stopped; i++)
      if (mu->batch[i] == 0 && (why = start(L, m, i)) != NULL)
        return not_started(L, m, why, results);
    if (m->active == 0)
      break;
    if (!fresh) /* nothing ended since the last perform: wait for the sockets */
      mc = curl_multi_poll(mu->multi, NULL, 0, KP_POLL_MS, NULL);
    if (mc == CURLM_OK)
      mc = curl_multi_perform(mu->multi, &running);
    if (mc != CURLM_OK)
      return fail(L, m, mc);
    fresh = 0;
  }
  end_set(L, m);
  return 0;
}

/* Pushes opts[name] (nil when absent) after checking its type. */
static void push_option(lua_State *L, const char *name, int type, const char *path,
                        const char *expected, const char *fname)
{
  if (lua_type(L, ARG_OPTS) == LUA_TTABLE)
    lua_getfield(L, ARG_OPTS, name);
  else
    lua_pushnil(L);
  kp_check_type(L, -1, type, fname, 3, path, expected);
}

/* The set of start_many's arguments (token, batches, opts at 2..4), named fname in messages:
 * pushes it and returns 1, or pushes nil, err and returns 2 when a token provider failed
 * (nothing was sent). Nothing is sent before its first next(). */
static int open_set(lua_State *L, kp_client *c, const char *fname)
{
  lua_Integer n, concurrency = KP_DEFAULT_CONCURRENCY;
  kp_call call;
  kp_many *m;
  lua_settop(L, ARG_OPTS);
  kp_call_init(L, &call, c, KP_CALL_UNASSIGN, fname, ARG_TOKEN);
  if (lua_type(L, ARG_BATCHES) != LUA_TTABLE || !kp_is_array(L, ARG_BATCHES))
    kp_argerror(L, fname, 2, "batches", "expected an array of batches, got %s",
                luaL_typename(L, ARG_BATCHES));
  n = (lua_Integer)lua_rawlen(L, ARG_BATCHES);
  kp_call_options(L, &call, ARG_OPTS, option_names);
  if (!lua_isnil(L, ARG_OPTS)) {
    lua_getfield(L, ARG_OPTS, "concurrency");
    if (!lua_isnil(L, -1))
      concurrency = kp_check_count(L, -1, fname, 3, "opts.concurrency", 1, KP_MULTI_MAX);
    lua_pop(L, 1);
  }
  push_option(L, "request_ids", LUA_TTABLE, "opts.request_ids", "an array of strings", fname);
  if (kp_call_credentials(L, &call) != 0)
    return 2; /* nil, err: a token provider failed, nothing was sent */
  if (lua_gettop(L) == SLOT_REQUEST_IDS)
    lua_pushnil(L); /* no provider: no token of its own */
  lua_createtable(L, A_PAIRS, 0);
  lua_pushvalue(L, 1);
  lua_rawseti(L, SLOT_ANCHOR, A_CLIENT);
  lua_pushvalue(L, ARG_TOKEN);
  lua_rawseti(L, SLOT_ANCHOR, A_CRED);
  lua_pushvalue(L, SLOT_TOKEN);
  lua_rawseti(L, SLOT_ANCHOR, A_TOKEN);
  lua_createtable(L, (int)n, 0);
  lua_createtable(L, (int)n, 0);
  lua_createtable(L, (int)n, 0);
  prepare_batches(L, &call, n);
  lua_rawseti(L, SLOT_ANCHOR, A_PAIRS);
  lua_rawseti(L, SLOT_ANCHOR, A_IDS);
  lua_rawseti(L, SLOT_ANCHOR, A_BODIES);
  /* checked last, after the token provider's code ran; a set no longer referenced but not yet
   * collected holds the pool until its __gc ends it: collect once before refusing */
  if (c->multi != NULL && c->multi->open != NULL) {
    lua_gc(L, LUA_GCCOLLECT, 0);
    /* cppcheck-suppress knownConditionTrueFalse ; the set's __gc, in lua_gc, clears it */
    if (c->multi->open != NULL)
      luaL_error(L, "%s: the client has a transfer set open: close it, or call its next() "
                 "until it returns nil, first", fname);
  }
  if (concurrency > n)
    concurrency = n;
  if (n > 0)
    check_pool(L, c, (int)concurrency, fname);
  m = lua_newuserdata(L, sizeof *m);
  memset(m, 0, sizeof *m);
  m->anchor = LUA_NOREF;
  luaL_getmetatable(L, KP_MANY_MT);
  lua_setmetatable(L, -2);
  m->call = call;
  m->call.base = m->call.provider = m->call.opts = 0; /* stack slots of this call only */
  m->n = n;
  m->concurrency = (int)concurrency;
  if (n > 0) {
    lua_pushvalue(L, SLOT_ANCHOR);
    m->anchor = luaL_ref(L, LUA_REGISTRYINDEX);
    m->c = c; /* nothing raises from here on */
    c->multi->open = m;
  }
  return 1;
}

int kp_start_many(lua_State *L, kp_client *c)
{
  return open_set(L, c, KP_START_FNAME);
}

kp_client *kp_many_client(const kp_many *m)
{
  return m->c;
}

/* next()'s step, protected: the set at 1 */
static int next_step(lua_State *L)
{
  kp_many *m = lua_touserdata(L, 1);
  int results = 0;
  lua_Integer b = step(L, m, &results);
  if (b == 0) {
    lua_pushnil(L);
    return 1;
  }
  if (b < 0) {
    lua_pushnil(L);
    kp_push_interrupted(L);
    return 2;
  }
  lua_pushinteger(L, b);
  lua_insert(L, -1 - results);
  return results + 1;
}

/* set:next() -> i, res | i, nil, err | nil | nil, why
 * An error inside the step (out of memory, libcurl's multi handle failing) ends the set before
 * it propagates: nothing is left half done. */
int kp_many_next(lua_State *L, kp_many *m)
{
  int i;
  lua_settop(L, 1);
  for (i = 1; i <= KP_NUPVALUES; i++) /* the mapping reads the private cjson from them */
    lua_pushvalue(L, lua_upvalueindex(i));
  lua_pushcclosure(L, next_step, KP_NUPVALUES);
  lua_pushvalue(L, 1);
  if (lua_pcall(L, 1, LUA_MULTRET, 0) != 0) {
    end_set(L, m);
    return lua_error(L);
  }
  return lua_gettop(L) - 1;
}

/* set:started() -> batches 1..started were handed to libcurl (they may have been sent) */
int kp_many_started(lua_State *L)
{
  kp_many *m = luaL_checkudata(L, 1, KP_MANY_MT);
  lua_pushinteger(L, m->started);
  return 1;
}

/* set:stop(): no further batch starts; those in flight still end through next() */
int kp_many_stop(lua_State *L)
{
  kp_many *m = luaL_checkudata(L, 1, KP_MANY_MT);
  m->stopped = 1;
  return 0;
}

void kp_many_close(lua_State *L, kp_many *m)
{
  end_set(L, m);
}

/* unassign_many's loop, in a protected call: drives the set at 1 to its end, each outcome
 * into results (2) and errors (3). */
static int drive(lua_State *L)
{
  kp_many *m = lua_touserdata(L, 1);
  int results = 0;
  lua_Integer b;
  while ((b = step(L, m, &results)) > 0) {
    lua_pushboolean(L, 0);
    if (results == 1) { /* res, false */
      lua_rawseti(L, 3, (int)b);
      lua_rawseti(L, 2, (int)b);
    } else { /* nil, err, false */
      lua_rawseti(L, 2, (int)b);
      lua_rawseti(L, 3, (int)b);
      lua_pop(L, 1);
    }
  }
  return 0;
}

/* client:unassign_many(token, batches [, opts]) -> results, errors, started, interrupted
 * start_many's set driven to its end: results[i] is what client:unassign(token, batches[i])
 * would return as res (or false), errors[i] its err (or false); batches 1..started were sent,
 * the others have neither, but one that could not start (errors[i].sent false, not_started). When the interruption flag (interrupt.c) is raised no batch starts
 * any more and the transfers in flight are abandoned: their results[i] and errors[i] are nil,
 * and `interrupted` says why ("SIGINT", "SIGTERM", "interrupted"; nil when not interrupted).
 * A token provider's failure returns nil, err: nothing was sent. */
int kp_unassign_many(lua_State *L, kp_client *c)
{
  static const char *const callbacks[] = { "on_start", "on_done", NULL };
  kp_many *m;
  int i, status, set;
  lua_settop(L, ARG_OPTS);
  for (i = 0; callbacks[i] != NULL && lua_type(L, ARG_OPTS) == LUA_TTABLE; i++) {
    lua_getfield(L, ARG_OPTS, callbacks[i]);
    if (!lua_isnil(L, -1))
      kp_argerror(L, KP_MULTI_FNAME, 3, lua_pushfstring(L, "opts.%s", callbacks[i]),
                  "no longer accepted: use client:start_many to handle each batch as it ends");
    lua_pop(L, 1);
  }
  if (open_set(L, c, KP_MULTI_FNAME) != 1)
    return 2;
  set = lua_gettop(L);
  m = lua_touserdata(L, set);
  for (i = 1; i <= KP_NUPVALUES; i++) /* the mapping reads the private cjson from them */
    lua_pushvalue(L, lua_upvalueindex(i));
  lua_pushcclosure(L, drive, KP_NUPVALUES);
  lua_pushvalue(L, set);
  lua_createtable(L, (int)m->n, 0);
  lua_createtable(L, (int)m->n, 0);
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_insert(L, set + 1); /* results and errors stay below the call */
  lua_insert(L, set + 1);
  status = lua_pcall(L, 3, 0, 0);
  end_set(L, m); /* after an error (out of memory): the transfers in flight are abandoned */
  if (status != 0)
    lua_error(L);
  lua_pushinteger(L, m->started);
  kp_push_interrupted(L);
  return 4;
}
