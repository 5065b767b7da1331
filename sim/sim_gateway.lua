-- KooPhone simulator: the API Gateway's authentication in front of the KooPhone API. A request
-- is signed (Authorization: SDK-HMAC-SHA256 ...) or carries X-Auth-Token (a seeded token or one
-- issued by the simulator's IAM). Failures are answered as the gateway does: 401 APIGW.0301 /
-- APIGW.0307 with request_id. Also the AK/SK seed entries and POST /_sim/aksk/sign-check.
local st = require "sim_state"
local iam = require "sim_iam"
local aksk = require "sim_aksk"

local M = {}

local PREFIX = "Incorrect IAM authentication information: "

-- Seed entry {ak, sk, security_token?, project_id | project_ids} -> key record, or nil, err.
function M.key_from(spec)
  if type(spec) ~= "table" then return nil, "access_keys entries must be objects" end
  for _, k in ipairs({ "ak", "sk" }) do
    if type(spec[k]) ~= "string" or spec[k] == "" then return nil, "access key needs a string " .. k end
  end
  if spec.security_token ~= nil and (type(spec.security_token) ~= "string" or spec.security_token == "") then
    return nil, "security_token must be a non-empty string"
  end
  local ids = spec.project_ids or { spec.project_id }
  local key = { ak = spec.ak, sk = spec.sk, security_token = spec.security_token, projects = {} }
  if type(ids) ~= "table" or #ids == 0 then return nil, "access key " .. spec.ak .. " needs project_id or project_ids" end
  for _, id in ipairs(ids) do
    if type(id) ~= "string" or id == "" then return nil, "project ids must be strings" end
    key.projects[id] = true
  end
  return key
end

local function unauthorized(r, msg) return nil, r:err(401, "APIGW.0301", PREFIX .. msg, true) end

-- The request as sim_aksk sees it (path and query raw, as sent).
local function describe(r)
  return { method = ngx.req.get_method(), path = ngx.var.request_uri:match("^[^?]*"),
           query = ngx.var.args, headers = r.headers, body = r:read() }
end

local function aksk_tenant(r)
  r.entry.auth = "aksk"
  local key, msg = aksk.verify(describe(r), st.keys, st.now())
  if not key then return unauthorized(r, msg) end
  local pid = st.header(r.headers, "x-project-id")
  if not pid then return unauthorized(r, "x-project-id not found, a project-level API needs it") end
  if not key.projects[pid] then
    return unauthorized(r, "ak " .. key.ak .. " has no permission on project " .. pid)
  end
  local t = st.tenants[st.projects[pid] or ""]
  if not t then return nil, r:err(200, "KOOPHONE.API.0000", "The tenant does not exist.") end
  return t
end

-- The tenant the request acts for, or nil, status, answer table.
function M.authenticate(r)
  local h = r.headers
  local authz = st.header(h, "authorization")
  if authz and authz:find("^SDK%-HMAC%-SHA256") then return aksk_tenant(r) end
  local token = st.header(h, "x-auth-token")
  local name = token and st.tokens[token]
  if name then
    r.entry.auth = "token"
    return st.tenants[name]
  end
  local rec = token and iam.lookup(token)
  if rec then
    r.entry.auth = "iam"
    if rec.revoked then return nil, r:err(401, "APIGW.0307", "The token must be updated.", true) end
    if st.now() >= rec.expires then
      return unauthorized(r, "token expires, expires_at: " .. iam.iso(rec.expires))
    end
    if st.tenants[rec.tenant] then return st.tenants[rec.tenant] end
  end
  return unauthorized(r, "token missing or invalid")
end

-- ---------------------------------------------------------------- POST /_sim/aksk/sign-check

-- Body {method, url | path + query, headers, body, sk, ak?, signed_headers?}: every step of
-- the signature as the verifier computes it. "host" comes from the URL unless a Host header is given.
local function sign_check()
  local doc = st.body_json()
  if type(doc) ~= "table" or type(doc.sk) ~= "string" then return st.bad("body needs sk (string)") end
  local req = { method = doc.method or "GET", path = doc.path or "/", query = doc.query or "",
                headers = {}, body = doc.body or "" }
  for k, v in pairs(type(doc.headers) == "table" and doc.headers or {}) do req.headers[k:lower()] = v end
  if doc.url then
    local scheme, authority, path, query = tostring(doc.url):match("^(https?)://([^/?#]+)([^?#]*)%??([^#]*)")
    if not scheme then return st.bad("url must be http(s)://host[:port]/path[?query]") end
    authority = authority:gsub(scheme == "https" and ":443$" or ":80$", "")
    req.path, req.query = path ~= "" and path or "/", query
    req.headers.host = req.headers.host or authority
  end
  local signed = aksk.default_signed(req.headers)
  if doc.signed_headers then
    signed = {}
    for name in tostring(doc.signed_headers):gmatch("[^;]+") do signed[#signed + 1] = name:lower() end
  end
  local s = aksk.sign(req, signed, doc.sk)
  s.ok = true
  if doc.ak then
    s.authorization = aksk.ALGORITHM .. " Access=" .. doc.ak .. ", SignedHeaders=" .. s.signed_headers ..
      ", Signature=" .. s.signature
  end
  return st.reply(200, s)
end

M.routes = {
  ["POST /_sim/aksk/sign-check"] = sign_check,
}

return M
