-- koophone.client{...}: a core client (koophone.new) plus a retry policy.
--
--   local client = koophone.client{ endpoint = "...", retry = { max_attempts = 3, ... } }
--   local res, err = client:unassign(token, pairs [, opts])   -- opts: request_id, timeout,
--                                                             -- deadline, cancel
--
-- opts.deadline (seconds) bounds the whole call: attempts, retry delays, rate waits and token
-- fetches. Each attempt's transfer ends by it; a retry or a rate wait that would pass it is not
-- made, and the call returns at once with kind "timeout", code DEADLINE_EXCEEDED. opts.cancel (a
-- koophone.cancel_handle) stops the call at its next check: kind "interrupted", code CANCELLED.
--
-- Option `rate` (a number, or { limit, burst, max_wait, dict, key }) paces the client's requests
-- through a koophone.bucket: the attempts of unassign and of the reads wait for their turn, and
-- unassign_all's rounds use it unless the run has a rate of its own (unassign_many is not paced);
-- with `dict` (a lua_shared_dict) every nginx worker paces through the same bucket.
--
-- What other layers (koophone.bulk) may use:
--   client:unassign(token, pairs, opts)   one call with the policy: retries, one x-request-id for
--                                          all its attempts (fixed before the first), res.attempts /
--                                          err.attempts = requests sent, res.unconfirmed = the
--                                          pairs the answer has no job for
--   client:unassign_many(token, batches, opts)   the core's unassign_many, as it is (no policy)
--   client:start_many(token, batches, opts)      the core's start_many (a transfer set), as it is
--   client:unassign_all(token, pairs, opts)      koophone.bulk.unassign_all(client, ...)
--   client:get_task(token, task_id, opts)   GetTask; a read: every transient failure is retried
--   client:list_instances(token, query, opts)   ListInstances (one page); a read, as get_task
--   client:wait_jobs(token, what, opts)     koophone.wait.wait_jobs(client, ...)
--   client:bindings(token, pairs, opts)     koophone.bindings.read(client, ...): ListInstances reads
--   client.core     the koophone.core client userdata (one libcurl handle, kept-alive connection)
--   client.policy   the koophone.retry policy: policy:new_state(), policy:decide(err, attempt, state)
--                   -> again, delay, why (calls on_retry when again), policy:finish(res, err,
--                   attempt, state) -> res or nil, err (turns a 2210 after an ambiguous failure
--                   into outcome "assumed_unassigned" for one pair, "may have been applied" for
--                   more: koophone.applied; and annotates err); see retry.lua
--   client.sleep    the policy's sleep(seconds) (koophone.sleep unless retry.sleep was given)
--   client.bucket   the koophone.bucket of option `rate` (nil without one); unassign_all's runs
--                   use it when they have no rate of their own
-- The client never stores a token; tostring shows the endpoint and the policy only.
local argerror = require "koophone.argerror"
local core = require "koophone.core"
local retry = require "koophone.retry"
local bucket = require "koophone.bucket"
local shared_dict = require "koophone.shared_dict"
local classify = require "koophone.classify"
local errors = require "koophone.errors"
local unconfirmed = require("koophone.jobs").unconfirmed

local _M = {}

local Client = {}
Client.__index = Client

local RATE_OPTIONS = { limit = true, burst = true, max_wait = true, dict = true, key = true }

-- opts.rate.<name> from min to 100000 (path: what the error names instead)
local function rate_number(t, name, min, fname, path)
  return argerror.number(t[name], fname, 1, path or "opts.rate." .. name, min, 100000)
end

