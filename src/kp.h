/* Shared declarations of the koophone core: one header, one section per file. */
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
#define KP_UUID_LEN 36

/* Upvalues shared by every function of the module. */
#define KP_UV_ENCODE lua_upvalueindex(1) /* private cjson instance: encode */
#define KP_UV_DECODE lua_upvalueindex(2) /* private cjson instance: decode */
#define KP_UV_STATE lua_upvalueindex(3)  /* module state table (default client) */
#define KP_NUPVALUES 3

/* A growable byte buffer, owned by the struct that embeds it. */
typedef struct kp_buf {
  char *data;
  size_t len, cap;
} kp_buf;

/* ---- rng.c: request ids ---- */
typedef struct kp_rng {
  uint64_t key[2], counter;
  unsigned fork_generation;
  int seeded;
} kp_rng;

void kp_global_init(void); /* curl_global_init and fork tracking, once per process */
int kp_uuid4(kp_rng *rng, char out[KP_UUID_LEN + 1]); /* 0, or -1: no OS randomness */

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

/* Sets in's host, path and query from an http(s):// URL (or a path with no
 * host, "/p?q"), pointing into url; NULL, or what is wrong with it. */
/* NULL when the AK can go into the Authorization value as it is, else why not */
const char *kp_sign_check_ak(const char *ak, size_t len);
const char *kp_sign_url(kp_sign_input *in, const char *url, size_t len);
void kp_sign_date(char out[KP_SIGN_DATE_LEN + 1], time_t t); /* UTC, X-Sdk-Date format */
/* kp_sign writes the whole Authorization value, NUL-terminated, into buf
 * (reused from call to call: one realloc at most); NULL, or what failed (out
 * of memory, two headers of one name, more than KP_SIGN_HEADERS_MAX). It is
 * kp_sign_canonical (buf = the canonical request) then kp_sign_finish (the
 * canonical request in buf becomes the Authorization value). */
const char *kp_sign(kp_buf *buf, const kp_sign_input *in);
const char *kp_sign_canonical(kp_buf *buf, const kp_sign_input *in);
const char *kp_sign_finish(kp_buf *buf, const kp_sign_input *in);
int kp_lua_sign(lua_State *L); /* koophone.sign */

/* ---- aksk.c: koophone.aksk, the AK/SK credentials object ---- */
typedef struct kp_aksk {
  char *block; /* one allocation: the four NUL-terminated strings, zeroed before free */
  size_t block_len;
  const char *ak, *sk, *project_id, *security_token; /* the last two NULL when not set */
  size_t ak_len, sk_len, project_id_len, security_token_len;
} kp_aksk;

/* The credentials at idx, or NULL when it is no koophone.aksk; raises when
 * they were closed. */
kp_aksk *kp_test_aksk(lua_State *L, int idx);
int kp_lua_aksk(lua_State *L); /* koophone.aksk */

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
  const char *curl_message;
} kp_result;

typedef struct kp_conn {
  CURL *easy;
  struct curl_slist headers[5];
  char id_header[sizeof("x-request-id: ") + KP_REQUEST_ID_MAX];
  kp_buf token_header;
  size_t max_response_bytes;
  int attempts; /* copies of the request sent by this transfer (before_request) */
  kp_buf response;
  int too_large, out_of_memory;
  char errbuf[CURL_ERROR_SIZE];
} kp_conn;

int kp_conn_init(kp_conn *k);   /* 0, or -1 when libcurl cannot make a handle */
/* k gets a copy of from's handle with every option (for a pool); 0 or -1. */
int kp_conn_clone(kp_conn *k, const kp_conn *from);
void kp_conn_close(kp_conn *k); /* idempotent */
/* Sets what changes per call; -1 when out of memory. body is sent from
 * where it is, not copied: it must stay alive until kp_conn_finish. */
int kp_conn_prepare(kp_conn *k, const char *token, size_t token_len,
                    const char *request_id, size_t request_id_len,
                    const char *body, size_t body_len, long timeout_ms);
void kp_conn_finish(kp_conn *k, CURLcode code, kp_result *r);
void kp_conn_release_response(kp_conn *k); /* after the result is in Lua */
void kp_conn_perform(kp_conn *k, kp_result *r);

/* ---- client.c: the client object ---- */
typedef struct kp_pair_ref kp_pair_ref;
typedef struct kp_multi kp_multi; /* multi.c */

typedef struct kp_client {
  kp_conn conn;
  kp_rng rng;
  char *endpoint;   /* as configured, for tostring */
  long timeout_ms;  /* default per-call timeout */
  lua_Integer max_pairs;
  int body_ref;     /* registry: the request table reused by every call */
  kp_pair_ref *scratch; /* duplicate detection, max_pairs entries */
  kp_multi *multi;      /* unassign_many's handles, made on first use */
  int closed;
} kp_client;

