/* Response mapping: a finished transfer becomes `res` or `nil, err`.
 *
 * KooPhone answers many errors with HTTP 200, so the body's error_code
 * decides, not the status. The body is decoded exactly as received: a secret
 * that happens to occur in its syntax or values (a token "0", "data" or "{")
 * must not change what the answer says. What leaves as free text (error_msg,
 * an error's code and message, a body excerpt) goes through kp_push_redacted.
 * The identifiers of an answer (task_id, the jobs' instance_id and job_id) are
 * data the caller needs byte for byte: they are kept as sent, never scanned,
 * and never put into a message by the library. The decoded tables are reused
 * for the result (the jobs array is the server's cmd_jobs or, for GetTask,
 * data.jobs, checked and completed in place). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kp.h"

#define KP_BINDING_NOT_FOUND "KOOPHONE.API.2210"
/* The words of koophone.applied.not_proof (lua/koophone/applied.lua): %s the code, %d the pairs */
#define KP_NOT_PROOF                                                                              \
  "%s after a copy that may have been applied is no proof for a request of %d pairs: any of "     \
  "them may have been unassigned; check the bindings before sending it again"

static int is_absent(lua_State *L, int idx)
{
  /* cjson decodes JSON null to a light userdata */
  return lua_isnil(L, idx) || lua_type(L, idx) == LUA_TLIGHTUSERDATA;
}

static int field_is_string(lua_State *L, int idx, const char *name)
{
  int ok;
  lua_getfield(L, idx, name);
  ok = lua_type(L, -1) == LUA_TSTRING;
  lua_pop(L, 1);
  return ok;
}

