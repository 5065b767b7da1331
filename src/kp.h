/* Shared declarations of the koophone core: one header, one section per file.
 *
 * The files form a one-way pipeline and the sections follow it: a file calls
 * only functions of the sections above its own (make deps-graph checks it).
 *   check.c                      every raising argument check
 *   rng.c ... rows.c             leaves: ids, time, signals, redaction, errors, sets
 *   request.c response.c transport.c   the body, the answer, the wire
 *   event.c                      on_event: the event of one exchange
 *   call.c                       one call: prepare, send-time step, perform, map
 *   multi.c                      several calls at once (transfer sets), from call.c's pieces
 *   client.c                     the client object, methods as thin wrappers
 *   koophone.c                   the module entry */
#ifndef KP_H
#define KP_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <curl/curl.h>

#include "compat.h"

#define KP_VERSION "0.1.0"
#define KP_CLIENT_MT "koophone.client"
#define KP_ERROR_MT "koophone.Error"
#define KP_ID_MAX 32          /* documented limit of user_id and instance_id */
#define KP_REQUEST_ID_MAX 128 /* our own limit for a caller-given x-request-id */
#define KP_TASK_ID_MAX 128    /* our own limit for a task id (they are ~35 bytes) */
#define KP_UUID_LEN 36

/* Upvalues shared by every function of the module. */
#define KP_UV_ENCODE lua_upvalueindex(1) /* private cjson instance: encode */
#define KP_UV_DECODE lua_upvalueindex(2) /* private cjson instance: decode */
#define KP_UV_STATE lua_upvalueindex(3)  /* module state table (default client) */
#define KP_NUPVALUES 3
/* One more upvalue of the read functions (a read method, its module function): the index of
 * their row in kp_call_types. */
#define KP_UV_CALL lua_upvalueindex(KP_NUPVALUES + 1)

/* A growable byte buffer, owned by the struct that embeds it. */
typedef struct kp_buf {
  char *data;
  size_t len, cap;
} kp_buf;

/* ---- buf.c: growing and freeing a kp_buf ---- */
int kp_buf_reserve(kp_buf *b, size_t need); /* room for need bytes; 0, or -1 out of memory */
void kp_buf_free(kp_buf *b);                /* zeroes, frees, empties; idempotent */

/* ---- check.c: argument checks, all raising in one shape ---- */
/* Raises "<fname>: bad argument #<argn> (<path>): <fmt...>" (lua_pushfstring's
 * formats); argn counts as the user sees it (a method's self is not counted). */
int kp_argerror(lua_State *L, const char *fname, int argn, const char *path, const char *fmt,
                ...);
/* The number at idx as Lua's tostring writes it, pushed (an error message's "got 0", where %f
 * would say 0.0 on Lua 5.3+, unlike the Lua modules' messages). */
const char *kp_number_text(lua_State *L, int idx);
/* Whether s (a Lua string of len bytes) holds CR, LF or NUL: it cannot go into a header. */
int kp_has_crlf_nul(const char *s, size_t len);
const char *kp_check_token(lua_State *L, int idx, const char *fname, int argn, size_t *len);
/* A caller's x-request-id */
const char *kp_check_request_id(lua_State *L, int idx, const char *fname, int argn,
                                const char *path, size_t *len);
/* A task id: 1 to KP_TASK_ID_MAX bytes, no control character (path "task_id"). */
const char *kp_check_task_id(lua_State *L, int idx, const char *fname, int argn, size_t *len);
int kp_lua_task_id_problem(lua_State *L);
/* The options table at t (path "opts"): a table whose keys are all in names. */
void kp_check_opts(lua_State *L, int t, const char *fname, int argn, const char *const names[]);
long kp_check_seconds(lua_State *L, int idx, const char *fname, int argn,
                      const char *path); /* in ms */
lua_Integer kp_check_count(lua_State *L, int idx, const char *fname, int argn, const char *path,
                           lua_Integer min, lua_Integer max); /* an integer from min to max */
/* A string that ends up in a header or a URL: no CR, LF, NUL or other control character. */
const char *kp_check_header_safe(lua_State *L, int idx, const char *fname, int argn,
                                 const char *path);