kp_client *kp_check_client(lua_State *L, int idx); /* raises when closed */
/* Raises "<what>: unknown option 'x'" for a key of table t not in names. */
void kp_check_option_names(lua_State *L, int t, const char *const names[], const char *what);
long kp_check_seconds(lua_State *L, int idx, const char *what, const char *name); /* in ms */
lua_Integer kp_check_count(lua_State *L, int idx, const char *what, const char *name,
                           lua_Integer max); /* an integer from 1 to max */
int kp_client_create(lua_State *L, int opts_idx, const char *fname);
void kp_client_open(lua_State *L); /* registers the metatable; upvalues on the stack */

/* ---- request.c: validation and the request body ---- */
struct kp_pair_ref {
  const char *user_id, *instance_id;
  size_t user_id_len, instance_id_len;
  lua_Integer index;
};

/* Checks the pairs at index `pairs` and pushes the JSON body; raises on a
 * programmer mistake, as "<fname>: bad argument #2 (<arg>[i].field): ...". */
void kp_push_request_body(lua_State *L, kp_client *c, int pairs, const char *fname,
                          const char *arg);
const char *kp_check_token(lua_State *L, int idx, size_t *len);
/* 1 when table t holds exactly the keys 1..#t (JSON objects decode to tables too) */
int kp_is_array(lua_State *L, int t);
/* 0 when the pair at idx is valid, its two id strings pushed; else 1 with
 * the reason pushed and *field naming the field (NULL: not a table). */
int kp_pair_problem(lua_State *L, int idx, const char **field);
/* The same, with the message "field: reason" (or the reason) on top. */
int kp_pair_message(lua_State *L, int idx);
int kp_validate_pair(lua_State *L);

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

/* ---- response.c: the answer as a Lua result or error ---- */
/* The body is decoded as received; only its free text is redacted (the token
 * is the one secret of a call today). */
int kp_push_outcome(lua_State *L, const kp_result *r, const char *request_id,
                    const char *token, size_t token_len);

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
} kp_error;

/* Pushes an error table; code and message go through kp_push_redacted. */
void kp_push_error(lua_State *L, const kp_error *e, const kp_secrets *sec);
const char *kp_curl_code_name(CURLcode code);
const char *kp_curl_code_kind(CURLcode code);
void kp_errors_open(lua_State *L); /* registers the koophone.Error metatable */

/* ---- unassign (koophone.c) ---- */
int kp_unassign(lua_State *L, kp_client *c, int base);
/* A caller's x-request-id at idx; raises "<what>: ..." when unusable. */
const char *kp_check_request_id(lua_State *L, int idx, size_t *len, const char *what);

/* ---- multi.c: client:unassign_many, several requests at once ---- */
int kp_client_unassign_many(lua_State *L);
void kp_multi_free(kp_multi *m); /* NULL is fine */

/* module entry point (koophone.c); exported with default visibility for require */
/* random() in [0, 1) from the OS random source (rng.c) */
int kp_lua_random(lua_State *L);

/* adds sleep and now to the module table on the stack top (clock.c) */
void kp_clock_open(lua_State *L);

/* ---- interrupt.c: the process-wide interruption flag (SIGINT, SIGTERM) ---- */
int kp_interrupted(void); /* 1 once raised */
void kp_push_interrupted(lua_State *L); /* "SIGINT", "SIGTERM", "interrupted" or nil */
int kp_interrupt_xferinfo(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                          curl_off_t ulnow); /* aborts a transfer once raised */
/* pushes nil, err (kind "interrupted", not sent) and returns 2 */
int kp_push_interrupted_error(lua_State *L, const char *request_id);
/* adds catch_signals, interrupt, interrupted, clear_interrupt to the module table */
void kp_interrupt_open(lua_State *L);

/* adds pairset (the duplicate set of a bulk run) to the module table on the stack top (pairset.c) */
void kp_pairset_open(lua_State *L);
typedef struct kp_pairset kp_pairset;
kp_pairset *kp_check_pairset(lua_State *L, int idx);
/* Adds the pair (ids without NUL) unless the set has it: 0 when added (with
 * row), 1 when present (*first = its row), -1 when out of memory. */
int kp_pairset_add(kp_pairset *s, const char *u, size_t ul, const char *inst, size_t il,
                   uint64_t row, uint64_t *first);
/* core.row_entry(set, v, pos, row) (rows.c) */
int kp_row_entry(lua_State *L);

/* ---- jfile.c: the bulk journal's file (locked, fsync) and core.file_digest ---- */
void kp_jfile_open(lua_State *L); /* adds jfile and file_digest to the module table on the top */

LUALIB_API int luaopen_koophone_core(lua_State *L);

#endif
