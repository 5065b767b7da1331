-- THE classification of a failed unassign attempt, in one table.
--
-- Unassign is destructive and not idempotent: a copy that reaches the server after an earlier copy
-- was applied answers KOOPHONE.API.2210. So every failure is one of
--   safe       the request certainly did not take effect: sending it again cannot double it;
--   ambiguous  it may have taken effect: send it again only when the policy allows it;
--   final      the server decided, or sending it again cannot help: never retried.
-- The rows are tried in order; the first that matches decides. Whether the bindings may be gone
-- although the call failed is koophone.applied's to say (from the reason and the copies sent).
local codes_module = require "koophone.codes"
local codes = codes_module.names

local _M = {}

-- A 502 APIGW.0201 is safe only when the gateway says it never reached the backend.
local function backend_not_reached(e)
  return e.code == codes.GW_BAD_REQUEST and e.status == 502
     and type(e.message) == "string" and e.message:lower():find("backend unavailable", 1, true) ~= nil
end

-- Throttled by KooPhone (429) or by the API gateway (APIGW.0308 may come with another status).
function _M.throttled(e)
  return e.status == 429 or e.code == codes.GW_THROTTLED
end

-- The gateway refused the token (401 APIGW.0301 / 0307), before KooPhone saw the request: with a
-- token provider, the same request goes once more with a new token (as src/call.c does).
function _M.token_refused(e)
  return e.status == 401 and (e.code == codes.GW_TOKEN_INVALID or e.code == codes.GW_TOKEN_RENEW)
end

-- "20211217T064303Z" -> seconds; both dates of a difference read the same way (no DST switch)
local function sdk_seconds(d)
  local y, mo, dd, h, mi, s = d:match("^(%d%d%d%d)(%d%d)(%d%d)[Tt](%d%d)(%d%d)(%d%d)[Zz]$")
  return y and os.time { year = y, month = mo, day = dd, hour = h, min = mi, sec = s, isdst = false }
end

-- The advice for credentials the gateway refused (401 APIGW.0301 / 0307), from its message,
-- which names the check that failed: an AK/SK signature, its date, its project or security
-- token, or an IAM token.
local function credentials_note(e)
  local m = type(e.message) == "string" and e.message:lower() or ""
  if m:find("signature expired", 1, true) then
    local signed, server = m:match("signature time:%s*(%w+),%s*server time:%s*(%w+)")
    local t1, t2 = signed and sdk_seconds(signed), server and sdk_seconds(server)
    local off = t1 and t2 and (" (this host's clock is %d s %s the gateway's)"):format(
      math.abs(t1 - t2), t1 < t2 and "behind" or "ahead of") or ""
    return "the AK/SK signature's X-Sdk-Date is more than 15 minutes from the gateway's clock" .. off ..
           ": synchronise this host's clock (NTP)"
  elseif m:find("signature", 1, true) or m:find("aksk", 1, true) or m:find("authorization", 1, true)
      or m:find("x-sdk-date", 1, true) then
    return "the AK/SK signature was refused: check that the SK belongs to the AK and the access key " ..
           "is enabled (5 refusals in a row lock it for 5 minutes)"
  elseif m:find("%f[%w]ak %S+ not exist") then
    return "the gateway does not know the access key: check the AK (HUAWEICLOUD_SDK_AK)"
  elseif m:find("x-project-id", 1, true) or m:find("%f[%w]ak %S+ has no permission on project") then
    return "the AK/SK request's project was refused: set project_id (HUAWEICLOUD_SDK_PROJECT_ID) to " ..
           "the KooPhone project the access key may act for"
  elseif m:find("security token", 1, true) or m:find("security-token", 1, true) then
    return "a temporary access key needs its current security token (HUAWEICLOUD_SDK_SECURITY_TOKEN): " ..
           "get new temporary keys"
  end
  return "the token is invalid or expired: get a new IAM token"
end

local rules = {
  -- class, why, test, note (said in err.message when the call fails with it; a function makes it
  -- from the error)
  -- not sent: SIGINT, SIGTERM or koophone.interrupt() came first (a retry would stop the same way)
  { "final", "interrupted", function(e) return e.kind == "interrupted" end },
  -- not sent: the client's own rate would have made it wait more than rate.max_wait (a retry
  -- would only wait in line again)
  { "final", "rate_limited", function(e) return e.kind == "rate" end },
  -- the server's certificate cannot be verified: every attempt, of every request, fails alike
  { "final", "certificate", function(e) return codes_module.certificate_advice(e.code) ~= nil end,
    function(e) return codes_module.certificate_advice(e.code) end },
  -- DNS, connect, TLS handshake; an HTTP status proves the request arrived, whatever `sent` says
  { "safe", "not_sent", function(e) return e.sent == false and e.status == nil end },
  { "safe", "throttled", _M.throttled },
  { "safe", "unavailable",
    function(e) return e.status == 503 or e.code == codes.GW_IAM_UNAVAILABLE end },
  { "safe", "backend_not_reached", backend_not_reached },
  -- sent, then no complete answer: timeout, reset, empty reply, truncated body
  { "ambiguous", "no_answer",
    function(e) return e.kind == "network" or e.kind == "timeout" or e.kind == "tls" end },
  -- 500 KOOPHONE.API.9999, 502/504 from a gateway, any other 5xx
  { "ambiguous", "server_error",
    function(e) return e.code == codes.INTERNAL_ERROR or (e.status or 0) >= 500 end },
  { "final", "token",
    function(e) return e.code == codes.GW_TOKEN_INVALID or e.code == codes.GW_TOKEN_RENEW end,
    credentials_note },
  -- a 2xx whose body cannot be read: the server probably did the work
  { "final", "bad_response", function(e) return e.kind == "decode" end },
  -- 1000, 1001, 0000, 1012, 2210, 403, every other 4xx and API error
  { "final", "rejected", function() return true end },
}

-- classify(err) -> class, why, note
function _M.classify(err)
  for _, r in ipairs(rules) do
    if r[3](err) then
      local note = r[4]
      if type(note) == "function" then note = note(err) end
      return r[1], r[2], note
    end
  end
end

return _M