/* 1 when data is absent or {task_id?, cmd_jobs?[{instance_id, job_id}]}. */
static int data_has_expected_shape(lua_State *L, int data)
{
  int i, n, jobs, ok = 1;
  if (is_absent(L, data))
    return 1;
  if (lua_type(L, data) != LUA_TTABLE)
    return 0;
  lua_getfield(L, data, "task_id");
  ok = is_absent(L, -1) || lua_type(L, -1) == LUA_TSTRING;
  lua_getfield(L, data, "cmd_jobs");
  jobs = lua_gettop(L);
  if (ok && !is_absent(L, jobs)) {
    ok = lua_type(L, jobs) == LUA_TTABLE && kp_is_array(L, jobs);
    n = ok ? (int)lua_rawlen(L, jobs) : 0;
    for (i = 1; ok && i <= n; i++) {
      lua_rawgeti(L, jobs, i);
      ok = lua_type(L, -1) == LUA_TTABLE && field_is_string(L, -1, "instance_id") &&
           field_is_string(L, -1, "job_id");
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 2);
  return ok;
}

static void set_string(lua_State *L, int t, const char *name, const char *value)
{
  lua_pushstring(L, value);
  lua_setfield(L, t, name);
}

static void copy_field(lua_State *L, int from, int to, const char *name)
{
  lua_getfield(L, from, name);
  if (lua_type(L, -1) == LUA_TSTRING)
    lua_setfield(L, to, name);
  else
    lua_pop(L, 1);
}

/* Pushes the result table; the jobs are data.cmd_jobs itself. error_code is
 * the code the answer was recognised by (it cannot carry text of its own). */
static void push_result(lua_State *L, int decoded, const kp_result *r, const char *request_id,
                        const char *outcome, const char *error_code, const kp_secrets *sec)
{
  size_t len;
  const char *msg;
  int res, data;
  lua_createtable(L, 0, 10);
  res = lua_gettop(L);
  lua_getfield(L, decoded, "data");
  data = lua_gettop(L);
  if (lua_type(L, data) == LUA_TTABLE) {
    copy_field(L, data, res, "task_id");
    lua_getfield(L, data, "cmd_jobs");
  } else {
    lua_pushnil(L);
  }
  if (lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
  }
  lua_setfield(L, res, "jobs");
  lua_pop(L, 1);
  set_string(L, res, "error_code", error_code);
  lua_getfield(L, decoded, "error_msg");
  if (lua_type(L, -1) == LUA_TSTRING) {
    msg = lua_tolstring(L, -1, &len);
    kp_push_redacted(L, msg, len, sec);
    lua_setfield(L, res, "error_msg");
  }
  lua_pop(L, 1);
  set_string(L, res, "request_id", request_id);
  set_string(L, res, "outcome", outcome);
  lua_pushinteger(L, (lua_Integer)r->status);
  lua_setfield(L, res, "status");
  lua_pushinteger(L, r->attempts);
  lua_setfield(L, res, "attempts");
  lua_pushinteger(L, r->attempts - 1);
  lua_setfield(L, res, "resends");
}

static int push_failure(lua_State *L, kp_error *e, const kp_secrets *sec)
{
  lua_pushnil(L);
  kp_push_error(L, e, sec);
  return 2;
}

static void body_as_message(kp_error *e, const kp_result *r)
{
  if (r->body_len > 0) {
    e->message = r->body;
    e->message_len = r->body_len;
  } else {
    e->message = "empty body";
    e->message_len = strlen(e->message);
  }
}

/* Starts the error of an answer: what the exchange says (request id, status,
 * attempts) and, when the transfer itself failed (libcurl, size cap, memory),
 * its kind, code and message; returns whether it failed. */
static int transfer_problem(kp_error *e, const kp_result *r, const char *request_id)
{
  memset(e, 0, sizeof *e);
  e->request_id = request_id;
  e->status = r->status;
  e->retry_after = r->retry_after;
  e->sent = r->sent;
  e->attempts = r->attempts;
  e->resends = r->attempts - 1;
  e->kind = "decode";
  if (r->too_large || r->out_of_memory) {
    e->code = r->too_large ? "BODY_TOO_LARGE" : "OUT_OF_MEMORY";
    e->message = r->too_large ? "the response body is larger than max_response_bytes"
                              : "no memory to store the response body";
  } else if (r->cancelled) { /* sent as libcurl says: koophone.applied reads it */
    e->kind = "interrupted";
    e->code = "CANCELLED";
    e->message = "cancelled during the transfer";
  } else if (r->code != CURLE_OK) {
    e->kind = kp_curl_code_kind(r->code);
    e->code = kp_curl_code_name(r->code);
    e->message = r->curl_message;
  }
  if (e->code == NULL)
    return 0;
  e->code_len = strlen(e->code);
  e->message_len = strlen(e->message);
  return 1;
}

/* transfer_problem, and when there is one pushes nil, err and returns 2; else 0. */
static int transfer_failure(lua_State *L, kp_error *e, const kp_result *r, const char *request_id,
                            const kp_secrets *sec)
{
  return transfer_problem(e, r, request_id) ? push_failure(L, e, sec) : 0;
}

/* Pushes the decoded body; returns its index. */
static int push_decoded(lua_State *L, const kp_result *r)
{
  lua_pushvalue(L, KP_UV_DECODE);
  lua_pushlstring(L, r->body, r->body_len);
  lua_call(L, 1, 1);
  return lua_gettop(L);
}

/* The body's error_code when it is a string other than "0" (kind "api",
 * message from error_msg): 1; else 0. Pushes two values either way. */
static int api_error(lua_State *L, int decoded, kp_error *e)
{
  if (lua_type(L, decoded) != LUA_TTABLE) {
    lua_pushnil(L);
    lua_pushnil(L);
    return 0;
  }
  lua_getfield(L, decoded, "error_code");
  lua_getfield(L, decoded, "error_msg");
  if (lua_type(L, -2) != LUA_TSTRING || strcmp(lua_tostring(L, -2), "0") == 0)
    return 0;
  e->kind = "api";
  e->code = lua_tolstring(L, -2, &e->code_len);
  if (lua_type(L, -1) == LUA_TSTRING)
    e->message = lua_tolstring(L, -1, &e->message_len);
  else
    e->message = "";
  return 1;
}

/* An answer that is neither a success nor an API error: BAD_JSON or
 * BAD_SHAPE for a 2xx, HTTP.<status> otherwise, with the body as message.
 * e by value: its code may point at this function's buffer. */
static int answer_failure(lua_State *L, kp_error e, const kp_result *r, int decoded,
                          const kp_secrets *sec)
{
  char http_code[32];
  if (r->status >= 200 && r->status < 300) {
    e.code = lua_type(L, decoded) == LUA_TNIL ? "BAD_JSON" : "BAD_SHAPE";
    e.code_len = strlen(e.code);
  } else {
    e.kind = "http";
    e.code_len = (size_t)snprintf(http_code, sizeof http_code, "HTTP.%ld", r->status);
    e.code = http_code;
  }
  body_as_message(&e, r);
  return push_failure(L, &e, sec);
}

/* A 2210 answered to libcurl's silent resend (the copy before it went unanswered and may have
 * been applied). This is koophone.applied's rule (lua/koophone/applied.lua) for the one case
 * the core's own one-request API meets: a request of one pair was done by that copy
 * (assumed_unassigned, the 2210 in res.err); for more pairs the 2210 may concern only one of
 * them, so it proves nothing: nil, err with maybe_applied and the message saying so. */
static int not_found_after_resend(lua_State *L, int decoded, const kp_result *r, kp_error *e,
                                  const char *request_id, const kp_secrets *sec,
                                  lua_Integer pairs)
{
  size_t len;
  const char *note;
  if (pairs == 1) {
    push_result(L, decoded, r, request_id, "assumed_unassigned", KP_BINDING_NOT_FOUND, sec);
    kp_push_error(L, e, sec);
    lua_setfield(L, -2, "err");
    return 1;
  }
  e->maybe_applied = 1;
  push_failure(L, e, sec);
  /* redacted on its own (a toy token such as "0" occurs in it), so that the cut of a long
   * server message cannot cut it off */
  lua_getfield(L, -1, "message");
  lua_pushfstring(L, " (" KP_NOT_PROOF ")", KP_BINDING_NOT_FOUND, (int)pairs);
  note = lua_tolstring(L, -1, &len);
  kp_push_redacted(L, note, len, sec);
  lua_remove(L, -2);
  lua_concat(L, 2);
  lua_setfield(L, -2, "message");
  return 2;
}

int kp_map_unassign(lua_State *L, const kp_result *r, const char *request_id,
                    const kp_secrets *sec, lua_Integer pairs)
{
  kp_error e;
  int decoded, ok_status = r->status >= 200 && r->status < 300;
  if (transfer_failure(L, &e, r, request_id, sec))
    return 2;
  decoded = push_decoded(L, r);
  if (api_error(L, decoded, &e)) {
    if (e.resends > 0 && strcmp(e.code, KP_BINDING_NOT_FOUND) == 0)
      return not_found_after_resend(L, decoded, r, &e, request_id, sec, pairs);
    return push_failure(L, &e, sec);
  }
  if (lua_type(L, -2) == LUA_TSTRING) { /* error_code "0" */
    lua_getfield(L, decoded, "data");
    if (ok_status && data_has_expected_shape(L, lua_gettop(L))) {
      push_result(L, decoded, r, request_id, "unassigned", "0", sec);
      return 1;
    }
  }
  return answer_failure(L, e, r, decoded, sec);
}

/* The state of a job's status: 2 succeeded; -1, 3 failed; 0 pending; 1 running. */
static const char *job_state(lua_State *L, int status)
{
  lua_Number n;
  if (lua_type(L, status) != LUA_TNUMBER)
    return "unknown";
  n = lua_tonumber(L, status);
  if (n == 2)
    return "succeeded";
  if (n == -1 || n == 3)
    return "failed";
  if (n == 0)
    return "pending";
  if (n == 1)
    return "running";
  return "unknown";
}

static void redact_field(lua_State *L, int t, const char *name, const kp_secrets *sec)
{
  size_t len;
  const char *s;
  lua_getfield(L, t, name);
  if (lua_type(L, -1) == LUA_TSTRING) {
    s = lua_tolstring(L, -1, &len);
    kp_push_redacted(L, s, len, sec);
    lua_setfield(L, t, name);
  }
  lua_pop(L, 1);
}

/* 1 when data.jobs is an array of tables with a string job_id; then every
 * job gains its state (an integral status becomes an integer) and its free
 * text is redacted, in place. */
static int complete_jobs(lua_State *L, int jobs, const kp_secrets *sec)
{
  int i, n, job;
  if (lua_type(L, jobs) != LUA_TTABLE || !kp_is_array(L, jobs))
    return 0;
  n = (int)lua_rawlen(L, jobs);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, jobs, i);
    job = lua_gettop(L);
    if (lua_type(L, job) != LUA_TTABLE || !field_is_string(L, job, "job_id"))
      return 0;
    lua_getfield(L, job, "status");
    if (lua_type(L, -1) == LUA_TNUMBER && fabs(lua_tonumber(L, -1)) < 9007199254740992.0 &&
        lua_tonumber(L, -1) == floor(lua_tonumber(L, -1))) { /* exact below 2^53 */
      lua_pushinteger(L, (lua_Integer)lua_tonumber(L, -1));
      lua_setfield(L, job, "status");
    }
    lua_pushstring(L, job_state(L, -1));
    lua_setfield(L, job, "state");
    redact_field(L, job, "error_code", sec);
    redact_field(L, job, "error_msg", sec);
    redact_field(L, job, "execute_msg", sec);
    lua_settop(L, job - 1);
  }
  return 1;
}