/* nil or a value of the type; expected: "a function" */
void kp_check_type(lua_State *L, int idx, int type, const char *fname, int argn,
                   const char *path, const char *expected);
/* 1 when table t holds exactly the keys 1..#t (JSON objects decode to tables too) */
int kp_is_array(lua_State *L, int t);

/* ---- rng.c: request ids ---- */
typedef struct kp_rng {
  uint64_t key[2], counter;
  unsigned fork_generation;
  int seeded;
} kp_rng;

void kp_global_init(void); /* curl_global_init and fork tracking, once per process */
int kp_uuid4(kp_rng *rng, char out[KP_UUID_LEN + 1]); /* 0, or -1: no OS randomness */
int kp_lua_random(lua_State *L); /* random() in [0, 1) from the OS random source */

/* ---- redact.c: secrets out of the text that leaves the library ---- */
#define KP_SECRETS_MAX 4 /* the token; the credentials issue adds SK, security token, password */
typedef struct kp_secrets {
  struct {
    const char *s;
    size_t len;
  } item[KP_SECRETS_MAX];
  int n;
} kp_secrets;

/* Adds a secret (kept by pointer, not copied; an empty one is ignored). */
void kp_secrets_add(kp_secrets *sec, const char *s, size_t len);
/* Pushes text that leaves the library as free text (a server message, code or
 * body excerpt, a libcurl message): every run made of 16-byte pieces of a
 * secret, or of a whole shorter secret, becomes "[REDACTED]", control
 * characters become spaces, cut at about 512 bytes. */
void kp_push_redacted(lua_State *L, const char *s, size_t len, const kp_secrets *sec);

/* ---- errors.c: koophone.Error objects ---- */
typedef struct kp_error {
  const char *kind;
  long status;
  const char *code;
  size_t code_len;
  const char *message;
  size_t message_len;
  const char *request_id;
  curl_off_t retry_after;
  int sent, attempts;
  int resends;       /* of the attempts, copies libcurl sent again after an unanswered one */
  int maybe_applied; /* set only where the core itself knows it (err.maybe_applied) */
} kp_error;

/* Pushes an error table; code and message go through kp_push_redacted. The facts of what was
 * sent (sent, attempts, resends) are what koophone.applied, the Lua rule, reads. */
void kp_push_error(lua_State *L, const kp_error *e, const kp_secrets *sec);
const char *kp_curl_code_name(CURLcode code);
const char *kp_curl_code_kind(CURLcode code);
void kp_errors_open(lua_State *L); /* registers the koophone.Error metatable */

/* ---- interrupt.c: the process-wide interruption flag (SIGINT, SIGTERM), cancel handles ---- */
#define KP_CANCEL_MT "koophone.cancel_handle"
/* A cancel handle: the userdata's address is what koophone_cancel (koophone.h) raises. */
typedef struct kp_cancel {
  int raised; /* read and written atomically only */
} kp_cancel;

int kp_interrupted(void); /* 1 once raised */
void kp_push_interrupted(lua_State *L); /* "SIGINT", "SIGTERM", "interrupted" or nil */
int kp_cancel_raised(const kp_cancel *c); /* 1 once c (NULL: none) is raised */
/* The cancel handle at idx, or raises "<fname>: bad argument #<argn> (<path>): ..." */
kp_cancel *kp_check_cancel(lua_State *L, int idx, const char *fname, int argn, const char *path);
/* pushes nil, err (kind "interrupted", not sent) and returns 2 */
int kp_push_interrupted_error(lua_State *L, const char *request_id);
/* pushes nil and the err of a call stopped before sending (sent false, attempts 0); returns 2 */
int kp_push_unsent_error(lua_State *L, const char *request_id, const char *kind,
                         const char *code, const char *message);
/* adds cancel_handle, catch_signals, interrupt, interrupted, clear_interrupt to the module table */
void kp_interrupt_open(lua_State *L);

/* ---- clock.c: sleep and now ---- */
double kp_now(void);              /* monotonic seconds */
void kp_clock_open(lua_State *L); /* adds them to the module table on the stack top */

