-- client:wait_jobs and unassign_all's wait option, against the simulator's tasks. The injected
-- sleep records each wait and moves the simulator's clock by as much, so the jobs progress as
-- they would while the client really slept. While it is in use koophone.now is a clock that only
-- that sleep moves, so the waits recorded do not depend on how long the polls really take.
local koophone = require "koophone"
local sim = require "helpers.sim"
local cjson = require "cjson"
local jobs = require "helpers.jobs"

local TOKEN = sim.token

local seed, pairs_of = jobs.seed, jobs.pairs_of
local core = require "koophone.core"
local real_now = core.now

local function recorder()
  local slept, clock = {}, real_now()
  core.now = function() return clock end -- restored after each spec
  return slept, function(s)
    slept[#slept + 1] = s
    sim.advance(s)
    clock = clock + s
  end
end

local function near(list, expected)
  assert.equal(#expected, #list, "sleeps: " .. cjson.encode(list))
  for i, v in ipairs(expected) do assert.near(v, list[i], 1e-6) end
end

local function polls(task_id)
  local n = 0
  for _, r in ipairs(sim.control("GET", "/_sim/task_log").requests) do
    if r.task_id == task_id then n = n + 1 end
  end
  return n
end

describe("wait_jobs", function()
  local client
  before_each(function() client = koophone.client { endpoint = sim.http_url, timeout = 5 } end)
  after_each(function()
    core.now = real_now
    client:close()
  end)

  it("finishes as soon as every job is final, without sleeping", function()
    seed(0)
    local res = assert(client:unassign(TOKEN, pairs_of(1, 2, 3)))
    local slept, sleep = recorder()
    local report = assert(client:wait_jobs(TOKEN, res, { sleep = sleep }))
    assert.same({ 1, 2, 0, 0, false }, { report.succeeded, report.failed, report.pending, report.unknown, report.timed_out })
    assert.same({}, slept)
    assert.equal(1, polls(res.task_id))
    local j = report.jobs[res.jobs[2].job_id]
    assert.same({ "failed", 3, "WIPE.1", "no", "i2", res.task_id },
                { j.state, j.status, j.error_code, j.error_msg, j.instance_id, j.task_id })
    assert.same({ "failed", -1 }, { report.jobs[res.jobs[3].job_id].state, report.jobs[res.jobs[3].job_id].status })
  end)

  it("backs off per task: interval, doubling up to max_interval", function()
    seed(20)
    local res = assert(client:unassign(TOKEN, pairs_of(1)))
    local slept, sleep = recorder()
    local seen = {}
    local report = client:wait_jobs(TOKEN, res, { sleep = sleep, interval = 2, max_interval = 7,
                                                  on_poll = function(p) seen[#seen + 1] = p.pending end })
    near(slept, { 2, 4, 7, 7 }) -- polls at 0, 2, 6, 13, 20
    assert.same({ 1, 0, false }, { report.succeeded, report.pending, report.timed_out })
    assert.equal(5, polls(res.task_id))
    assert.same({ 1, 1, 1, 1, 0 }, seen)
  end)

  it("never polls a final task again while others are still running", function()
    seed(0)
    local fast = assert(client:unassign(TOKEN, pairs_of(1)))
    sim.control("POST", "/_sim/jobs", { tenant = "t1", seconds = 10 })
    local slow = assert(client:unassign(TOKEN, pairs_of(4, 5)))
    local _, sleep = recorder()
    local report = client:wait_jobs(TOKEN, { fast.task_id, slow.task_id }, { sleep = sleep })
    assert.same({ 3, 0 }, { report.succeeded, report.pending })
    assert.equal(1, polls(fast.task_id))
    assert.is_true(polls(slow.task_id) > 1)
  end)

  it("honours rate across all tasks", function()
    seed(0)
    local ids = {}
    for i = 1, 4 do ids[i] = assert(client:unassign(TOKEN, pairs_of(i))).task_id end
    local slept, sleep = recorder()
    local report = client:wait_jobs(TOKEN, ids, { sleep = sleep, rate = 2 })
    near(slept, { 0.5, 0.5, 0.5 }) -- four polls due at once, two a second
    assert.same({ 2, 2 }, { report.succeeded, report.failed }) -- i2 and i3 fail
  end)

  it("ends at its deadline: timed_out, every job not final counted pending", function()
    seed(0)
    local done = assert(client:unassign(TOKEN, pairs_of(1)))
    sim.control("POST", "/_sim/jobs", { tenant = "t1", seconds = 1000 })
    local res = assert(client:unassign(TOKEN, pairs_of(4, 5, 6)))
    local slept, sleep = recorder()
    local report = client:wait_jobs(TOKEN, { done, res }, { sleep = sleep, timeout = 10 })
    assert.same({ true, 3, 1, 0, 0 }, { report.timed_out, report.pending, report.succeeded, report.failed, report.unknown })
    near(slept, { 1, 2, 4, 3 }) -- polls at 0, 1, 3, 7; then the deadline at 10
    assert.equal("running", report.jobs[res.jobs[1].job_id].state)
  end)

  it("an unknown task makes its jobs 'unknown' with the error, stops polling it, and fails nothing", function()
    seed(0)
    local lost = assert(client:unassign(TOKEN, pairs_of(1, 2)))
    local kept = assert(client:unassign(TOKEN, pairs_of(4)))
    sim.control("POST", "/_sim/tasks", { not_found = { lost.task_id }, not_found_status = 404 })
    local report = client:wait_jobs(TOKEN, { kept, lost }, { sleep = function() error("no sleep expected") end })
    assert.same({ 1, 0, 2, 0 }, { report.succeeded, report.failed, report.unknown, report.pending })
    local j = report.jobs[lost.jobs[1].job_id]
    assert.same({ "unknown", "KOOPHONE.API.1323", 404 }, { j.state, j.err.code, j.err.status })
    assert.equal("KOOPHONE.API.1323", report.task_errors[lost.task_id].code)
    assert.equal(1, polls(lost.task_id))
  end)

  it("a task id from an answer that get_task would refuse ('..') makes its jobs unknown, sends nothing", function()
    seed(0)
    local kept = assert(client:unassign(TOKEN, pairs_of(4)))
    local forged = { task_id = "..", jobs = { { instance_id = "i9", job_id = "j-forged" } } }
    local before = #sim.control("GET", "/_sim/task_log").requests
    local report = client:wait_jobs(TOKEN, { kept, forged }, { sleep = function() error("no sleep expected") end })
    assert.same({ 1, 0, 1, 0 }, { report.succeeded, report.failed, report.unknown, report.pending })
    local err = report.jobs["j-forged"].err
    assert.same({ "unknown", "BAD_TASK_ID", "api", false },
                { report.jobs["j-forged"].state, err.code, err.kind, err.sent })
    -- a refusal, which koophone.applied calls not applied whatever `sent` says (kind "decode", an
    -- unreadable 2xx, would be maybe applied without sent = false)
    local unsent = {}
    for k, v in pairs(err) do unsent[k] = v end
    unsent.sent = nil
    assert.same({ false, "rejected" }, { require("koophone.applied").attempt(unsent) })
    assert.matches("another path", tostring(report.task_errors[".."]), 1, true)
    assert.equal(before + 1, #sim.control("GET", "/_sim/task_log").requests) -- the kept task's poll only
  end)

  it("takes an unassign_all report or its rows", function()
    seed(0)
    local report = assert(client:unassign_all(TOKEN, pairs_of(1, 2, 4)))
    local w = client:wait_jobs(TOKEN, report, { sleep = function() end })
    assert.same({ 2, 1 }, { w.succeeded, w.failed })
    w = client:wait_jobs(TOKEN, report.results, { sleep = function() end })
    assert.same({ 2, 1 }, { w.succeeded, w.failed })
    assert.equal(report.results[3].instance_id, w.jobs[report.results[3].job_id].instance_id)
  end)
end)

describe("unassign_all with wait", function()
  local client, dir
  before_each(function()
    client = koophone.client { endpoint = sim.http_url, timeout = 5 }
    dir = os.tmpname()
  end)
  after_each(function()
    core.now = real_now
    client:close()
    os.remove(dir)
  end)

  it("fills job_state (and job_error) for every unassigned row, reports them after it, counts the jobs", function()
    seed(3)
    local list = pairs_of(1, 2, 3, 4)
    list[5] = { user_id = "nobody", instance_id = "i5" } -- not bound: no job
    local seen = {}
    local _, sleep = recorder()
    os.remove(dir)
    local report = assert(client:unassign_all(TOKEN, list, {
      batch_size = 2, journal = dir, wait = { sleep = sleep },
      on_result = function(r) seen[#seen + 1] = { r.instance_id, r.outcome, r.job_state } end }))
    local states = {}
    for i, r in ipairs(report.results) do states[i] = r.job_state or r.outcome end
    assert.same({ "succeeded", "failed", "failed", "succeeded", "not_bound" }, states)
    assert.same({ code = "WIPE.1", message = "no" }, report.results[2].job_error)
    assert.is_nil(report.results[1].job_error)
    assert.same({ succeeded = 2, failed = 2, pending = 0, unknown = 0, timed_out = false }, report.jobs)
    -- the row without a job first, the others once their job state was known
    assert.same({ "i5", "not_bound" }, { seen[1][1], seen[1][2] })
    for i = 2, 5 do assert.is_string(seen[i][3]) end
    -- the journal holds the final job states
    local n = 0
    for line in io.lines(dir) do
      local rec = cjson.decode(line)
      if rec.type == "job" then
        n = n + 1
        assert.is_string(rec.state)
      end
    end
    assert.equal(4, n)
  end)

  it("checks the wait option", function()
    assert.has_error(function() client:unassign_all(TOKEN, pairs_of(1), { wait = "yes" }) end,
                     "koophone.unassign_all: bad argument #3 (opts.wait): expected a boolean or table, got string")
    assert.has_error(function() client:unassign_all(TOKEN, pairs_of(1), { wait = { every = 1 } }) end,
                     "koophone.unassign_all: bad argument #3 (opts.wait): unknown option 'every'")
  end)
end)
