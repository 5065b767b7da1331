/* client:unassign_many(token, batches [, opts]): several calls at once.
 *
 * Plain Lua has no threads, so concurrency lives here. A libcurl multi
 * handle drives up to `concurrency` transfers, each on an easy handle of a
 * pool the client owns. The pool's handles are copies of the client's own
 * handle, so every client option applies to them, and they run the same
 * call sequence as client:unassign (call.c: the same checks, request ids,
 * send-time step and mapping): each batch gets exactly the res or err that
 * client:unassign would give it. The multi handle keeps the
 * connections alive between calls and multiplexes over HTTP/2 when the
 * server offers it; a share handle lets the pool resume each other's TLS
 * sessions. */
#include <stdlib.h>
#include <string.h>

#include "kp.h"

#define KP_MULTI_FNAME "koophone.unassign_many"
#define KP_MULTI_MAX 64          /* most transfers in flight */
#define KP_DEFAULT_CONCURRENCY 4
#define KP_POLL_MS 1000          /* wake-up bound; libcurl's own timeouts end transfers */

/* Stack slots of a call (self is 1, so the user's argument #n is at n + 1). */
#define ARG_TOKEN 2
#define ARG_BATCHES 3
#define ARG_OPTS 4
#define SLOT_BODIES 5  /* batch -> JSON body: keeps the bytes alive while they are sent */
#define SLOT_IDS 6     /* batch -> x-request-id */
#define SLOT_RESULTS 7 /* batch -> res or false */
#define SLOT_ERRORS 8  /* batch -> err or false */
#define SLOT_REQUEST_IDS 9 /* opts.request_ids or nil */
#define SLOT_ON_DONE 10    /* opts.on_done or nil */
#define SLOT_ON_START 11   /* opts.on_start or nil */

struct kp_multi {
  CURLM *multi;
  CURLSH *share;
  kp_conn *conns[KP_MULTI_MAX]; /* made on first need, kept for the client's life */
  int batch[KP_MULTI_MAX];      /* the batch a handle carries, 0 when it is idle */
};

static const char *const option_names[] = {
  "concurrency", "request_ids", "timeout", "deadline", "on_start", "on_done", NULL
};

/* Takes every handle out of the multi handle. Normally none is left in it;
 * after a call that raised (out of memory) some are, and their bodies may be
 * gone, so they must never run again. */
static void detach_all(kp_multi *m)
{
  int i;
  for (i = 0; i < KP_MULTI_MAX; i++)
    if (m->batch[i] != 0) {
      curl_multi_remove_handle(m->multi, m->conns[i]->easy);
      m->batch[i] = 0;
    }
}

void kp_multi_free(kp_multi *m)
{
  int i;
  if (m == NULL)
    return;
  detach_all(m);
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
static kp_multi *check_pool(lua_State *L, kp_client *c, int n)
{
  int i;
  if (c->multi == NULL && (c->multi = new_multi()) == NULL)
    luaL_error(L, KP_MULTI_FNAME ": cannot create a libcurl multi handle");
  detach_all(c->multi);
  for (i = 0; i < n; i++)
    if (c->multi->conns[i] == NULL && (c->multi->conns[i] = new_pool_conn(c)) == NULL)
      luaL_error(L, KP_MULTI_FNAME ": cannot create a libcurl handle");
  return c->multi;
}

/* Fills SLOT_BODIES and SLOT_IDS: every batch is checked and encoded before
 * anything is sent, so a programmer mistake sends nothing. */
static void prepare_batches(lua_State *L, kp_call *call, lua_Integer n)
{
  int ids = lua_isnil(L, SLOT_REQUEST_IDS) ? 0 : SLOT_REQUEST_IDS;
  lua_Integer i;
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, ARG_BATCHES, (int)i);
    lua_pushfstring(L, "batches[%d]", (int)i);
    kp_push_request_body(L, &call->c->body, -2, KP_MULTI_FNAME, 2, lua_tostring(L, -1));
    lua_rawseti(L, SLOT_BODIES, (int)i);
    lua_pop(L, 2);
    if (ids != 0)
      lua_rawgeti(L, ids, (int)i);
    else
      lua_pushnil(L);
    lua_pushfstring(L, "opts.request_ids[%d]", (int)i);
    kp_call_push_request_id(L, call, -2, 3, lua_tostring(L, -1));
    lua_rawseti(L, SLOT_IDS, (int)i);
    lua_pop(L, 2);
  }
}

/* Calls the function at slot fn with the values on top of the stack (which
 * it pops); 1 when it returned false. An error ends the call: the other
 * transfers are abandoned, as when the process dies (they may have been
 * sent), and the error goes on. */
