-- KooPhone simulator: fault injection.
-- `types` is THE fault table: name -> function(params, r). `r` is the request object from
-- koophone_sim (r:read() body, r:process() normal checks + apply, r:json/r:send answer, r:close()).
-- Every fault except `reset` (and `stale_connection` when it closes) reads the request body
-- first, so the log shows the pairs sent.
local st = require "sim_state"

local M = {}

local function num(v, default) return tonumber(v) or default end

-- A JSON object of exactly n bytes: {"error_code":"0","error_msg":"ok","padding":"xxx..."}.
local function padded_json(n)
  local head, tail = '{"error_code":"0","error_msg":"ok","padding":"', '"}'
  local fill = n - #head - #tail
  if fill < 0 then return (head .. tail):sub(1, n) end
  return head .. string.rep("x", fill) .. tail
end

local function gateway(r, status, code, msg, headers)
  return r:json(status, { error_code = code, error_msg = msg,
                          request_id = r.request_id or r.generated_id }, headers)
end

local BAD_GATEWAY = { [502] = "502 Bad Gateway", [504] = "504 Gateway Time-out" }

M.types = {
  -- sleep, then normal processing
  delay = function(p, r)
    r:read(); ngx.sleep(num(p.seconds, 1)); return r:json(r:process())
  end,
  -- normal processing; first half of the body, flush, sleep, rest
  delay_body = function(p, r)
    local status, t = r:process()
    local body = st.encode(t)
    local half = math.floor(#body / 2)
    r.entry.error_code = st.error_code(t) or st.null
    r:start(status, { ["Content-Length"] = #body })
    r:write(body:sub(1, half), true); ngx.sleep(num(p.seconds, 1)); r:write(body:sub(half + 1))
    return ngx.exit(ngx.HTTP_OK)
  end,
  -- close the connection before reading the body; nothing applied
  reset = function(p, r) return r:close() end,
  -- read the body, apply nothing, close without answering
  drop = function(p, r) r:read(); return r:close() end,
  -- normal processing (bindings removed when valid), close without answering
  drop_after_apply = function(p, r) r:process(); return r:close() end,
  -- normal processing (bindings removed when valid), then 500 KOOPHONE.API.9999
  error_after_apply = function(p, r)
    r:process(); return r:json(500, { error_code = "KOOPHONE.API.9999", error_msg = "Internal service error" })
  end,
  -- 500 KOOPHONE.API.9999, nothing applied
  error = function(p, r)
    r:read(); return r:json(500, { error_code = "KOOPHONE.API.9999", error_msg = "Internal service error" })
  end,
  -- exactly this status, body and headers; nothing applied
  respond = function(p, r)
    r:read(); return r:send(num(p.status, 200), tostring(p.body or ""), p.headers)
  end,
  -- 429 APIGW.0308, optional Retry-After
  throttle = function(p, r)
    r:read()
    return gateway(r, 429, "APIGW.0308", "The throttling threshold has been reached",
                   p.retry_after and { ["Retry-After"] = tostring(p.retry_after) })
  end,
  -- 503 APIGW.0613
  unavailable = function(p, r) r:read(); return gateway(r, 503, "APIGW.0613", "IAM unavailable") end,
  -- HTML error page from a gateway (502 or 504)
  bad_gateway = function(p, r)
    r:read()
    local status = num(p.status, 502)
    local title = BAD_GATEWAY[status] or (status .. " Bad Gateway")
    return r:send(status, "<html><body><h1>" .. title .. "</h1></body></html>",
                  { ["Content-Type"] = "text/html" })
  end,
  -- normal processing, then a Content-Length larger than what is sent, half the JSON, abort
  truncate = function(p, r)
    local status, t = r:process()
    local body = st.encode(t)
    r:start(status, { ["Content-Length"] = #body + num(p.missing, 100) })
    r:write(body:sub(1, math.floor(#body / 2)), true)
    return ngx.exit(ngx.ERROR)
  end,
  -- 200 with a JSON body of `bytes` bytes (chunked=true: no Content-Length, 64 KiB pieces); nothing applied
  big_body = function(p, r)
    r:read()
    local body = padded_json(math.floor(num(p.bytes, 1048576)))
    if not p.chunked then return r:send(200, body) end
    r:start(200)
    for i = 1, #body, 65536 do r:write(body:sub(i, i + 65535), true) end
    return ngx.exit(ngx.HTTP_OK)
  end,
  -- 200 with Content-Length total_bytes, sent at about bytes_per_second; nothing applied
  trickle = function(p, r)
    r:read()
    local bps = math.max(num(p.bytes_per_second, 1), 1)
    local body = padded_json(math.floor(num(p.total_bytes, 64)))
    local step, interval = 1, 1 / bps
    if bps > 20 then step, interval = math.ceil(bps / 20), 0.05 end
    r:start(200, { ["Content-Length"] = #body })
    for i = 1, #body, step do
      r:write(body:sub(i, i + step - 1), true)
      if i + step <= #body then ngx.sleep(interval) end
    end
    return ngx.exit(ngx.HTTP_OK)
  end,
  -- on a kept-alive connection (not its first request): close before reading the body, as a
  -- server does whose keep-alive timeout ran out while the request was on its way; nothing
  -- applied. On a new connection: normal processing.
  stale_connection = function(p, r)
    if (r.entry.connection_requests or 1) > 1 then return r:close() end
    return r:json(r:process())
  end,
  -- 3xx to the redirect target server (to = "target", default) or to any URL; nothing applied
  redirect = function(p, r)
    r:read()
    local to = p.to or "target"
    if to == "target" then
      to = "http://127.0.0.1:" .. st.config.target_port .. "/v1/instances/unassign"
    end
    return r:send(num(p.status, 302), "<html><body>Moved</body></html>",
                  { Location = to, ["Content-Type"] = "text/html" })
  end,
  -- {"error_code":code,"error_msg":msg} with that HTTP status (default 200); nothing applied
  api_error = function(p, r)
    r:read()
    return r:json(num(p.status, 200), { error_code = tostring(p.code or "KOOPHONE.API.9999"),
                                       error_msg = tostring(p.msg or "simulated error") })
  end,
}

-- ---------------------------------------------------------------- scheduling

local next_id = 0

-- The API a fault applies to -> the counter its `at` counts.
local COUNTERS = { unassign = "unassign_requests", task = "task_requests", list = "list_requests" }

-- spec: {type=..., at=1, count=1 (-1 = until reset), api="unassign"|"task"|"list", ...params}.
-- Returns true or nil, err.
function M.check(spec)
  if type(spec) ~= "table" or not M.types[spec.type] then
    return nil, "unknown fault type: " .. tostring(type(spec) == "table" and spec.type or spec)
  end
  if spec.api ~= nil and not COUNTERS[spec.api] then
    return nil, "'api' must be \"unassign\", \"task\" or \"list\""
  end
  local at, count = tonumber(spec.at or 1), tonumber(spec.count or 1)
  if not at or at < 1 or at % 1 ~= 0 then return nil, "'at' must be an integer >= 1" end
  if not count or (count ~= -1 and count < 1) or count % 1 ~= 0 then
    return nil, "'count' must be -1 or an integer >= 1"
  end
  return true
end

-- Schedules a checked spec; returns the fault {id, type, first, last, params} or nil, err.
function M.schedule(spec)
  local ok, err = M.check(spec)
  if not ok then return nil, err end
  local at, count = tonumber(spec.at or 1), tonumber(spec.count or 1)
  local params = {}
  for k, v in pairs(spec) do
    if k ~= "type" and k ~= "at" and k ~= "count" and k ~= "api" then params[k] = v end
  end
  next_id = next_id + 1
  local api = spec.api or "unassign"
  local first = st.counters[COUNTERS[api]] + at
  local f = { id = next_id, type = spec.type, api = api, first = first,
              last = count ~= -1 and first + count - 1 or nil, params = params }
  st.faults[#st.faults + 1] = f
  st.counters.faults_scheduled = st.counters.faults_scheduled + 1
  return f
end

-- The fault for request number `seq` of `api` (first scheduled wins), dropping expired ones.
function M.take(api, seq)
  local keep, hit = {}, nil
  for _, f in ipairs(st.faults) do
    if f.api ~= api then
      keep[#keep + 1] = f
    elseif not f.last or f.last >= seq then
      if not hit and f.first <= seq then hit = f end
      if not f.last or f.last > seq then keep[#keep + 1] = f end
    end
  end
  st.faults = keep
  return hit
end

return M
