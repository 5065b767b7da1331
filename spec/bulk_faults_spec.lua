-- Success answers and stops tell the truth, against the running simulator: a success whose
-- cmd_jobs does not cover the request, a 401 in the middle of a round, a 429 storm without a
-- configured rate, and a retry after an idle gap longer than the client's max_idle.
local koophone = require "koophone"
local cjson = require "cjson.safe"
local sim = require "helpers.sim"
local cli = require "helpers.cli"

local TOKEN, copy_pairs = sim.token, sim.copy_pairs

-- a client whose sleeps are recorded (and do not sleep unless `sleep` says so)
local function new_client(retry, extra, sleep)
  local rec = { sleeps = {}, retries = {} }
  retry = retry or {}
  retry.sleep = function(s)
    rec.sleeps[#rec.sleeps + 1] = { s = s, requests = rec.requests }
    if sleep then sleep(s) end
  end
  retry.on_retry = function(info) rec.retries[#rec.retries + 1] = info.delay end
  extra = extra or {}
  extra.retry = retry
  return koophone.client(sim.client_opts("http", extra)), rec
end

-- a 200 success whose cmd_jobs are `jobs` ({ instance_id, job_id } pairs of strings)
local function success(jobs, no_data)
  local list = {}
  for i, j in ipairs(jobs) do list[i] = { instance_id = j[1], job_id = j[2] } end
  local data = { task_id = "RM_" .. ("a"):rep(32), cmd_jobs = setmetatable(list, cjson.array_mt) }
  return { type = "respond", status = 200,
           body = cjson.encode { error_code = "0", error_msg = "ok", data = not no_data and data or nil } }
end

describe("a success answer that does not cover the request", function()
  local list = sim.make_pairs(4, "uc")
  local i1, i2, i3, i4 = list[1].instance_id, list[2].instance_id, list[3].instance_id, list[4].instance_id
  -- answer, the job id each pair must end with (false: unconfirmed)
  local cases = {
    { "a job missing for a pair", { { i1, "J1" }, { i2, "J2" }, { i4, "J4" } }, { "J1", "J2", false, "J4" } },
    { "jobs for instances not in the request", { { i1, "J1" }, { "other01", "J2" }, { "other02", "J3" } },
      { "J1", false, false, false } },
    { "duplicate job ids", { { i1, "J1" }, { i2, "J1" }, { i3, "J3" }, { i4, "J3" } },
      { "J1", false, "J3", false } },
    { "two jobs for one instance", { { i1, "J1" }, { i1, "J2" }, { i3, "J3" }, { i4, "J4" } },
      { "J1", false, "J3", "J4" } },
    { "an empty list", {}, { false, false, false, false } },
    { "no data at all", nil, { false, false, false, false } },
    { "every job, in another order", { { i4, "J4" }, { i3, "J3" }, { i2, "J2" }, { i1, "J1" } },
      { "J1", "J2", "J3", "J4" } },
  }
  for _, c in ipairs(cases) do
    it(("reports unassigned only the pairs with their own job: %s"):format(c[1]), function()
      sim.reset(list)
      local client = new_client()
      sim.faults(success(c[2] or {}, c[2] == nil))
      local report = client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 4 })
      local unconfirmed = 0
      for k, want in ipairs(c[3]) do
        local r = report.results[k]
        if want then
          assert.equals("unassigned", r.outcome)
          assert.equals(want, r.job_id)
          assert.is_nil(r.maybe_applied)
        else
          unconfirmed = unconfirmed + 1
          assert.equals("unconfirmed", r.outcome)
          assert.is_nil(r.job_id)
          assert.equals("the answer did not confirm this pair", r.reason)
          assert.is_true(r.maybe_applied)
        end
        assert.is_string(r.request_id)
      end
      assert.equals(unconfirmed, report.counts.unconfirmed)
      assert.equals(4 - unconfirmed, report.counts.unassigned)
      assert.equals(1, report.requests)
      assert.equals(1, #sim.log())
      -- the answer was made up: the simulator still has every binding
      assert.equals(4, #sim.state().tenants.t1.bindings)
      client:close()
    end)
  end

  it("lists the pairs a single call's answer did not confirm in res.unconfirmed", function()
    sim.reset(list)
    local client = new_client { max_attempts = 1 }
    local pairs_sent = copy_pairs(list)
    sim.faults(success { { i1, "J1" }, { i2, "J2" }, { i4, "J4" } })
    local res = assert(client:unassign(TOKEN, pairs_sent))
    assert.equals("unassigned", res.outcome)
    assert.equals(1, #res.unconfirmed)
    assert.equals(pairs_sent[3], res.unconfirmed[1])
    res = assert(client:unassign(TOKEN, pairs_sent)) -- the real thing: every pair has its job
    assert.is_nil(res.unconfirmed)
    assert.same({}, sim.bindings())
    client:close()
  end)

  it("makes the CLI exit 1 and shows the unconfirmed pairs", function()
    local two = sim.make_pairs(2, "ucli")
    sim.reset(two)
    local ctx = cli.new()
    sim.write_file(ctx.dir .. "/in.csv", ("user_id,instance_id\n%s,%s\n%s,%s\n"):format(
      two[1].user_id, two[1].instance_id, two[2].user_id, two[2].instance_id))
    sim.faults(success { { two[1].instance_id, "J1" } })
    local status, out, err = ctx.run("unassign --input " .. ctx.dir .. "/in.csv --output jsonl"
                                     .. ctx.endpoint)
    ctx.cleanup()
    assert.equals(1, status, err)
    local outcomes = {}
    for _, r in ipairs(cli.json_lines(out)) do outcomes[r.row] = r.outcome end
    assert.same({ "unassigned", "unconfirmed" }, outcomes)
  end)
end)

describe("a run that must stop", function()
  it("starts no request of the round after a 401: at most `concurrency` get it", function()
    local list = sim.make_pairs(2000, "stop")
    sim.reset(list)
    local client = new_client()
    sim.faults { type = "respond", status = 401, count = -1,
                 body = '{"error_code":"APIGW.0301","error_msg":"Incorrect IAM authentication information"}' }
    local report = client:unassign_all(TOKEN, copy_pairs(list), { concurrency = 4 })
    local log = sim.log()
    assert.is_true(#log <= 4, #log .. " requests got the 401")
    assert.equals(#log, report.requests)
    assert.equals("APIGW.0301", report.aborted.code)
    assert.equals(2000, report.counts.failed)
    local not_sent = 0
    for _, r in ipairs(report.results) do
      assert.is_false(r.err.maybe_applied or false)
      if r.reason == "not sent: the run stopped" then not_sent = not_sent + 1 end
    end
    assert.equals(2000 - 100 * #log, not_sent)
    assert.equals(2000, #sim.state().tenants.t1.bindings)
    client:close()
  end)

  it("a transfer set starts no further batch once stopped", function()
    local list = sim.make_pairs(6, "many")
    sim.reset(list)
    local client = koophone.new(sim.client_opts("http"))
    local batches, done = {}, {}
    for i = 1, 6 do batches[i] = { list[i] } end
    local set = client:start_many(TOKEN, batches, { concurrency = 2 })
    while true do
      local i, res = set:next()
      if not i then break end
      assert.equals("unassigned", res.outcome)
      done[#done + 1] = i
      set:stop()
    end
    assert.equals(2, set:started()) -- the two in flight when the first ended
    table.sort(done)
    assert.same({ 1, 2 }, done)
    assert.equals(2, #sim.log())
    client:close()
  end)
end)

describe("a 429 storm without a configured rate", function()
  it("slows the whole run at the first throttle and spreads the retries", function()
    local list = sim.make_pairs(40, "storm")
    sim.reset(list)
    local client, rec = new_client { max_attempts = 5 }
    sim.faults { type = "throttle", retry_after = "1", count = 8 }
    local report = client:unassign_all(TOKEN, copy_pairs(list), {
      batch_size = 1, concurrency = 4,
      on_progress = function(p) rec.requests = p.requests end,
    })
    assert.equals(40, report.counts.unassigned)
    assert.equals(48, report.requests)
    -- without the bucket the whole first round (32 requests) went out before anything slept
    assert.is_true(rec.sleeps[1].requests <= 4, rec.sleeps[1].requests .. " requests before a sleep")
    assert.is_true(rec.sleeps[1].s > 0)
    -- every throttled answer made the next request wait for the bucket
    local waited_at = {}
    for _, s in ipairs(rec.sleeps) do if s.s > 0 then waited_at[s.requests] = true end end
    for n = 5, 8 do assert.is_true(waited_at[n], "no wait after request " .. n) end
    -- the retries honour Retry-After and do not all fire at the same moment
    assert.equals(8, #rec.retries)
    local distinct = {}
    for _, d in ipairs(rec.retries) do
      assert.is_true(d >= 1 and d <= 1.25, tostring(d))
      distinct[d] = true
    end
    assert.is_true(next(distinct, next(distinct)) ~= nil)
    sim.assert_no_pair_twice()
    client:close()
  end)
end)

describe("a retry after an idle gap", function()
  local function throttled_then_stale(max_idle)
    local list = sim.make_pairs(1, "idle" .. max_idle)
    sim.reset(list)
    local client = new_client({ max_attempts = 2 }, { max_idle = max_idle },
                               function() koophone.sleep(1.05) end)
    -- the retry meets a connection the server closed; a resend of it would be throttled again
    sim.faults({ type = "throttle" }, { type = "stale_connection", at = 2 }, { type = "throttle", at = 3 })
    local res, err = client:unassign(TOKEN, list)
    client:close()
    return res, err, sim.log()
  end

  it("longer than max_idle goes out on a fresh connection: never a silent resend", function()
    local res, err, log = throttled_then_stale(0)
    assert.is_nil(err, err and tostring(err))
    assert.equals("unassigned", res.outcome)
    assert.equals(2, res.attempts)
    assert.equals(#log, res.attempts)
    assert.are_not.equal(log[1].connection, log[2].connection)
    assert.equals(1, log[2].connection_requests)
  end)

  it("within max_idle reuses the connection, where a server's close is libcurl's resend", function()
    local res, err, log = throttled_then_stale(60)
    assert.is_nil(res)
    assert.equals(3, err.attempts) -- the throttled first, the retry, libcurl's resend
    assert.equals(#log, err.attempts)
    assert.equals(log[1].connection, log[2].connection)
    assert.is_true(err.maybe_applied) -- what max_idle avoids: a 429 storm turned ambiguous
  end)

  it("checks the max_idle option", function()
    for _, bad in ipairs { -1, 1.5, "2", 3601 } do
      local ok, msg = pcall(koophone.new, { max_idle = bad })
      assert.is_false(ok)
      assert.matches("koophone.new: bad argument #1 (opts.max_idle): ", msg, 1, true)
    end
    koophone.new({ max_idle = 0 }):close()
  end)
end)

describe("koophone.bucket after a throttled answer", function()
  it("halves the rate and spends the saved burst", function()
    local t = 0
    local b = require("koophone.bucket").new(10, 4, function() return t end)
    b:throttled()
    assert.equals(5, b.rate)
    assert.equals(0, b:take(4))
    assert.equals(0.2, b:wait())
  end)
end)
