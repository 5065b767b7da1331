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

-- The example with two workers, init(<init>) and the /_limits location.
local function example(name, port, init)
  return openresty.new(name, port, function(conf)
    local n1, n2, n3, n4
    conf, n1 = conf:gsub("worker_processes 1;", "worker_processes 2;")
    conf, n2 = conf:gsub("listen (127%.0%.0%.1:%d+);", "listen %1 reuseport;")
    conf, n3 = conf:gsub('require%("koophone_admin"%)%.init%(%)', function()
      return 'require("koophone_admin").init(' .. init .. ')'
    end)
    conf, n4 = conf:gsub("        location = /health {", function() return LIMITS end)
    assert(n1 == 1 and n2 == 1 and n3 == 1 and n4 == 1, "the example's nginx.conf changed: update this spec")
    return conf
  end)
end

local nginx = example("openresty-shared", sim.http_port + 22, INIT)

-- How many workers of `server` (default: the two-worker example) logged a line with `what`
-- (koophone_admin.lua: "unassign failed" at WARN, "unassign unassigned" at INFO).
local function workers(what, server)
  local pids, n = {}, 0
  for pid in (server or nginx):error_log():gmatch("%[%a+%] (%d+)#%d+: [^\n]*" .. what) do
    if not pids[pid] then pids[pid], n = true, n + 1 end
  end
  return n
end

local function limits()
  local body = assert(http.request(nginx.base .. "/_limits"))
  local pid, spent, rate = body:match("^(%d+)|([^|]*)|([^\n]*)")
  return pid, tonumber(spent), rate
end

-- the shared bucket's rate, as the dict holds it ("tokens rate last")
local function rate()
  local _, _, state = limits()
  return tonumber(state:match("^%S+ (%S+) %S+$"))
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
    until (calls >= 4 and workers("unassign failed") == 2) or calls == 40
    assert.equals(2, workers("unassign failed"), "one worker served every call: the spec proves nothing")
    -- capacity 10 at cost 5: two retries in all, where two budgets would have allowed four
    assert.equals(calls + 2, #sim.log())
    local _, spent = limits()
    assert.equals(10, spent)
  end)

  it("slows both workers down after one of them was throttled; each answer in either wins it back", function()
    local list = sim.make_pairs(24, "shr")
    sim.reset(list)
    sim.faults { type = "throttle", retry_after = "0", count = 1 }
    assert.equals(200, (nginx:admin { pairs = { list[1] } }))
    assert.equals(2, #sim.log())
    -- halved by the 429 (limit 1000), then 2% of the limit won back by the retry's success
    assert.equals(520, rate())
    -- more calls until both workers answered some: if either had a bucket of its own, its
    -- answers would not move the shared rate
    local n = 1
    repeat
      n = n + 1
      assert.equals(200, (nginx:admin { pairs = { list[n] } }))
    until workers("unassign unassigned") == 2 or n == #list
    assert.equals(2, workers("unassign unassigned"), "one worker served every call: the spec proves nothing")
    assert.equals(520 + 20 * (n - 1), rate())
  end)
end)

describe("the example with a shared rate and max_wait", function()
  -- one request per 100 s for both workers; a call whose turn is over a second away is refused
  local slow = example("openresty-rate", sim.http_port + 23, [[{ timeout = 2,
    rate = { limit = 0.01, burst = 1, max_wait = 1, dict = ngx.shared.koophone_limits } }]])
  setup(function() slow:start() end)
  teardown(function() slow:stop() end)

  it("answers 429 with Retry-After, nothing sent, when the caller's turn is too far away", function()
    local list = sim.make_pairs(40, "rl")
    sim.reset(list)
    assert.equals(200, (slow:admin { pairs = { list[1] } }))
    -- new connections until both workers refused some: in either, the turn is 100 s away
    local n = 1
    repeat
      n = n + 1
      local status, body, head = openresty.admin_finish(slow:admin_start { pairs = { list[n] } })
      assert.equals(429, status)
      assert.equals("rate", body.error.kind)
      assert.equals("RATE_LIMITED", body.error.code)
      assert.is_false(body.error.sent)
      local retry_after = tonumber(head:match("\r\nRetry%-After: (%d+)"))
      assert.is_true(retry_after > 50 and retry_after <= 100, tostring(retry_after))
    until workers("unassign failed", slow) == 2 or n == #list
    assert.equals(2, workers("unassign failed", slow), "one worker refused every call: the spec proves nothing")
    assert.equals(1, #sim.log())
  end)
end)
