-- Prometheus metrics of the example (nginx.conf: lua_shared_dict koophone_metrics, location
-- /metrics), fed by koophone's on_event: one shared dict, so every worker counts into the same
-- numbers and any worker answers the scrape.
--   koophone_requests_total{call,code}      HTTP exchanges with KooPhone; code "OK" on success
--   koophone_request_duration_seconds       histogram of their duration (libcurl's total time)
--   koophone_retries_total                   retries of the policy (on_retry) and libcurl resends
--   koophone_in_flight                       admin calls in progress (the handler counts them)
local _M = {}

local BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local SEP = "\t"

local function dict() return ngx.shared.koophone_metrics end

-- The on_event hook.
function _M.record(ev)
  local d = dict()
  d:incr("requests" .. SEP .. ev.call .. SEP .. (ev.code or "OK"), 1, 0)
  for _, le in ipairs(BUCKETS) do
    if ev.duration <= le then d:incr("bucket" .. SEP .. le, 1, 0) end
  end
  d:incr("duration_count", 1, 0)
  d:incr("duration_sum", ev.duration, 0)
  if ev.resends > 0 then d:incr("retries", ev.resends, 0) end
end

-- The retry policy's on_retry hook.
function _M.retry() dict():incr("retries", 1, 0) end

-- Around a call: the in-flight gauge.
function _M.enter() dict():incr("in_flight", 1, 0) end
function _M.leave() dict():incr("in_flight", -1, 0) end

-- Label values are call names and error codes: escaped as the text format asks.
local function label(v)
  return (v:gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

-- content_by_lua of /metrics: the text format.
function _M.serve()
  local d, out = dict(), {}
  local function add(line) out[#out + 1] = line end
  add("# TYPE koophone_requests_total counter")
  local keys = d:get_keys(0)
  table.sort(keys)
  for _, k in ipairs(keys) do
    local kind, call, code = k:match("^(%a+)\t([^\t]*)\t?(.*)$")
    if kind == "requests" then
      add(('koophone_requests_total{call="%s",code="%s"} %d'):format(label(call), label(code), d:get(k)))
    end
  end
  add("# TYPE koophone_request_duration_seconds histogram")
  for _, le in ipairs(BUCKETS) do
    add(('koophone_request_duration_seconds_bucket{le="%s"} %d'):format(le, d:get("bucket" .. SEP .. le) or 0))
  end
  local count = d:get("duration_count") or 0
  add(('koophone_request_duration_seconds_bucket{le="+Inf"} %d'):format(count))
  add(("koophone_request_duration_seconds_sum %.6f"):format(d:get("duration_sum") or 0))
  add(("koophone_request_duration_seconds_count %d"):format(count))
  add("# TYPE koophone_retries_total counter")
  add(("koophone_retries_total %d"):format(d:get("retries") or 0))
  add("# TYPE koophone_in_flight gauge")
  add(("koophone_in_flight %d"):format(d:get("in_flight") or 0))
  ngx.header["Content-Type"] = "text/plain; version=0.0.4"
  ngx.say(table.concat(out, "\n"))
end

return _M
