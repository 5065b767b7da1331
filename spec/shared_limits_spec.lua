-- The retry budget and the rate bucket kept in a lua_shared_dict (koophone.shared_dict), so that
-- the workers of one nginx respect one quota; and the client's `rate` option. Outside nginx a
-- small table with ngx.shared.DICT's get/set/incr semantics stands in for the dict (two policies
-- or clients on it play two workers); spec/openresty_shared_spec.lua runs the real thing.
local koophone = require "koophone"
local retry = require "koophone.retry"
local bucket = require "koophone.bucket"
local sim = require "helpers.sim"

local TOKEN = sim.token

local new_dict = require("helpers.shared_dict").new

local function E(t) return setmetatable(t, koophone.Error) end
local SERVER_ERROR = E { kind = "api", status = 500, code = "KOOPHONE.API.9999", sent = true }

local function policy(dict, extra)
  local b = { capacity = 10, cost = 5, refund = 1, dict = dict }
  for k, v in pairs(extra or {}) do b[k] = v end
  return retry.new({ budget = b, max_attempts = 100, ambiguous_attempts = 100, sleep = function() end },
                   koophone.sleep)
end

describe("a retry budget in a shared dict", function()
  it("is one budget for every policy on the dict", function()
    local dict = new_dict()
    local a, b = policy(dict), policy(dict)
    local sa, sb = a:new_state(), b:new_state()
    assert.is_true((a:decide(SERVER_ERROR, 1, sa)))
    assert.equals(5, b.budget.tokens)
    assert.is_true((b:decide(SERVER_ERROR, 1, sb)))
    local again, _, why = a:decide(SERVER_ERROR, 2, sa)
    assert.is_false(again)
    assert.equals("budget", why)
    assert.equals(0, a.budget.tokens)
    assert.equals(10, dict.values["koophone:retry_budget"], "spent: both retries, not the refused one")
  end)

  it("gives back refund per success, up to capacity, seen by every policy", function()
    local dict = new_dict()
    local a, b = policy(dict, { key = "acct-1" }), policy(dict, { key = "acct-1" })
    assert.is_true(a.budget:withdraw(5))
    b:finish({ jobs = {} }, nil, 1, b:new_state())
    assert.equals(6, a.budget.tokens)
    for _ = 1, 10 do a:finish({ jobs = {} }, nil, 1, a:new_state()) end
    assert.equals(10, b.budget.tokens)
    assert.equals(0, dict.values["acct-1"])
    assert.is_nil(dict.values["koophone:retry_budget"])
    dict.values["acct-1"] = -3 -- left by two workers racing: brought back by the next success
    a:finish({ jobs = {} }, nil, 1, a:new_state())
    assert.equals(0, dict.values["acct-1"])
  end)

  it("spends timeout_cost after a timeout and refuses a cost it cannot pay whole", function()
    local dict = new_dict()
    local p = policy(dict, { capacity = 12, timeout_cost = 10 })
    assert.is_true(p:withdraw(E { kind = "timeout" }))
    assert.is_false(p:withdraw(E { kind = "timeout" }))
    assert.equals(2, p.budget.tokens)
  end)

  it("never holds more than capacity, however withdrawals and deposits interleave", function()
    local dict = new_dict()
    local p = policy(dict, { capacity = 10, timeout_cost = 12 })
    local b = p.budget
    -- a withdraw over capacity, with deposits between its incr and its give-back
    local incr = dict.incr
    function dict.incr(d, k, v, init)
      local r = incr(d, k, v, init)
      if v == 12 then
        dict.incr = incr
        for _ = 1, 3 do b:deposit() end
      end
      return r
    end
    assert.is_false(b:withdraw(12))
    assert.equals(0, dict.values["koophone:retry_budget"])
    assert.is_true(b:withdraw(10))
    assert.is_false(b:withdraw(1))
  end)

  it("allows no retry when the dict cannot count (full)", function()
    local dict = new_dict()
    function dict.incr() return nil, "no memory" end
    assert.is_false(policy(dict).budget:withdraw(5))
  end)
end)

