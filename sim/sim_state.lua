-- KooPhone simulator: shared state of the single nginx worker, plus JSON and id helpers.
-- Never store a token anywhere except the `tokens` index (token -> tenant name).
local cjson = require "cjson.safe"

local M = {
  config = {},
  tenants = {},      -- name -> { name, exists, instances = {id=true}, bindings = {instance_id=user_id} }
  tokens = {},       -- token -> tenant name
  faults = {},       -- pending faults: { id, type, first, last (nil = forever), params }
  log = {},          -- unassign request log entries (oldest first)
  target_log = {},   -- redirect target server log entries
  counters = {},
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
  M.tenants, M.tokens, M.faults, M.log, M.target_log = {}, {}, {}, {}, {}
  M.counters = { unassign_requests = 0, applied_requests = 0, removed_bindings = 0,
                 target_requests = 0, faults_scheduled = 0 }
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

function M.add_log(entry)
  local log, max = M.log, tonumber(M.config.log_max) or 10000
  log[#log + 1] = entry
  if #log > max + math.floor(max / 10) then  -- trim in batches, keep the newest `max`
    local keep = {}
    for i = #log - max + 1, #log do keep[#keep + 1] = log[i] end
    M.log = keep
  end
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
