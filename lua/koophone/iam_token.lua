-- koophone.iam_token{...}: an IAM token provider. It logs in with a password (IAM's
-- POST /v3/auth/tokens, project scope) through a core client of its own, keeps the token
-- (the X-Subject-Token answer header) and fetches a new one once the cached one is within
-- refresh_before seconds of its expires_at and older than half its life (see fresh). Accepted
-- wherever a token is: the C core calls tp:token() before a call and, on a 401 APIGW.0301 /
-- APIGW.0307, tp:invalidate() and tp:token() once more (src/call.c).
--
--   local token, expires_at = tp:token()   -- or nil, err (kind "auth"): nothing was sent
--   tp:invalidate()
-- The password and the token never appear in an error, a log line or tostring(tp).
local argerror = require "koophone.argerror"
local core = require "koophone.core"
local errors = require "koophone.errors"

local _M = {}

local FNAME = "koophone.iam_token"
local DEFAULT_ENDPOINT = "https://iam.myhuaweicloud.com"
local OWN = { endpoint = true, domain = true, user = true, password = true, project_id = true,
              project = true, refresh_before = true }
-- the TLS, proxy and timeout options of koophone.new, passed to the provider's client
local CLIENT = { timeout = true, connect_timeout = true, cafile = true, capath = true,
                 insecure = true, proxy = true, max_response_bytes = true }

local KNOWN = {}
for _, t in ipairs { OWN, CLIENT } do for k in pairs(t) do KNOWN[k] = true end end

local Provider = { __name = "koophone.iam_token" } -- the C core recognises providers by __name
Provider.__index = Provider

local function check_string(opts, name, optional)
  local v = opts[name]
  if v == nil and optional then return nil end
  if type(v) ~= "string" or v == "" then
    argerror.raise(FNAME, 1, "opts." .. name, "expected a non-empty string, got %s",
                   v == "" and "an empty one" or type(v))
  end
  return v
end

-- Days since 1970-01-01 of a civil date (H. Hinnant's days_from_civil), in floats only.
local function days(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- "2020-01-04T09:08:49.965000Z" -> Unix seconds, or nil
function _M.parse_time(s)
  local y, mo, d, h, mi, sec = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)[%.%d]*Z$")
  if not y then return nil end
  return days(tonumber(y), tonumber(mo), tonumber(d)) * 86400 + tonumber(h) * 3600
         + tonumber(mi) * 60 + tonumber(sec)
end

-- Seconds a token that looked expired on arrival is used before another login.
_M.MIN_REUSE = 60

-- fresh(now, fetched_at, expires_at, refresh_before) -> whether a token fetched at fetched_at is
-- still used as it is: until refresh_before seconds before its expiry, and in any case until it
-- has served half its life as this host's clock saw it at the fetch; MIN_REUSE seconds when it
-- had none (IAM does not issue expired tokens: this clock is ahead of IAM's). A lifetime under
-- refresh_before, or such a clock, would otherwise log in again on every call; a token the
-- gateway refuses is still replaced at once (invalidate).
function _M.fresh(now, fetched_at, expires_at, refresh_before)
  local life = expires_at - fetched_at
  return now < expires_at - refresh_before
      or now - fetched_at < (life > 0 and life / 2 or _M.MIN_REUSE)
end

-- An error of kind "auth" (nothing was sent to the API); koophone.ngx.iam_token makes its own
-- with it.
function _M.auth_error(message, status, attempts)
  return errors.new { kind = "auth", code = "IAM_FAILED", status = status, message = message,
                      sent = false, attempts = attempts or 0 }
end

-- new(opts [, on_event]): on_event, for the provider's own client, is given only by other koophone
-- modules (koophone.ngx.iam_token collects the IAM exchange's events in a thread with it).
function _M.new(opts, on_event)
  if type(opts) ~= "table" then
    argerror.raise(FNAME, 1, "opts", "expected a table, got %s", type(opts))
  end
  argerror.check_names(opts, KNOWN, FNAME, 1, "opts")
  local client_opts = { endpoint = opts.endpoint or DEFAULT_ENDPOINT }
  for k, v in pairs(opts) do
    if CLIENT[k] then client_opts[k] = v end
  end
  client_opts.on_event = on_event
  local scope
  if opts.project_id ~= nil then scope = { id = check_string(opts, "project_id") }
  elseif opts.project ~= nil then scope = { name = check_string(opts, "project") }
  else argerror.raise(FNAME, 1, "opts.project_id", "expected project_id or project, got neither") end
  local refresh_before = argerror.number(opts.refresh_before or 2400, FNAME, 1, "opts.refresh_before",
                                         0, math.huge)
  local password = check_string(opts, "password")
  local body = require("cjson.safe").new().encode { auth = {
    identity = { methods = { "password" }, password = { user = {
      name = check_string(opts, "user"), password = password,
      domain = { name = check_string(opts, "domain") } } } },
    scope = { project = scope } } }
  return setmetatable({
    client = core.new_as(FNAME, client_opts), body = body, password = password,
    refresh_before = refresh_before, endpoint = client_opts.endpoint,
    user = opts.user, domain = opts.domain,
  }, Provider)
end

-- token([bounds]) -> token, expires_at (Unix seconds), or nil, err (kind "auth"). bounds: those
-- of the call the token is for ({ deadline = seconds left, cancel = handle }), which a fetch keeps.
function Provider:token(bounds)
  local now = os.time()
  if self.cached and _M.fresh(now, self.fetched_at, self.expires_at, self.refresh_before) then
    return self.cached, self.expires_at
  end
  local res, err = core.iam_token_request(self.client, self.body, self.password, bounds)
  if not res then
    err.sent, err.request_id = false, nil -- the unassign request was not sent
    return nil, err
  end
  local expires_at = _M.parse_time(res.expires_at)
  if not expires_at then
    return nil, _M.auth_error("IAM's answer is malformed (HTTP 201): token.expires_at is not a UTC time",
                           res.status, res.attempts)
  end
  self.cached, self.expires_at, self.fetched_at = res.token, expires_at, now
  return res.token, expires_at
end

function Provider:invalidate()
  self.cached, self.expires_at, self.fetched_at = nil, nil, nil
end

function Provider:__tostring()
  return ("koophone.iam_token (%s, user %s in %s%s)"):format(self.endpoint, self.user, self.domain,
    self.cached and ", token cached" or "")
end

return _M