int kp_map_task(lua_State *L, const kp_result *r, const char *request_id, const kp_secrets *sec,
                lua_Integer pairs)
{
  kp_error e;
  int decoded, jobs;
  (void)pairs;
  if (transfer_failure(L, &e, r, request_id, sec))
    return 2;
  decoded = push_decoded(L, r);
  if (api_error(L, decoded, &e))
    return push_failure(L, &e, sec);
  if (lua_type(L, -2) == LUA_TSTRING && r->status >= 200 && r->status < 300) {
    lua_getfield(L, decoded, "data");
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_getfield(L, -1, "jobs");
      jobs = lua_gettop(L);
      if (complete_jobs(L, jobs, sec)) {
        lua_createtable(L, 0, 4);
        lua_pushvalue(L, jobs);
        lua_setfield(L, -2, "jobs");
        set_string(L, lua_gettop(L), "request_id", request_id);
        lua_pushinteger(L, (lua_Integer)r->status);
        lua_setfield(L, -2, "status");
        return 1;
      }
    }
  }
  return answer_failure(L, e, r, decoded, sec);
}

/* An integral number below 2^53 (exact) at idx: 1 with it in *n. */
static int integral(lua_State *L, int idx, lua_Integer *n)
{
  lua_Number v;
  if (lua_type(L, idx) != LUA_TNUMBER)
    return 0;
  v = lua_tonumber(L, idx);
  if (!(fabs(v) < 9007199254740992.0) || v != floor(v))
    return 0;
  *n = (lua_Integer)v;
  return 1;
}

