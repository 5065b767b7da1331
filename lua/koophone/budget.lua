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

function Shared.__index(self, name)
  if name == "tokens" then return self.capacity - math.max(self.dict:get(self.key) or 0, 0) end
  return Shared[name]
end

-- incr is atomic: two workers cannot both take the last tokens. Over capacity, it gives back.
function Shared:withdraw(cost)
  local spent = self.dict:incr(self.key, cost, 0)
  if not spent then return false end -- the dict is full: no retry rather than an unbounded one
  if spent > self.capacity then
    self.dict:incr(self.key, -cost, 0)
    return false
  end
  return true
end

-- Below zero spent it gives back the excess: two workers doing so at once may leave a little
-- spent, never a budget above capacity.
function Shared:deposit()
  local spent = self.dict:incr(self.key, -self.refund, 0)
  if spent and spent < 0 then self.dict:incr(self.key, -spent, 0) end
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
