/* One call of the API: the sequence every call shares.
 *
 * A call is described by its method, its path, its query and the function that
 * maps its answer (kp_call_types); a read is that row and nothing more
 * (kp_call_read sends it, client.c and koophone.c register a method and a
 * function per read row). Every call, one at a time (kp_call_perform) or
 * several at once (multi.c), goes through the same steps: check the token and
 * the per-call options, fix the x-request-id, arm the handle right before the
 * request goes out (kp_call_arm: the one place that sets what a request
 * sends, on every attempt), perform, map the answer. */
#include <string.h>
#include <time.h>

#include "kp.h"

/* ListInstances' query: x-request-id is a query parameter of this call (its reference lists it
 * there, the header too is sent as for every call); the limits of page_no and page_size are not
 * documented: ours catch mistakes, the server answers 1000 for a page it does not serve. */
static const kp_query_param list_query[] = {
  { "x-request-id", KP_QUERY_REQUEST_ID, 0, 0, 0 },
  { "page_no", KP_QUERY_COUNT, 0, 2147483647, 1 },
  { "page_size", KP_QUERY_COUNT, 1, 1000, 100 },
  { "instance_id", KP_QUERY_ID, 0, 0, 0 },
  { "instance_name", KP_QUERY_TEXT, 0, 0, 0 },
  { "pool_scene_tag", KP_QUERY_TEXT, 0, 0, 0 },
  { "pool_name", KP_QUERY_TEXT, 0, 0, 0 },
  { "query_start_time", KP_QUERY_TEXT, 0, 0, 0 },
  { "query_end_time", KP_QUERY_TEXT, 0, 0, 0 },
  { "order", KP_QUERY_TEXT, 0, 0, 0 },
  { "order_by", KP_QUERY_TEXT, 0, 0, 0 },
  { NULL, KP_QUERY_TEXT, 0, 0, 0 },
};

const kp_call_type kp_call_types[KP_CALL_COUNT] = {
  /* KP_CALL_UNASSIGN */ { "unassign", "koophone.unassign", "POST", "/v1/instances/unassign", NULL,
                           kp_map_unassign, 0, 0 },
  /* KP_CALL_GET_TASK */ { "get_task", "koophone.get_task", "GET", "/v1/instances/tasks/", NULL,
                           kp_map_task, 0, 1 }, /* + the task id */
  /* KP_CALL_LIST_INSTANCES */ { "list_instances", "koophone.list_instances", "GET",
                                 "/v1/instances/batch-query", list_query, kp_map_list, 0, 1 },
  /* KP_CALL_IAM_TOKEN */ { "iam_token", "koophone.iam_token", "POST",
                            "/v3/auth/tokens?nocatalog=true", NULL, kp_map_iam_token, 1, 0 },
};

#define OOM "not enough memory"

/* the per-call options of unassign and the reads */
static const char *const call_option_names[] = { "request_id", "timeout", "deadline", "cancel",
                                                 NULL };
/* what a token request takes from the call it fetches a token for (core.iam_token_request) */
static const char *const token_option_names[] = { "deadline", "cancel", NULL };

static int is_provider(lua_State *L, int idx)
{
  int yes = 0;
  if (lua_istable(L, idx) && luaL_getmetafield(L, idx, "__name") != 0) {
    yes = lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), KP_PROVIDER_MT) == 0;
    lua_pop(L, 1);
  }
  return yes;
}

/* provider:<method>() with nresults results */
static void call_provider(lua_State *L, const kp_call *call, const char *method, int nresults)
{
  lua_getfield(L, call->provider, method);
  lua_pushvalue(L, call->provider);
  lua_call(L, 1, nresults);
}

/* Pushes what bounds a token fetch for the call, { deadline = seconds left, cancel = handle },
 * or nil when the call has neither. */
