-- KooPhone simulator: shared state of the single nginx worker (plain Lua tables: nginx runs one
-- worker, so every request sees the same tables and the same clock), plus JSON, id, time and
-- control-reply helpers.
-- Never store a token anywhere except the `tokens` index (token -> tenant name) and `iam_tokens`.
local cjson = require "cjson.safe"

local M = {
  config = {},
  tenants = {},      -- name -> { name, exists, instances = {id=true}, bindings = {instance_id=user_id},
                     --           unassigning = {instance_id=latest unassign job} }
  tokens = {},       -- token -> tenant name
  faults = {},       -- pending faults: { id, type, first, last (nil = forever), params }
  log = {},          -- unassign request log entries (oldest first)
  list_log = {},     -- ListInstances request log entries
  target_log = {},   -- redirect target server log entries
  counters = {},
  -- see reset() for the IAM, AK/SK and task tables
}

M.null = cjson.null
local EMPTY = "@@SIM_EMPTY_ARRAY@@"

function M.init(config)
  M.config = config or {}
  M.reset()
end

function M.init_worker()
  local seed = ngx.now() * 1000 + ngx.worker.pid()
  local f = io.open("/dev/urandom", "rb")
  if f then
    local b = f:read(4) or ""
    f:close()
    for i = 1, #b do seed = seed * 256 + b:byte(i) end
  end
  math.randomseed(seed % 2147483647)
end

function M.reset()
  M.tenants, M.tokens, M.faults, M.log, M.target_log, M.list_log = {}, {}, {}, {}, {}, {}
  M.counters = { unassign_requests = 0, applied_requests = 0, removed_bindings = 0,
                 target_requests = 0, faults_scheduled = 0, iam_requests = 0, iam_tokens_issued = 0,
                 task_requests = 0, tasks_created = 0, list_requests = 0 }
  M.clock_offset = 0   -- seconds added to the real clock (POST /_sim/clock)
  M.projects = {}      -- project_id -> tenant name
  M.users = {}         -- "domain\0name" -> { domain, name, password }
  M.keys = {}          -- ak -> { ak, sk, security_token, projects = {project_id=true} }
  M.iam_tokens = {}    -- token -> { tenant, issued, expires, revoked }
  M.iam = { lifetime = 86400, token_size = 2048, delay = 0, fail_status = nil, fail_count = 0 }
  M.iam_log = {}
  M.tasks = {}         -- task_id -> { id, tenant, jobs = {...} }
  M.task_conf = { not_found = false, not_found_status = 400 }
  M.task_log = {}
  M.list_conf = require("sim_list").DEFAULTS -- replaced, never changed in place
end

-- The simulator's clock: the real time plus the offset the control API set. Token expiry, the
-- X-Sdk-Date window and job progress all use it.
function M.now()
  return ngx.now() + M.clock_offset
end

-- First value of request header `name` from ngx.req.get_headers(); nil when absent or empty.
function M.header(h, name)
  local v = h[name]
  if type(v) == "table" then v = v[1] end
  if v == "" then v = nil end
  return v
end

-- The keys of t, sorted.
function M.keys_of(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

-- Random lowercase hex string of n characters.
function M.hex(n)
  local t = {}
  for i = 1, n do t[i] = string.format("%x", math.random(0, 15)) end
  return table.concat(t)
end

-- Mark a possibly empty Lua array so that it encodes as [] (Debian's cjson 2.1.0 has no empty_array).
function M.array(t)
  if t == nil or next(t) == nil then return EMPTY end
  return t
end

function M.encode(v)
  local s = assert(cjson.encode(v))
  s = s:gsub("\\/", "/") -- cjson escapes every "/"; undo for readability
  return (s:gsub('"' .. EMPTY .. '"', "[]"))
end

M.decode = cjson.decode

-- The error code of an API answer, when it is not "0": top-level, or inside `data` (ListInstances).
function M.error_code(t)
  if type(t) ~= "table" then return nil end
  local code = t.error_code
  if code == nil and type(t.data) == "table" then code = t.data.error_code end
  if code ~= nil and code ~= "0" then return code end
  return nil
end

-- Appends to the log M[name] (default "log").
function M.add_log(entry, name)
  name = name or "log"
  local log, max = M[name], tonumber(M.config.log_max) or 10000
  log[#log + 1] = entry
  if #log > max + math.floor(max / 10) then  -- trim in batches, keep the newest `max`
    local keep = {}
    for i = #log - max + 1, #log do keep[#keep + 1] = log[i] end
    M[name] = keep
  end
end

-- Control API answer: JSON with Content-Length.
function M.reply(status, t)
  local body = M.encode(t)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Content-Length"] = #body
  ngx.print(body)
  return ngx.exit(ngx.HTTP_OK)
end

function M.bad(msg) return M.reply(400, { ok = false, error = msg }) end

-- Control API answer for GET /_sim/*log[?since=N]: the entries of `list` with seq > N.
function M.log_view(list)
  local since = tonumber(ngx.var.arg_since) or 0
  local out = {}
  for _, e in ipairs(list) do
    if e.seq > since then out[#out + 1] = e end
  end
  return M.reply(200, { requests = M.array(out) })
end

-- The request body as JSON ({} when empty; nil when not JSON).
function M.body_json()
  local data = M.read_body()
  if data == "" then return {} end
  return M.decode(data)
end

-- The request body, also when nginx spooled a large one to a temporary file.
function M.read_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body then return body end
  local file = ngx.req.get_body_file()
  local f = file and io.open(file, "rb")
  if not f then return "" end
  body = f:read("*a")
  f:close()
  return body or ""
end

return M
