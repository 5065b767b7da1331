-- KooPhone simulator: the API Gateway's "SDK-HMAC-SHA256" AK/SK signature, written from the
-- algorithm's description (auth-notes.md), independent of the client's signer. Pure functions
-- over a request description, so the verifier and /_sim/aksk/sign-check share one
-- canonicalisation:
--   req = { method, path (raw, as sent), query (raw, without "?"), headers (lower-case name ->
--           value), body }
local crypto = require "sim_crypto"

local M = {}

M.ALGORITHM = "SDK-HMAC-SHA256"
M.WINDOW = 15 * 60 -- seconds X-Sdk-Date may be off the server's clock

local function encode(s) -- unreserved characters stay, everything else %XY (upper-case hex)
  return (s:gsub("[^A-Za-z0-9%-_%.~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local function unescape(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- Each path segment decoded (no double encoding), encoded, re-joined; always ends with "/".
function M.canonical_uri(path)
  local parts = {}
  for seg in (path .. "/"):gmatch("([^/]*)/") do parts[#parts + 1] = encode(unescape(seg)) end
  local uri = table.concat(parts, "/")
  if uri:sub(-1) ~= "/" then uri = uri .. "/" end
  return uri
end

-- name=value pairs sorted by decoded name, then decoded value (the SDKs sort what they are
-- given, before encoding it), encoded, joined with "&"; "" without a query.
function M.canonical_query(query)
  local list = {}
  for pair in (query or ""):gmatch("[^&]+") do
    local name, value = pair:match("^([^=]*)=?(.*)$")
    list[#list + 1] = { unescape(name), unescape(value) }
  end
  table.sort(list, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  for i, p in ipairs(list) do list[i] = encode(p[1]) .. "=" .. encode(p[2]) end
  return table.concat(list, "&")
end

local function header_value(headers, name)
  local v = headers[name]
  if type(v) == "table" then v = table.concat(v, ",") end
  return trim(v or "")
end

-- The header names an SDK signs when it is not told: all, lower-cased, sorted, none with "_".
function M.default_signed(headers)
  local names = {}
  for name in pairs(headers) do
    name = name:lower()
    if not name:find("_", 1, true) and name ~= "authorization" then names[#names + 1] = name end
  end
  table.sort(names)
  return names
end

function M.canonical_request(req, signed)
  local lines = {}
  for i, name in ipairs(signed) do lines[i] = name .. ":" .. header_value(req.headers, name) .. "\n" end
  local payload = header_value(req.headers, "x-sdk-content-sha256") == "UNSIGNED-PAYLOAD"
    and "UNSIGNED-PAYLOAD" or crypto.sha256_hex(req.body or "")
  return table.concat({ req.method:upper(), M.canonical_uri(req.path), M.canonical_query(req.query),
                        table.concat(lines), table.concat(signed, ";"), payload }, "\n")
end

-- All intermediate values and the signature of req, signing the header names in `signed`.
function M.sign(req, signed, sk)
  local cr = M.canonical_request(req, signed)
  local hashed = crypto.sha256_hex(cr)
  local sts = M.ALGORITHM .. "\n" .. header_value(req.headers, "x-sdk-date") .. "\n" .. hashed
  return { canonical_request = cr, hashed_canonical_request = hashed, string_to_sign = sts,
           signed_headers = table.concat(signed, ";"), signature = crypto.hmac_sha256_hex(sk, sts) }
end

-- "SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex" -> ak, {names}, signature
function M.parse_authorization(value)
  local ak, names, sig = value:match("^SDK%-HMAC%-SHA256%s+Access=([^,%s]+),%s*SignedHeaders=([^,%s]+),%s*Signature=(%x+)%s*$")
  if not ak then return nil end
  local signed = {}
  for name in names:gmatch("[^;]+") do signed[#signed + 1] = name:lower() end
  return ak, signed, sig:lower()
end

local function days_from_civil(y, m, d) -- days since 1970-01-01 of a proleptic Gregorian date
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- "20191115T033655Z" -> Unix seconds, or nil
function M.parse_date(s)
  local y, mo, d, h, mi, se = (s or ""):match("^(%d%d%d%d)(%d%d)(%d%d)T(%d%d)(%d%d)(%d%d)Z$")
  if not y then return nil end
  y, mo, d, h, mi, se = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(se)
  if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or se > 60 then return nil end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se
end

function M.format_date(t) return os.date("!%Y%m%dT%H%M%SZ", math.floor(t)) end

-- Verifies req's Authorization against `keys` (ak -> {sk, security_token}) at time `now`.
-- Returns the key, or nil and the gateway's message after "Incorrect IAM authentication information: ".
function M.verify(req, keys, now)
  local ak, signed, sig = M.parse_authorization(header_value(req.headers, "authorization"))
  if not ak then return nil, "Authorization header format error" end
  local key = keys[ak]
  if not key then return nil, "ak " .. ak .. " not exist" end
  local date = header_value(req.headers, "x-sdk-date")
  local t = M.parse_date(date)
  if not t then return nil, "x-sdk-date format error or x-sdk-date not found" end
  if math.abs(t - now) > M.WINDOW then
    return nil, "calc aksk signature fail:signature expired, signature time:" .. date ..
      ",server time:" .. M.format_date(now)
  end
  local is_signed = {}
  for _, name in ipairs(signed) do is_signed[name] = true end
  if not is_signed["x-sdk-date"] then return nil, "verify aksk signature fail, x-sdk-date is not signed" end
  local s = M.sign(req, signed, key.sk)
  if s.signature ~= sig then
    return nil, "verify aksk signature fail, canonicalRequest:" .. s.canonical_request:gsub("\n", "|")
  end
  if key.security_token then
    local tok = header_value(req.headers, "x-security-token")
    if tok == "" then return nil, "x-security-token not found, a temporary ak needs it" end
    if not is_signed["x-security-token"] then
      return nil, "verify aksk signature fail, x-security-token is not signed"
    end
    if tok ~= key.security_token then return nil, "security token invalid" end
  end
  return key
end

return M
