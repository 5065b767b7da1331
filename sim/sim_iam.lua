-- KooPhone simulator: IAM's `POST /v3/auth/tokens` (password method, project scope), the store
-- of the tokens it issued, and its control endpoints. Never logs or shows a password or token.
local st = require "sim_state"
local crypto = require "sim_crypto"

local M = {}

local TITLES = { [400] = "Bad Request", [401] = "Unauthorized", [405] = "Method Not Allowed",
                 [500] = "Internal Server Error", [502] = "Bad Gateway", [503] = "Service Unavailable",
                 [504] = "Gateway Timeout" }
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Unix seconds -> "2020-01-04T09:08:49.965000Z" (IAM's expires_at format)
function M.iso(t)
  local s = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%06dZ", math.floor((t - s) * 1e6 + 0.5) % 1000000)
end

local function new_token()
  local n = math.max(tonumber(st.iam.token_size) or 2048, 16)
  local t = { "MIIP" }
  for i = 2, n - 3 do
    local k = math.random(1, 64)
    t[i] = B64:sub(k, k)
  end
  return table.concat(t)
end

-- Seed entry {domain, name, password} -> user record, or nil, err.
function M.user_from(spec)
  if type(spec) ~= "table" then return nil, "iam_users entries must be objects" end
  for _, k in ipairs({ "domain", "name", "password" }) do
    if type(spec[k]) ~= "string" or spec[k] == "" then return nil, "iam user needs a string " .. k end
  end
  return { domain = spec.domain, name = spec.name, password = spec.password,
           id = crypto.sha256_hex("user\0" .. spec.domain .. "\0" .. spec.name):sub(1, 32) }
end

-- The id of the domain (account) named `name`: stable, so every project of it agrees.
function M.domain_id(name) return crypto.sha256_hex("domain\0" .. name):sub(1, 32) end

function M.add_user(u) st.users[u.domain .. "\0" .. u.name] = u end

-- The record of an issued token, or nil.
function M.lookup(token) return st.iam_tokens[token] end

-- ---------------------------------------------------------------- POST /v3/auth/tokens

local function iam_error(entry, status, message)
  entry.status, entry.error = status, message
  return st.reply(status, { error = { code = status, message = message, title = TITLES[status] or "Error" } })
end

-- The tenant a project scope names within the user's domain, or nil.
local function scoped_tenant(domain, project)
  for _, t in pairs(st.tenants) do
    if t.project_id and t.domain == domain and
       (project.id ~= nil and t.project_id == project.id or project.id == nil and t.project_name == project.name) then
      return t
    end
  end
end

local function token_body(t, user, issued, expires, with_catalog)
  local domain = { id = t.domain_id, name = t.domain }
  local body = { token = {
    expires_at = M.iso(expires), issued_at = M.iso(issued), methods = { "password" },
    project = { id = t.project_id, name = t.project_name, domain = domain },
    user = { id = user.id, name = user.name, domain = domain, password_expires_at = "" },
    roles = { { id = "0", name = "op_service" } },
  } }
  if with_catalog then
    body.token.catalog = { { type = "koophone", name = "koophone", id = "koophone",
      endpoints = { { id = "sim", interface = "public", region = t.project_name, region_id = t.project_name,
                      url = "http://127.0.0.1:" .. st.config.http_port } } } }
  end
  return body
end

function M.handle()
  local c = st.counters
  c.iam_requests = c.iam_requests + 1
  local entry = { seq = c.iam_requests, time = ngx.now(), method = ngx.req.get_method(),
                  uri = ngx.var.uri, status = 0, domain = st.null, user = st.null,
                  project = st.null, error = st.null, issued = false }
  st.add_log(entry, "iam_log")
  local conf = st.iam
  if (tonumber(conf.delay) or 0) > 0 then ngx.sleep(conf.delay) end
  if conf.fail_status and conf.fail_count ~= 0 then
    if conf.fail_count > 0 then conf.fail_count = conf.fail_count - 1 end
    st.read_body()
    return iam_error(entry, conf.fail_status, TITLES[conf.fail_status] or "IAM failure")
  end
  if entry.method ~= "POST" then
    return iam_error(entry, 405, "The method is not allowed for the requested URL.")
  end

  local doc = st.body_json()
  local auth = type(doc) == "table" and doc.auth
  local identity = type(auth) == "table" and auth.identity
  local pw = type(identity) == "table" and identity.password
  local user = type(pw) == "table" and pw.user
  local methods = type(identity) == "table" and identity.methods
  if type(user) ~= "table" or type(methods) ~= "table" or methods[1] ~= "password" or
     type(user.name) ~= "string" or type(user.password) ~= "string" or
     type(user.domain) ~= "table" or type(user.domain.name) ~= "string" then
    return iam_error(entry, 400, "The request body is malformed: auth.identity needs methods [\"password\"] " ..
                                 "and password.user with name, password and domain.name.")
  end
  entry.domain, entry.user = user.domain.name, user.name
  local u = st.users[user.domain.name .. "\0" .. user.name]
  if not u or u.password ~= user.password then
    return iam_error(entry, 401, "The username or password is wrong.")
  end
  local project = type(auth.scope) == "table" and auth.scope.project
  if type(project) ~= "table" or (type(project.id) ~= "string" and type(project.name) ~= "string") then
    return iam_error(entry, 400, "A project scope (auth.scope.project.id or .name) is required.")
  end
  entry.project = project.id or project.name
  local t = scoped_tenant(u.domain, project)
  if not t then
    return iam_error(entry, 400, "The project in the scope does not exist in the user's domain.")
  end

  local now = st.now()
  local token = new_token()
  local expires = now + (tonumber(conf.lifetime) or 86400)
  st.iam_tokens[token] = { tenant = t.name, issued = now, expires = expires }
  c.iam_tokens_issued = c.iam_tokens_issued + 1
  entry.status, entry.issued = 201, true
  ngx.header["X-Subject-Token"] = token
  return st.reply(201, token_body(t, u, now, expires, ngx.var.arg_nocatalog == nil))
end

-- ---------------------------------------------------------------- control endpoints

local function view()
  local active, revoked, now = 0, 0, st.now()
  for _, rec in pairs(st.iam_tokens) do
    if rec.revoked then revoked = revoked + 1 elseif rec.expires > now then active = active + 1 end
  end
  local conf = st.iam
  return st.reply(200, { lifetime = conf.lifetime, token_size = conf.token_size, delay = conf.delay,
                         fail_status = conf.fail_status or st.null, fail_count = conf.fail_count,
                         tokens_active = active, tokens_revoked = revoked,
                         requests = st.counters.iam_requests, tokens_issued = st.counters.iam_tokens_issued })
end

local function configure()
  local doc = st.body_json()
  if type(doc) ~= "table" then return st.bad("body must be a JSON object") end
  local conf = st.iam
  for _, k in ipairs({ "lifetime", "token_size", "delay" }) do
    if doc[k] ~= nil then
      if type(doc[k]) ~= "number" or doc[k] < 0 then return st.bad(k .. " must be a number >= 0") end
      conf[k] = doc[k]
    end
  end
  if doc.fail_status ~= nil then
    if doc.fail_status == false or doc.fail_status == st.null or doc.fail_status == 0 then
      conf.fail_status, conf.fail_count = nil, 0
    elseif type(doc.fail_status) ~= "number" or doc.fail_status < 400 or doc.fail_status > 599 then
      return st.bad("fail_status must be an HTTP status 400..599, or false")
    else
      local n = doc.fail_count == nil and -1 or doc.fail_count
      if type(n) ~= "number" or n % 1 ~= 0 or (n < 1 and n ~= -1) then
        return st.bad("fail_count must be -1 or an integer >= 1")
      end
      conf.fail_status, conf.fail_count = doc.fail_status, n
    end
  end
  return view()
end

local function revoke()
  local n = 0
  for _, rec in pairs(st.iam_tokens) do
    if not rec.revoked then rec.revoked, n = true, n + 1 end
  end
  return st.reply(200, { ok = true, revoked = n })
end

M.routes = {
  ["GET /_sim/iam"] = view,
  ["POST /_sim/iam"] = configure,
  ["POST /_sim/iam/revoke"] = revoke,
  ["GET /_sim/iam_log"] = function() return st.log_view(st.iam_log) end,
}

return M
