-- KooPhone simulator: control API under /_sim/ (JSON in and out). Never outputs tokens.
local st = require "sim_state"
local faults = require "sim_faults"

local M = {}

local function reply(status, t)
  local body = st.encode(t)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Content-Length"] = #body
  ngx.print(body)
  return ngx.exit(ngx.HTTP_OK)
end

local function bad(msg) return reply(400, { ok = false, error = msg }) end

local function body_json()
  local data = st.read_body()
  if data == "" then return {} end
  return st.decode(data)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- ---------------------------------------------------------------- seed

local function is_id(v) return type(v) == "string" and v ~= "" end

-- Validate one tenant spec; returns a tenant record or nil, err.
local function tenant_from(spec)
  if type(spec) ~= "table" or not is_id(spec.name) then return nil, "tenant needs a string name" end
  if not is_id(spec.token) then return nil, "tenant " .. spec.name .. " needs a string token" end
  local t = { name = spec.name, exists = spec.exists ~= false, token = spec.token,
              instances = {}, bindings = {} }
  if spec.instances ~= nil and type(spec.instances) ~= "table" then
    return nil, "instances must be an array of strings"
  end
  for _, id in ipairs(spec.instances or {}) do
    if not is_id(id) then return nil, "instances must be an array of strings" end
    t.instances[id] = true
  end
  local b = spec.bindings or {}
  if type(b) ~= "table" then return nil, "bindings must be an object or an array" end
  if #b > 0 then -- array form: [{"instance_id":..,"user_id":..}]
    local mapped = {}
    for _, e in ipairs(b) do
      if type(e) ~= "table" then return nil, "bad binding entry" end
      mapped[e.instance_id or ""] = e.user_id
    end
    b = mapped
  end
  for iid, uid in pairs(b) do
    if not is_id(iid) or not is_id(uid) then return nil, "bindings must map instance_id to user_id strings" end
    if not t.instances[iid] then return nil, "binding for unknown instance " .. iid end
    t.bindings[iid] = uid
  end
  return t
end

local function seed()
  local doc = body_json()
  if type(doc) ~= "table" or type(doc.tenants) ~= "table" then
    return bad('body must be {"tenants":[...]}')
  end
  local list, names, tokens = {}, {}, {}
  for _, spec in ipairs(doc.tenants) do
    local t, err = tenant_from(spec)
    if not t then return bad(err) end
    if tokens[t.token] then return bad("two tenants in the seed share a token") end
    local owner = st.tokens[t.token]
    if owner and owner ~= t.name then return bad("token already used by tenant " .. owner) end
    tokens[t.token] = true
    list[#list + 1] = t
  end
  for _, t in ipairs(list) do
    local old = st.tenants[t.name]
    if old then st.tokens[old.token] = nil end
    st.tokens[t.token] = t.name
    st.tenants[t.name] = t
    names[#names + 1] = t.name
  end
  return reply(200, { ok = true, tenants = st.array(names) })
end

-- ---------------------------------------------------------------- views

local function state()
  local out = {}
  for name, t in pairs(st.tenants) do
    local bindings = {}
    for _, iid in ipairs(sorted_keys(t.bindings)) do
      bindings[#bindings + 1] = { instance_id = iid, user_id = t.bindings[iid] }
    end
    out[name] = { exists = t.exists, instances = st.array(sorted_keys(t.instances)),
                  bindings = st.array(bindings) }
  end
  return reply(200, { tenants = out, counters = st.counters })
end

local function log_view(list)
  local since = tonumber(ngx.var.arg_since) or 0
  local out = {}
  for _, e in ipairs(list) do
    if e.seq > since then out[#out + 1] = e end
  end
  return reply(200, { requests = st.array(out) })
end

local function fault_view()
  local out = {}
  for _, f in ipairs(st.faults) do
    out[#out + 1] = { id = f.id, type = f.type, first = f.first, last = f.last or -1, params = f.params }
  end
  return reply(200, { faults = st.array(out), next_request = st.counters.unassign_requests + 1 })
end

local function add_faults()
  local doc = body_json()
  if type(doc) ~= "table" then return bad("body must be JSON") end
  local list = doc.faults or { doc }
  if type(list) ~= "table" then return bad('body must be {"faults":[...]}') end
  for _, spec in ipairs(list) do -- validate all before scheduling any
    local ok, err = faults.check(spec)
    if not ok then return bad(err) end
  end
  local out = {}
  for _, spec in ipairs(list) do
    local f, err = faults.schedule(spec)
    if not f then return bad(err) end
    out[#out + 1] = { id = f.id, type = f.type, first = f.first, last = f.last or -1 }
  end
  return reply(200, { ok = true, scheduled = st.array(out) })
end

local function info()
  local c = st.config
  local pid
  local f = io.open(c.run_dir .. "/nginx.pid", "r")
  if f then pid = tonumber(f:read("*l")); f:close() end
  return reply(200, {
    http_port = c.http_port, https_port = c.https_port,
    wrongname_port = c.wrongname_port, target_port = c.target_port,
    http_url = "http://127.0.0.1:" .. c.http_port,
    https_url = "https://localhost:" .. c.https_port,
    wrongname_url = "https://localhost:" .. c.wrongname_port,
    target_url = "http://127.0.0.1:" .. c.target_port,
    ca = c.run_dir .. "/ca.pem", other_ca = c.run_dir .. "/other-ca.pem",
    run_dir = c.run_dir, pid = pid or st.null, worker_pid = ngx.worker.pid(),
    log_max = c.log_max,
  })
end

-- ---------------------------------------------------------------- routing

local routes = {
  ["POST /_sim/reset"] = function() st.reset(); return reply(200, { ok = true }) end,
  ["POST /_sim/seed"] = seed,
  ["GET /_sim/state"] = state,
  ["GET /_sim/log"] = function() return log_view(st.log) end,
  ["DELETE /_sim/log"] = function() st.log, st.target_log = {}, {}; return reply(200, { ok = true }) end,
  ["GET /_sim/target_log"] = function() return log_view(st.target_log) end,
  ["GET /_sim/faults"] = fault_view,
  ["POST /_sim/faults"] = add_faults,
  ["DELETE /_sim/faults"] = function() st.faults = {}; return reply(200, { ok = true }) end,
  ["GET /_sim/info"] = info,
}

function M.handle()
  local route = routes[ngx.req.get_method() .. " " .. ngx.var.uri]
  if not route then return reply(404, { ok = false, error = "no such control endpoint" }) end
  return route()
end

-- Anything outside the API and the control API: the gateway's "API not found".
function M.not_found()
  return reply(404, { error_code = "APIGW.0101",
                      error_msg = "The API does not exist or has not been published in the environment",
                      request_id = ngx.var.http_x_request_id or st.hex(32) })
end

return M