/* ---- pairset.c: the duplicate set of a bulk run ---- */
void kp_pairset_open(lua_State *L); /* adds pairset to the module table on the stack top */
typedef struct kp_pairset kp_pairset;
kp_pairset *kp_check_pairset(lua_State *L, int idx);
/* Adds the pair (ids without NUL) unless the set has it: 0 when added (with
 * row), 1 when present (*first = its row), -1 when out of memory. */
int kp_pairset_add(kp_pairset *s, const char *u, size_t ul, const char *inst, size_t il,
                   uint64_t row, uint64_t *first);
/* FNV-1a (64 bits) of n bytes, continuing from h (KP_FNV1A_BASIS to start): the pair set's hash
 * and jfile.c's input digest. */
#define KP_FNV1A_BASIS UINT64_C(0xcbf29ce484222325)
uint64_t kp_fnv1a(uint64_t h, const unsigned char *s, size_t n);

/* ---- sign.c: the "SDK-HMAC-SHA256" AK/SK signature (auth-notes.md 1.2-1.4) ---- */
#define KP_SIGN_DATE_LEN 16     /* X-Sdk-Date: YYYYMMDDTHHMMSSZ */
#define KP_SIGN_HEADERS_MAX 32  /* headers given besides host and X-Sdk-Date */

typedef struct kp_sign_header {
  const char *name, *value; /* name in any case; the value is trimmed when signed */
  size_t name_len, value_len;
} kp_sign_header;

/* What is signed; nothing is copied. host ("host[:port]", the scheme's
 * default port left out) and date (KP_SIGN_DATE_LEN bytes) are signed as
 * "host" and "x-sdk-date"; headers must hold neither of them; names with
 * "_" and Authorization are not signed. host NULL: not signed. */
typedef struct kp_sign_input {
  const char *method, *path, *query, *host, *body, *ak, *sk, *date;
  size_t method_len, path_len, query_len, host_len, body_len, ak_len, sk_len;
  const kp_sign_header *headers;
  size_t nheaders;
} kp_sign_input;

/* NULL when the AK can go into the Authorization value as it is, else why not */
const char *kp_sign_check_ak(const char *ak, size_t len);
/* Sets in's host, path and query from an http(s):// URL (or a path with no
 * host, "/p?q"), pointing into url; NULL, or what is wrong with it. */
const char *kp_sign_url(kp_sign_input *in, const char *url, size_t len);
void kp_sign_date(char out[KP_SIGN_DATE_LEN + 1], time_t t); /* UTC, X-Sdk-Date format */
/* Writes byte c as the signature's URI encoding has it (RFC 3986 unreserved bytes as they are,
 * any other as %XX, upper-case hex); returns 1 or 3. request.c encodes a task id with it too. */
size_t kp_percent_encode(char out[3], unsigned char c);
/* kp_sign writes the whole Authorization value, NUL-terminated, into buf
 * (reused from call to call: one realloc at most); NULL, or what failed (out
 * of memory, two headers of one name, more than KP_SIGN_HEADERS_MAX, a
 * failed hash): the canonical request is built in buf, then becomes the
 * Authorization value there. */
const char *kp_sign(kp_buf *buf, const kp_sign_input *in);
int kp_lua_sign(lua_State *L); /* koophone.sign */

/* ---- aksk.c: koophone.aksk, the AK/SK credentials object ---- */
typedef struct kp_aksk {
  char *block; /* one allocation: the four NUL-terminated strings, zeroed by close */
  size_t block_len;
  int closed; /* zeroed; the block stays until collection */
  const char *ak, *sk, *project_id, *security_token; /* security_token NULL when not set */
  size_t ak_len, sk_len, project_id_len, security_token_len;
} kp_aksk;

/* The credentials at idx, or NULL when it is no koophone.aksk; raises when
 * they were closed. */
kp_aksk *kp_test_aksk(lua_State *L, int idx);
int kp_lua_aksk(lua_State *L); /* koophone.aksk */
int kp_lua_is_aksk(lua_State *L);     /* core.is_aksk(v) */
int kp_lua_aksk_export(lua_State *L); /* core.aksk_export(cred), for koophone.ngx */

