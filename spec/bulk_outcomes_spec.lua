-- The outcomes a bulk run (client:unassign_all, lua/koophone/run.lua) gives when it stops early
-- or cannot isolate pairs, against the running simulator: a retry waiting after an attempt that
-- may have been applied when a 401 or an interruption stops the run, an IAM login cut short by
-- SIGINT, a certificate that cannot be verified, and batches whose every part is refused.
local koophone = require "koophone"
local cjson = require "cjson.safe"
local sim = require "helpers.sim"
local cli = require "helpers.cli"
local creds = require "helpers.creds"

local TOKEN, copy_pairs = sim.token, sim.copy_pairs
local PASSWORD = "pw-" .. string.rep("Outc0mes", 4)
local MAYBE_STOPPED = "not sent again: the run stopped; an earlier attempt may have applied it"

local ctx = cli.new()

-- a client whose retries do not sleep (or sleep with `sleep`); its jitter pinned at a half
local function new_client(retry, sleep)
  retry = retry or {}
  retry.sleep = sleep or function() end
  local c = koophone.client(sim.client_opts("http", { retry = retry }))
  c.policy.random = function() return 0.5 end
  return c
end

local journal_records, open_requests = cli.journal_records, cli.open_sends

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

describe("a run that stops while a retry waits after an attempt that may have been applied", function()
  after_each(koophone.clear_interrupt)

  it("on a 401 (token revoked mid-run): its pairs end unconfirmed, maybe applied; a resume settles them", function()
    local list = sim.make_pairs(8, "rv")
    creds.seed(list, creds.iam_user(PASSWORD))
    local _, _, token = sim.iam_login("acct", "admin", PASSWORD, { id = creds.PROJECT })
    local journal = ctx.dir .. "/revoked.jsonl"
    -- the first batch is applied but answered 500: its retry waits, and the token is revoked then
    sim.faults { type = "error_after_apply", at = 1 }
    local client = new_client { max_attempts = 3, ambiguous_attempts = 1,
                                on_retry = function() sim.control("POST", "/_sim/iam/revoke") end }
    local report = assert(client:unassign_all(token, copy_pairs(list),
                                              { batch_size = 4, concurrency = 1, journal = journal }))
    assert.equals("APIGW.0307", report.aborted.code)
    assert.equals(2, report.requests)
    for i = 1, 4 do
      local r = report.results[i]
      assert.equals("unconfirmed", r.outcome)
      assert.is_true(r.maybe_applied)
      assert.equals(MAYBE_STOPPED, r.reason)
      assert.equals("KOOPHONE.API.9999", r.err.code)
      assert.is_true(r.err.maybe_applied)
    end
    for i = 5, 8 do
      assert.equals("failed", report.results[i].outcome)
      assert.equals("APIGW.0307", report.results[i].err.code)
    end
    assert.same({ unassigned = 0, assumed_unassigned = 0, not_bound = 0, denied = 0, invalid = 0,
                  duplicate = 0, unconfirmed = 4, failed = 4 }, report.counts)
    -- what the simulator did: the first batch is gone, the second is bound
    local bound = sim.bindings()
    for i = 1, 4 do assert.is_nil(bound[list[i].instance_id]) end
    for i = 5, 8 do assert.equals(list[i].user_id, bound[list[i].instance_id]) end
    -- the journal marks them maybe applied: a resume reads them (unassigned, verified), not sends
    local marked = 0
    for _, r in ipairs(journal_records(journal)) do
      if r.type == "done" and r.outcome == "unconfirmed" and r.maybe_applied then marked = marked + 1 end
    end
    assert.equals(4, marked)
    _, _, token = sim.iam_login("acct", "admin", PASSWORD, { id = creds.PROJECT })
    report = assert(client:unassign_all(token, copy_pairs(list),
                                        { batch_size = 4, concurrency = 1, journal = journal, resume = true }))
    assert.same({ 4, 4, 4 }, { report.counts.unassigned, report.counts.assumed_unassigned, report.verified })
    assert.same({}, sim.bindings())
    sim.assert_no_pair_twice()
    client:close()
  end)

  it("on an interruption while it sleeps: they count in flight, stay open in the journal; a resume settles them", function()
    local list = sim.make_pairs(4, "ws")
    sim.reset(list)
    local journal = ctx.dir .. "/waiting.jsonl"
    sim.faults { type = "error_after_apply", at = 1 }
    -- the run's sleep before the retry is where SIGINT comes
    local client = new_client({ max_attempts = 3, ambiguous_attempts = 1 }, function() koophone.interrupt() end)
    local report = assert(client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 4, journal = journal }))
    koophone.clear_interrupt()
    assert.equals("interrupted", report.interrupted)
    assert.equals(1, report.requests)
    assert.equals(4, report.unfinished)
    assert.equals(4, report.in_flight) -- "of which 4 in flight (they may have been applied)"
    assert.equals(0, report.counts.failed)
    assert.same({}, sim.bindings()) -- the first attempt did unassign them
    assert.equals(1, count(open_requests(journal)))
    report = assert(client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 4, journal = journal, resume = true }))
    assert.equals(4, report.counts.assumed_unassigned)
    assert.equals(4, report.verified) -- read, not sent again
    assert.equals(0, report.requests)
    sim.assert_no_pair_twice()
    client:close()
  end)
