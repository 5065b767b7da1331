/* libFuzzer harness: ListInstances' answer mapping (kp_map_list) with any body, status and
 * transfer outcome, without a network: a page (instances with a string instance_id, no JSON
 * null kept, integral counts) only from a 2xx; an error_code inside data or at the top level is
 * an API error; the token never in an error's text; the same answer read alike with a short
 * token that occurs in its syntax.
 *
 * Input: 2 bytes status (mod 1000), 1 byte attempts (mod 3; / 3 picks the short token), 1 byte
 * flags (bit 0 too_large, bit 1 out_of_memory, bits 2..7 CURLcode), then the body. */
#include <string.h>

#include "fuzz.h"

static kp_result result;

static int map(lua_State *L)
{
  kp_secrets sec;
  sec.n = 0;
  kp_secrets_add(&sec, fz_token, fz_token_len);
  return kp_map_list(L, &result, FZ_REQUEST_ID, &sec, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  lua_State *L = fz_state();
  if (size < 4)
    return 0;
  fz_list = 1;
  memset(&result, 0, sizeof result);
  result.status = (long)((data[0] << 8 | data[1]) % 1000);
  result.attempts = 1 + data[2] % 3;
  result.too_large = data[3] & 1;
  result.out_of_memory = (data[3] >> 1) & 1;
  result.code = (CURLcode)(data[3] >> 2);
  result.sent = 1;
  result.body = (const char *)data + 4;
  result.body_len = size - 4;
  result.curl_message = "transfer failed: " FZ_TOKEN; /* scrubbed like any text */
  fz_run_mapping(L, map, result.status, data[2] / 3u);
  lua_settop(L, 0);
  return 0;
}
