-- Token bucket for a bulk run's request rate: `rate` tokens per second, at most `burst` saved.
-- A throttled answer halves the rate (down to a floor) and spends what was saved (no burst into
-- a server that asked to slow down); every answered request then wins back a small step of the
-- initial rate, so the rate climbs back slowly (additive increase, multiplicative decrease, as
-- TCP does).
local _M = {}

local Bucket = {}
Bucket.__index = Bucket

local RECOVERY = 0.02   -- of the configured rate, per answered request
local FLOOR = 1 / 64    -- of the configured rate: never stop altogether

-- new(rate, burst, now): now() is a monotonic clock in seconds.
function _M.new(rate, burst, now)
  return setmetatable({ max_rate = rate, rate = rate, burst = burst, tokens = burst,
                        now = now, last = now() }, Bucket)
end

function Bucket:refill()
  local t = self.now()
  self.tokens = math.min(self.burst, self.tokens + (t - self.last) * self.rate)
  self.last = t
end

-- take(n [, min]) -> how many of n requests may go now (min .. n; min defaults to 0). Taking more
-- than the bucket holds leaves a debt that later waits pay back.
function Bucket:take(n, min)
  self:refill()
  local k = math.min(n, math.max(min or 0, math.floor(self.tokens)))
  self.tokens = self.tokens - k
  return k
end

-- Seconds until one request may go.
function Bucket:wait()
  self:refill()
  return self.tokens >= 1 and 0 or (1 - self.tokens) / self.rate
end

function Bucket:throttled()
  self:refill()
  self.rate = math.max(self.max_rate * FLOOR, self.rate / 2)
  self.tokens = math.min(self.tokens, 0)
end

function Bucket:answered()
  self.rate = math.min(self.max_rate, self.rate + self.max_rate * RECOVERY)
end

return _M