/* ---- request.c: pair validation, the unassign body, a task's path, a read's query ---- */
typedef struct kp_pair_ref {
  const char *user_id, *instance_id;
  size_t user_id_len, instance_id_len;
  lua_Integer index;
} kp_pair_ref;

/* What a client keeps to build bodies without making tables. */
typedef struct kp_body {
  int ref;               /* registry: the request table every call refills */
  kp_pair_ref *scratch;  /* duplicate detection, max_pairs entries */
  lua_Integer max_pairs;
} kp_body;

/* Checks the pairs at index `pairs` (argument argn, named arg) and pushes the
 * JSON body; raises on a programmer mistake, as "<fname>: bad argument
 * #<argn> (<arg>[i].field): ...". */
void kp_push_request_body(lua_State *L, const kp_body *b, int pairs, const char *fname, int argn,
                          const char *arg);
/* 0 when the pair at idx is valid, its two id strings pushed; else 1 with
 * the reason pushed and *field naming the field (NULL: not a table). */
int kp_pair_problem(lua_State *L, int idx, const char **field);
/* The same, with the message "field: reason" (or the reason) on top. */
int kp_pair_message(lua_State *L, int idx);
int kp_validate_pair(lua_State *L);
/* Pushes prefix + the id percent-encoded (every byte but RFC 3986's unreserved ones). */
void kp_push_path(lua_State *L, const char *prefix, const char *id, size_t len);

/* A query parameter of a call (kp_call_type.query); a row lists them in the order sent. */
typedef enum {
  KP_QUERY_REQUEST_ID, /* the call's x-request-id (opts.request_id or a fresh one) */
  KP_QUERY_COUNT,      /* the caller's integer from min to max, dflt when absent */
  KP_QUERY_TEXT,       /* the caller's non-empty string without control characters, or absent */
  KP_QUERY_ID          /* the same, checked as a pair's instance_id (invisible, bidi characters) */
} kp_query_kind;
typedef struct kp_query_param {
  const char *name; /* as sent, and the key of the caller's query table */
  kp_query_kind kind;
  lua_Integer min, max, dflt; /* KP_QUERY_COUNT */
} kp_query_param;

/* Checks the query table at t (argument argn of fname, named "query") against params (ended
 * by a NULL name: a key that is not one of them raises, naming it) and pushes
 * path?name=value&... with every value percent-encoded (as kp_push_path). */
void kp_push_query(lua_State *L, const char *path, const kp_query_param *params, int t,
                   const char *fname, int argn, const char *request_id, size_t request_id_len);

/* ---- rows.c: core.row_entry(set, v, pos, row) ---- */
int kp_row_entry(lua_State *L);

/* ---- jfile.c: the bulk journal's file (locked, fsync), core.file_digest, file_id, private_file ---- */
void kp_jfile_open(lua_State *L); /* adds jfile, file_digest, file_id and private_file to the module table on the top */

/* ---- transport.c: one libcurl easy handle and what lives as long as it ---- */
typedef struct kp_result {
  CURLcode code;
  long status;            /* HTTP status, 0 when none was received */
  curl_off_t retry_after; /* seconds, 0 when absent */
  int attempts;           /* 1 + libcurl's silent resends of this request */
  int sent;               /* the request was (being) sent: connect and TLS succeeded */
  int too_large;          /* the body passed max_response_bytes */
  int out_of_memory;      /* the body could not be stored */
  const char *body;
  size_t body_len;
  const char *subject_token; /* the X-Subject-Token answer header, NULL when absent */
  size_t subject_token_len;
  int subject_too_large; /* it passed KP_SUBJECT_TOKEN_MAX */
  int cancelled;         /* aborted by the request's cancel handle */
  const char *curl_message;
  CURL *easy;             /* the handle it ran on: its timers, for on_event */
} kp_result;

/* What one request sends. The strings are used where they are, not copied:
 * they must stay alive until kp_conn_finish; method is a static string. A
 * request without a body (body NULL: GET) sends no Content-Type. */
typedef struct kp_request {
  const char *method;
  const char *base, *path; /* URL = base (no trailing slash) + path */
  const char *token; /* NULL: the credentials' headers are set by kp_conn_set_auth_headers */
  const char *request_id, *body;
  size_t token_len, request_id_len, body_len;
  long timeout_ms;
  const kp_cancel *cancel; /* its raise aborts the transfer; NULL: none */
} kp_request;

