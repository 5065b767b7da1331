-- Token bucket for a request rate: `rate` tokens per second, at most `burst` saved.
-- A throttled answer halves the rate (down to a floor) and spends what was saved (no burst into
-- a server that asked to slow down); every answered request then wins back a small step of the
-- initial rate, so the rate climbs back slowly (additive increase, multiplicative decrease, as
-- TCP does).
-- The state (tokens, rate, time of the last refill) lives in the bucket, or with shared() in a
-- lua_shared_dict (koophone.shared_dict), where every nginx worker takes from the same tokens and
-- slows down when any of them is throttled. There each change reads and writes one value: no
-- worker sees half an update, but two workers changing it in the same instant may lose one of the
-- two changes (a request let through, a halving missed), which a rate limit can afford.
local throttled = require("koophone.classify").throttled

local _M = {}

local Bucket = {}
Bucket.__index = Bucket

local RECOVERY = 0.02   -- of the configured rate, per answered request
local FLOOR = 1 / 64    -- of the configured rate: never stop altogether

-- The bucket's own state: kept in the bucket itself.
function Bucket:load() return self end
function Bucket:save() end

-- new(rate, burst, now): now() is a monotonic clock in seconds.
function _M.new(rate, burst, now)
  return setmetatable({ max_rate = rate, rate = rate, burst = burst, tokens = burst,
                        now = now, last = now() }, Bucket)
end

local Shared = setmetatable({}, { __index = Bucket })
Shared.__index = Shared

local function finite(v)
  return v and v == v and v ~= math.huge and v ~= -math.huge
end

-- The state as the dict holds it: "tokens rate last". now() must be a clock that every worker
-- reads alike (koophone.now: CLOCK_MONOTONIC, or ngx.now). A value that is not such a state
-- (first use, evicted, written by something else) is a full bucket; numbers out of range are
-- brought back in (a rate of 0 would mean an endless wait).
function Shared:load()
  local v = self.dict:get(self.key)
  local tokens, rate, last
  if type(v) == "string" then tokens, rate, last = v:match("^(%S+) (%S+) (%S+)$") end
  tokens, rate, last = tonumber(tokens), tonumber(rate), tonumber(last)
  if not (finite(tokens) and finite(rate) and finite(last)) then
    return { tokens = self.burst, rate = self.max_rate, last = self.now() }
  end
  return { tokens = math.min(tokens, self.burst), last = last,
           rate = math.max(self.max_rate * FLOOR, math.min(rate, self.max_rate)) }
end

function Shared:save(s)
  self.dict:set(self.key, ("%.17g %.17g %.17g"):format(s.tokens, s.rate, s.last))
end

-- shared(dict, key, rate, burst, now): a bucket whose state is dict's value at key.
function _M.shared(dict, key, rate, burst, now)
  return setmetatable({ max_rate = rate, burst = burst, now = now, dict = dict, key = key }, Shared)
end

-- The state, refilled for the time since the last refill.
function Bucket:refill()
  local s, t = self:load(), self.now()
  s.tokens = math.min(self.burst, s.tokens + math.max(t - s.last, 0) * s.rate)
  s.last = t
  return s
end

-- take(n [, min]) -> how many of n requests may go now (min .. n; min defaults to 0). Taking more
-- than the bucket holds leaves a debt that later waits pay back.
function Bucket:take(n, min)
  local s = self:refill()
  local k = math.min(n, math.max(min or 0, math.floor(s.tokens)))
  s.tokens = s.tokens - k
  self:save(s)
  return k
end

-- reserve([max_wait]) -> seconds to wait before the one request this reserves may go; or nil,
-- seconds when that is more than max_wait (nothing reserved). Callers that reserve at the same
-- time get consecutive turns, not the same one.
function Bucket:reserve(max_wait)
  local s = self:refill()
  local left = s.tokens - 1
  local wait = left >= 0 and 0 or -left / s.rate
  if max_wait and wait > max_wait then return nil, wait end
  s.tokens = left
  self:save(s)
  return wait
end

-- Seconds until one request may go.
function Bucket:wait()
  local s = self:refill()
  return s.tokens >= 1 and 0 or (1 - s.tokens) / s.rate
end

function Bucket:throttled()
  local s = self:refill()
  s.rate = math.max(self.max_rate * FLOOR, s.rate / 2)
  s.tokens = math.min(s.tokens, 0)
  self:save(s)
end

-- After the answer to a request that took its turn (err nil on success): a throttled answer
-- slows the rate down, any other HTTP answer wins a little back; no answer (a timeout, a
-- refusal before sending) changes nothing.
function Bucket:answer(err)
  if err and throttled(err) then
    self:throttled()
  elseif not err or err.status then
    self:answered()
  end
end

function Bucket:answered()
  local s = self:load()
  s.rate = math.min(self.max_rate, s.rate + self.max_rate * RECOVERY)
  self:save(s)
end

return _M