end)

describe("an IAM login cut short by SIGINT", function()
  it("leaves every row unfinished, none failed; a resume sends them", function()
    local list = sim.make_pairs(20, "iamint")
    creds.seed(list, creds.iam_user(PASSWORD))
    sim.control("POST", "/_sim/iam", { delay = 30 })
    local journal = ctx.dir .. "/iam.jsonl"
    local script = ctx.dir .. "/iam_sigint.lua"
    sim.write_file(script, ([[
      local koophone = require "koophone"
      local cjson = require "cjson"
      koophone.catch_signals()
      local tp = koophone.iam_token { endpoint = %q, domain = "acct", user = "admin",
                                      password = %q, project_id = %q }
      local client = koophone.client { endpoint = %q }
      local pairs = {}
      for i = 1, 20 do pairs[i] = { user_id = "u-iamint-" .. i, instance_id = ("iamint%%04d"):format(i) } end
      local report = assert(client:unassign_all(tp, pairs, { batch_size = 5, journal = %q }))
      print(cjson.encode { interrupted = report.interrupted, counts = report.counts,
                           unfinished = report.unfinished, aborted = report.aborted and report.aborted.code or false })
    ]]):format(sim.http_url, PASSWORD, creds.PROJECT, sim.http_url, journal))
    local pid = ctx.start("", script)
    cli.wait_for("the IAM login", function()
      return #sim.control("GET", "/_sim/iam_log").requests > 0
    end)
    assert(os.execute("kill -INT " .. pid))
    cli.wait_for("the script to end", ctx.status, 10)
    sim.control("POST", "/_sim/iam", { delay = 0 })
    local out, err = ctx.output()
    assert.equals(0, ctx.status(), err)
    local got = assert(cjson.decode(out), out)
    assert.equals("SIGINT", got.interrupted)
    assert.is_false(got.aborted)
    assert.equals(0, got.counts.failed)
    assert.equals(20, got.unfinished)
    assert.same({}, sim.log()) -- nothing was sent
    assert.same({}, open_requests(journal))
    local client = koophone.client(sim.client_opts("http"))
    local report = assert(client:unassign_all(creds.provider(PASSWORD), copy_pairs(list),
                                              { batch_size = 5, journal = journal, resume = true }))
    client:close()
    assert.equals(20, report.counts.unassigned)
    assert.same({}, sim.bindings())
  end)
end)

describe("a certificate that cannot be verified", function()
  it("stops the run at the first failure, with advice to give the CA", function()
    local list = sim.make_pairs(50, "cert")
    sim.reset(list)
    -- the simulator's HTTPS port without its CA: the system's CAs do not know it
    local client = koophone.client { endpoint = sim.https_url, retry = { sleep = function() end } }
    local report = client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 10, concurrency = 1 })
    client:close()
    assert.equals(1, report.requests)
    assert.equals("CURLE_PEER_FAILED_VERIFICATION", report.aborted.code)
    assert.matches("cafile (CLI: --cafile FILE)", report.aborted.message, 1, true)
    assert.equals(50, report.counts.failed)
    local not_sent = 0
    for _, r in ipairs(report.results) do
      if r.reason == "not sent: the run stopped" then not_sent = not_sent + 1 end
    end
    assert.equals(40, not_sent)
    assert.equals(50, #sim.state().tenants.t1.bindings)
  end)

  it("makes the CLI say so, suggesting --cafile", function()
    local list = sim.make_pairs(30, "certcli")
    sim.reset(list)
    local status, _, err = ctx.run(("unassign --input %s --batch-size 10 --concurrency 1 --endpoint %s --token-file %s/token")
                                   :format(ctx.csv(list, nil, "cert.csv"), sim.https_url, ctx.dir))
    assert.equals(1, status, err)
    assert.matches("stopped: koophone: CURLE_PEER_FAILED_VERIFICATION: [^\n]*%-%-cafile", err)
  end)