#define KP_AUTH_HEADERS_MAX 4 /* X-Auth-Token, or a signature's four headers */
#define KP_SUBJECT_TOKEN_MAX (64 * 1024) /* IAM tokens are several KB; no documented limit */
typedef struct kp_conn {
  CURL *easy;
  /* x-request-id, the credentials' headers (the unused ones skipped), three fixed ones */
  struct curl_slist headers[KP_AUTH_HEADERS_MAX + 4];
  char id_header[sizeof("x-request-id: ") + KP_REQUEST_ID_MAX];
  kp_buf token_header;
  kp_buf auth_headers; /* a signed request's headers, NUL-separated */
  kp_buf sign;         /* the signer's work buffer */
  int auth_last;      /* index of the last credentials' header in use (0: none) */
  int get;            /* the method set is a GET: the list skips Content-Type */
  kp_buf url;         /* the URL set on the handle */
  const char *method; /* the method set on the handle */
  size_t max_response_bytes;
  int attempts; /* copies of the request sent by this transfer (before_request) */
  kp_buf response;
  kp_buf subject_token; /* the X-Subject-Token answer header */
  int too_large, out_of_memory, subject_too_large;
  const kp_cancel *cancel; /* the request's, read by the progress callback */
  CURLM *multi;            /* made for the first request with a cancel handle (transport.c) */
  char errbuf[CURL_ERROR_SIZE];
} kp_conn;

int kp_conn_init(kp_conn *k);   /* 0, or -1 when libcurl cannot make a handle */
/* k gets a copy of from's handle with every option (for a pool); 0 or -1. */
int kp_conn_clone(kp_conn *k, const kp_conn *from);
void kp_conn_close(kp_conn *k); /* idempotent */
/* Sets what changes per request; -1 when out of memory. */
int kp_conn_prepare(kp_conn *k, const kp_request *req);
/* After kp_conn_prepare of a request without token: its credentials' headers, n
 * name/value pairs in nv (a NULL value leaves the header out); -1 out of memory. */
int kp_conn_set_auth_headers(kp_conn *k, const char *const nv[], int n);
void kp_conn_finish(kp_conn *k, CURLcode code, kp_result *r);
void kp_conn_release_response(kp_conn *k); /* after the result is in Lua */
void kp_conn_perform(kp_conn *k, kp_result *r);

/* ---- response.c: the answer as a Lua result or error ---- */
/* Maps an unassign answer of a request of `pairs` pairs: pushes res, or nil and err, and
 * returns how many. The body is decoded as received; only its free text is redacted. */
int kp_map_unassign(lua_State *L, const kp_result *r, const char *request_id,
                    const kp_secrets *sec, lua_Integer pairs);
/* Maps a GetTask answer: pushes task ({ request_id, status, jobs = { { job_id, status,
 * state, error_code, error_msg, execute_msg } } }), or nil and err, and returns how many. */
int kp_map_task(lua_State *L, const kp_result *r, const char *request_id, const kp_secrets *sec,
                lua_Integer pairs);

/* Maps a ListInstances answer (an error_code inside data other than "0" is an API error):
 * pushes { instances = data.result (each as sent, a JSON null left out, integral numbers as
 * integers), total_count, page_no, page_size, request_id, status }, or nil and err. */
int kp_map_list(lua_State *L, const kp_result *r, const char *request_id, const kp_secrets *sec,
                lua_Integer pairs);

/* Maps IAM's answer to a token request: res { token, expires_at (text), status,
 * attempts } or nil, err of kind "auth". */
int kp_map_iam_token(lua_State *L, const kp_result *r, const char *request_id,
                     const kp_secrets *sec, lua_Integer pairs);

/* ---- event.c: on_event, one event per HTTP exchange (docs/events.md) ---- */
typedef struct kp_hook {
  int ref;     /* registry ref of the function, LUA_NOREF when none */
  int running; /* the hook is running: its client refuses to be used */
  int failed;  /* it raised once: reported on stderr once */
  int attempt; /* copies sent so far with last_id (ev.attempt) */
  char last_id[KP_REQUEST_ID_MAX + 1];
} kp_hook;

