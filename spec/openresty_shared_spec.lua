-- examples/openresty with two workers: the retry budget and the rate of koophone.ngx.client in
-- the lua_shared_dict koophone_limits are one for both workers. `listen ... reuseport` gives each
-- worker its own socket, so new connections land on both.
local sim = require "helpers.sim"
local openresty = require "helpers.openresty"
local http = require "socket.http"

local INIT = [[{ timeout = 2, rate = { limit = 1000, dict = ngx.shared.koophone_limits },
  retry = { max_attempts = 3, base_delay = 0.001, throttle_base_delay = 0.001, max_retry_after = 0.01,
            budget = { capacity = 10, cost = 5, refund = 0, dict = ngx.shared.koophone_limits } } }]]

-- what a worker reads from the dict: its pid, what the budget spent, the rate's state; DELETE
-- empties it first
local LIMITS = [[
        location = /_limits {
            content_by_lua_block {
                local d = ngx.shared.koophone_limits
                if ngx.req.get_method() == "DELETE" then d:flush_all() end
                ngx.say(ngx.worker.pid(), "|", d:get("koophone:retry_budget") or "-", "|",
                        d:get("koophone:rate") or "-")
            }
        }
        location = /health {]]

local nginx = openresty.new("openresty-shared", sim.http_port + 22, function(conf)
  local n1, n2, n3, n4
  conf, n1 = conf:gsub("worker_processes 1;", "worker_processes 2;")
  conf, n2 = conf:gsub("listen (127%.0%.0%.1:%d+);", "listen %1 reuseport;")
  conf, n3 = conf:gsub('require%("koophone_admin"%)%.init%(%)', function()
    return 'require("koophone_admin").init(' .. INIT .. ')'
  end)
  conf, n4 = conf:gsub("        location = /health {", function() return LIMITS end)
  assert(n1 == 1 and n2 == 1 and n3 == 1 and n4 == 1, "the example's nginx.conf changed: update this spec")
  return conf
end)

-- The pids of the workers that logged a failed unassign.
local function failing_workers()
  local pids, n = {}, 0
  for pid in nginx:error_log():gmatch("%[warn%] (%d+)#%d+: [^\n]*unassign failed") do
    if not pids[pid] then pids[pid], n = true, n + 1 end
  end
  return n
end

local function limits()
  local body = assert(http.request(nginx.base .. "/_limits"))
  local pid, spent, rate = body:match("^(%d+)|([^|]*)|([^\n]*)")
  return pid, tonumber(spent), rate
end

describe("the example with two workers and koophone_limits", function()
  setup(function() nginx:start() end)
  teardown(function() nginx:stop() end)
  before_each(function() assert(http.request { url = nginx.base .. "/_limits", method = "DELETE" }) end)

  it("spends one retry budget for both workers", function()
    local list = sim.make_pairs(1, "shb")
    sim.reset(list)
    sim.faults { type = "unavailable", count = -1 }
    local calls = 0
    -- a new connection per call: both workers serve some (checked below, not assumed)
    repeat
      calls = calls + 1
      local status = nginx:admin { pairs = list }
      assert.is_true(status >= 400)
    until (calls >= 4 and failing_workers() == 2) or calls == 40
    assert.equals(2, failing_workers(), "one worker served every call: the spec proves nothing")
    -- capacity 10 at cost 5: two retries in all, where two budgets would have allowed four
    assert.equals(calls + 2, #sim.log())
    local _, spent = limits()
    assert.equals(10, spent)
  end)

  it("slows both workers down after one of them was throttled", function()
    local list = sim.make_pairs(1, "shr")
    sim.reset(list)
    sim.faults { type = "throttle", retry_after = "0", count = 1 }
    assert.equals(200, (nginx:admin { pairs = list }))
    assert.equals(2, #sim.log())
    -- halved by the 429, then 2% of the limit won back by the success: what every worker sees
    local seen, n = {}, 0
    for _ = 1, 40 do
      local pid, _, rate = limits()
      assert.equals(520, tonumber(rate:match("^%S+ (%S+) %S+$")), rate)
      if not seen[pid] then seen[pid], n = true, n + 1 end
      if n == 2 then break end
    end
    assert.equals(2, n)
  end)
end)
