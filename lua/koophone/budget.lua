-- The retry budget of a koophone.retry policy: tokens that each retry spends and each successful
-- call gives back, so that a long outage stops the retries instead of multiplying the load on a
-- service that is already failing.
--   budget:withdraw(cost) -> true when it could pay, false (nothing taken) when it could not
--   budget:deposit()      gives back `refund`, up to `capacity`
--   budget.tokens         what is left
-- With a lua_shared_dict (koophone.shared_dict) the tokens live there, one budget for every
-- worker of the nginx; the dict holds what was spent, so a key that is missing or was evicted
-- is a full budget.
local _M = {}

local Local = {}
Local.__index = Local

function Local:withdraw(cost)
  if self.tokens < cost then return false end
  self.tokens = self.tokens - cost
  return true
end

function Local:deposit()
  self.tokens = math.min(self.capacity, self.tokens + self.refund)
end

local Shared = {}

-- What the dict says was spent; a value that is not a number (another option's key) is none.
local function spent(self)
  local v = self.dict:get(self.key)
  return type(v) == "number" and math.max(v, 0) or 0
end

function Shared.__index(self, name)
  if name == "tokens" then return self.capacity - spent(self) end
  return Shared[name]
end

-- A spent count seen below zero is brought back to zero.
local function clamp(self, v)
  if v and v < 0 then self.dict:incr(self.key, -v, 0) end
end

-- incr is atomic: two workers cannot both take the last tokens. Over capacity, it gives back.
function Shared:withdraw(cost)
  local v = self.dict:incr(self.key, cost, 0)
  if not v then return false end -- the dict is full, or the key is not a count: no retry
  if v > self.capacity then
    clamp(self, self.dict:incr(self.key, -cost, 0))
    return false
  end
  return true
end

-- Workers that give back or take at the same instant may see the count below zero for a moment
-- (and a withdraw then may use those few tokens); each one that sees it brings it back to zero.
function Shared:deposit()
  local v = self.dict:get(self.key)
  if type(v) ~= "number" or v == 0 then return end -- a full budget (the common case): read only
  if v > 0 then v = self.dict:incr(self.key, -self.refund, 0) end
  clamp(self, v)
end

function Shared:__tostring()
  return ("shared retry budget %q (%g of %g left)"):format(self.key, self.tokens, self.capacity)
end

-- new(numbers [, dict, key]): numbers = { capacity, cost, timeout_cost, refund } (checked by
-- koophone.retry); with dict, the budget lives there under key.
function _M.new(numbers, dict, key)
  local b = { capacity = numbers.capacity, cost = numbers.cost, timeout_cost = numbers.timeout_cost,
              refund = numbers.refund }
  if dict then
    b.dict, b.key = dict, key
    return setmetatable(b, Shared)
  end
  b.tokens = b.capacity
  return setmetatable(b, Local)
end

return _M