static void push_bounds(lua_State *L, const kp_call *call)
{
  if (call->deadline == 0 && call->req.cancel == NULL) {
    lua_pushnil(L);
    return;
  }
  lua_createtable(L, 0, 2);
  if (call->deadline != 0) {
    lua_pushnumber(L, (lua_Number)(call->deadline - kp_now()));
    lua_setfield(L, -2, "deadline");
  }
  if (call->req.cancel != NULL) {
    lua_getfield(L, call->opts, "cancel");
    lua_setfield(L, -2, "cancel");
  }
}

/* provider:token(bounds), its IAM exchange's event going to this call's client's hook: the
 * provider's own client (provider.client, kept alive by the provider) is lent that hook
 * for the fetch only, in a protected call so that an error cannot leave it lent. */
static void fetch_token(lua_State *L, const kp_call *call)
{
  kp_client *pc;
  int status;
  lua_getfield(L, call->provider, "client"); /* stays below the call: alive until the reset */
  pc = luaL_testudata(L, -1, KP_CLIENT_MT);
  if (pc != NULL && pc->lent != NULL) /* e.g. from the hook of its own token request */
    luaL_error(L, "%s: the token provider is fetching a token already", call->fname);
  lua_getfield(L, call->provider, "token");
  lua_pushvalue(L, call->provider);
  push_bounds(L, call);
  if (pc != NULL) /* lent last: nothing that may raise comes between it and the pcall */
    pc->lent = &call->c->hook;
  status = lua_pcall(L, 2, 2, 0);
  if (pc != NULL)
    pc->lent = NULL;
  if (status != 0)
    lua_error(L);
  lua_remove(L, -3); /* provider.client */
}

int kp_call_expired(kp_call *call)
{
  double left;
  call->req.timeout_ms = call->timeout_ms;
  if (call->deadline == 0)
    return 0;
  left = (call->deadline - kp_now()) * 1000.0;
  if (left < 1)
    return 1;
  if (left < (double)call->req.timeout_ms)
    call->req.timeout_ms = (long)left;
  return 0;
}

/* When the call must stop before sending (its cancel handle raised, its deadline reached):
 * pushes nil, err and returns 2; else 0, the request's timeout set to end by the deadline. */
static int stopped(lua_State *L, kp_call *call)
{
  if (kp_cancel_raised(call->req.cancel))
    return kp_push_unsent_error(L, call->req.request_id, "interrupted", "CANCELLED",
                                "cancelled: not sent");
  if (kp_call_expired(call))
    return kp_push_unsent_error(L, call->req.request_id, "timeout", "DEADLINE_EXCEEDED",
                                "the call's deadline passed: not sent");
  return 0;
}

int kp_call_credentials(lua_State *L, kp_call *call)
{
  if (call->provider == 0)
    return 0;
  if (stopped(L, call) != 0)
    return 2;
  fetch_token(L, call);
  if (lua_type(L, -2) != LUA_TSTRING)
    return 2; /* nil, err */
  lua_pop(L, 1); /* the token stays on the stack while in use */
  call->req.token = kp_check_token(L, -1, call->fname, 1, &call->req.token_len);
  kp_secrets_add(&call->secrets, call->req.token, call->req.token_len);
  return 0;
}

void kp_call_init(lua_State *L, kp_call *call, kp_client *c, int type, const char *fname,
                  int base)
{
  call->type = &kp_call_types[type];
  call->fname = fname;
  call->base = base;
  call->c = c;
  call->req.method = call->type->method;
  call->req.base = c->endpoint;
  call->req.path = call->type->path;
  call->aksk = call->type->anonymous ? NULL : kp_test_aksk(L, base);
  call->provider = 0;
  call->req.token = NULL;
  call->req.token_len = 0;
  if (is_provider(L, base) && !call->type->anonymous)
    call->provider = lua_absindex(L, base);
  else if (call->aksk == NULL && !call->type->anonymous)
    call->req.token = kp_check_token(L, base, fname, 1, &call->req.token_len);
  call->req.request_id = NULL;
  call->req.request_id_len = 0;
  call->req.body = NULL;
  call->req.body_len = 0;
  call->req.timeout_ms = call->timeout_ms = c->timeout_ms;
  call->req.cancel = NULL;
  call->deadline = 0;
  call->opts = 0;
  call->secrets.n = 0;
  kp_secrets_add(&call->secrets, call->req.token, call->req.token_len);
  call->pairs = 0;
  call->task_arg = 0;
  if (call->aksk != NULL) {
    kp_secrets_add(&call->secrets, call->aksk->sk, call->aksk->sk_len);
    kp_secrets_add(&call->secrets, call->aksk->security_token, call->aksk->security_token_len);
  }
}

