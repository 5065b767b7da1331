-- Test helper for the specs that read bindings: a simulator tenant with bound, free and
-- foreign-bound phones, and what the simulator's logs say went out.
local sim = require "helpers.sim"

local _M = {}

-- seed(bound, free, other) -> the pairs of tenant t1, reset: `bound` pairs bound (b0001.. to
-- u-b-1..), `free` whose instance is free (f0001..), `other` whose instance is bound to
-- "someone-else" (o0001..), in that order.
function _M.seed(bound, free, other)
  local list, seeded, extra = sim.make_pairs(bound, "b"), sim.make_pairs(bound, "b"), {}
  for _, p in ipairs(sim.make_pairs(free, "f")) do
    list[#list + 1] = p
    extra[#extra + 1] = p.instance_id
  end
  for _, p in ipairs(sim.make_pairs(other, "o")) do
    list[#list + 1] = p
    seeded[#seeded + 1] = { user_id = "someone-else", instance_id = p.instance_id }
  end
  sim.reset(seeded, { extra_instances = extra })
  return list
end

-- The ListInstances requests the simulator logged.
function _M.list_log() return sim.control("GET", "/_sim/list_log").requests end

-- The instance ids of every unassign request the simulator received after seq `since`, sorted.
function _M.sent_pairs(since)
  local out = {}
  for _, e in ipairs(sim.log(since)) do
    for _, p in ipairs(e.pair_list or {}) do out[#out + 1] = p[2] end
  end
  table.sort(out)
  return out
end

return _M
