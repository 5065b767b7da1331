/* Shared by the libFuzzer harnesses: one Lua state with koophone.core
 * loaded, and the checks every harness applies to what the core returns. */
#ifndef KP_FUZZ_H
#define KP_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "kp.h"

#define FZ_TOKEN "SECRET-TOKEN-fuzz-5f3c2a9e"
#define FZ_REQUEST_ID "fuzz-request-1"

/* The token a mapping under fz_run_mapping passes to kp_map_unassign: FZ_TOKEN,
 * then a short token that occurs in an answer's syntax ("0", "data", "{"...). */
extern const char *fz_token;
extern size_t fz_token_len;

/* The state, made on first use; the module table is in the registry as "fz.core". */
lua_State *fz_state(void);
/* Pushes f as a C closure with the module's upvalues, as the core's own functions have. */
void fz_push_core_closure(lua_State *L, lua_CFunction f);
/* Aborts (a finding for libFuzzer) with a message. */
void fz_fail(const char *what, const char *detail);
/* Aborts when any string reachable from the value at idx holds 16 bytes of FZ_TOKEN. */
void fz_check_no_token(lua_State *L, int idx);
/* Set by a harness of ListInstances' mapping (kp_map_list): results are checked as its pages. */
extern int fz_list;
/* Checks what kp_map_unassign (kp_map_list with fz_list) left on the stack: n results above
 * base. */
void fz_check_outcome(lua_State *L, int base, int n, long status, const char *request_id);

/* kp_map_unassign of r for FZ_REQUEST_ID with fz_token as the call's one secret. */
int fz_map_unassign(lua_State *L, const kp_result *r);

/* Calls map (which pushes a mapping's results with fz_token) in a protected call on a
 * fresh stack, checks the outcome, and returns how many values it left; then again with the
 * short token `pick` chooses (a byte of the input), checking that the answer reads the same and
 * its free text lost the token. */
int fz_run_mapping(lua_State *L, lua_CFunction map, long status, unsigned pick);

#endif