/* Calls the hook with the event of the exchange r that sent req (as call `name`, with `pairs`
 * pairs), whose mapped outcome is on top of the stack (results: 1 res, 2 nil and err); an
 * error it raises is reported and dropped. The stack is left as it was. Its code is the
 * error's (redacted), its task id the result's (as sent, like every id of an answer).
 * lent: the exchange is another client's (a token request): its attempt is its own copies,
 * and the count of the hook's client's request id goes on after it. */
void kp_event_emit(lua_State *L, kp_hook *h, const char *name, const kp_result *r,
                   const kp_request *req, lua_Integer pairs, int results, int lent);

/* ---- call.c: one call of the API, the one sequence every call shares ---- */
typedef struct kp_multi kp_multi; /* multi.c */

typedef struct kp_client {
  kp_conn conn;
  kp_rng rng;
  kp_body body;
  char *endpoint;   /* as configured, without trailing slashes */
  long timeout_ms;  /* default per-call timeout */
  kp_multi *multi;  /* start_many's handles, made on first use */
  int closed;
  kp_hook hook;     /* opts.on_event */
  kp_hook *lent;    /* while a token provider's client fetches a token for another client's
                     * call (kp_call_credentials): that client's hook, which gets its events */
} kp_client;

/* A call of the API: its method, its path, its query and the mapping of its answer (pairs: of
 * the request, 0 for a call without pairs). A read (read = 1) is a row and nothing more in C:
 * kp_call_read sends it, the client gets a method and the module a function of its name. */
typedef int (*kp_map_fn)(lua_State *L, const kp_result *r, const char *request_id,
                         const kp_secrets *sec, lua_Integer pairs);
typedef struct kp_call_type {
  const char *name;  /* ev.call; the read method's name */
  const char *fname; /* what the user calls, for messages */
  const char *method, *path;
  /* a read's argument #2: a query table of these parameters (path without "?"), or, when
   * NULL, a task id that ends the path (percent-encoded) */
  const kp_query_param *query;
  kp_map_fn map;
  int anonymous; /* sends no credentials (IAM's token request) */
  int read;      /* sent by kp_call_read: a client method and a module function */
} kp_call_type;

enum { /* index into kp_call_types */
  KP_CALL_UNASSIGN, KP_CALL_GET_TASK, KP_CALL_LIST_INSTANCES, KP_CALL_IAM_TOKEN, KP_CALL_COUNT
};
#define KP_PROVIDER_MT "koophone.iam_token" /* __name of a token provider's metatable */
extern const kp_call_type kp_call_types[];

/* One call in progress: what the user called, and what the send-time step sends. */
typedef struct kp_call {
  const kp_call_type *type;
  const char *fname; /* the function the user called, for messages */
  int base;          /* stack index of its argument #1 */
  kp_client *c;
  const kp_aksk *aksk; /* argument #1 when it is AK/SK credentials (req.token NULL) */
  int provider;        /* stack index of argument #1 when it is a token provider, else 0 */
  kp_secrets secrets; /* what no text leaving the call may carry */
  kp_request req;
  lua_Integer pairs; /* ev.pairs: the pairs of the request being sent */
  int task_arg;      /* stack index of a read's task id (res.task_id), else 0 */
  long timeout_ms;   /* the per-request timeout before the deadline's cut */
  double deadline;   /* opts.deadline as kp_now() time; 0: none */
  int opts;          /* stack index of the options table, 0: none */
} kp_call;

/* Starts a call of kp_call_types[type]: argument #1 (at base) is the token, a
 * koophone.aksk (signed by kp_call_arm) or a token provider (kp_call_credentials);
 * an anonymous type takes none. */
void kp_call_init(lua_State *L, kp_call *call, kp_client *c, int type, const char *fname,
                  int base);
/* Checks the options table at idx (nil is fine) against names; reads timeout, deadline (seconds
 * from now: no request is sent after it, each one's timeout ends by it) and cancel. */
