-- KooPhone simulator: control API under /_sim/ (JSON in and out). Never outputs tokens.
local st = require "sim_state"
local faults = require "sim_faults"
local iam = require "sim_iam"
local gateway = require "sim_gateway"
local tasks = require "sim_tasks"
local aksk = require "sim_aksk"
local listing = require "sim_list"

local M = {}

local reply, bad, body_json, log_view = st.reply, st.bad, st.body_json, st.log_view

local sorted_keys = st.keys_of

-- ---------------------------------------------------------------- seed

local function is_id(v) return type(v) == "string" and v ~= "" end

-- Validate one tenant spec; returns a tenant record or nil, err.
local function tenant_from(spec)
  if type(spec) ~= "table" or not is_id(spec.name) then return nil, "tenant needs a string name" end
  if spec.token ~= nil and not is_id(spec.token) or spec.token == nil and not is_id(spec.project_id) then
    return nil, "tenant " .. spec.name .. " needs a string token or project_id"
  end
  for _, k in ipairs({ "project_id", "project_name", "domain" }) do
    if spec[k] ~= nil and not is_id(spec[k]) then return nil, "tenant " .. spec.name .. ": " .. k .. " must be a string" end
  end
  local jobs, err = tasks.jobs_from(spec.jobs)
  if not jobs then return nil, "tenant " .. spec.name .. ": " .. err end
  local t = { name = spec.name, exists = spec.exists ~= false, token = spec.token,
              project_id = spec.project_id, project_name = spec.project_name or "cn-north-4",
              domain = spec.domain or spec.name, domain_id = iam.domain_id(spec.domain or spec.name), jobs = jobs,
              instances = {}, bindings = {}, unassigning = {} }
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

-- Validates every entry of doc[field] with from(spec); returns the records or nil, err.
local function records(doc, field, from)
  if doc[field] == nil then return {} end
  if type(doc[field]) ~= "table" then return nil, field .. " must be an array" end
  local out = {}
  for i, spec in ipairs(doc[field]) do
    local rec, err = from(spec)
    if not rec then return nil, err end
    out[i] = rec
  end
  return out
end

local function seed()
  local doc = body_json()
  if type(doc) ~= "table" or not (doc.tenants or doc.iam_users or doc.access_keys or doc.list) then
    return bad('body must be {"tenants":[...], "iam_users":[...], "access_keys":[...], "list":{...}}')
  end
  local tenant_list, err = records(doc, "tenants", tenant_from)
  local users, keys, list_conf
  if tenant_list then users, err = records(doc, "iam_users", iam.user_from) end
  if users then keys, err = records(doc, "access_keys", gateway.key_from) end
  if keys then list_conf, err = listing.conf_from(doc.list or {}, st.list_conf) end
  if not list_conf then return bad(err) end
  local names, tokens, projects = {}, {}, {}
  for _, t in ipairs(tenant_list) do
    if t.token then
      if tokens[t.token] then return bad("two tenants in the seed share a token") end
      local owner = st.tokens[t.token]
      if owner and owner ~= t.name then return bad("token already used by tenant " .. owner) end
      tokens[t.token] = true
    end
    if t.project_id then
      local owner = projects[t.project_id] or st.projects[t.project_id]
      if owner and owner ~= t.name then return bad("project_id already used by tenant " .. owner) end
      projects[t.project_id] = t.name
    end
  end
  for _, t in ipairs(tenant_list) do
    local old = st.tenants[t.name]
    if old then
      if old.token then st.tokens[old.token] = nil end
      if old.project_id then st.projects[old.project_id] = nil end
    end
    if t.token then st.tokens[t.token] = t.name end
    if t.project_id then st.projects[t.project_id] = t.name end
    st.tenants[t.name] = t
    names[#names + 1] = t.name
  end
  for _, u in ipairs(users) do iam.add_user(u) end
  for _, k in ipairs(keys) do st.keys[k.ak] = k end
  st.list_conf = list_conf
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
                  bindings = st.array(bindings), project_id = t.project_id or st.null,
                  project_name = t.project_name, domain = t.domain }
  end
  return reply(200, { tenants = out, counters = st.counters })
end

local function fault_view()
  local out = {}
  for _, f in ipairs(st.faults) do
    out[#out + 1] = { id = f.id, type = f.type, api = f.api, first = f.first, last = f.last or -1,
                      params = f.params }
  end
  return reply(200, { faults = st.array(out), next_request = st.counters.unassign_requests + 1,
                      next_task_request = st.counters.task_requests + 1,
                      next_list_request = st.counters.list_requests + 1 })
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
    out[#out + 1] = { id = f.id, type = f.type, api = f.api, first = f.first, last = f.last or -1 }
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

-- The simulator's clock: {"advance": seconds} moves it forward, {"offset": seconds} sets it
-- relative to the real time.
local function clock_view()
  local now = st.now()
  return reply(200, { now = now, offset = st.clock_offset, sdk_date = aksk.format_date(now),
                      iso = iam.iso(now) })
end

local function set_clock()
  local doc = body_json()
  if type(doc) ~= "table" then return bad("body must be a JSON object") end
  for _, k in ipairs({ "advance", "offset" }) do
    if doc[k] ~= nil and type(doc[k]) ~= "number" then return bad(k .. " must be a number of seconds") end
  end
  if doc.offset then st.clock_offset = doc.offset end
  st.clock_offset = st.clock_offset + (doc.advance or 0)
  return clock_view()
end

-- ---------------------------------------------------------------- routing

local routes = {
  ["POST /_sim/reset"] = function() st.reset(); return reply(200, { ok = true }) end,
  ["POST /_sim/seed"] = seed,
  ["GET /_sim/state"] = state,
  ["GET /_sim/log"] = function() return log_view(st.log) end,
  ["DELETE /_sim/log"] = function()
    st.log, st.target_log, st.task_log, st.iam_log, st.list_log = {}, {}, {}, {}, {}
    return reply(200, { ok = true })
  end,
  ["GET /_sim/target_log"] = function() return log_view(st.target_log) end,
  ["GET /_sim/faults"] = fault_view,
  ["POST /_sim/faults"] = add_faults,
  ["DELETE /_sim/faults"] = function() st.faults = {}; return reply(200, { ok = true }) end,
  ["GET /_sim/info"] = info,
  ["GET /_sim/clock"] = clock_view,
  ["POST /_sim/clock"] = set_clock,
}
for _, module in ipairs({ iam, gateway, tasks, listing }) do
  for route, fn in pairs(module.routes) do routes[route] = fn end
end

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