-- The `rate` option: nil, a number of requests per second, or a table { limit = requests per
-- second, burst = requests that may go at once after a quiet time (default: one second's worth),
-- max_wait = the longest wait for a turn (default: no limit), dict = a lua_shared_dict, key = its
-- key (default "koophone:rate") }. policy: the retry policy, whose shared budget must not have the
-- same key in the same dict.
local function new_rate_bucket(opt, fname, policy)
  if opt == nil then return nil end
  local number = type(opt) == "number"
  if number then opt = { limit = opt } end
  if type(opt) ~= "table" then
    argerror.raise(fname, 1, "opts.rate", "expected a number or a table, got %s", type(opt))
  end
  argerror.check_names(opt, RATE_OPTIONS, fname, 1, "opts.rate")
  local limit = rate_number(opt, "limit", 0.001, fname, number and "opts.rate")
  local burst = opt.burst == nil and math.max(1, math.floor(limit)) or rate_number(opt, "burst", 1, fname)
  local max_wait = opt.max_wait ~= nil and rate_number(opt, "max_wait", 0, fname) or nil
  local dict, key = shared_dict.check(opt, fname, "opts.rate", "koophone:rate")
  local b
  if dict then
    local budget = policy.budget
    if budget and budget.dict == dict and budget.key == key then
      argerror.raise(fname, 1, "opts.rate.key", "%q is the retry budget's key in the same dict", key)
    end
    b = bucket.shared(dict, key, limit, burst, core.now)
  else
    b = bucket.new(limit, burst, core.now)
  end
  b.max_wait = max_wait
  return b
end

-- What bounds one call: when it must be over (core.now() time, nil: no deadline) and its cancel
-- handle (nil: none).
local Limit = {}
Limit.__index = Limit

local CANCEL = "koophone.cancel_handle"

-- _M.limit(opts, fname [, argn, path]) -> the Limit of opts.deadline and opts.cancel (their
-- errors name argument argn, default 3, and path, default "opts"), or nil without either.
function _M.limit(opts, fname, argn, path)
  if not opts or (opts.deadline == nil and opts.cancel == nil) then return nil end
  argn, path = argn or 3, path or "opts"
  local c = opts.cancel
  if c ~= nil and (getmetatable(c) or {}).__name ~= CANCEL then
    argerror.raise(fname, argn, path .. ".cancel", "expected a koophone.cancel_handle, got %s", type(c))
  end
  local seconds = opts.deadline and argerror.number(opts.deadline, fname, argn, path .. ".deadline",
                                                    0.001, 86400 * 365)
  return setmetatable({ at = seconds and core.now() + seconds, seconds = seconds, cancel = c }, Limit)
end

-- Seconds left before the deadline (math.huge without one).
function Limit:left()
  return self.at and self.at - core.now() or math.huge
end

-- stops(wait) -> "cancelled", "deadline" (waiting `wait` more seconds would reach it), or nil.
function Limit:stops(wait)
  if self.cancel and self.cancel:cancelled() then return "cancelled" end
  if self:left() <= (wait or 0) then return "deadline" end
end

-- The error of a call the limit stopped (why: "cancelled" or "deadline") before its next attempt,
-- after `last` (the last attempt's error, or nil): that attempt was not sent.
function Limit:error(why, request_id, last)
  local after = last and (": the last attempt failed with %s %s"):format(last.code or last.kind,
                                                                        last.message or "") or ""
  if why == "cancelled" then
    return errors.new { kind = "interrupted", code = "CANCELLED", sent = false, attempts = 0,
                        request_id = request_id, retry_stopped = why,
                        message = "cancelled: not sent" .. after }
  end
  return errors.new {
    kind = "timeout", code = "DEADLINE_EXCEEDED", sent = false, attempts = 0, request_id = request_id,
    retry_after = last and last.retry_after, retry_stopped = why,
    message = ("not sent: the call's deadline of %g s would pass first%s"):format(self.seconds, after),
  }
end

-- The transport's options of an attempt: the call's, its deadline the time left (the core ends
-- the transfer and a token fetch by then). One copy for every attempt of the call (kngx counts a
-- call's attempts per options table); the caller's table is never changed.
function Limit:attempt(call)
  local out = self.copy
  if not out then
    out = {}
    for k, v in pairs(call) do out[k] = v end
    self.copy = out
  end
  if self.at then out.deadline = self:left() end
  return out
end

_M.Limit = Limit

-- The error of an attempt the rate would have made wait longer than max_wait: not sent.
local function rate_refusal(wait, call)
  return errors.new {
    kind = "rate", code = "RATE_LIMITED", sent = false, attempts = 0, retry_after = wait,
    message = ("not sent: its turn at the client's rate was %.3g s away, more than rate.max_wait"):format(wait),
    request_id = type(call) == "table" and call.request_id or nil,
  }
end

-- wrap(transport, opts, default_sleep, fname): the policy (opts.retry) and the rate (opts.rate)
-- around any object with koophone's unassign/close contract plus request_id() (a fresh
-- x-request-id), e.g. a koophone.ngx client with ngx.sleep. An attempt the transport refuses
-- before sending returns an error with attempts = 0 and sent = false: the policy counts it
-- against max_attempts, never as a request. fname names the function that made the client, for
-- its option errors (default koophone.client).
function _M.wrap(transport, opts, default_sleep, fname)
  fname = fname or "koophone.client"
  local policy = retry.new(opts and opts.retry, default_sleep or core.sleep, fname)
  return setmetatable({ core = transport, policy = policy, sleep = policy.sleep,
                        bucket = new_rate_bucket(opts and opts.rate, fname, policy) }, Client)
end

-- Splits opts into the transport's options and the client's own (retry, rate).
function _M.split_options(opts, who)
  if opts ~= nil and type(opts) ~= "table" then
    argerror.raise(who, 1, "opts", "expected a table, got %s", type(opts))
  end
  local transport_opts, own = {}, {}
  for k, v in pairs(opts or {}) do
    if k == "retry" or k == "rate" then own[k] = v else transport_opts[k] = v end
  end
  return transport_opts, own
end

-- new(opts): every option of koophone.new, plus `retry` (a table, or false for one attempt) and
-- `rate`.
function _M.new(opts)
  local core_opts, own = _M.split_options(opts, "koophone.client")
  return _M.wrap(core.new_as("koophone.client", core_opts), own, core.sleep)
end

-- One attempt through the transport (method "unassign" or a read), after waiting for its
-- turn when the client has a rate (reserved first, so that concurrent callers get consecutive
-- turns). A throttled answer slows the rate down (for every worker, with a shared bucket); any
-- other answer wins a little of it back.
-- With a limit (opts.deadline, opts.cancel), nothing is sent once it stops the call, and a turn
-- that would come after the deadline is not waited for.
local function send(self, method, token, arg, call, limit)
  local b = self.bucket
  local stop = limit and limit:stops(0)
  if stop then return nil, limit:error(stop, call.request_id) end
  if not b then
    return self.core[method](self.core, token, arg, limit and limit:attempt(call) or call)
  end
  local left = limit and limit:left() or math.huge
  local wait, over = b:reserve(math.min(b.max_wait or math.huge, left))
  if not wait then
    if b.max_wait and over > b.max_wait then return nil, rate_refusal(over, call) end
    return nil, limit:error("deadline", call.request_id)
  end
  if wait > 0 then self.sleep(wait, limit and limit.cancel) end
  stop = limit and limit:stops(0)
  if stop then return nil, limit:error(stop, call.request_id) end
  local res, err = self.core[method](self.core, token, arg, limit and limit:attempt(call) or call)
  b:answer(err)
  return res, err
end

-- with_request_id(transport, opts) -> opts when it names a request id, else a copy with a fresh
-- one from transport:request_id(). A call's id is fixed before its first attempt, so every
-- attempt carries it (the server can tell they are one call) even when the transport refused an
-- attempt before sending it.
function _M.with_request_id(transport, opts)
  if opts and opts.request_id then return opts end
  local call = { request_id = transport:request_id() }
  for k, v in pairs(opts or {}) do call[k] = v end
  return call
end

-- After a failed first attempt: the policy decides (a retry the limit stops is not made);
-- `call` carries the call's request id.
local function retry_failed_call(self, token, list, call, err, limit)
  local policy, state, attempt = self.policy, self.policy:new_state(#list), err.attempts
  state.limit = limit
  while true do
    local again, delay = policy:decide(err, attempt, state)
    if not again then return policy:finish(nil, err, attempt, state) end
    self.sleep(delay, limit and limit.cancel)
    local res
    res, err = send(self, "unassign", token, list, call, limit)
    attempt = attempt + (res or err).attempts
    if res then return policy:finish(res, nil, attempt, state) end
  end
end

-- A success that lists no job for some pairs did not confirm them: res.unconfirmed lists them.
local function confirm(list, res, err)
  if res and res.outcome == "unassigned" then res.unconfirmed = unconfirmed(list, res) end
  return res, err
end

function Client:unassign(token, list, opts)
  if opts ~= nil and type(opts) ~= "table" then
    argerror.raise("koophone.unassign", 3, "opts", "expected a table, got %s", type(opts))
  end
  local limit = _M.limit(opts, "koophone.unassign")
  local call = _M.with_request_id(self.core, opts)
  -- the common case, a first attempt that succeeds, builds no retry state at all
  local res, err = send(self, "unassign", token, list, call, limit)
  if res then return confirm(list, self.policy:finish(res, nil, res.attempts)) end
  return confirm(list, retry_failed_call(self, token, list, call, err, limit))
end

-- A read (GetTask, ListInstances) cannot change anything: a timeout or a 5xx is safe to send
-- again, so every failure that is not final (classify) is retried, within max_attempts and the
-- budget, with one x-request-id for every attempt; a 4xx (task not found, a bad query) is final.
-- Every read method of the core is this one method (method: its name, fname: for messages).
local function read(self, method, fname, token, arg, opts)
  if opts ~= nil and type(opts) ~= "table" then
    argerror.raise(fname, 3, "opts", "expected a table, got %s", type(opts))
  end
  local limit = _M.limit(opts, fname)
  local call = _M.with_request_id(self.core, opts)
  local policy, attempt = self.policy, 0
  while true do
    local res, err = send(self, method, token, arg, call, limit)
    if res then return res end
    attempt = attempt + math.max(err.attempts or 1, 1)
    local class, why = classify.classify(err)
    local delay = class ~= "final" and policy:delay(attempt, err, why)
    local stop = err.retry_stopped or (delay and limit and limit:stops(delay))
    if stop and not err.retry_stopped then err = limit:error(stop, call.request_id, err) end
    if stop or class == "final" or attempt >= policy.max_attempts or not policy:withdraw(err) then
      err.attempts, err.retry_stopped = attempt, stop
      return nil, err
    end
    policy:announce(attempt, delay, err, class, why)
    self.sleep(delay, limit and limit.cancel)
  end
end

function Client:get_task(token, task_id, opts)
  return read(self, "get_task", "koophone.get_task", token, task_id, opts)
end

function Client:list_instances(token, query, opts)
  return read(self, "list_instances", "koophone.list_instances", token, query, opts)
end

function Client:wait_jobs(token, what, opts)
  return require("koophone.wait").wait_jobs(self, token, what, opts)
end

function Client:unassign_many(token, batches, opts)
  return self.core:unassign_many(token, batches, opts)
end

function Client:start_many(token, batches, opts)
  return self.core:start_many(token, batches, opts)
end

function Client:bindings(token, list, opts)
  return require("koophone.bindings").read(self, token, list, opts)
end

function Client:unassign_all(token, list, opts)
  return require("koophone.bulk").unassign_all(self, token, list, opts)
end

function Client:close()
  self.core:close()
end

-- The core userdata has its own __gc, so a forgotten client is released without one here.
Client.__close = Client.close

function Client:__tostring()
  local p, b = self.policy, self.bucket
  return ("%s retry{max_attempts=%d, ambiguous_attempts=%d}%s"):format(
    tostring(self.core), p.max_attempts, p.ambiguous_attempts,
    b and (" rate{limit=%g, burst=%g%s}"):format(b.max_rate, b.burst, b.dict and ", shared" or "") or "")
end

return _M