describe("a rate bucket in a shared dict", function()
  local t
  local function clock() return t end
  before_each(function() t = 100 end)

  it("hands out one set of tokens to every bucket on the dict", function()
    local dict = new_dict()
    local a, b = bucket.shared(dict, "r", 10, 2, clock), bucket.shared(dict, "r", 10, 2, clock)
    assert.equals(2, a:take(5))
    assert.equals(0, b:take(5))
    assert.equals(0.1, b:wait())
    t = t + 1
    assert.equals(2, b:take(5), "the burst caps what a quiet second saves")
  end)

  it("slows every bucket on the dict down when one of them is throttled", function()
    local dict = new_dict()
    local a, b = bucket.shared(dict, "r", 10, 1, clock), bucket.shared(dict, "r", 10, 1, clock)
    a:throttled()
    assert.equals(5, b:load().rate)
    assert.equals(0.2, b:wait())
    b:answered()
    assert.equals(5.2, a:load().rate)
  end)

  it("starts full when its value is missing or not its own, and keeps numbers in range", function()
    local dict = new_dict()
    dict:set("r", "garbage")
    local a = bucket.shared(dict, "r", 10, 3, clock)
    assert.equals(3, a:take(5))
    dict:set("r", "1 0 100") -- a rate of 0 would be an endless wait
    assert.equals(10 / 64, a:load().rate)
    dict:set("r", "1e999 5 100")
    assert.equals(3, a:load().tokens)
  end)

  it("gives callers that reserve at once consecutive turns", function()
    local dict = new_dict()
    local a, b = bucket.shared(dict, "r", 2, 1, clock), bucket.shared(dict, "r", 2, 1, clock)
    assert.same({ 0, 0.5, 1, 1.5 }, { a:reserve(), b:reserve(), a:reserve(), b:reserve() })
    local wait, over = a:reserve(1)
    assert.is_nil(wait)
    assert.equals(2, over)
    assert.equals(2, (b:reserve(2)), "a refused reservation takes nothing")
  end)
end)

