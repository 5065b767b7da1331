/* on_event: one event per HTTP exchange, after it ended (docs/events.md).
 *
 * The event is built only when a hook is set (call.c checks hook.ref), from
 * libcurl's own timers and counters and from the outcome already mapped, so
 * its code and kind are the redacted ones of the error. It never holds the
 * token, a header or a pair's ids. The hook runs in a protected call: an
 * error it raises cannot change the call's result; the first one of each
 * client is written to stderr, the later ones are dropped. */
#include <stdio.h>
#include <string.h>

#include "kp.h"

static void set_number(lua_State *L, const char *name, lua_Number v)
{
  lua_pushnumber(L, v);
  lua_setfield(L, -2, name);
}

static void set_integer(lua_State *L, const char *name, lua_Integer v)
{
  lua_pushinteger(L, v);
  lua_setfield(L, -2, name);
}

/* event[name] = outcome[name] (the outcome table at idx) */
static void copy_field(lua_State *L, int idx, const char *name)
{
  lua_getfield(L, idx, name);
  lua_setfield(L, -2, name);
}

/* ev.attempt counts the copies of one x-request-id sent so far: the retries
 * of a call (koophone.client) reuse its id, libcurl's resends count too. */
static int next_attempt(kp_hook *h, const kp_request *req, int copies)
{
  if (strlen(h->last_id) != req->request_id_len ||
      memcmp(h->last_id, req->request_id, req->request_id_len) != 0) {
    memcpy(h->last_id, req->request_id, req->request_id_len);
    h->last_id[req->request_id_len] = '\0';
    h->attempt = 0;
  }
  h->attempt += copies;
  return h->attempt;
}

/* The timings and sizes of the exchange, from libcurl. */
static void set_transfer(lua_State *L, CURL *easy)
{
  curl_off_t total = 0, connect = 0, app = 0, up = 0, down = 0;
  long connects = 0, request_size = 0, header_size = 0;
  curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &total);
  curl_easy_getinfo(easy, CURLINFO_CONNECT_TIME_T, &connect);
  curl_easy_getinfo(easy, CURLINFO_APPCONNECT_TIME_T, &app);
  curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &connects);
  curl_easy_getinfo(easy, CURLINFO_REQUEST_SIZE, &request_size);
  curl_easy_getinfo(easy, CURLINFO_SIZE_UPLOAD_T, &up);
  curl_easy_getinfo(easy, CURLINFO_HEADER_SIZE, &header_size);
  curl_easy_getinfo(easy, CURLINFO_SIZE_DOWNLOAD_T, &down);
  if (connects == 0) /* reused: no connect and no handshake were part of this exchange */
    connect = app = 0;
  set_number(L, "duration", (lua_Number)total / 1e6);
  set_number(L, "connect", (lua_Number)connect / 1e6);
  set_number(L, "tls", app > connect ? (lua_Number)(app - connect) / 1e6 : 0);
  lua_pushboolean(L, connects == 0);
  lua_setfield(L, -2, "reused");
  set_integer(L, "bytes_sent", (lua_Integer)request_size + (lua_Integer)up);
  set_integer(L, "bytes_received", (lua_Integer)header_size + (lua_Integer)down);
}

/* The hook's error message, written once per client; it is the caller's own
 * text, but it may quote the event, which holds nothing secret. */
static void report(kp_hook *h, lua_State *L)
{
  const char *msg = lua_tostring(L, -1);
  if (!h->failed)
    fprintf(stderr, "koophone: on_event raised (reported once per client): %s\n",
            msg != NULL ? msg : "(error object is not a string)");
  h->failed = 1;
}

void kp_event_emit(lua_State *L, kp_hook *h, const char *name, const kp_result *r,
                   const kp_request *req, lua_Integer pairs, int results, int lent)
{
  int outcome = lua_gettop(L), top = outcome;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref);
  lua_createtable(L, 0, 18);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "call");
  lua_pushlstring(L, req->request_id, req->request_id_len);
  lua_setfield(L, -2, "request_id");
  set_integer(L, "attempt", lent ? r->attempts : next_attempt(h, req, r->attempts));
  set_integer(L, "resends", r->attempts - 1);
  set_integer(L, "status", (lua_Integer)r->status);
  lua_pushboolean(L, r->sent);
  lua_setfield(L, -2, "sent");
  set_integer(L, "pairs", pairs);
  if (results == 1) {
    /* kept as sent, like res.task_id and the journal's (response.c: the ids of an answer
     * are data, never scanned); redacting it here cost more than the whole call */
    copy_field(L, outcome, "task_id");
    copy_field(L, outcome, "outcome");
  } else {
    copy_field(L, outcome, "kind");
    copy_field(L, outcome, "code");
  }
  set_transfer(L, r->easy);
  h->running = 1;
  if (lua_pcall(L, 1, 0, 0) != 0)
    report(h, L);
  h->running = 0;
  lua_settop(L, top);
}
