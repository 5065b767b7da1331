-- Retry policy of a koophone.client: whether a failed attempt is sent again, after how long, and
-- how many retries the client may still spend (its budget). Classification lives in
-- koophone.classify; this file only applies the numbers.
--
-- One call drives it like this (koophone.client does; koophone.run does per batch):
--   local state = policy:new_state()
--   ... after each failed attempt, `attempt` being the number of requests sent so far:
--   local again, delay, why = policy:decide(err, attempt, state)   -- calls on_retry when again
--   ... when not again, or on success:
--   return policy:finish(res, err, attempt, state)
-- state.maybe_applied (read it, do not set it) is true once an attempt of the call may have been
-- applied, as koophone.applied (the one rule) says: libcurl's silent resends included, never
-- the copy sent again after the gateway refused a token.
-- An attempt the transport refused before sending (err.attempts == 0, e.g. koophone.ngx's
-- WORKER_THREAD_UNAVAILABLE) is no request: it does not add to `attempt`, but it counts against
-- max_attempts (state.not_started) and never against ambiguous_attempts.
local argerror = require "koophone.argerror"
local budget = require "koophone.budget"
local shared_dict = require "koophone.shared_dict"
local classify = require("koophone.classify").classify
local applied = require "koophone.applied"
local BINDING_NOT_FOUND = require("koophone.codes").names.BINDING_NOT_FOUND

local _M = {}

local Policy = {}
Policy.__index = Policy
-- random() in [0, 1) for the jitter, from the OS (math.random is unseeded on 5.1 and LuaJIT);
-- a field so a unit test can pin it on one policy
Policy.random = require("koophone.core").random

_M.defaults = {
  max_attempts = 3, base_delay = 0.5, max_delay = 20, throttle_base_delay = 2,
  max_retry_after = 60, ambiguous_attempts = 0,
}
_M.default_budget = { capacity = 500, cost = 5, timeout_cost = 10, refund = 1 }

local INTEGERS = { max_attempts = 1, ambiguous_attempts = 0 } -- name -> minimum
local OPTIONS = { budget = true, on_retry = true, sleep = true }
for name in pairs(_M.defaults) do OPTIONS[name] = true end

-- A bad retry option: argument #1 of fname (the function that made the client), opts.retry.<name>.
local function fail(fname, name, msg, ...)
  argerror.raise(fname, 1, "opts.retry." .. name, msg, ...)
end

local function number_option(t, name, default, min, integer, fname, label)
  local v = t[name]
  if v == nil then return default end
  return argerror.number(v, fname, 1, "opts.retry." .. (label or name), min, math.huge, integer)
end

local function function_option(t, name, default, fname)
  local v = t[name]
  if v == nil then return default end
  if type(v) ~= "function" then fail(fname, name, "expected a function, got %s", type(v)) end
  return v
end

local BUDGET_OPTIONS = { dict = true, key = true }
for name in pairs(_M.default_budget) do BUDGET_OPTIONS[name] = true end

-- budget = false: no quota; a table: the fields given replace the defaults, and `dict` (a
-- lua_shared_dict) puts the tokens where every nginx worker spends from them.
local function new_budget(b, fname)
  if b == false then return nil end
  if b == nil then b = {} end
  if type(b) ~= "table" then fail(fname, "budget", "expected a table or false, got %s", type(b)) end
  argerror.check_names(b, BUDGET_OPTIONS, fname, 1, "opts.retry.budget")
  local numbers = {}
  for name, default in pairs(_M.default_budget) do
    numbers[name] = number_option(b, name, default, 0, false, fname, "budget." .. name)
  end
  return budget.new(numbers, shared_dict.check(b, fname, "opts.retry.budget", "koophone:retry_budget"))
end

-- new(retry_option, default_sleep, fname): retry_option is the `retry` option of the client that
-- fname (default "koophone.client") makes: nil for the defaults, false for a single attempt, or a
-- table of the options above.
function _M.new(opts, default_sleep, fname)
  fname = fname or "koophone.client"
  if opts == false then opts = { max_attempts = 1 } end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    argerror.raise(fname, 1, "opts.retry", "expected a table or false, got %s", type(opts))
  end
  argerror.check_names(opts, OPTIONS, fname, 1, "opts.retry")
  local p = setmetatable({}, Policy)
  for name, default in pairs(_M.defaults) do
    p[name] = number_option(opts, name, default, INTEGERS[name] or 0, INTEGERS[name] ~= nil, fname)
  end
  p.budget = new_budget(opts.budget, fname)
  p.on_retry = function_option(opts, "on_retry", nil, fname)
  p.sleep = function_option(opts, "sleep", default_sleep, fname)
  return p
end

-- State of one call of `pairs` pairs (nil: unknown): what its attempts so far did.
function Policy:new_state(pairs)
  return { retries = 0, ambiguous_retries = 0, not_started = 0, maybe_applied = false, pairs = pairs }
end

-- Seconds to wait before retry number n (1 = the first retry) after err. Retry-After is a
-- minimum; up to a quarter more, at random, keeps the retries of many requests throttled at once
-- from all going out at the same moment again.
function Policy:delay(n, err, why)
  if err.retry_after then
    local ra = math.min(err.retry_after, self.max_retry_after)
    return ra + self.random() * ra / 4
  end
  if why == "throttled" then -- equal jitter: never hammer a gateway that asked us to slow down
    local b = math.min(self.max_delay, self.throttle_base_delay * 2 ^ (n - 1))
    return b / 2 + self.random() * b / 2
  end
  return self.random() * math.min(self.max_delay, self.base_delay * 2 ^ (n - 1)) -- full jitter
