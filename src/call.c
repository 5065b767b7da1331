/* One call of the API: the sequence every call shares.
 *
 * A call is described by its method, its path and the function that maps its
 * answer (kp_call_types). Every call, one at a time (kp_call_perform) or
 * several at once (multi.c), goes through the same steps: check the token and
 * the per-call options, fix the x-request-id, arm the handle right before the
 * request goes out (kp_call_arm: the one place that sets what a request
 * sends, on every attempt), perform, map the answer. */
#include "kp.h"

const kp_call_type kp_call_types[] = {
  /* KP_CALL_UNASSIGN */ { "unassign", "POST", "/v1/instances/unassign", kp_map_unassign },
  /* KP_CALL_GET_TASK */ { "get_task", "GET", "/v1/instances/tasks/", kp_map_task }, /* + id */
};

/* the per-call options of unassign and get_task */
static const char *const call_option_names[] = { "request_id", "timeout", NULL };

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
  call->req.token = kp_check_token(L, base, fname, 1, &call->req.token_len);
  call->req.request_id = NULL;
  call->req.request_id_len = 0;
  call->req.body = NULL;
  call->req.body_len = 0;
  call->req.timeout_ms = c->timeout_ms;
  call->secrets.n = 0;
  kp_secrets_add(&call->secrets, call->req.token, call->req.token_len);
  call->pairs = 0;
  call->task_arg = 0;
}

void kp_call_options(lua_State *L, kp_call *call, int idx, const char *const names[])
{
  int argn = idx - call->base + 1;
  if (lua_isnil(L, idx))
    return;
  kp_check_opts(L, idx, call->fname, argn, names);
  lua_getfield(L, idx, "timeout");
  if (!lua_isnil(L, -1))
    call->req.timeout_ms = kp_check_seconds(L, -1, call->fname, argn, "opts.timeout");
  lua_pop(L, 1);
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

int kp_call_arm(kp_call *call, kp_conn *k)
{
  return kp_conn_prepare(k, &call->req);
}

int kp_call_map(lua_State *L, const kp_call *call, const kp_result *r)
{
  int results = call->type->map(L, r, call->req.request_id, &call->secrets);
  if (results == 1 && call->task_arg != 0) { /* GetTask's data has no task_id: the one asked for */
    lua_pushvalue(L, call->task_arg);
    lua_setfield(L, -2, "task_id");
  }
  if (call->c->hook.ref != LUA_NOREF)
    kp_event_emit(L, &call->c->hook, call->type->name, r, &call->req, call->pairs, results,
                  &call->secrets);
  return results;
}

int kp_call_perform(lua_State *L, kp_call *call)
{
  kp_conn *k = &call->c->conn;
  kp_result r;
  int results;
  if (kp_interrupted()) /* e.g. a retry after a sleep cut short by SIGINT */
    return kp_push_interrupted_error(L, call->req.request_id);
  if (kp_call_arm(call, k) != 0)
    return luaL_error(L, "%s: not enough memory", call->fname);
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

int kp_get_task(lua_State *L, kp_client *c, const char *fname, int base)
{
  int opts = base + 2;
  size_t len;
  const char *id;
  kp_call call;
  kp_call_init(L, &call, c, KP_CALL_GET_TASK, fname, base);
  id = kp_check_task_id(L, base + 1, fname, 2, &len);
  push_call_options(L, &call, opts);
  kp_push_path(L, call.type->path, id, len);
  /* the request id and the path stay on the stack while in use */
  call.req.request_id = lua_tolstring(L, -2, &call.req.request_id_len);
  call.req.path = lua_tostring(L, -1);
  call.task_arg = base + 1;
  return kp_call_perform(L, &call);
}
