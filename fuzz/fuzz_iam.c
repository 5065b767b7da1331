/* libFuzzer harness: IAM's token answer to Lua (kp_map_iam_token) with any body,
 * status, X-Subject-Token header and transfer outcome, without a network.
 *
 * Input: 2 bytes status (mod 1000), 1 byte flags (bit 0 too_large, bit 1
 * subject_too_large, bit 2 no X-Subject-Token, bits 3..7 CURLcode), 1 byte
 * header length n, n bytes of X-Subject-Token, then the body. The secret
 * (the password) is FZ_TOKEN, also put in the libcurl message. */
#include <string.h>

#include "fuzz.h"

static kp_result result;

static int map(lua_State *L)
{
  kp_secrets sec;
  sec.n = 0;
  kp_secrets_add(&sec, FZ_TOKEN, sizeof FZ_TOKEN - 1);
  return kp_map_iam_token(L, &result, FZ_REQUEST_ID, &sec, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  lua_State *L = fz_state();
  size_t n;
  int top, results;
  if (size < 4 || size < 4 + (size_t)data[3])
    return 0;
  n = data[3];
  memset(&result, 0, sizeof result);
  result.status = (long)((data[0] << 8 | data[1]) % 1000);
  result.attempts = 1;
  result.sent = 1;
  result.too_large = data[2] & 1;
  result.subject_too_large = (data[2] >> 1) & 1;
  result.code = (CURLcode)(data[2] >> 3);
  result.subject_token = (data[2] & 4) ? NULL : (const char *)data + 4;
  result.subject_token_len = (data[2] & 4) ? 0 : n;
  result.body = (const char *)data + 4 + n;
  result.body_len = size - 4 - n;
  result.curl_message = "transfer failed: " FZ_TOKEN;
  lua_settop(L, 0);
  top = lua_gettop(L);
  fz_push_core_closure(L, map);
  if (lua_pcall(L, 0, LUA_MULTRET, 0) != LUA_OK)
    fz_fail("kp_map_iam_token raised", lua_tostring(L, -1));
  results = lua_gettop(L) - top;
  if (results == 1) { /* a token: only from a 201 with the header and a text expires_at */
    if (result.status != 201 || result.code != CURLE_OK || result.subject_token == NULL)
      fz_fail("a token from a failed answer", NULL);
    lua_getfield(L, -1, "expires_at");
    if (lua_type(L, -1) != LUA_TSTRING)
      fz_fail("a token without expires_at", NULL);
  } else if (results == 2) {
    if (!lua_isnil(L, -2) || !lua_istable(L, -1))
      fz_fail("expected nil, err", NULL);
    lua_getfield(L, -1, "kind");
    if (lua_type(L, -1) != LUA_TSTRING || strcmp(lua_tostring(L, -1), "auth") != 0)
      fz_fail("an IAM failure not of kind auth", lua_tostring(L, -1));
    lua_pop(L, 1);
    fz_check_no_token(L, -1);
  } else {
    fz_fail("expected 1 or 2 results", NULL);
  }
  lua_settop(L, 0);
  return 0;
}