static int call_back(lua_State *L, kp_multi *m, int fn, int nargs)
{
  int stop;
  lua_pushvalue(L, fn);
  lua_insert(L, -1 - nargs);
  if (lua_pcall(L, nargs, 1, 0) != 0) {
    detach_all(m);
    lua_error(L);
  }
  stop = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
  lua_pop(L, 1);
  return stop;
}

/* Starts batch b on pool handle i, after on_start(b, request_id) (the
 * caller's last chance to record what is about to be sent). */
static void start(lua_State *L, kp_multi *m, int i, lua_Integer b, kp_call *call)
{
  kp_conn *k = m->conns[i];
  const char *why;
  lua_rawgeti(L, SLOT_BODIES, (int)b); /* SLOT_BODIES and SLOT_IDS keep the strings alive */
  call->req.body = lua_tolstring(L, -1, &call->req.body_len);
  lua_rawgeti(L, SLOT_IDS, (int)b);
  call->req.request_id = lua_tolstring(L, -1, &call->req.request_id_len);
  if (!lua_isnil(L, SLOT_ON_START)) {
    lua_pushinteger(L, b);
    lua_pushvalue(L, -2);
    (void)call_back(L, m, SLOT_ON_START, 2);
  }
  lua_pop(L, 2);
  if ((why = kp_call_arm(call, k)) != NULL) {
    detach_all(m);
    luaL_error(L, KP_MULTI_FNAME ": %s", why);
  }
  if (curl_multi_add_handle(m->multi, k->easy) != CURLM_OK) {
    detach_all(m);
    luaL_error(L, KP_MULTI_FNAME ": cannot start a transfer");
  }
  m->batch[i] = (int)b;
}

/* Stores the outcome of the transfer that ended on handle `easy`; 1 when
 * on_done returned false (start no other batch). */
static int finish(lua_State *L, kp_multi *m, CURL *easy, CURLcode code, kp_call *call)
{
  int i, b, top, failed, stop = 0;
  kp_result r;
  for (i = 0; i < KP_MULTI_MAX && (m->conns[i] == NULL || m->conns[i]->easy != easy); i++)
    ;
  if (i == KP_MULTI_MAX || m->batch[i] == 0)
    return 0; /* not one of ours: cannot happen */
  b = m->batch[i];
  kp_conn_finish(m->conns[i], code, &r);
  curl_multi_remove_handle(m->multi, easy);
  m->batch[i] = 0;
  if (code == CURLE_ABORTED_BY_CALLBACK && kp_interrupted())
    return 0; /* abandoned: no answer, it may or may not have been applied */
  top = lua_gettop(L);
  lua_rawgeti(L, SLOT_IDS, b);
  call->req.request_id = lua_tolstring(L, -1, &call->req.request_id_len);
  lua_rawgeti(L, ARG_BATCHES, b);
  call->pairs = (lua_Integer)lua_rawlen(L, -1);
  lua_pop(L, 1);
  /* the outcome is on top: res, or nil and err (with work values below) */
  failed = kp_call_map(L, call, &r) == 2;
  kp_conn_release_response(m->conns[i]);
  lua_pushvalue(L, -1);
  lua_rawseti(L, failed ? SLOT_ERRORS : SLOT_RESULTS, b);
  lua_pushboolean(L, 0);
  lua_rawseti(L, failed ? SLOT_RESULTS : SLOT_ERRORS, b);
  if (!lua_isnil(L, SLOT_ON_DONE)) { /* on_done(b, res, err) */
    lua_pushinteger(L, b);
    if (failed)
      lua_pushnil(L);
    lua_pushvalue(L, -2 - failed); /* the outcome */
    if (!failed)
      lua_pushnil(L);
    stop = call_back(L, m, SLOT_ON_DONE, 3);
  }
  lua_settop(L, top);
  return stop;
}

/* Runs batches 1..n with at most `concurrency` transfers in flight; a
 * finished transfer's handle takes the next batch at once, until on_done
 * returns false (n becomes the last batch started). Returns how many
 * batches were started: 1..started, in order. */