void kp_call_options(lua_State *L, kp_call *call, int idx, const char *const names[]);
/* Whether the call's deadline has passed (1); else 0, the request's timeout set to end by it. */
int kp_call_expired(kp_call *call);
/* Pushes the x-request-id: the caller's at idx (checked as argument argn, named path), or a
 * fresh UUIDv4 when that is nil. */
void kp_call_push_request_id(lua_State *L, kp_call *call, int idx, int argn, const char *path);
/* The send-time step, right before the request goes out on k, on every attempt: sets
 * everything the request sends (URL, method, headers, body) and signs it with AK/SK
 * credentials, dated now. NULL, or what failed (out of memory, credentials closed). */
const char *kp_call_arm(kp_call *call, kp_conn *k);
/* With a token provider: pushes its token (provider:token()) and sends it; 0, or
 * 2 with nil, err (the provider's, kind "auth") pushed: nothing may be sent. */
int kp_call_credentials(lua_State *L, kp_call *call);
/* Maps a finished request of the call (req.request_id: its id); pushes res or nil, err;
 * then gives the client's on_event hook its event (the one place both paths go through). */
int kp_call_map(lua_State *L, const kp_call *call, const kp_result *r);
/* The sequence of one request on the client's own handle: credentials, interruption check,
 * send-time step, perform, map; with a token provider, a 401 APIGW.0301 or APIGW.0307 (the
 * gateway refused the token before the service saw the request) invalidates it and sends
 * the same request once more with a new token: the outcome then counts both copies in
 * attempts (and resends), and has renewed = true, the fact that the first copy was refused
 * before anything could be applied (not a resend after a lost answer). */
int kp_call_perform(lua_State *L, kp_call *call);
/* unassign(token, pairs [, opts]) with argument #1 at base. */
int kp_unassign(lua_State *L, kp_client *c, const char *fname, int base);
/* iam_token_request(client, body, password [, bounds]): IAM's POST /v3/auth/tokens with the
 * body given (the password only to redact it), within bounds { deadline, cancel } (those of
 * the call it fetches a token for); res { token, expires_at } or nil, err. */
int kp_iam_token(lua_State *L, kp_client *c, const char *fname, int base);

/* A read of kp_call_types[type] (get_task(token, task_id [, opts]), list_instances(token,
 * query [, opts])) with argument #1 at base: one request, its x-request-id in the query too
 * when the row says so. */
int kp_call_read(lua_State *L, kp_client *c, int type, int base);
/* t[name] = f for every read row: a closure of the KP_NUPVALUES values from stack index uv on,
 * and of the row's index (KP_UV_CALL). */
void kp_call_set_reads(lua_State *L, int t, int uv, lua_CFunction f);

/* ---- multi.c: client:start_many and client:unassign_many, several requests at once ---- */
#define KP_MANY_MT "koophone.many" /* a transfer set */
typedef struct kp_many kp_many;
/* client:start_many(token, batches [, opts]) with the client at 1: pushes the set, or nil, err
 * when a token provider failed; raises while another set of the client is open */
int kp_start_many(lua_State *L, kp_client *c);
/* client:unassign_many(token, batches [, opts]): a set driven to its end, in C */
int kp_unassign_many(lua_State *L, kp_client *c);
kp_client *kp_many_client(const kp_many *m); /* the client of an open set, NULL once it ended */
int kp_many_next(lua_State *L, kp_many *m);  /* set:next() with the set at 1 */
int kp_many_started(lua_State *L);            /* set:started() */
int kp_many_stop(lua_State *L);               /* set:stop() */
void kp_many_close(lua_State *L, kp_many *m); /* abandons what is in flight; idempotent */
void kp_multi_free(kp_multi *m); /* NULL is fine */

/* ---- client.c: the client object ---- */
kp_client *kp_check_client(lua_State *L, int idx); /* raises when closed */
/* Makes a client from the options at opts_idx (argument #1 of fname) and pushes it. */
int kp_client_create(lua_State *L, int opts_idx, const char *fname);
void kp_client_open(lua_State *L); /* registers the metatable; upvalues on the stack */

/* ---- koophone.c: the module entry, exported with default visibility for require ---- */
LUALIB_API int luaopen_koophone_core(lua_State *L);

#endif