end)

describe("batches whose every part is refused", function()
  local client
  before_each(function() client = new_client() end)
  after_each(function() client:close() end)

  it("a file already done (every pair 2210): 15 requests a batch of 100, not 199; no pair claimed not_bound", function()
    local list = sim.make_pairs(2000, "done")
    sim.reset(list, { unbound = true })
    local report = client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 100 })
    -- each batch, its halves, quarters and eighths: 1 + 2 + 4 + 8 (was 1 + 198 down to single pairs)
    assert.equals(20 * 15, report.requests)
    assert.equals(#sim.log(), report.requests)
    assert.equals(20 * 14, report.bisect_requests)
    assert.equals(2000, report.counts.failed)
    assert.equals(0, report.counts.not_bound)
    for _, r in ipairs(report.results) do
      assert.equals("KOOPHONE.API.2210", r.err.code)
      assert.equals("not isolated: bisection stopped (KOOPHONE.API.2210 for the batch and each of its 8 parts)",
                    r.reason)
    end
  end)

  it("still isolates every bad pair when fewer parts than 8 hold one", function()
    local list = sim.make_pairs(100, "seven")
    sim.reset(list)
    local input, bad = copy_pairs(list), {}
    for part = 0, 6 do -- one pair bound to someone else in each of the first 7 eighths (12-13 pairs)
      local i = part * 12 + 5
      input[i].user_id, bad[i] = "stranger", true
    end
    local report = client:unassign_all(TOKEN, input, { batch_size = 100 })
    assert.equals(93, report.counts.unassigned)
    assert.equals(7, report.counts.not_bound)
    for i in pairs(bad) do assert.equals("not_bound", report.results[i].outcome) end
    sim.assert_no_pair_twice()
  end)

  for _, case in ipairs {
    { "a token of another tenant (1001 for every request)", "KOOPHONE.API.1001", function(list)
        sim.reset(list, { tenants = { { name = "t2", token = "other-tenant", instances = { "theirs01" } } } })
        return "other-tenant"
      end },
    { "instances of another project (1012 for every request)", "KOOPHONE.API.1012", function(list)
        sim.reset(list)
        sim.faults { type = "api_error", status = 200, code = "KOOPHONE.API.1012", count = -1,
                     msg = "The instance does not belong to the tenant." }
        return TOKEN
      end },
  } do
    it("stops the run after 3 batches so refused: " .. case[1], function()
      local list = sim.make_pairs(2000, "wt")
      local token = case[3](list)
      local report = client:unassign_all(token, copy_pairs(list), { batch_size = 100 })
      assert.equals(case[2], report.aborted.code)
      assert.matches("3 batches in a row refused as a whole", report.aborted.message, 1, true)
      -- the first round's 20 batches, their halves and quarters, and the eighths until the stop
      -- (was 3,980: every batch down to single pairs)
      assert.is_true(report.requests <= 20 + 40 + 80 + 3 * 8 + 4, report.requests)
      assert.equals(#sim.log(), report.requests)
      assert.equals(report.requests - 20, report.bisect_requests)
      assert.equals(2000, report.counts.failed)
      assert.equals(0, report.counts.denied) -- no pair was refused alone
      assert.equals(2000, #sim.state().tenants.t1.bindings)
    end)
  end

  it("caps the bisection requests of the whole run at max_bisect_requests", function()
    local list = sim.make_pairs(1000, "capall")
    sim.reset(list, { unbound = true })
    local report = client:unassign_all(TOKEN, copy_pairs(list),
                                       { batch_size = 100, max_bisect_requests = 50 })
    assert.equals(50, report.bisect_requests)
    assert.equals(10 + 50, report.requests)
    assert.equals(#sim.log(), report.requests)
    assert.equals(1000, report.counts.failed)
  end)
end)

teardown(ctx.cleanup)