end

-- Takes the cost of one retry from the budget; false when it cannot pay.
function Policy:withdraw(err)
  local b = self.budget
  return not b or b:withdraw(err.kind == "timeout" and b.timeout_cost or b.cost)
end

-- decide(err, attempt, state) -> again, delay, why. `attempt`: requests sent so far in this call,
-- err's included (attempts refused before sending are not requests: state.not_started counts
-- them). `why` is the classification reason when again, else why the retries stop:
-- "final", "max_attempts", "ambiguous" (ambiguous_attempts used up), "budget", or, with
-- state.limit (koophone.client's Limit of opts.deadline and opts.cancel), "deadline" (the delay
-- would reach it) or "cancelled"; then finish returns the limit's error (not sent) instead.
function Policy:decide(err, attempt, state)
  local class, why, note = classify(err)
  state.class, state.note = class, note
  if (err.attempts or 1) == 0 then
    -- refused before sending: a try against max_attempts, and the ambiguous retry that the
    -- previous decision counted for it (when there was one) was not spent
    state.not_started = state.not_started + 1
    if state.maybe_applied then state.ambiguous_retries = state.ambiguous_retries - 1 end
  end
  -- libcurl's silent resend was a retry after an ambiguous failure (see transport.c)
  state.ambiguous_retries = state.ambiguous_retries + applied.resent(err)
  if applied.attempt(err) then
    state.maybe_applied = true
    state.ambiguous_err = state.ambiguous_err or err
  end
  local stop, delay
  if err.retry_stopped then stop = err.retry_stopped -- the limit's own error: nothing was sent
  elseif class == "final" then stop = "final"
  elseif attempt + state.not_started >= self.max_attempts then stop = "max_attempts"
  elseif state.maybe_applied and state.ambiguous_retries >= self.ambiguous_attempts then stop = "ambiguous"
  else
    delay = self:delay(state.retries + 1, err, why)
    stop = state.limit and state.limit:stops(delay) -- before the budget pays for a retry not made
    if not stop and not self:withdraw(err) then stop = "budget" end
  end
  if stop then
    state.stopped = stop
    return false, nil, stop
  end
  state.retries = state.retries + 1
  if state.maybe_applied then state.ambiguous_retries = state.ambiguous_retries + 1 end
  self:announce(attempt, delay, err, class, why)
  return true, delay, why
end

-- Tells on_retry (when given) that a retry of err will go after delay seconds.
function Policy:announce(attempt, delay, err, class, why)
  if self.on_retry then
    self.on_retry { attempt = attempt, delay = delay, err = err, class = class, reason = why,
                    request_id = err.request_id }
  end
end

-- The notes of a failed call in its message: the classification's, `maybe` (what may have been
-- applied), why the retries stopped.
local function add_notes(err, attempt, state, maybe)
  local notes = { state.note }
  if maybe then notes[#notes + 1] = maybe end
  if state.stopped == "budget" then
    notes[#notes + 1] = "not retried: the client's retry budget is empty"
  elseif state.stopped == "max_attempts" and attempt + state.not_started > 1 then
    notes[#notes + 1] = state.not_started == 0 and ("gave up after %d attempts"):format(attempt)
      or ("gave up after %d attempts, %d of them not started"):format(attempt + state.not_started,
                                                                     state.not_started)
  end
  if #notes > 0 then err.message = ("%s (%s)"):format(err.message or "", table.concat(notes, "; ")) end
end

-- finish(res, err, attempt, state) -> res or nil, err: what the call returns. A 2210 after an
-- attempt that may have been applied is what koophone.applied.not_found says: for one pair,
-- that attempt did the work (assumed_unassigned); for several, no proof (an error, maybe_applied).
function Policy:finish(res, err, attempt, state)
  if res then
    if self.budget then self.budget:deposit() end
    res.attempts = attempt
    return res
  end
  local limit = state.limit
  if limit and (state.stopped == "deadline" or state.stopped == "cancelled") and not err.retry_stopped then
    err = limit:error(state.stopped, err.request_id, err) -- the retry it stopped was not sent
  end
  local maybe = state.maybe_applied and applied.NOTE or nil
  if err.maybe_applied then
    maybe = nil -- the core's own message says it already (src/response.c)
  elseif err.code == BINDING_NOT_FOUND then
    local outcome = applied.not_found(state.maybe_applied, state.pairs)
    if outcome == "assumed_unassigned" then
      return { outcome = outcome, jobs = {}, request_id = err.request_id,
               status = err.status, error_code = err.code, error_msg = err.message,
               attempts = attempt, err = state.ambiguous_err }
    elseif outcome == "unconfirmed" then
      maybe = applied.not_proof(err.code, state.pairs)
    end
  end
  err.attempts, err.class = attempt, state.class
  err.maybe_applied, err.retry_stopped = state.maybe_applied, state.stopped
  add_notes(err, attempt, state, maybe)
  return nil, err
end

return _M
