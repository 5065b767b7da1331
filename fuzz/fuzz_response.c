/* libFuzzer harness: the response-to-Lua mapping (kp_map_unassign) with any
 * body, status, attempt count and transfer outcome, without a network.
 *
 * Input: 2 bytes status (mod 1000), 1 byte attempts (mod 3; / 3 picks the
 * short token), 1 byte flags (bit 0 too_large, bit 1 out_of_memory, bits 2..7
 * CURLcode), 2 bytes retry_after, then the body. */
#include <string.h>

#include "fuzz.h"

static kp_result result;

static int map(lua_State *L)
{
  return fz_map_unassign(L, &result);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  lua_State *L = fz_state();
  if (size < 6)
    return 0;
  memset(&result, 0, sizeof result);
  result.status = (long)((data[0] << 8 | data[1]) % 1000);
  result.attempts = 1 + data[2] % 3;
  result.too_large = data[3] & 1;
  result.out_of_memory = (data[3] >> 1) & 1;
  result.code = (CURLcode)(data[3] >> 2);
  result.retry_after = (curl_off_t)(data[4] << 8 | data[5]);
  result.sent = 1;
  result.body = (const char *)data + 6;
  result.body_len = size - 6;
  result.curl_message = "transfer failed: " FZ_TOKEN; /* scrubbed like any text */
  fz_run_mapping(L, map, result.status, data[2] / 3u); /* the short token */
  lua_settop(L, 0);
  return 0;
}