void kp_call_options(lua_State *L, kp_call *call, int idx, const char *const names[])
{
  int argn = idx - call->base + 1;
  if (lua_isnil(L, idx))
    return;
  kp_check_opts(L, idx, call->fname, argn, names);
  call->opts = lua_absindex(L, idx);
  lua_getfield(L, idx, "timeout");
  if (!lua_isnil(L, -1))
    call->req.timeout_ms = call->timeout_ms =
        kp_check_seconds(L, -1, call->fname, argn, "opts.timeout");
  lua_getfield(L, idx, "deadline");
  if (!lua_isnil(L, -1)) {
    long ms = kp_check_seconds(L, -1, call->fname, argn, "opts.deadline");
    call->deadline = kp_now() + (double)ms / 1000.0;
  }
  lua_getfield(L, idx, "cancel"); /* kept alive by the options table, on the stack */
  if (!lua_isnil(L, -1))
    call->req.cancel = kp_check_cancel(L, -1, call->fname, argn, "opts.cancel");
  lua_pop(L, 3);
}

void kp_call_push_request_id(lua_State *L, kp_call *call, int idx, int argn, const char *path)
{
  char uuid[KP_UUID_LEN + 1];
  size_t len;
  idx = lua_absindex(L, idx);
  if (!lua_isnil(L, idx)) {
    kp_check_request_id(L, idx, call->fname, argn, path, &len);
    lua_pushvalue(L, idx);
    return;
  }
  if (kp_uuid4(&call->c->rng, uuid) != 0)
    luaL_error(L, "%s: the OS random source failed", call->fname);
  lua_pushlstring(L, uuid, KP_UUID_LEN);
}

/* h[n] = the header when value is set; the new count */
static size_t add_header(kp_sign_header *h, size_t n, const char *name, const char *value,
                         size_t len)
{
  if (value == NULL)
    return n;
  h[n].name = name;
  h[n].name_len = strlen(name);
  h[n].value = value;
  h[n].value_len = len;
  return n + 1;
}

/* Signs the request prepared on k with the call's AK/SK, dated now: the
 * date, the project id and the security token are signed, and so is the host
 * as libcurl sends it (from the URL, the scheme's default port left out). */
static const char *sign(const kp_aksk *cred, kp_conn *k, const kp_request *req)
{
  kp_sign_header h[2];
  kp_sign_input in;
  const char *nv[8], *failed;
  char date[KP_SIGN_DATE_LEN + 1];
  if (cred->closed) /* by a callback since the call began */
    return "the credentials were closed during the call";
  memset(&in, 0, sizeof in);
  if (kp_sign_url(&in, k->url.data, k->url.len) != NULL) /* a host not in ASCII (an IDN) */
    return "the endpoint cannot be signed: its host is not printable ASCII";
  kp_sign_date(date, time(NULL));
  in.method = req->method;
  in.method_len = strlen(req->method);
  in.body = req->body;
  in.body_len = req->body_len;
  in.ak = cred->ak;
  in.ak_len = cred->ak_len;
  in.sk = cred->sk;
  in.sk_len = cred->sk_len;
  in.date = date;
  /* the headers sent besides the signature and its date are signed (when present) */
  nv[4] = "X-Project-Id", nv[5] = cred->project_id;
  nv[6] = "X-Security-Token", nv[7] = cred->security_token;
  in.headers = h;
  in.nheaders = add_header(h, 0, nv[4], nv[5], cred->project_id_len);
  in.nheaders = add_header(h, in.nheaders, nv[6], nv[7], cred->security_token_len);
  failed = kp_sign(&k->sign, &in); /* out of memory, or OpenSSL's hash failing */
  if (failed != NULL)
    return failed;
  nv[0] = "Authorization", nv[1] = k->sign.data;
  nv[2] = "X-Sdk-Date", nv[3] = date;
  return kp_conn_set_auth_headers(k, nv, 4) != 0 ? OOM : NULL;
}