/* 1 when result is an array of tables with a string instance_id; then every instance keeps
 * its fields as sent but for a JSON null (left out) and an integral number (an integer), in
 * place. An instance's fields are data (ids, names, states): none is scanned or redacted. */
static int complete_instances(lua_State *L, int result)
{
  lua_Integer n;
  int i, count, inst;
  if (lua_type(L, result) != LUA_TTABLE || !kp_is_array(L, result))
    return 0;
  count = (int)lua_rawlen(L, result);
  for (i = 1; i <= count; i++) {
    lua_rawgeti(L, result, i);
    inst = lua_gettop(L);
    if (lua_type(L, inst) != LUA_TTABLE || !field_is_string(L, inst, "instance_id"))
      return 0;
    lua_pushnil(L);
    while (lua_next(L, inst) != 0) { /* assigning existing fields (nil too) keeps next valid */
      if (is_absent(L, -1)) {
        lua_pushvalue(L, -2);
        lua_pushnil(L);
        lua_rawset(L, inst);
      } else if (integral(L, -1, &n)) {
        lua_pushvalue(L, -2);
        lua_pushinteger(L, n);
        lua_rawset(L, inst);
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  return 1;
}

/* res[name] = data[name], an integer >= 0; 0 when it is not one. */
static int set_count(lua_State *L, int data, int res, const char *name)
{
  lua_Integer n;
  int ok;
  lua_getfield(L, data, name);
  ok = integral(L, -1, &n) && n >= 0;
  lua_pop(L, 1);
  if (ok) {
    lua_pushinteger(L, n);
    lua_setfield(L, res, name);
  }
  return ok;
}

int kp_map_list(lua_State *L, const kp_result *r, const char *request_id, const kp_secrets *sec,
                lua_Integer pairs)
{
  kp_error e;
  int decoded, data, res;
  (void)pairs;
  if (transfer_failure(L, &e, r, request_id, sec))
    return 2;
  decoded = push_decoded(L, r);
  if (api_error(L, decoded, &e)) /* a 4xx has its error_code at the top level */
    return push_failure(L, &e, sec);
  if (lua_type(L, decoded) == LUA_TTABLE) {
    lua_getfield(L, decoded, "data");
    data = lua_gettop(L);
    /* a 200's business error sits inside data; its error_code "0" (or none) is a page */
    if (api_error(L, data, &e))
      return push_failure(L, &e, sec);
    if (r->status >= 200 && r->status < 300 && lua_type(L, data) == LUA_TTABLE) {
      lua_getfield(L, data, "result");
      lua_createtable(L, 0, 6);
      res = lua_gettop(L);
      if (complete_instances(L, res - 1) && set_count(L, data, res, "total_count") &&
          set_count(L, data, res, "page_no") && set_count(L, data, res, "page_size")) {
        lua_pushvalue(L, res - 1);
        lua_setfield(L, res, "instances");
        set_string(L, res, "request_id", request_id);
        lua_pushinteger(L, (lua_Integer)r->status);
        lua_setfield(L, res, "status");
        lua_settop(L, res);
        return 1;
      }
    }
  }
  return answer_failure(L, e, r, decoded, sec);
}

/* Maps IAM's answer to POST /v3/auth/tokens: res = { token =, expires_at = <the
 * answer's token.expires_at text>, status = 201, attempts = } or nil, err of
 * kind "auth" saying what failed (the token is a secret of the caller's call:
 * sec holds the password). */
int kp_map_iam_token(lua_State *L, const kp_result *r, const char *request_id,
                     const kp_secrets *sec, lua_Integer pairs)
{
  kp_error e;
  const char *what = NULL, *detail = "";
  size_t detail_len = 0;
  int decoded = 0;
  (void)pairs;
  if (transfer_problem(&e, r, request_id)) { /* its code, its message as the detail */
    e.status = 0;
    what = "cannot get a token from IAM";
    detail = e.message, detail_len = e.message_len;
  } else {
    e.code = "IAM_FAILED", e.code_len = strlen(e.code);
    decoded = push_decoded(L, r);
  }
  e.kind = "auth";
  e.retry_after = 0;
  if (what == NULL && r->status != 201) {
    what = "IAM refused the token request";
    if (lua_istable(L, decoded))
      lua_getfield(L, decoded, "error"); /* {"error":{"code":401,"message":"…"}} */
    if (lua_istable(L, -1))
      lua_getfield(L, -1, "message");
    if (lua_type(L, -1) == LUA_TSTRING)
      detail = lua_tolstring(L, -1, &detail_len);
    else
      detail = r->body, detail_len = r->body_len;
  } else if (what == NULL && r->subject_token == NULL) {
    what = "IAM's answer is malformed";
    detail = r->subject_too_large
                 ? lua_pushfstring(L, "its X-Subject-Token header is larger than %d KiB",
                                   KP_SUBJECT_TOKEN_MAX / 1024)
                 : "it has no X-Subject-Token header";
    detail_len = strlen(detail);
  } else if (what == NULL) {
    if (lua_istable(L, decoded))
      lua_getfield(L, decoded, "token");
    if (lua_istable(L, -1))
      lua_getfield(L, -1, "expires_at");
    if (lua_type(L, -1) != LUA_TSTRING) {
      what = "IAM's answer is malformed";
      detail = "it has no token.expires_at";
      detail_len = strlen(detail);
    }
  }
  if (what != NULL) {
    if (e.status == 0)
      lua_pushfstring(L, "%s: ", what);
    else
      lua_pushfstring(L, "%s (HTTP %d): ", what, (int)r->status);
    lua_pushlstring(L, detail, detail_len);
    lua_concat(L, 2);
    e.message = lua_tolstring(L, -1, &e.message_len);
    return push_failure(L, &e, sec);
  }
  lua_createtable(L, 0, 4);
  lua_pushlstring(L, r->subject_token, r->subject_token_len);
  lua_setfield(L, -2, "token");
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "expires_at");
  lua_pushinteger(L, (lua_Integer)r->status);
  lua_setfield(L, -2, "status");
  lua_pushinteger(L, r->attempts);
  lua_setfield(L, -2, "attempts");
  return 1;
}
