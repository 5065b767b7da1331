-- client:unassign_all (lua/koophone/bulk.lua) against the running simulator: batching, outcomes of
-- every pair, bisection of batches refused because of some pairs, duplicates, iterator input,
-- progress, retries by the client's policy, shards, and the options' checks.
local koophone = require "koophone"
local sim = require "helpers.sim"
local rows = require "koophone.rows"
local bucket = require "koophone.bucket"

local TOKEN = sim.token

local copy_pairs = sim.copy_pairs

-- a client whose retries do not sleep, recording the delays asked for
local function new_client(retry)
  local slept = {}
  retry = retry or {}
  retry.sleep = function(s) slept[#slept + 1] = s end
  local c = koophone.client(sim.client_opts("http", { retry = retry }))
  return c, slept
end

local assert_no_pair_twice = sim.assert_no_pair_twice

local function sum(counts)
  local n = 0
  for _, v in pairs(counts) do n = n + v end
  return n
end

describe("client:unassign_all", function()
  local client
  before_each(function() client = new_client() end)
  after_each(function() client:close() end)

  it("gives 1,000 pairs with 10 unbound and 3 malformed exactly the right outcomes", function()
    local list = sim.make_pairs(1000, "k")
    sim.reset(list)
    local input, unbound = copy_pairs(list), {}
    for k = 1, 10 do unbound[k * 97] = true end
    -- unbind 10 pairs first, through the API itself
    local pre = {}
    for i in pairs(unbound) do pre[#pre + 1] = list[i] end
    assert(client:unassign(TOKEN, pre))
    local malformed = { [5] = "user_id: empty", [500] = "instance_id: longer than 32 bytes (40)",
                        [700] = "expected a table, got string" }
    input[5] = { user_id = "", instance_id = "k0005" }
    input[500] = { user_id = "u-k-500", instance_id = ("x"):rep(40) }
    input[700] = "k0700"
    local before = #sim.log()
    local report = client:unassign_all(TOKEN, input, { batch_size = 100, concurrency = 4 })
    assert.equals(1000, report.total)
    assert.same({ unassigned = 987, not_bound = 10, invalid = 3, denied = 0, failed = 0,
                  assumed_unassigned = 0, duplicate = 0, unconfirmed = 0 }, report.counts)
    for i = 1, 1000 do
      local r = report.results[i]
      assert.equals(i, r.row)
      if malformed[i] then
        assert.equals("invalid", r.outcome)
        assert.equals(malformed[i], r.reason)
      elseif unbound[i] then
        assert.equals("not_bound", r.outcome)
        assert.equals("KOOPHONE.API.2210", r.err.code)
        assert.equals(list[i].instance_id, r.instance_id)
      else
        assert.equals("unassigned", r.outcome)
        assert.matches("^RM_%x+$", r.task_id)
        assert.matches("^%x+$", r.job_id)
        assert.is_string(r.request_id)
      end
    end
    -- the simulator agrees: only the three malformed rows' pairs are still bound
    assert.same({ k0005 = "u-k-5", k0500 = "u-k-500", k0700 = "u-k-700" }, sim.bindings())
    assert_no_pair_twice()
    -- 10 batches, and the bisection of the 10 that held an unbound pair: 2 * ceil(log2 100) each
    assert.equals(#sim.log() - before, report.requests)
    assert.equals(10 + report.bisect_requests, report.requests)
    assert.is_true(report.bisect_requests <= 10 * 2 * 7)
    assert.equals(138, report.bisect_requests) -- the figure docs/bulk.md quotes for this input
  end)

  it("never sends more than 2n - 2 bisection requests for a batch of n, even when every pair is bad", function()
    local list = sim.make_pairs(8, "allbad")
    sim.reset(list)
    local input = copy_pairs(list)
    -- each instance is bound to another user: every request answers 2210
    for i, p in ipairs(input) do p.user_id = "stranger-" .. i end
    local report = client:unassign_all(TOKEN, input, { batch_size = 8 })
    assert.equals(8, report.counts.not_bound)
    assert.equals(2 * 8 - 2, report.bisect_requests) -- every node of the halving tree but the root
    assert.equals(1 + 14, #sim.log())
  end)

  it("isolates unbound and foreign pairs by bisection, and keeps the job of every good pair", function()
    local list = sim.make_pairs(64, "bi")
    sim.reset(list, { tenants = { { name = "t2", token = "other-tenant", instances = { "theirs01" } } } })
    local input = copy_pairs(list)
    input[10] = { user_id = "u-bi-10", instance_id = "theirs01" } -- not our instance: 1001
    input[33] = { user_id = "stranger", instance_id = "bi0033" }  -- bound to someone else: 2210
    local report = client:unassign_all(TOKEN, input, { batch_size = 64 })
    assert.equals("denied", report.results[10].outcome)
    assert.equals("KOOPHONE.API.1001", report.results[10].err.code)
    assert.equals("not_bound", report.results[33].outcome)
    assert.equals(62, report.counts.unassigned)
    assert.same({ bi0010 = "u-bi-10", bi0033 = "u-bi-33" }, sim.bindings())
    assert.is_true(report.bisect_requests <= 2 * 2 * 6) -- 2 bad pairs, 64 = 2^6
    assert_no_pair_twice()
  end)

  it("stops bisecting at max_bisect_requests and reports those pairs failed", function()
    local list = sim.make_pairs(16, "cap")
    sim.reset(list)
    local input = copy_pairs(list)
    input[16] = { user_id = "stranger", instance_id = "cap0016" }
    local report = client:unassign_all(TOKEN, input, { batch_size = 16, max_bisect_requests = 2 })
    assert.equals(2, report.bisect_requests)
    assert.equals(3, report.requests)
    assert.equals(8, report.counts.unassigned) -- the good half
    assert.equals(8, report.counts.failed)
    assert.equals("max_bisect_requests reached", report.results[16].reason)
  end)

  it("sends a repeated pair once and reports the later rows as duplicate", function()
    local list = sim.make_pairs(3, "dup")
    sim.reset(list)
    local input = { list[1], list[2], list[1], list[3], list[1] }
    local report = client:unassign_all(TOKEN, input, { batch_size = 2 })
    assert.same({ "unassigned", "unassigned", "duplicate", "unassigned", "duplicate" },
                { report.results[1].outcome, report.results[2].outcome, report.results[3].outcome,
                  report.results[4].outcome, report.results[5].outcome })
    assert.equals("repeats row 1", report.results[5].reason)
    assert.equals(2, report.counts.duplicate)
    assert_no_pair_twice()
  end)

  it("reports an integer user_id as its decimal string, and an invalid row's ids as given", function()
    sim.reset({ { user_id = "4242", instance_id = "int0001" } })
    local bad = { 1 }
    local input = { { user_id = 4242, instance_id = "int0001" },
                    { user_id = 1.5, instance_id = "int0002" },
                    { user_id = "u", instance_id = bad },
                    { user_id = "4242", instance_id = "int0001" } } -- the first row again
    local report = client:unassign_all(TOKEN, input, { batch_size = 10 })
    local r = report.results
    assert.same({ "unassigned", "invalid", "invalid", "duplicate" },
                { r[1].outcome, r[2].outcome, r[3].outcome, r[4].outcome })
    assert.equals("4242", r[1].user_id)
    assert.equals(1.5, r[2].user_id)
    assert.equals("user_id: expected a string or an integer, got a fractional number", r[2].reason)
    assert.equals(bad, r[3].instance_id)
    assert.equals("instance_id: expected a string, got table", r[3].reason)
    assert.equals(1, r[4].duplicate_of)
    assert.same({}, sim.bindings())
  end)

  it("streams an iterator; progress is monotonic, total unknown until the end", function()
    local list = sim.make_pairs(250, "it")
    sim.reset(list)
    local i = 0
    local function next_pair()
      i = i + 1
      return list[i]
    end
    local seen = {}
    local report = client:unassign_all(TOKEN, next_pair, {
      batch_size = 5, concurrency = 1,
      on_progress = function(p) seen[#seen + 1] = { done = p.done, total = p.total, n = sum(p.counts) } end,
    })
    assert.equals(250, report.total)
    assert.equals(250, report.counts.unassigned)
    assert.is_true(#seen >= 50)
    assert.is_nil(seen[1].total)
    for k = 2, #seen do assert.is_true(seen[k].done >= seen[k - 1].done) end
    for _, p in ipairs(seen) do assert.equals(p.done, p.n) end
    assert.same({ done = 250, total = 250, n = 250 }, seen[#seen])
    assert.same({}, sim.bindings())
  end)

  it("retries a throttled batch as the client's policy says, with the same request id", function()
    local list = sim.make_pairs(30, "thr")
    sim.reset(list)
    local slept
    client, slept = new_client { max_attempts = 3 }
    sim.faults({ type = "throttle", retry_after = "1", at = 2, count = 2 })
    local report = client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 10, concurrency = 1 })
    assert.equals(30, report.counts.unassigned)
    -- the waits for Retry-After: 1 (plus jitter, less the time the other batches took), and the
    -- bucket's after each throttled answer
    assert.is_true(#slept >= 2)
    for _, s in ipairs(slept) do assert.is_true(s > 0 and s <= 1.25) end
    -- requests 2 and 3 (batches 2 and 3) were throttled; each came back with its own request id
    local log, by_id = sim.log(), {}
    assert.equals(5, #log)
    for _, e in ipairs(log) do
      by_id[e.request_id] = by_id[e.request_id] or {}
      table.insert(by_id[e.request_id], e.status)
    end
    assert.same({ 429, 200 }, by_id[log[2].request_id])
    assert.same({ 429, 200 }, by_id[log[3].request_id])
    assert.same({ 200 }, by_id[log[1].request_id])
  end)

  it("turns a 2210 after an ambiguous failure into assumed_unassigned, never not_bound", function()
    local list = sim.make_pairs(8, "amb")
    sim.reset(list)
    client = new_client { max_attempts = 2, ambiguous_attempts = 1 }
    -- applied, then no answer (on a new connection: libcurl does not resend): the retry gets 2210
    sim.faults({ type = "drop_after_apply", at = 1 })
    -- settle = false: the retry goes out unread (spec/settle_spec.lua reads first)
    local report = client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 8, settle = false })
    assert.equals(8, report.counts.assumed_unassigned)
    assert.equals(0, report.counts.not_bound)
    assert.same({}, sim.bindings())
    assert_no_pair_twice()
  end)

  it("reports the pairs of a batch that may have been applied as failed when not retried", function()
    local list = sim.make_pairs(4, "amf")
    sim.reset(list)
    sim.faults({ type = "error_after_apply", at = 1 })
    -- settle = false: not read afterwards (spec/settle_spec.lua reads them unassigned)
    local report = client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 4, settle = false })
    assert.equals(4, report.counts.failed)
    assert.equals("KOOPHONE.API.9999", report.results[1].err.code)
    assert.is_true(report.results[1].err.maybe_applied)
    assert.equals(1, report.requests)
  end)

  it("stops sending after a token failure and reports every remaining pair failed", function()
    local list = sim.make_pairs(500, "tok")
    sim.reset(list)
    local report = client:unassign_all("not-a-valid-token", copy_pairs(list),
                                       { batch_size = 10, concurrency = 2 })
    assert.equals(500, report.counts.failed)
    assert.equals("APIGW.0301", report.aborted.code)
    assert.is_true(report.requests <= 2 * 8) -- at most the first round
    assert.equals(500, #report.results)
  end)

  it("splits the input into shards that together cover every row exactly once", function()
    local list = sim.make_pairs(300, "sh")
    sim.reset(list)
    local input = copy_pairs(list)
    input[7] = { user_id = "", instance_id = "sh0007" }
    input[8] = 42
    local seen, totals = {}, 0
    for index = 0, 1 do
      local report = client:unassign_all(TOKEN, input, { shard = { index = index, count = 2 } })
      totals = totals + report.total
      assert.is_true(report.total > 100) -- a real split
      for _, r in ipairs(report.results) do
        assert.is_nil(seen[r.row])
        seen[r.row] = index
      end
    end
    assert.equals(300, totals)
    for i = 1, 300 do assert.is_not_nil(seen[i]) end
    assert.equals(0, seen[8]) -- no instance id: shard 0
    assert.equals(rows.shard_of("sh0007", 2), seen[7])
    assert.same({ sh0007 = "u-sh-7", sh0008 = "u-sh-8" }, sim.bindings())
    assert_no_pair_twice()
  end)

  it("keeps no results when asked, and hands each one to on_result", function()
    local list = sim.make_pairs(20, "cb")
    sim.reset(list)
    local got = {}
    local report = client:unassign_all(TOKEN, copy_pairs(list), {
      batch_size = 5, keep_results = false, on_result = function(r) got[r.row] = r.outcome end })
    assert.is_nil(report.results)
    assert.equals(20, #got)
    for i = 1, 20 do assert.equals("unassigned", got[i]) end
  end)

  it("checks its arguments and options", function()
    local function raises(pattern, ...)
      local ok, err = pcall(client.unassign_all, client, ...)
      assert.is_false(ok)
      assert.matches(pattern, err)
    end
    local shape = "^koophone%.unassign_all: bad argument "
    raises(shape .. "#3 %(opts%.batch_size%): expected an integer from 1 to", TOKEN, {}, { batch_size = 0 })
    raises(shape .. "#3 %(opts%.concurrency%): expected an integer from 1 to 64, got 100", TOKEN, {},
           { concurrency = 100 })
    raises(shape .. "#3 %(opts%): unknown option 'speed'", TOKEN, {}, { speed = 1 })
    raises(shape .. "#3 %(opts%.rate%): expected a number from 0%.001", TOKEN, {}, { rate = 0 })
    raises(shape .. "#3 %(opts%.rate%): expected a number from 0%.001", TOKEN, {}, { rate = 1e-9 })
    raises(shape .. "#3 %(opts%.resume%): needs opts%.journal", TOKEN, {}, { resume = true })
    raises(shape .. "#3 %(opts%.shard%): expected", TOKEN, {}, { shard = { index = 2, count = 2 } })
    raises(shape .. "#3 %(opts%.input%.size%): expected a number, got string", TOKEN, {},
           { input = { size = "1" } })
    raises(shape .. "#1 %(token%)", "", {})
    raises(shape .. "#2 %(pairs%)", TOKEN, "x")
  end)
end)

describe("koophone.bucket", function()
  it("grants requests at the rate, halves it on throttling and wins it back slowly", function()
    local t = 0
    local b = bucket.new(10, 2, function() return t end)
    assert.equals(2, b:take(5)) -- the burst
    assert.equals(0, b:take(1))
    assert.equals(0.1, b:wait())
    assert.equals(1, b:take(3, 1)) -- forced: a debt
    assert.is_true(math.abs(b:wait() - 0.2) < 1e-9)
    t = 0.2
    t = 0.5
    assert.equals(2, b:take(5)) -- 5 tokens accrued, capped at the burst
    b:throttled()
    assert.equals(5, b.rate)
    b:throttled()
    assert.equals(2.5, b.rate)
    for _ = 1, 10 do b:answered() end
    assert.is_true(math.abs(b.rate - 4.5) < 1e-9) -- + 2% of 10 per answer
    for _ = 1, 1000 do b:answered() end
    assert.equals(10, b.rate)
    for _ = 1, 100 do b:throttled() end
    assert.equals(10 / 64, b.rate) -- never stops altogether
  end)
end)
