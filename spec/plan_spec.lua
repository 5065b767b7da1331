-- unassign_all's plan, skip_unbound and verify options against the running simulator (its
-- ListInstances over real HTTP): exact counts per state with nothing sent, only bound pairs sent,
-- every pair read after the run. The request logs say what went out.
local koophone = require "koophone"
local sim = require "helpers.sim"
local tenant = require "helpers.tenant"

local TOKEN = sim.token
local copy_pairs = sim.copy_pairs
local list_log, sent_pairs, seed = tenant.list_log, tenant.sent_pairs, tenant.seed

local function new_client(retry)
  retry = retry or {}
  retry.sleep = function() end
  return koophone.client(sim.client_opts("http", { retry = retry }))
end

describe("unassign_all's plan, skip_unbound and verify", function()
  local client
  before_each(function() client = new_client() end)
  after_each(function() client:close() end)

  it("plan: exact counts per state and nothing sent", function()
    local list = seed(230, 40, 5)
    list[#list + 1] = { user_id = "u", instance_id = "missing1" }
    list[#list + 1] = { user_id = "u", instance_id = "missing1" } -- a duplicate row
    list[#list + 1] = { user_id = true, instance_id = "x" } -- an invalid row
    sim.control("DELETE", "/_sim/log")
    local p = client:unassign_all(TOKEN, copy_pairs(list), { plan = true })
    assert.is_true(p.plan)
    assert.same({ bound = 230, unbound = 40, other = 5, missing = 1, unknown = 0 }, p.counts)
    assert.same({ 278, 1, 1, 230, 46 }, { p.total, p.duplicate, p.invalid, p.send, p.skip })
    assert.equals(3, p.run_requests) -- 230 pairs in batches of 100
    assert.equals(#list_log(), p.requests)
    assert.equals("bound", p.results[1].state)
    assert.equals(0, #sim.log()) -- no unassign request
  end)


  it("skip_unbound sends only the pairs read bound: no 2210, no bisection", function()
    local list = seed(150, 45, 5)
    sim.control("DELETE", "/_sim/log")
    local report = client:unassign_all(TOKEN, copy_pairs(list), { skip_unbound = true })
    assert.equals(150, report.counts.unassigned)
    assert.equals(50, report.counts.not_bound)
    assert.equals(50, report.verified)
    assert.equals(2, report.requests) -- 150 bound pairs in batches of 100
    assert.equals(0, report.bisect_requests)
    local bound = {}
    for k = 1, 150 do bound[k] = list[k].instance_id end
    table.sort(bound)
    assert.same(bound, sent_pairs())
    for k = 151, 200 do assert.is_true(report.results[k].verified) end
    assert.equals("read unbound: not sent", report.results[151].reason)
    assert.equals("read assigned to another user: not sent", report.results[200].reason)
    local others = {}
    for k = 196, 200 do others[list[k].instance_id] = "someone-else" end
    assert.same(others, sim.bindings())
  end)


  it("the same input without skip_unbound: 2210s and bisection (what skip_unbound saves)", function()
    local list = seed(150, 45, 5)
    local report = client:unassign_all(TOKEN, copy_pairs(list), { settle = false })
    assert.equals(150, report.counts.unassigned)
    assert.equals(50, report.counts.not_bound)
    assert.is_true(report.bisect_requests > 50)
  end)

  it("verify reads every pair after the run and names those still bound", function()
    local list = sim.make_pairs(12, "ver")
    sim.reset(list)
    -- the second batch fails without being applied, and is not retried
    local c = new_client { max_attempts = 1 }
    sim.faults({ type = "error", at = 2 })
    local report = c:unassign_all(TOKEN, copy_pairs(list), { batch_size = 4, concurrency = 1, verify = true })
    c:close()
    assert.equals(8, report.counts.unassigned)
    assert.equals(4, report.counts.failed)
    assert.equals(4, report.verify.counts.bound)
    assert.equals(8, report.verify.counts.unbound)
    assert.same({ "ver0005", "ver0006", "ver0007", "ver0008" },
                { report.verify.still_bound[1].instance_id, report.verify.still_bound[2].instance_id,
                  report.verify.still_bound[3].instance_id, report.verify.still_bound[4].instance_id })
  end)
end)
