-- Reading the bindings against the running simulator (its ListInstances over real HTTP):
-- client:bindings and its two strategies counted in the simulator's list log, and a bulk run that
-- settles by reading: maybe-applied pairs of the run and of a resumed crash are read, not sent
-- again (spec/plan_spec.lua: the plan, skip_unbound and verify options).
local koophone = require "koophone"
local sim = require "helpers.sim"
local cli = require "helpers.cli"
local tenant = require "helpers.tenant"

local TOKEN = sim.token
local copy_pairs = sim.copy_pairs

local function new_client(retry)
  retry = retry or {}
  retry.sleep = function() end
  return koophone.client(sim.client_opts("http", { retry = retry }))
end
local list_log, sent_pairs, seed = tenant.list_log, tenant.sent_pairs, tenant.seed

describe("client:bindings against the simulator", function()
  local client
  before_each(function() client = new_client() end)
  after_each(function() client:close() end)

  it("reads a few pairs of a large tenant one request each, counted in the list log", function()
    sim.reset(sim.make_pairs(1000, "big"))
    sim.control("DELETE", "/_sim/log")
    local b = client:bindings(TOKEN, { { user_id = "u-big-1", instance_id = "big0001" },
                                       { user_id = "u-big-700", instance_id = "big0700" },
                                       { user_id = "u-big-1", instance_id = "big0900" },
                                       { user_id = "u-big-1", instance_id = "nope" } })
    assert.same({ "bound", "bound", "other", "missing" }, b.states)
    assert.equals("instance", b.strategy)
    local log = list_log()
    -- page 1 counts the tenant (10 pages) and holds big0001; the three others are read alone
    assert.equals(4, #log)
    assert.equals(b.requests, #log)
    assert.matches("instance_id=big0700", log[2].query)
  end)

  it("pages through the tenant when that takes fewer requests, counted in the list log", function()
    local list = seed(180, 60, 10) -- a tenant of 250 instances
    sim.control("DELETE", "/_sim/log")
    local b = client:bindings(TOKEN, list)
    assert.equals("page", b.strategy)
    assert.same({ bound = 180, unbound = 60, other = 10, missing = 0, unknown = 0 }, b.counts)
    local log = list_log()
    assert.equals(3, #log) -- ceil(250 / 100)
    assert.equals(3, b.requests)
    for k, e in ipairs(log) do assert.matches("page_no=" .. k .. "&", e.query .. "&") end
  end)
end)

describe("client:bindings at the client's rate", function()
  it("each read waits for its turn in the client's bucket", function()
    sim.reset(sim.make_pairs(10, "rt"))
    local waits = {}
    -- a fake sleep: the bucket's waits are recorded, not slept (the clock is the real one)
    local c = koophone.client(sim.client_opts("http", { rate = { limit = 1, burst = 2 },
      retry = { sleep = function(s) waits[#waits + 1] = s end } }))
    local list = {}
    for k = 1, 6 do list[k] = { user_id = "u-rt-" .. k, instance_id = ("rt%04d"):format(k) } end
    local b = c:bindings(TOKEN, list, { strategy = "instance" })
    c:close()
    assert.equals(6, b.requests)
    assert.equals(6, b.counts.bound)
    assert.is_true(#waits >= 3, "the bucket made " .. #waits .. " reads wait") -- 6 reads, a burst of 2
  end)
end)

describe("unassign_all reading the bindings", function()
  local client
  before_each(function() client = new_client() end)
  after_each(function() client:close() end)

  it("a batch whose answer was lost after it was applied is read, not sent again: assumed_unassigned, verified", function()
    local list = sim.make_pairs(4, "lost")
    sim.reset(list)
    sim.faults({ type = "error_after_apply", at = 1 })
    local report = client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 4 })
    assert.equals(4, report.counts.assumed_unassigned)
    assert.equals(4, report.verified)
    assert.equals(1, report.requests)
    assert.is_true(report.results[1].verified)
    assert.is_nil(report.results[1].err)
    -- without reading, the old outcome: failed, maybe applied
    sim.reset(list)
    sim.faults({ type = "error_after_apply", at = 1 })
    report = client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 4, settle = false })
    assert.equals(4, report.counts.failed)
    assert.is_true(report.results[1].err.maybe_applied)
  end)

  it("a pair of another user whose answer was lost reads 'other': assumed_unassigned, never 'unassigned'", function()
    -- a typo in user_id: the instance is u-real's; the request is dropped before anything applies
    local real = { { user_id = "u-real", instance_id = "typo0001" } }
    sim.reset(real)
    sim.faults({ type = "drop", at = 1 })
    local report = client:unassign_all(TOKEN, { { user_id = "u-typo", instance_id = "typo0001" } })
    assert.same({ 0, 1, 1 }, { report.counts.unassigned, report.counts.assumed_unassigned, report.verified })
    assert.is_true(report.results[1].verified)
    assert.matches("another user", report.results[1].reason, 1, true)
    assert.same({ typo0001 = "u-real" }, sim.bindings()) -- nothing applied: a read says who holds it, not who removed it
  end)

  it("a retry after a lost answer (ambiguous_attempts 1) reads first: nothing sent again, no 2210, no bisection", function()
    local list = sim.make_pairs(8, "amb")
    sim.reset(list)
    local c = new_client { max_attempts = 2, ambiguous_attempts = 1 }
    -- applied, then no answer: without reading, the retry gets 2210 and the batch is bisected
    sim.faults({ type = "drop_after_apply", at = 1 })
    local report = c:unassign_all(TOKEN, copy_pairs(list), { batch_size = 8 })
    assert.same({ 8, 8, 1, 0 }, { report.counts.assumed_unassigned, report.verified, report.requests,
                                  report.bisect_requests })
    assert.equals(1, #sim.log())
    -- half of the batch bound again while the retry waits: only that half goes out again, under
    -- a new request id
    c:close()
    sim.reset(list)
    sim.faults({ type = "drop_after_apply", at = 1 })
    local ids, half = {}, {}
    for k, p in ipairs(list) do ids[k] = p.instance_id end
    for k = 1, 4 do half[list[k].instance_id] = list[k].user_id end
    local rebound = false
    c = koophone.client(sim.client_opts("http", { retry = { max_attempts = 2, ambiguous_attempts = 1,
      sleep = function()
        if rebound then return end
        rebound = true
        sim.control("POST", "/_sim/seed", { tenants = { { name = "t1", token = TOKEN, instances = ids,
                                                          bindings = half } } })
      end } }))
    report = c:unassign_all(TOKEN, copy_pairs(list), { batch_size = 8 })
    c:close()
    assert.same({ 4, 4, 4 }, { report.counts.unassigned, report.counts.assumed_unassigned, report.verified })
    local log = sim.log()
    assert.equals(2, #log)
    assert.equals(4, #log[2].pair_list)
    assert.are_not.equal(log[1].request_id, log[2].request_id)
    assert.same({}, sim.bindings())
  end)

  it("where the read fails (no permission to list), the old behaviour stays", function()
    local list = sim.make_pairs(4, "noperm")
    sim.reset(list)
    sim.faults({ type = "error_after_apply", at = 1 },
               { type = "api_error", api = "list", status = 400, code = "KOOPHONE.API.1001",
                 msg = "no permission", count = -1 })
    local report = client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 4 })
    assert.equals(4, report.counts.failed)
    assert.equals(0, report.verified)
    assert.is_true(report.results[1].err.maybe_applied)
    sim.control("DELETE", "/_sim/faults")
  end)

end)

describe("resuming a crash with 4 batches in flight", function()
  local ctx = cli.new()
  teardown(ctx.cleanup)
  local ENDPOINT = ctx.endpoint

  -- starts a CLI run of `list` whose first 4 batches of 100 are delayed by the server, kills it
  -- (-9) while they are in flight, and waits until the server applied them; returns the args
  -- to resume it and the sequence number of the last unassign request
  local function crash(list, journal)
    sim.faults({ type = "delay", seconds = 1.5, at = 1, count = 4 })
    local args = ("unassign --input %s --journal %s --batch-size 100 --concurrency 4 --output-format jsonl%s")
                 :format(ctx.csv(list), journal, ENDPOINT)
    local pid = ctx.start(args)
    cli.wait_for("4 batches in flight", function()
      local n = 0
      for _, e in ipairs(sim.log()) do if e.fault == "delay" then n = n + 1 end end
      return n == 4
    end)
    assert(os.execute("kill -9 " .. pid))
    cli.wait_for("the delayed requests to be applied", function()
      local log = sim.log()
      if #log < 4 then return false end
      for _, e in ipairs(log) do if e.status == 0 then return false end end
      return true
    end)
    local log = sim.log()
    return args .. " --resume", log[#log].seq
  end

  local function outcomes(out)
    local by = {}
    for _, r in ipairs(cli.json_lines(out)) do by[r.instance_id] = r end
    return by
  end

  it("the resume reads them and sends no unassign for them (flip immediate)", function()
    local list = sim.make_pairs(450, "crash")
    sim.reset(list)
    local journal = ctx.dir .. "/crash.jsonl"
    local args, last = crash(list, journal)
    local rc, out, err = ctx.run(args)
    -- the fifth batch's send record was on the disk with the round's, and it may have left: it
    -- reads bound, which proves nothing while a wipe job may run: not sent again by default
    assert.equals(1, rc, err)
    local by = outcomes(out)
    for k = 1, 400 do
      local r = by[list[k].instance_id]
      assert.equals("assumed_unassigned", r.outcome)
      assert.is_true(r.verified)
    end
    for k = 401, 450 do assert.equals("unconfirmed", by[list[k].instance_id].outcome) end
    assert.same({}, sent_pairs(last))
    -- allowed to resend after an ambiguous attempt, the next resume sends those 50 only
    rc, out, err = ctx.run(args .. " --ambiguous-attempts 1")
    assert.equals(0, rc, err)
    by = outcomes(out)
    for k = 401, 450 do assert.equals("unassigned", by[list[k].instance_id].outcome) end
    local again = sent_pairs(last)
    assert.equals(50, #again)
    assert.equals("crash0401", again[1])
    assert.equals(1, #sim.log(last)) -- one request: no 2210, no bisection
    sim.assert_no_pair_twice()
    assert.same({}, sim.bindings())
  end)

  it("with flip after_job nothing is sent again while the wipe jobs run; once they ended, a resume settles them", function()
    local list = sim.make_pairs(400, "aj")
    sim.reset(list)
    sim.control("POST", "/_sim/list", { flip = "after_job" })
    sim.control("POST", "/_sim/jobs", { tenant = "t1", delay = 0, seconds = 3600 })
    local journal = ctx.dir .. "/aj.jsonl"
    local args, last = crash(list, journal)
    -- read bound (the jobs run): maybe applied, not sent again
    local rc, out, err = ctx.run(args)
    assert.equals(1, rc, err)
    local by = outcomes(out)
    for _, p in ipairs(list) do assert.equals("unconfirmed", by[p.instance_id].outcome) end
    assert.matches("read still bound after a request that may have been applied",
                   by[list[1].instance_id].reason, 1, true)
    assert.same({}, sent_pairs(last))
    -- the jobs end: the next resume reads them unbound
    sim.advance(7200)
    rc, out, err = ctx.run(args)
    assert.equals(0, rc, err)
    by = outcomes(out)
    for _, p in ipairs(list) do
      assert.equals("assumed_unassigned", by[p.instance_id].outcome)
      assert.is_true(by[p.instance_id].verified)
    end
    assert.same({}, sent_pairs(last))
    sim.control("POST", "/_sim/clock", { offset = 0 })
    sim.control("POST", "/_sim/list", { flip = "immediate" })
  end)
end)