static lua_Integer run(lua_State *L, kp_multi *m, lua_Integer n, int concurrency, kp_call *call)
{
  lua_Integer next = 1;
  int active = 0, i, running, queued, before;
  CURLMsg *msg;
  CURLMcode mc;
  for (;;) {
    if (kp_interrupted()) { /* interrupt.c: start nothing, abandon what is in flight */
      detach_all(m);
      return next - 1;
    }
    if (kp_call_expired(call)) /* opts.deadline: start nothing more, the rest ends by it */
      n = next - 1;
    for (i = 0; i < concurrency && next <= n; i++)
      if (m->batch[i] == 0) {
        start(L, m, i, next++, call);
        active++;
      }
    if (active == 0)
      return next - 1;
    mc = curl_multi_perform(m->multi, &running);
    before = active;
    while (mc == CURLM_OK && (msg = curl_multi_info_read(m->multi, &queued)) != NULL)
      if (msg->msg == CURLMSG_DONE) {
        if (finish(L, m, msg->easy_handle, msg->data.result, call))
          n = next - 1; /* stopped: the transfers in flight still end */
        active--;
      }
    if (mc == CURLM_OK && active == before) /* nothing ended: wait for the sockets */
      mc = curl_multi_poll(m->multi, NULL, 0, KP_POLL_MS, NULL);
    if (mc != CURLM_OK) {
      detach_all(m);
      luaL_error(L, KP_MULTI_FNAME ": %s", curl_multi_strerror(mc));
    }
  }
}

/* Pushes opts[name] (nil when absent) after checking its type. */
static void push_option(lua_State *L, const char *name, int type, const char *path,
                        const char *expected)
{
  if (lua_type(L, ARG_OPTS) == LUA_TTABLE)
    lua_getfield(L, ARG_OPTS, name);
  else
    lua_pushnil(L);
  kp_check_type(L, -1, type, KP_MULTI_FNAME, 3, path, expected);
}

/* client:unassign_many(token, batches [, opts]) -> results, errors, started,
 *                                                  interrupted
 * results[i] is what client:unassign(token, batches[i]) would return as res
 * (or false), errors[i] its err (or false). When the interruption flag
 * (interrupt.c) is raised, no batch starts any more and the transfers in
 * flight are abandoned without on_done: their results[i] and errors[i] are
 * nil, as those of the batches never started, and `interrupted` says why
 * ("SIGINT", "SIGTERM", "interrupted"; nil when not interrupted). opts: concurrency (1..64,
 * default 4), request_ids (array, holes get fresh UUIDs), timeout (seconds,
 * per request), on_start(i, request_id) called just before batch i is sent,
 * on_done(i, res, err) called as each batch ends; when it returns false no
 * further batch starts (those in flight end and are reported). started:
 * batches 1..started were sent; the others have no result, no error and
 * got no callback. */
int kp_unassign_many(lua_State *L, kp_client *c)
{
  lua_Integer n, concurrency = KP_DEFAULT_CONCURRENCY;
  kp_call call;
  lua_settop(L, ARG_OPTS);
  kp_call_init(L, &call, c, KP_CALL_UNASSIGN, KP_MULTI_FNAME, ARG_TOKEN);
  if (lua_type(L, ARG_BATCHES) != LUA_TTABLE || !kp_is_array(L, ARG_BATCHES))
    kp_argerror(L, KP_MULTI_FNAME, 2, "batches", "expected an array of batches, got %s",
                luaL_typename(L, ARG_BATCHES));
  n = (lua_Integer)lua_rawlen(L, ARG_BATCHES);
  kp_call_options(L, &call, ARG_OPTS, option_names);
  if (!lua_isnil(L, ARG_OPTS)) {
    lua_getfield(L, ARG_OPTS, "concurrency");
    if (!lua_isnil(L, -1))
      concurrency = kp_check_count(L, -1, KP_MULTI_FNAME, 3, "opts.concurrency", 1, KP_MULTI_MAX);
    lua_pop(L, 1);
  }
  lua_createtable(L, (int)n, 0);
  lua_createtable(L, (int)n, 0);
  lua_createtable(L, (int)n, 0);
  lua_createtable(L, (int)n, 0);
  push_option(L, "request_ids", LUA_TTABLE, "opts.request_ids", "an array of strings");
  push_option(L, "on_done", LUA_TFUNCTION, "opts.on_done", "a function");
  push_option(L, "on_start", LUA_TFUNCTION, "opts.on_start", "a function");
  if (kp_call_credentials(L, &call) != 0)
    return 2; /* nil, err: a token provider failed, nothing was sent */
  prepare_batches(L, &call, n);
  if (n > 0)
    n = run(L, check_pool(L, c, (int)(concurrency < n ? concurrency : n)), n,
            (int)(concurrency < n ? concurrency : n), &call);
  lua_settop(L, SLOT_ERRORS);
  lua_pushinteger(L, n);
  kp_push_interrupted(L);
  return 4;
}
