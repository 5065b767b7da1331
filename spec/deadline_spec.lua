-- A call's deadline and cancel handle (issue #24): koophone.client's unassign bounds its attempts,
-- retry delays, rate waits and token fetches by opts.deadline; opts.cancel stops one call, not the
-- others; the core's calls, wait_jobs and unassign_all take the same bounds. Real HTTP to the
-- simulator, whose slow ("delay") and throttling ("throttle" with Retry-After) faults make the
-- calls block. The deadline is the feature, so the elapsed times are asserted, with margins.
local koophone = require "koophone"
local sim = require "helpers.sim"
local socket = require "socket"

local TOKEN = sim.token
local MARGIN = 0.3 -- seconds over a deadline that still pass on a loaded machine (the issue: 0.1)

-- seconds f() took, and its results
local function timed(f)
  local t0 = socket.gettime()
  local a, b = f()
  return socket.gettime() - t0, a, b
end

-- every request the simulator logged arrived before `by` (wall clock, seconds)
local function nothing_sent_after(by)
  for _, e in ipairs(sim.log()) do
    assert.is_true(e.time <= by, ("request %d arrived %.3f s after the deadline"):format(e.seq, e.time - by))
  end
end

describe("koophone.client deadline", function()
  local list
  before_each(function()
    list = sim.make_pairs(1, "dl")
    sim.reset(list)
  end)

  it("returns kind timeout at once when Retry-After would pass it (the issue's 11 s example)", function()
    sim.faults({ type = "throttle", retry_after = "5", count = 2 })
    local client = koophone.client(sim.client_opts("http", { timeout = 0.5 }))
    local start = socket.gettime()
    local took, res, err = timed(function() return client:unassign(TOKEN, list, { deadline = 2 }) end)
    assert.is_nil(res)
    assert.equals("timeout", err.kind)
    assert.equals("DEADLINE_EXCEEDED", err.code)
    assert.equals("deadline", err.retry_stopped)
    assert.is_false(err.sent) -- the retry it stopped was not sent
    assert.equals(1, err.attempts)
    assert.is_false(err.maybe_applied) -- a 429 is no copy that may have been applied
    assert.matches("APIGW.0308", err.message, 1, true)
    assert.is_true(took < 2 + MARGIN, ("took %.3f s"):format(took))
    assert.equals(1, #sim.log())
    nothing_sent_after(start + 2)
    assert.equals(list[1].user_id, sim.bindings()[list[1].instance_id]) -- nothing applied
    client:close()
  end)

  it("ends a slow attempt by the deadline: kind timeout, maybe applied, no retry after it", function()
    sim.faults({ type = "delay", seconds = 2.5 })
    local client = koophone.client(sim.client_opts("http", { timeout = 10, retry = { ambiguous_attempts = 2 } }))
    local start = socket.gettime()
    local took, res, err = timed(function() return client:unassign(TOKEN, list, { deadline = 1 }) end)
    assert.is_nil(res)
    assert.equals("timeout", err.kind)
    assert.is_true(err.maybe_applied) -- the copy was sent and its answer never came
    assert.equals("deadline", err.retry_stopped)
    assert.is_true(took >= 0.9 and took < 1 + MARGIN, ("took %.3f s"):format(took))
    socket.sleep(2) -- the simulator ends the slow request: still one, nothing after the deadline
    assert.equals(1, #sim.log())
    nothing_sent_after(start + 1)
    client:close()
  end)

  it("covers the retries: a call whose retries fit returns their answer", function()
    sim.faults({ type = "throttle", retry_after = "1", count = 1 })
    local client = koophone.client(sim.client_opts("http", { timeout = 0.5 }))
    local res = assert(client:unassign(TOKEN, list, { deadline = 5 }))
    assert.equals("unassigned", res.outcome)
    assert.equals(2, res.attempts)
    client:close()
  end)

  it("refuses a turn of the client's rate that comes after the deadline: nothing sent", function()
    local two = sim.make_pairs(2, "rt")
    sim.reset(two)
    local client = koophone.client(sim.client_opts("http", { rate = { limit = 0.2, burst = 1 } }))
    assert(client:unassign(TOKEN, { two[1] }))
    local took, res, err = timed(function() return client:unassign(TOKEN, { two[2] }, { deadline = 1 }) end)
    assert.is_nil(res)
    assert.equals("DEADLINE_EXCEEDED", err.code)
    assert.equals(0, err.attempts)
    assert.is_true(took < 0.5, ("took %.3f s"):format(took)) -- the wait would pass it: not waited
    assert.equals(1, #sim.log())
    client:close()
  end)

  it("bounds get_task's retries too", function()
    sim.faults({ api = "task", type = "throttle", retry_after = "5", count = 3 })
    local client = koophone.client(sim.client_opts("http"))
    local took, task, err = timed(function()
      return client:get_task(TOKEN, "00000000-0000-0000-0000-000000000000", { deadline = 1 })
    end)
    assert.is_nil(task)
    assert.equals("DEADLINE_EXCEEDED", err.code)
    assert.equals("deadline", err.retry_stopped)
    assert.is_true(took < 1 + MARGIN, ("took %.3f s"):format(took))
    client:close()
  end)

  it("checks the options like every other", function()
    local client = koophone.client(sim.client_opts("http"))
    assert.has_error(function() client:unassign(TOKEN, list, { deadline = 0 }) end,
      "koophone.unassign: bad argument #3 (opts.deadline): expected a number from 0.001 to 31536000, got 0")
    assert.has_error(function() client:unassign(TOKEN, list, { cancel = {} }) end,
      "koophone.unassign: bad argument #3 (opts.cancel): expected a koophone.cancel_handle, got table")
    assert.has_error(function() koophone.unassign(TOKEN, list, { deadline = -1 }) end,
      "koophone.unassign: bad argument #3 (opts.deadline): expected a number > 0 and at most a year, got -1")
    assert.has_error(function() koophone.unassign(TOKEN, list, { cancel = "x" }) end,
      "koophone.unassign: bad argument #3 (opts.cancel): expected a koophone.cancel_handle, got string")
    assert.same({}, sim.log())
    client:close()
  end)
end)

describe("the core's per-call deadline", function()
  it("ends the transfer by it, whatever the client's timeout", function()
    local list = sim.make_pairs(1, "cd")
    sim.reset(list)
    sim.faults({ type = "delay", seconds = 2 })
    local client = koophone.new(sim.client_opts("http", { timeout = 10 }))
    local took, res, err = timed(function() return client:unassign(TOKEN, list, { deadline = 0.5 }) end)
    assert.is_nil(res)
    assert.equals("timeout", err.kind)
    assert.is_true(err.sent)
    assert.is_true(took < 0.5 + MARGIN, ("took %.3f s"):format(took))
    client:close()
  end)

  it("bounds a token provider's fetch by the time left: nothing sent to KooPhone", function()
    local creds = require "helpers.creds"
    local password = "pw-" .. string.rep("Deadl1ne", 4)
    local list = sim.make_pairs(1, "tk")
    creds.seed(list, creds.iam_user(password))
    sim.control("POST", "/_sim/iam", { delay = 2 })
    local tp = creds.provider(password)
    local client = koophone.client(sim.client_opts("http", { retry = false }))
    local took, res, err = timed(function() return client:unassign(tp, list, { deadline = 0.5 }) end)
    assert.is_nil(res)
    assert.is_false(err.sent)
    assert.is_true(took < 0.5 + MARGIN, ("took %.3f s"):format(took))
    assert.same({}, sim.log())
    client:close()
  end)
end)

describe("cancel handles", function()
  local list
  before_each(function()
    list = sim.make_pairs(3, "cn")
    sim.reset(list)
  end)

  it("stop the call they are given, from its on_retry hook, and no other call", function()
    sim.faults({ type = "throttle", retry_after = "3", count = 1 })
    local c = koophone.cancel_handle()
    local client = koophone.client(sim.client_opts("http", { retry = { on_retry = function() c:cancel() end } }))
    local took, res, err = timed(function() return client:unassign(TOKEN, { list[1] }, { cancel = c }) end)
    assert.is_nil(res)
    assert.equals("interrupted", err.kind)
    assert.equals("CANCELLED", err.code)
    assert.equals("cancelled", err.retry_stopped)
    assert.is_false(err.maybe_applied)
    assert.is_true(took < 1, ("took %.3f s"):format(took)) -- the retry's sleep woke at once
    assert.equals(1, #sim.log())
    assert.is_true(c:cancelled())
    assert.is_nil(koophone.interrupted()) -- the process-wide flag stays down
    -- another call, with its own handle or none, goes on
    local other = koophone.cancel_handle()
    assert.equals("unassigned", assert(client:unassign(TOKEN, { list[2] }, { cancel = other })).outcome)
    assert.equals("unassigned", assert(client:unassign(TOKEN, { list[3] })).outcome)
    -- the raised handle stops the core's call before anything is sent
    res, err = koophone.unassign(TOKEN, { list[1] }, { cancel = c })
    assert.is_nil(res)
    assert.equals("CANCELLED", err.code)
    assert.is_false(err.sent)
    assert.equals(3, #sim.log())
    c:reset()
    assert.is_false(c:cancelled())
    client:close()
  end)

  it("wake koophone.sleep early", function()
    local c = koophone.cancel_handle()
    c:cancel()
    local took, ok = timed(function() return koophone.sleep(5, c) end)
    assert.is_false(ok)
    assert.is_true(took < 0.2, ("took %.3f s"):format(took))
    assert.is_true(koophone.sleep(0.01, koophone.cancel_handle()))
    assert.has_error(function() koophone.sleep(1, {}) end,
      "koophone.sleep: bad argument #2 (cancel): expected a koophone.cancel_handle, got table")
  end)
end)

describe("wait_jobs and unassign_all deadlines", function()
  it("wait_jobs returns by its deadline although GetTask is throttled", function()
    local list = sim.make_pairs(1, "wj")
    sim.reset(list)
    local client = koophone.client(sim.client_opts("http"))
    local res = assert(client:unassign(TOKEN, list))
    sim.faults({ api = "task", type = "throttle", retry_after = "5", count = -1 })
    local took, report = timed(function() return client:wait_jobs(TOKEN, res, { deadline = 1 }) end)
    assert.is_true(report.timed_out)
    assert.equals(1, report.pending)
    assert.is_true(took < 1 + MARGIN, ("took %.3f s"):format(took))
    client:close()
  end)

  it("unassign_all starts nothing after its deadline and reports the rest unfinished", function()
    local list = sim.make_pairs(6, "ua")
    sim.reset(list)
    sim.faults({ type = "delay", seconds = 0.6, count = -1 })
    local client = koophone.client(sim.client_opts("http", { timeout = 10 }))
    local start = socket.gettime()
    local took, report = timed(function()
      return client:unassign_all(TOKEN, list, { batch_size = 1, concurrency = 1, deadline = 1 })
    end)
    assert.equals("deadline", report.interrupted)
    assert.is_true(report.unfinished > 0)
    assert.is_true(took < 1 + MARGIN, ("took %.3f s"):format(took))
    socket.sleep(0.7)
    nothing_sent_after(start + 1)
    client:close()
  end)

  it("unassign_all's deadline bounds its reads of the bindings too (a lost answer settled by reading)", function()
    local list = sim.make_pairs(2, "ur")
    sim.reset(list)
    -- the batch's answer is lost (maybe applied): its rows wait for a read, which is slow
    sim.faults({ type = "drop", at = 1 }, { api = "list", type = "delay", seconds = 3, count = -1 })
    local client = koophone.client(sim.client_opts("http", { timeout = 10 }))
    local took, report = timed(function()
      return client:unassign_all(TOKEN, list, { batch_size = 2, deadline = 1 })
    end)
    client:close()
    assert.is_true(took < 1 + MARGIN, ("took %.3f s"):format(took))
    -- not read in time: the rows keep their outcome (failed, maybe applied), none is lost
    assert.same({ 2, 0 }, { report.counts.failed, report.verified })
    assert.is_true(report.results[1].err.maybe_applied)
  end)
end)
