-- The error codes KooPhone and its API gateway document, by name.
local _M = {}

local documented = {
  -- name, code, what it means
  { "OK", "0", "success" },
  { "TENANT_NOT_FOUND", "KOOPHONE.API.0000", "tenant does not exist" },
  { "MISSING_REQUEST_ID", "KOOPHONE.API.0002", "missing header x-request-id" },
  { "MISSING_HEADER", "KOOPHONE.API.0005", "missing request header" },
  { "BAD_PARAMETER", "KOOPHONE.API.1000", "request parameter incorrect" },
  { "NO_PERMISSION", "KOOPHONE.API.1001", "no permission on the instance" },
  { "NOT_TENANT_INSTANCE", "KOOPHONE.API.1012", "instance does not belong to the tenant" },
  { "TASK_NOT_FOUND", "KOOPHONE.API.1323", "task does not exist (GetTask)" },
  { "BINDING_NOT_FOUND", "KOOPHONE.API.2210", "binding does not exist" },
  { "INTERNAL_ERROR", "KOOPHONE.API.9999", "internal service error" },
  { "GW_API_NOT_FOUND", "APIGW.0101", "API not found (wrong host, path or method)" },
  { "GW_BAD_REQUEST", "APIGW.0201", "bad request, body too large, or backend unavailable or timed out" },
  { "GW_TOKEN_INVALID", "APIGW.0301", "token invalid, expired or missing, or AK/SK signature refused" },
  { "GW_NOT_AUTHORIZED", "APIGW.0302", "not authorised" },
  { "GW_ACCESS_DENIED", "APIGW.0306", "access denied" },
  { "GW_TOKEN_RENEW", "APIGW.0307", "token must be renewed" },
  { "GW_THROTTLED", "APIGW.0308", "throttled" },
  { "GW_INTERNAL_ERROR", "APIGW.0601", "gateway internal error" },
  { "GW_IAM_UNAVAILABLE", "APIGW.0613", "IAM unavailable" },
}

_M.names = {}
local descriptions = {}
for _, row in ipairs(documented) do
  _M.names[row[1]] = row[2]
  descriptions[row[2]] = row[3]
end

-- describe("KOOPHONE.API.2210") -> "binding does not exist", or nil
function _M.describe(code)
  return descriptions[code]
end

-- libcurl's codes (err.code of kind "tls") for a server certificate that cannot be verified
-- against the CA certificates given: every later request fails the same way.
local CERTIFICATE = { CURLE_PEER_FAILED_VERIFICATION = true, CURLE_SSL_CACERT_BADFILE = true,
                      CURLE_SSL_ISSUER_ERROR = true }

-- certificate_advice(code) -> what to do about such a failure, or nil for any other code
function _M.certificate_advice(code)
  if CERTIFICATE[code] then
    return "the server's certificate was not verified: check the endpoint's host name, or give "
           .. "the CA certificates that signed it with the option cafile (CLI: --cafile FILE)"
  end
end

return _M