const char *kp_call_arm(kp_call *call, kp_conn *k)
{
  if (kp_conn_prepare(k, &call->req) != 0)
    return OOM;
  if (call->aksk != NULL)
    return sign(call->aksk, k, &call->req);
  if (call->req.token == NULL && kp_conn_set_auth_headers(k, NULL, 0) != 0)
    return OOM;
  return NULL;
}

int kp_call_map(lua_State *L, const kp_call *call, const kp_result *r)
{
  kp_hook *h = call->c->lent != NULL ? call->c->lent : &call->c->hook;
  int results = call->type->map(L, r, call->req.request_id, &call->secrets, call->pairs);
  if (results == 1 && call->task_arg != 0) { /* GetTask's data has no task_id: the one asked for */
    lua_pushvalue(L, call->task_arg);
    lua_setfield(L, -2, "task_id");
  }
  if (h->ref != LUA_NOREF)
    kp_event_emit(L, h, call->type->name, r, &call->req, call->pairs, results,
                  call->c->lent != NULL);
  return results;
}

static int perform_once(lua_State *L, kp_call *call)
{
  kp_conn *k = &call->c->conn;
  kp_result r;
  const char *why;
  int results;
  if (kp_interrupted()) /* e.g. a retry after a sleep cut short by SIGINT */
    return kp_push_interrupted_error(L, call->req.request_id);
  if (stopped(L, call) != 0) /* e.g. the token fetch took the time left */
    return 2;
  if ((why = kp_call_arm(call, k)) != NULL)
    return luaL_error(L, "%s: %s", call->fname, why);
  kp_conn_perform(k, &r);
  results = kp_call_map(L, call, &r);
  kp_conn_release_response(k);
  return results;
}

/* Checks a call's options (request_id, timeout) at opts, the argument after
 * the call's two, and pushes its x-request-id. */
static void push_call_options(lua_State *L, kp_call *call, int opts)
{
  kp_call_options(L, call, opts, call_option_names);
  if (lua_isnil(L, opts))
    lua_pushnil(L);
  else
    lua_getfield(L, opts, "request_id");
  kp_call_push_request_id(L, call, -1, 3, "opts.request_id");
}

/* The err on top is the gateway refusing a token: 401 APIGW.0301 or APIGW.0307. */
static int token_refused(lua_State *L)
{
  int yes;
  lua_getfield(L, -1, "status");
  lua_getfield(L, -2, "code");
  yes = lua_tointeger(L, -2) == 401 && lua_type(L, -1) == LUA_TSTRING &&
        (strcmp(lua_tostring(L, -1), "APIGW.0301") == 0 ||
         strcmp(lua_tostring(L, -1), "APIGW.0307") == 0);
  lua_pop(L, 2);
  return yes;
}

/* The integer field `name` of the outcome on top (0 when absent). */
static lua_Integer integer_field(lua_State *L, const char *name)
{
  lua_Integer n;
  lua_getfield(L, -1, name);
  n = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return n;
}

/* outcome.name += n, on the outcome on top */
static void add_to_field(lua_State *L, const char *name, lua_Integer n)
{
  lua_pushinteger(L, integer_field(L, name) + n);
  lua_setfield(L, -2, name);
}

