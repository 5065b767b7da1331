-- KooPhone simulator: POST <prefix>/v1/instances/unassign semantics, and the request object
-- both API calls (unassign and GetTask, sim_tasks) are served with.
-- A request object `r` carries the log entry; the fault table (sim_faults) drives it through
-- r:read(), r:process(), r:send()/r:json(), r:close().
local st = require "sim_state"
local faults = require "sim_faults"
local gateway = require "sim_gateway"
local tasks = require "sim_tasks"
local listing = require "sim_list"

local M = {}
local R = {}
R.__index = R

local MAX_PAIRS = 1000

local header = st.header

local function nchars(s) -- UTF-8 characters
  return #s - select(2, s:gsub("[\128-\191]", ""))
end

local function valid_id(v)
  return type(v) == "string" and #v > 0 and nchars(v) <= 32
end

local function nz(v) if v == nil or v == "" then return st.null end return v end

-- ---------------------------------------------------------------- request object

function R:read()
  if self.body_read then return self.body end
  self.body_read = true
  self.body = st.read_body()
  self.entry.body_bytes = #self.body
  -- Record the pairs as sent, when the body has the documented shape.
  local doc = st.decode(self.body)
  self.doc = doc
  if type(doc) == "table" and type(doc.user_instances) == "table" then
    local list = {}
    for i, p in ipairs(doc.user_instances) do
      if type(p) == "table" then
        list[i] = { type(p.user_id) == "string" and p.user_id or st.null,
                    type(p.instance_id) == "string" and p.instance_id or st.null }
      else
        list[i] = { st.null, st.null }
      end
    end
    self.entry.pairs = #list
    self.entry.pair_list = st.array(list)
  end
  return self.body
end

function R:err(status, code, msg, with_request_id)
  local t = { error_code = code, error_msg = msg }
  if with_request_id then t.request_id = self.request_id or self.generated_id end
  return status, t
end

-- Checks 2..4 of both calls (credentials, tenant, x-request-id, method). Returns the tenant,
-- or nil, status, answer table.
function R:check(method)
  local tenant, status, t = gateway.authenticate(self)
  if not tenant then return nil, status, t end
  self.entry.tenant = tenant.name
  if not tenant.exists then
    return nil, self:err(200, "KOOPHONE.API.0000", "The tenant does not exist.")
  end
  if not self.request_id then
    return nil, self:err(200, "KOOPHONE.API.0002", "missing header x-request-id")
  end
  if ngx.req.get_method() ~= method then
    return nil, self:err(404, "APIGW.0101", "The API does not exist or has not been published in the environment", true)
  end
  return tenant
end

-- Normal processing (checks 2..8). Applies the unassign when everything is valid.
-- Returns status, response table.
function R:process()
  local tenant, status, t = self:check("POST")
  if not tenant then return status, t end

  self:read()
  local doc, list = self.doc, nil
  if type(doc) == "table" then list = doc.user_instances end
  local ok = type(list) == "table" and #list > 0 and #list <= MAX_PAIRS
  if ok then
    local n = 0
    for _ in pairs(list) do n = n + 1 end
    ok = n == #list
    for _, p in ipairs(list) do
      if not (ok and type(p) == "table" and valid_id(p.user_id) and valid_id(p.instance_id)) then
        ok = false
        break
      end
    end
  end
  if not ok then
    return self:err(400, "KOOPHONE.API.1000", "The request parameter is incorrect.")
  end
  for _, p in ipairs(list) do
    if not tenant.instances[p.instance_id] then
      return self:err(400, "KOOPHONE.API.1001", "Insufficient instance permissions.")
    end
  end
  for _, p in ipairs(list) do
    if tenant.bindings[p.instance_id] ~= p.user_id then
      return self:err(400, "KOOPHONE.API.2210",
        "The binding relationship between the user and the instance does not exist.")
    end
  end

  local jobs = {}
  for i, p in ipairs(list) do
    if tenant.bindings[p.instance_id] ~= nil then
      st.counters.removed_bindings = st.counters.removed_bindings + 1
    end
    tenant.bindings[p.instance_id] = nil
    jobs[i] = { instance_id = p.instance_id, job_id = st.hex(32) }
  end
  st.counters.applied_requests = st.counters.applied_requests + 1
  self.entry.applied = true
  return 200, { data = { task_id = tasks.create(tenant, jobs, list), cmd_jobs = jobs },
                error_code = "0", error_msg = "ok" }
