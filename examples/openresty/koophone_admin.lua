-- Admin endpoint for nginx.conf beside this file: unassigns the pairs in the JSON body.
--
--   POST /admin/unassign {"pairs":[{"user_id":"u1","instance_id":"i1"}, ...], "request_id":"opt"}
--   200 {"outcome":"unassigned","task_id":"…","request_id":"…","jobs":[{"instance_id":"…","job_id":"…"}]}
--   400 {"error":{"message":"…"}}                  the body is not a valid request; nothing was sent
--   405 + Allow: POST                              any other method
--   409 {"error":{kind, code, message, …}}         KooPhone refused it (e.g. KOOPHONE.API.2210)
--   429 {"error":{…}} + Retry-After                KooPhone throttled every attempt, or the
--       client's own rate (kind "rate", with rate.max_wait) did not let it go: try later
--   502 {"error":{kind, code, message, sent, maybe_applied, …}}   no usable answer;
--       maybe_applied: an attempt may have been applied, else sent=false: certainly not applied;
--       also KooPhone's 401 (message "the gateway's KooPhone credentials were refused"): this
--       gateway's problem, not the caller's
-- Every unassign is logged at INFO (request id, task id, job ids), failures at WARN.
--   503 {"error":{code = "WORKER_THREAD_UNAVAILABLE", sent = false, …}} + Retry-After: overloaded,
--       the last attempt was not started and no attempt may have been applied: try again later
-- The token comes from KOOPHONE_TOKEN; put this location behind your own authentication.
local cjson = require "cjson.safe"
local koophone = require "koophone"
local kngx = require "koophone.ngx"
local classify = require "koophone.classify"
local kmetrics = require "koophone.ngx.metrics"

local _M = {}

local MAX_PAIRS = 100 -- the client's max_pairs default: more would be a raised error
local client, token

-- The client's options; `overrides` replace some (spec/openresty_load_spec.lua uses them).
-- limits: the lua_shared_dict of the retry budget (nil: each worker has its own); metrics: a
-- koophone.ngx.metrics fed by the client's hooks (nil: none).
function _M.options(overrides, limits, metrics)
  -- the default retry policy: only failures that certainly did not apply, and throttling;
  -- its delays are ngx.sleep, so the worker keeps serving while it waits
  local opts = {
    thread_pool = "koophone",
    -- calls in the thread pool at once in this worker: at most the pool's max_queue (nginx.conf);
    -- more wait up to queue_timeout seconds for one to end, then are answered 503
    max_in_flight = 16, queue_timeout = 2,
    endpoint = os.getenv("KOOPHONE_ENDPOINT"),
    cafile = os.getenv("KOOPHONE_CAFILE"),
    timeout = 15,
    retry = { max_attempts = 3, base_delay = 0.05, throttle_base_delay = 0.1, max_retry_after = 1,
              on_retry = metrics and metrics.on_retry, budget = limits and { dict = limits } },
    on_event = metrics and metrics.on_event, -- /metrics
  }
  for k, v in pairs(overrides or {}) do opts[k] = v end
  return opts
end

-- Called from init_by_lua: a bad option stops nginx from starting instead of failing requests.
-- _M.metrics answers /metrics (nginx.conf): every worker counts into lua_shared_dict koophone_metrics.
function _M.init(overrides)
  _M.metrics = kmetrics.new(ngx.shared.koophone_metrics)
  client = kngx.client(_M.options(overrides, ngx.shared.koophone_limits, _M.metrics))
  token = os.getenv("KOOPHONE_TOKEN")
end

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(body))
  return ngx.exit(status)
end

-- The request's pairs and options, or nil and why they are not acceptable.
local function read_request()
  ngx.req.read_body()
  local req = cjson.decode(ngx.req.get_body_data() or "")
  if type(req) ~= "table" or type(req.pairs) ~= "table" or #req.pairs == 0 then
    return nil, 'expected a JSON object {"pairs":[{"user_id":…,"instance_id":…}, …]}'
  end
  if #req.pairs > MAX_PAIRS then return nil, ("at most %d pairs per request"):format(MAX_PAIRS) end
  for i, p in ipairs(req.pairs) do
    local ok, why = koophone.validate_pair(p)
    if not ok then return nil, ("pairs[%d]: %s"):format(i, why) end
  end
  local rid = req.request_id
  if rid ~= nil and (type(rid) ~= "string" or not rid:match("^[%w%-_.:]+$") or #rid > 128) then
    return nil, "request_id: 1 to 128 letters, digits or -_.:"
  end
  return req.pairs, { request_id = rid }
end

-- The job ids of a result, for the log line.
local function job_ids(res)
  local ids = {}
  for i, j in ipairs(res.jobs) do ids[i] = tostring(j.job_id) end
  return table.concat(ids, ",")
end

-- The HTTP status that answers a failure, and the message the caller sees.
local function failure_status(err)
  if err.status == 401 then
    return 502, "the gateway's KooPhone credentials were refused (HTTP 401): " .. tostring(err.message)
  elseif classify.throttled(err) or err.kind == "rate" then -- KooPhone's throttling, or our own rate
    ngx.header["Retry-After"] = tostring(math.ceil(err.retry_after or 1))
    return 429, err.message
  end
  return err.kind == "api" and 409 or 502, err.message
end

function _M.unassign()
  if ngx.req.get_method() ~= "POST" then
    ngx.header["Allow"] = "POST"
    return reply(405, { error = { message = "use POST" } })
  end
  if not token then return reply(500, { error = { message = "KOOPHONE_TOKEN is not set" } }) end
  local list, opts_or_reason = read_request()
  if not list then return reply(400, { error = { message = opts_or_reason } }) end
  _M.metrics:enter()
  local ok, res, err = pcall(client.unassign, client, token, list, opts_or_reason)
  _M.metrics:leave()
  if not ok then error(res, 0) end
  if not res then
    local status, message = failure_status(err)
    if err.code == "WORKER_THREAD_UNAVAILABLE" and not err.maybe_applied then
      -- overload, nothing applied: koophone.ngx logs these itself, at most once a second
      status = 503
      ngx.header["Retry-After"] = "1"
    else
      -- err has its koophone.Error metatable: tostring gives the one-line form for the log
      ngx.log(ngx.WARN, "unassign failed: ", tostring(err))
    end
    return reply(status, { error = {
      kind = err.kind, code = err.code, status = err.status, message = message,
      request_id = err.request_id, sent = err.sent, attempts = err.attempts,
      maybe_applied = err.maybe_applied, text = tostring(err),
    } })
  end
  ngx.log(ngx.INFO, "unassign ", res.outcome, " request_id=", res.request_id, " task_id=",
          tostring(res.task_id), " jobs=", job_ids(res))
  return reply(200, { outcome = res.outcome, task_id = res.task_id, request_id = res.request_id,
                      attempts = res.attempts, jobs = res.jobs })
end

return _M