int kp_call_perform(lua_State *L, kp_call *call)
{
  lua_Integer attempts, resends;
  int results;
  if (kp_call_credentials(L, call) != 0)
    return 2;
  results = perform_once(L, call);
  if (call->provider == 0 || results != 2 || !token_refused(L))
    return results;
  /* once: invalidate, a new token, the same request (same x-request-id). The refused copy
   * counts as a request sent, never as a resend after a lost answer: the gateway answered it
   * before the service saw it, so nothing was applied (koophone.applied reads these facts). */
  attempts = integer_field(L, "attempts");
  resends = integer_field(L, "resends");
  lua_pop(L, 2);
  call_provider(L, call, "invalidate", 0);
  if (kp_call_credentials(L, call) != 0)
    return 2;
  results = perform_once(L, call);
  add_to_field(L, "attempts", attempts);
  add_to_field(L, "resends", resends);
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "renewed");
  return results;
}

int kp_iam_token(lua_State *L, kp_client *c, const char *fname, int base)
{
  kp_call call;
  size_t len;
  const char *password;
  kp_call_init(L, &call, c, KP_CALL_IAM_TOKEN, fname, base);
  call.req.body = luaL_checklstring(L, base, &call.req.body_len);
  password = luaL_checklstring(L, base + 1, &len);
  kp_call_options(L, &call, base + 2, token_option_names);
  kp_secrets_add(&call.secrets, password, len);
  lua_pushnil(L);
  kp_call_push_request_id(L, &call, -1, 1, "request_id");
  call.req.request_id = lua_tolstring(L, -1, &call.req.request_id_len);
  return kp_call_perform(L, &call);
}

int kp_unassign(lua_State *L, kp_client *c, const char *fname, int base)
{
  int opts = base + 2;
  kp_call call;
  kp_call_init(L, &call, c, KP_CALL_UNASSIGN, fname, base);
  push_call_options(L, &call, opts);
  kp_push_request_body(L, &c->body, base + 1, fname, 2, "pairs");
  /* the request id and the body stay on the stack while in use */
  call.req.request_id = lua_tolstring(L, -2, &call.req.request_id_len);
  call.req.body = lua_tolstring(L, -1, &call.req.body_len);
  call.pairs = (lua_Integer)lua_rawlen(L, base + 1);
  return kp_call_perform(L, &call);
}

int kp_call_read(lua_State *L, kp_client *c, int type, int base)
{
  const kp_call_type *t = &kp_call_types[type];
  size_t len = 0;
  const char *id = NULL;
  kp_call call;
  kp_call_init(L, &call, c, type, t->fname, base);
  if (t->query == NULL)
    id = kp_check_task_id(L, base + 1, t->fname, 2, &len);
  push_call_options(L, &call, base + 2);
  call.req.request_id = lua_tolstring(L, -1, &call.req.request_id_len);
  if (t->query == NULL) {
    kp_push_path(L, t->path, id, len);
    call.task_arg = base + 1;
  } else {
    kp_push_query(L, t->path, t->query, base + 1, t->fname, 2, call.req.request_id,
                  call.req.request_id_len);
  }
  /* the request id and the path stay on the stack while in use */
  call.req.path = lua_tostring(L, -1);
  return kp_call_perform(L, &call);
}

void kp_call_set_reads(lua_State *L, int t, int uv, lua_CFunction f)
{
  int type, i;
  t = lua_absindex(L, t);
  uv = lua_absindex(L, uv);
  for (type = 0; type < KP_CALL_COUNT; type++) {
    if (!kp_call_types[type].read)
      continue;
    for (i = 0; i < KP_NUPVALUES; i++)
      lua_pushvalue(L, uv + i);
    lua_pushinteger(L, type);
    lua_pushcclosure(L, f, KP_NUPVALUES + 1);
    lua_setfield(L, t, kp_call_types[type].name);
  }
}
