-- Test helper: a simulator tenant whose unassigns start jobs (sim/README.md, "Tasks").
local sim = require "helpers.sim"

local _M = {}

-- seed(seconds): resets the simulator; i1..i6 bound to u1..u6 under the simulator's token; jobs
-- take `seconds` on its clock (0: final at once); i2 fails with 3 (WIPE.1 "no"), i3 with -1.
function _M.seed(seconds)
  local inst, bind = {}, {}
  for i = 1, 6 do
    inst[i] = "i" .. i
    bind["i" .. i] = "u" .. i
  end
  sim.control("POST", "/_sim/reset")
  sim.control("POST", "/_sim/seed", { tenants = { {
    name = "t1", token = sim.token, instances = inst, bindings = bind,
    jobs = { delay = 0, seconds = seconds or 0, instances = {
      i2 = { fail = 3, error_code = "WIPE.1", error_msg = "no" }, i3 = { fail = -1 } } } } } })
end

-- pairs_of(1, 4) -> { { user_id = "u1", instance_id = "i1" }, { user_id = "u4", instance_id = "i4" } }
function _M.pairs_of(...)
  local list = {}
  for i, n in ipairs { ... } do list[i] = { user_id = "u" .. n, instance_id = "i" .. n } end
  return list
end

return _M