end

-- Start a response: status and headers (Content-Type defaults to application/json).
function R:start(status, headers)
  self.entry.status = status
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Date"] = ngx.http_time(math.floor(st.now())) -- the simulated clock, as a skew hint
  if self.request_id or self.generated_id then
    ngx.header["X-Request-Id"] = self.request_id or self.generated_id
  end
  for k, v in pairs(headers or {}) do ngx.header[k] = v end
end

function R:write(s, flush)
  ngx.print(s)
  if flush then ngx.flush(true) end
end

-- Send a complete response with Content-Length.
function R:send(status, body, headers)
  headers = type(headers) == "table" and headers or {}
  local has_len = false
  for k in pairs(headers) do if k:lower() == "content-length" then has_len = true end end
  if not has_len then headers["Content-Length"] = #body end
  self:start(status, headers)
  ngx.print(body)
  return ngx.exit(ngx.HTTP_OK)
end

function R:json(status, t, headers)
  self.entry.error_code = st.error_code(t) or st.null
  return self:send(status, st.encode(t), headers)
end

-- Close the connection without any answer.
function R:close()
  self.entry.status = 444
  return ngx.exit(444)
end

-- ---------------------------------------------------------------- handlers

local function header_request_id(h) return header(h, "x-request-id") end

-- The API calls: request counter, request log, normal processing, where x-request-id is read
-- (ListInstances documents it as a query parameter, the others as a header).
local APIS = {
  unassign = { counter = "unassign_requests", log = "log", process = R.process, request_id = header_request_id },
  task = { counter = "task_requests", log = "task_log", process = tasks.process, request_id = header_request_id },
  list = { counter = "list_requests", log = "list_log", process = listing.process, request_id = listing.request_id },
}

-- Serves one request of `api` ("unassign" by default, "task" or "list").
function M.handle(api)
  api = api or "unassign"
  local a = APIS[api]
  local c = st.counters
  c[a.counter] = c[a.counter] + 1
  local seq = c[a.counter]
  local h = ngx.req.get_headers(200)
  local rid = a.request_id(h)
  local ssl_reused = ngx.var.https == "on" and ngx.var.ssl_session_reused or nil
  local entry = {
    seq = seq,
    time = ngx.now(),
    request_id = nz(rid),
    connection = tonumber(ngx.var.connection),
    connection_requests = tonumber(ngx.var.connection_requests),
    scheme = ngx.var.scheme,
    http_version = ngx.req.http_version(),
    method = ngx.req.get_method(),
    uri = ngx.var.uri,
    status = 0,
    body_bytes = st.null,
    error_code = st.null,
    fault = st.null,
    pairs = st.null,
    pair_list = st.null,
    applied = false,
    tenant = st.null,
    has_token = header(h, "x-auth-token") ~= nil,
    auth = st.null,
    user_agent = nz(header(h, "user-agent")),
    content_type = nz(header(h, "content-type")),
    expect = nz(header(h, "expect")),
    ssl_session_reused = nz(ssl_reused),
  }
  if api == "task" then entry.task_id = tasks.task_id() end
  if api == "list" then entry.query, entry.results = nz(ngx.var.args), st.null end
  st.add_log(entry, a.log)
  ngx.ctx.entry = entry
  local r = setmetatable({ entry = entry, headers = h, request_id = rid, process = a.process,
                           generated_id = rid == nil and st.hex(32) or nil }, R)

  local fault = faults.take(api, seq)
  if fault then
    entry.fault = fault.type
    return faults.types[fault.type](fault.params, r)
  end
  return r:json(r:process())
end

function M.log_phase()
  local entry = ngx.ctx.entry
  if entry and (entry.status == 0 or entry.status == nil) then
    entry.status = tonumber(ngx.var.status) or 0
  end
end

M.Request = R
return M
