-- koophone.ngx.metrics: Prometheus metrics of koophone's HTTP exchanges, fed by a client's
-- on_event (docs/events.md) and kept in a lua_shared_dict, so every nginx worker counts into the
-- same numbers and any worker answers the scrape (docs/openresty.md#metrics):
--   lua_shared_dict koophone_metrics 1m;                    # nginx.conf, http{}
--   local metrics = require("koophone.ngx.metrics").new(ngx.shared.koophone_metrics)
--   kngx.client { on_event = metrics.on_event, retry = { on_retry = metrics.on_retry }, … }
--   content_by_lua_block { metrics:serve() }                 # location = /metrics
-- An IAM password login (event "iam_token") is not a KooPhone request: it has metrics of its own,
-- so a dashboard of KooPhone's answers never mixes in IAM's.
-- Outside nginx any table with the dict's get, incr and get_keys stands in for it.
local argerror = require "koophone.argerror"

local _M = {}

local FNAME = "koophone.ngx.metrics.new"
local BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local SEP = "\t"

-- In the order of the scrape.
local FAMILIES = {
  { name = "koophone_requests_total", type = "counter",
    help = "HTTP exchanges with KooPhone by call and error code (OK: success)" },
  { name = "koophone_request_duration_seconds", type = "histogram",
    help = "Duration of the exchanges with KooPhone (libcurl's total time)" },
  { name = "koophone_iam_logins_total", type = "counter",
    help = "IAM password logins of a token provider by error code (OK: success)" },
  { name = "koophone_iam_login_duration_seconds", type = "histogram",
    help = "Duration of the IAM password logins", unlabelled = true },
  { name = "koophone_retries_total", type = "counter",
    help = "Retries of the policy (on_retry) and libcurl's resends of KooPhone exchanges",
    unlabelled = true },
  { name = "koophone_in_flight", type = "gauge", help = "Calls in progress (enter/leave)", unlabelled = true },
}

local Metrics = { __name = "koophone.ngx.metrics" }
Metrics.__index = Metrics

-- A label value as the text format wants it.
local function escape(v)
  local s = tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" })
  return (s:gsub("%c", " ")) -- a tab would split the dict's key; no other control is wanted
end

-- Keys: "c<SEP>name<SEP>labels" a counter or gauge, "h<SEP>name<SEP>labels<SEP>le" a histogram's
-- cumulative bucket ("+Inf" is its count), "s<SEP>name<SEP>labels" its sum; labels as written in
-- the scrape, e.g. call="unassign",code="OK".
local function add(self, name, labels, n)
  self.dict:incr("c" .. SEP .. name .. SEP .. labels, n, 0)
end

local function observe(self, name, labels, seconds)
  local d, prefix = self.dict, "h" .. SEP .. name .. SEP .. labels .. SEP
  for _, le in ipairs(BUCKETS) do
    if seconds <= le then d:incr(prefix .. ("%g"):format(le), 1, 0) end
  end
  d:incr(prefix .. "+Inf", 1, 0)
  d:incr("s" .. SEP .. name .. SEP .. labels, seconds, 0)
end

-- The on_event hook: one HTTP exchange.
function Metrics:record(ev)
  local code = escape(ev.code or "OK")
  if ev.call == "iam_token" then
    add(self, "koophone_iam_logins_total", ('code="%s"'):format(code), 1)
    observe(self, "koophone_iam_login_duration_seconds", "", ev.duration)
    return
  end
  local call = escape(ev.call)
  add(self, "koophone_requests_total", ('call="%s",code="%s"'):format(call, code), 1)
  observe(self, "koophone_request_duration_seconds", ('call="%s"'):format(call), ev.duration)
  if ev.resends > 0 then add(self, "koophone_retries_total", "", ev.resends) end
end

-- The retry policy's on_retry hook.
function Metrics:retry() add(self, "koophone_retries_total", "", 1) end

-- Around a call: the in-flight gauge.
function Metrics:enter() add(self, "koophone_in_flight", "", 1) end
function Metrics:leave() add(self, "koophone_in_flight", "", -1) end

local function sample(name, labels, value, fmt)
  return ("%s%s " .. fmt):format(name, labels == "" and "" or "{" .. labels .. "}", value)
end

-- The scrape in the Prometheus text format (0.0.4).
function Metrics:text()
  local d = self.dict
  -- family name -> its label sets, in key order
  local series = {}
  local keys = d:get_keys(0)
  table.sort(keys)
  for _, k in ipairs(keys) do
    local kind, name, labels, le = k:match("^(%a)\t([^\t]+)\t([^\t]*)\t?(.*)$")
    if kind == "c" or (kind == "h" and le == "+Inf") then
      series[name] = series[name] or {}
      table.insert(series[name], labels)
    end
  end
  local out = {}
  for _, f in ipairs(FAMILIES) do
    out[#out + 1] = ("# HELP %s %s"):format(f.name, f.help)
    out[#out + 1] = ("# TYPE %s %s"):format(f.name, f.type)
    -- a family without labels is there from the start, at 0
    local sets = series[f.name] or (f.unlabelled and { "" }) or {}
    for _, labels in ipairs(sets) do
      if f.type == "histogram" then
        local prefix = "h" .. SEP .. f.name .. SEP .. labels .. SEP
        local sep = labels == "" and "" or ","
        for _, le in ipairs(BUCKETS) do
          local bound = ("%g"):format(le)
          out[#out + 1] = sample(f.name .. "_bucket", labels .. sep .. ('le="%s"'):format(bound),
                                 d:get(prefix .. bound) or 0, "%d")
        end
        local count = d:get(prefix .. "+Inf") or 0
        out[#out + 1] = sample(f.name .. "_bucket", labels .. sep .. 'le="+Inf"', count, "%d")
        out[#out + 1] = sample(f.name .. "_sum", labels, d:get("s" .. SEP .. f.name .. SEP .. labels) or 0, "%.6f")
        out[#out + 1] = sample(f.name .. "_count", labels, count, "%d")
      else
        out[#out + 1] = sample(f.name, labels, d:get("c" .. SEP .. f.name .. SEP .. labels) or 0, "%d")
      end
    end
  end
  return table.concat(out, "\n") .. "\n"
end

-- content_by_lua of the scrape location.
function Metrics:serve()
  ngx.header["Content-Type"] = "text/plain; version=0.0.4"
  ngx.print(self:text())
end

-- new(dict): metrics kept in dict (ngx.shared.NAME). Its on_event and on_retry fields are the
-- hooks to give a client (plain functions: hooks are called without self).
function _M.new(dict)
  if type(dict) ~= "table" or type(dict.incr) ~= "function" or type(dict.get_keys) ~= "function" then
    argerror.raise(FNAME, 1, "dict", "expected a lua_shared_dict (ngx.shared.NAME), got %s", type(dict))
  end
  local self = setmetatable({ dict = dict }, Metrics)
  self.on_event = function(ev) self:record(ev) end
  self.on_retry = function() self:retry() end
  return self
end

return _M