describe("the client's rate option", function()
  -- a client whose waits are recorded instead of slept: what it would have slept
  local function client(rate)
    local waits = {}
    return koophone.client(sim.client_opts("http", { rate = rate,
      retry = { sleep = function(s) waits[#waits + 1] = s end, base_delay = 0, throttle_base_delay = 0 } })),
      waits
  end

  it("makes each unassign and get_task wait for its turn", function()
    local list = sim.make_pairs(3, "rate")
    sim.reset(list)
    -- one request per 100 s: the time the calls themselves take cannot matter
    local c, waits = client { limit = 0.01, burst = 1 }
    for i = 1, 3 do assert.truthy(c:unassign(TOKEN, { list[i] })) end
    -- none slept: each turn comes 100 s after the one before
    assert.equals(2, #waits)
    assert.is_true(waits[1] > 90 and waits[1] <= 100, tostring(waits[1]))
    assert.is_true(waits[2] > 190 and waits[2] <= 200, tostring(waits[2]))
    -- a refusal and a task query wait too
    assert.is_nil((c:unassign(TOKEN, sim.make_pairs(1, "gone"))))
    assert.is_nil((c:get_task(TOKEN, "RM_missing")))
    assert.equals(4, #waits)
    assert.equals(4, #sim.log())
    assert.equals(1, #sim.control("GET", "/_sim/task_log").requests)
    c:close()
  end)

  it("halves the shared rate on a throttled answer, for every client on the dict", function()
    local list = sim.make_pairs(1, "thr")
    sim.reset(list)
    local dict = new_dict()
    local a = client { limit = 4, dict = dict }
    local b = client { limit = 4, dict = dict, key = "koophone:rate" }
    sim.faults { type = "throttle", retry_after = "0", count = 1 }
    assert.truthy(a:unassign(TOKEN, list))
    assert.equals(2, #sim.log())
    -- halved by the 429, then the success won back 2% of the limit
    assert.equals(2.08, tonumber(("%.2f"):format(b.bucket:load().rate)))
    a:close(); b:close()
  end)

  it("paces unassign_all when the run has no rate of its own", function()
    local list = sim.make_pairs(3, "all")
    sim.reset(list)
    local c, waits = client { limit = 0.01, burst = 1 }
    local report = c:unassign_all(TOKEN, list, { batch_size = 1, concurrency = 1 })
    assert.equals(3, report.counts.unassigned)
    assert.equals(3, #sim.log())
    assert.is_true(#waits >= 2, "the run did not wait for the client's rate")
    c:close()
  end)

  it("refuses an attempt whose turn is more than max_wait away: kind rate, not sent, not retried", function()
    local list = sim.make_pairs(2, "mw")
    sim.reset(list)
    local c, waits = client { limit = 0.01, burst = 1, max_wait = 50 }
    assert.truthy(c:unassign(TOKEN, { list[1] }))
    local res, err = c:unassign(TOKEN, { list[2] }, { request_id = "rate-1" })
    assert.is_nil(res)
    assert.equals("rate", err.kind)
    assert.equals("RATE_LIMITED", err.code)
    assert.is_false(err.sent)
    assert.equals(0, err.attempts)
    assert.equals("final", err.class)
    assert.equals("rate-1", err.request_id)
    assert.is_true(err.retry_after > 90, tostring(err.retry_after))
    assert.matches("rate.max_wait", tostring(err), 1, true)
    assert.equals(1, #sim.log())
    assert.equals(0, #waits)
    c:close()
  end)

  it("shows in tostring", function()
    local c = client { limit = 5, dict = new_dict() }
    assert.matches("rate{limit=5, burst=5, shared}", tostring(c), 1, true)
    c:close()
  end)

  it("raises on a bad rate or dict, naming the field", function()
    local cases = {
      { "(opts.rate): expected a number or a table, got string", "fast" },
      { "(opts.rate.limit): expected a number from 0.001 to 100000, got nil", {} },
      { "(opts.rate): expected a number from 0.001 to 100000, got 0", 0 },
      { "(opts.rate.max_wait): expected a number from 0 to 100000, got -1", { limit = 1, max_wait = -1 } },
      { "(opts.rate.burst): expected a number from 1 to 100000, got 0.5", { limit = 1, burst = 0.5 } },
      { "(opts.rate): unknown option 'per_second'", { per_second = 1 } },
      { "(opts.rate.key): given without opts.rate.dict", { limit = 1, key = "k" } },
      { "(opts.rate.dict): expected a lua_shared_dict (ngx.shared.NAME), got string",
        { limit = 1, dict = "koophone_limits" } },
      { "(opts.rate.dict): expected a lua_shared_dict (ngx.shared.NAME), got one without the method incr",
        { limit = 1, dict = { get = print, set = print } } },
      { "(opts.rate.key): expected a non-empty string, got string", { limit = 1, dict = new_dict(), key = "" } },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(koophone.client, { endpoint = sim.http_url, rate = case[2] })
      assert.is_false(ok)
      assert.matches("koophone.client: bad argument #1 " .. case[1], err, 1, true)
    end
    local ok, err = pcall(koophone.client, { endpoint = sim.http_url,
                                             retry = { budget = { dict = new_dict(), key = 5 } } })
    assert.is_false(ok)
    assert.matches("(opts.retry.budget.key): expected a non-empty string, got number", err, 1, true)
    local dict = new_dict()
    ok, err = pcall(koophone.client, { endpoint = sim.http_url, rate = { limit = 1, dict = dict, key = "k" },
                                       retry = { budget = { dict = dict, key = "k" } } })
    assert.is_false(ok)
    assert.matches('(opts.rate.key): "k" is the retry budget\'s key in the same dict', err, 1, true)
  end)
end)
