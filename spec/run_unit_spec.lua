-- koophone.run (lua/koophone/run.lua) with a fake transport: no network, no simulator. A run takes
-- each round's transfer set from client.core:start_many and drives it with next(), started(),
-- stop() and close(); the fake set below keeps that contract (src/multi.c) and answers each batch
-- as the test says. The integration specs (bulk_spec, bulk_faults_spec, journal_spec) run the
-- same code against the simulator.
local core = require "koophone.core"
local retry = require "koophone.retry"
local rows_new = require("koophone.rows").new
local run_new = require("koophone.run").new

local Set = {}
Set.__index = Set

-- next() -> i, res | i, nil, err | nil | nil, why: starts batches in order, `concurrency` at a time,
-- and ends them in the order they started
function Set:next()
  assert(not self.closed, "next() after close()")
  if self.ended then return nil end
  if core.interrupted() then -- abandons the batches in flight
    self.abandoned, self.flight, self.ended = #self.flight, {}, true
    return nil, core.interrupted()
  end
  while not self.stopped and self.n < #self.batches and #self.flight < self.concurrency do
    self.n = self.n + 1
    self.flight[#self.flight + 1] = self.n
  end
  local i = table.remove(self.flight, 1)
  if not i then
    self.ended = true
    return nil
  end
  return i, self.respond(self.batches[i], self.ids[i])
end

function Set:started() return self.n end
function Set:stop() self.stopped = true end

function Set:close()
  if not self.closed then self.closed, self.abandoned = true, (self.abandoned or 0) + #self.flight end
  self.flight = {}
end

-- A client whose core answers every request with respond(batch, request_id) -> res or nil, err.
-- sets: every set the run started, in order.
local function fake_client(respond, retry_opts)
  local sets, ids = {}, 0
  local fake_core = {}
  function fake_core.request_id()
    ids = ids + 1
    return "req-" .. ids
  end
  function fake_core.start_many(_, token, batches, opts)
    assert.equals("TOKEN", token)
    local set = setmetatable({ batches = batches, ids = opts.request_ids, n = 0, flight = {},
                               concurrency = opts.concurrency, respond = respond }, Set)
    sets[#sets + 1] = set
    return set
  end
  local policy = retry.new(retry_opts or false, function() end)
  return { core = fake_core, policy = policy, sleep = function() end }, sets
end

-- The journal's interface (koophone.journal) recording what the run writes; flush fails when
-- fail(sync) says so.
local function fake_journal(fail)
  local j = { records = {} }
  function j.sent(_, id) j.records[#j.records + 1] = "send " .. id end
  function j.finished(_, id, list, clear)
    j.records[#j.records + 1] = (clear and "clear " or "done ") .. id .. " " .. #list
  end
  function j.flush(_, sync)
    if fail and fail(sync) then
      return nil, setmetatable({ kind = "journal", code = "JOURNAL_IO", message = "disk full" }, core.Error)
    end
    return true
  end
  function j.final() return nil end
  function j.tainted() return nil end
  function j.close() return true end
  return j
end

local function pairs_list(n)
  local list = {}
  for k = 1, n do list[k] = { user_id = "u" .. k, instance_id = "i" .. k } end
  return list
end

-- res of a success with a job for every pair of batch
local function success(batch, id)
  local jobs = {}
  for k, p in ipairs(batch) do jobs[k] = { instance_id = p.instance_id, job_id = "job-" .. p.instance_id } end
  return { outcome = "unassigned", status = 200, error_code = "0", request_id = id, task_id = "RM_" .. id,
           jobs = jobs, attempts = 1 }
end

local function failure(id, fields)
  local err = { sent = true, attempts = 1, request_id = id, message = "failed" }
  for k, v in pairs(fields) do err[k] = v end
  return nil, setmetatable(err, core.Error)
end

local function not_bound(id) return failure(id, { kind = "api", status = 400, code = "KOOPHONE.API.2210" }) end
local function lost(id) return failure(id, { kind = "network", code = "CURLE_RECV_ERROR", status = 0 }) end

local function has(batch, instance_id)
  for _, p in ipairs(batch) do if p.instance_id == instance_id then return true end end
  return false
end

-- A run of `list` on `client` with the settings koophone.bulk would give it.
local function new_run(client, list, settings)
  local s = { batch_size = 100, concurrency = 4 }
  for k, v in pairs(settings or {}) do s[k] = v end
  return run_new(client, "TOKEN", rows_new(list, {}), s)
end

local function by_instance(report)
  local out = {}
  for _, r in ipairs(report.results) do out[r.instance_id] = r end
  return out
end

describe("koophone.run with a fake transport", function()
  after_each(function() core.clear_interrupt() end)

  it("reports a success for every pair its answer confirms", function()
    local client, sets = fake_client(success)
    local report = assert(new_run(client, pairs_list(5), { batch_size = 2, concurrency = 2 }):execute())
    assert.same({ 5, 3, 0 }, { report.counts.unassigned, report.requests, report.bisect_requests })
    for _, r in ipairs(report.results) do
      assert.equals("unassigned", r.outcome)
      assert.equals("job-" .. r.instance_id, r.job_id)
    end
    assert.equals(1, #sets) -- one round
    assert.equals(3, sets[1]:started())
    assert.is_true(sets[1].closed)
    assert.equals(0, sets[1].abandoned)
  end)

  it("bisects a batch refused with 2210 until the unbound pair is alone", function()
    local client, sets = fake_client(function(batch, id)
      if has(batch, "i3") then return not_bound(id) end
      return success(batch, id)
    end)
    local report = assert(new_run(client, pairs_list(4)):execute())
    -- [1 2 3 4] -> [1 2] ok, [3 4] 2210 -> [3] 2210, [4] ok
    assert.same({ 3, 1, 5, 4 }, { report.counts.unassigned, report.counts.not_bound, report.requests,
                                  report.bisect_requests })
    local r = by_instance(report)
    assert.equals("not_bound", r.i3.outcome)
    assert.equals("KOOPHONE.API.2210", r.i3.err.code)
    assert.equals(3, #sets) -- one round per level of the bisection
    for _, set in ipairs(sets) do assert.is_true(set.closed) end
  end)

  it("fails a pair whose answer was lost, as maybe applied, and journals no clear for it", function()
    local jnl = fake_journal()
    local client = fake_client(lost, { max_attempts = 3 }) -- ambiguous_attempts 0: not sent again
    local run = new_run(client, pairs_list(1))
    run.journal = jnl
    local report = assert(run:execute())
    assert.same({ 1, 1 }, { report.counts.failed, report.requests })
    local r = report.results[1]
    assert.same({ "failed", "network", true }, { r.outcome, r.err.kind, r.err.maybe_applied })
    assert.same({ "send req-1", "done req-1 1" }, jnl.records)
  end)

  it("takes a 2210 after a lost answer as the lost request's work", function()
    local calls = 0
    local client = fake_client(function(_, id)
      calls = calls + 1
      if calls == 1 then return lost(id) end
      return not_bound(id)
    end, { max_attempts = 3, ambiguous_attempts = 1, base_delay = 0 })
    local report = assert(new_run(client, pairs_list(1)):execute())
    assert.same({ 1, 2 }, { report.counts.assumed_unassigned, report.requests })
    assert.equals("req-1", report.results[1].request_id) -- the retry kept the request id
  end)

  it("stops starting the round's requests after an answer that stops the run", function()
    local client, sets = fake_client(function(_, id)
      return failure(id, { kind = "api", status = 401, code = "APIGW.0301" })
    end)
    local report = assert(new_run(client, pairs_list(4), { batch_size = 1, concurrency = 1 }):execute())
    assert.equals(1, sets[1]:started())
    assert.is_true(sets[1].stopped)
    assert.same({ 4, 1 }, { report.counts.failed, report.requests })
    assert.equals("APIGW.0301", report.aborted.code)
    local not_sent = 0
    for _, r in ipairs(report.results) do
      if r.reason == "not sent: the run stopped" then not_sent = not_sent + 1 end
    end
    assert.equals(3, not_sent)
  end)

  it("after an interruption mid-round counts the pairs in flight and reports none of them", function()
    local jnl, reported = fake_journal(), {}
    local client, sets = fake_client(function(batch, id)
      if batch[1].instance_id == "i1" then core.interrupt() end
      return success(batch, id)
    end)
    local run = new_run(client, pairs_list(6), { batch_size = 1, concurrency = 3,
                                                 on_result = function(r) reported[#reported + 1] = r.instance_id end })
    run.journal = jnl
    local report = assert(run:execute())
    assert.equals("interrupted", report.interrupted)
    assert.same({ "i1" }, reported)
    assert.same({ 1, 2, 5, 3 }, { report.counts.unassigned, report.in_flight, report.unfinished,
                                  report.requests })
    assert.same({ 3, 2, true }, { sets[1]:started(), sets[1].abandoned, sets[1].closed })
    -- the requests in flight stay open in the journal (maybe applied); those never started are clear
    local records = table.concat(jnl.records, ",")
    assert.matches("done req%-1 1", records)
    for _, id in ipairs { "req-2", "req-3" } do assert.is_nil(records:find(id .. " ", 1, true)) end
    for k = 4, 6 do assert.matches("clear req%-" .. k .. " 0", records) end
  end)

  it("returns a journal failure mid-round as its error, the transfer set closed", function()
    local jnl = fake_journal(function(sync) return not sync end) -- the first write after an answer
    local client, sets = fake_client(success)
    local run = new_run(client, pairs_list(6), { batch_size = 1, concurrency = 3 })
    run.journal = jnl
    local report, err = run:execute()
    assert.is_nil(report)
    assert.same({ "journal", "JOURNAL_IO" }, { err.kind, err.code })
    assert.equals(1, #sets)
    assert.is_true(sets[1].closed)
    assert.equals(2, sets[1].abandoned) -- in flight when the journal failed
  end)

  it("fails every pair as not sent when the token provider fails", function()
    local client = fake_client(success)
    local refused = setmetatable({ kind = "auth", code = "IAM_FAILED", status = 401, sent = false }, core.Error)
    client.core.start_many = function() return nil, refused end
    local report = assert(new_run(client, pairs_list(3), { batch_size = 1 }):execute())
    assert.same({ 3, 0 }, { report.counts.failed, report.requests })
    assert.equals(refused, report.aborted)
    for _, r in ipairs(report.results) do assert.equals("not sent: the run stopped", r.reason) end
  end)
end)
