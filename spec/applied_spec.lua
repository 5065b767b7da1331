-- koophone.applied, the one rule for "may this unassign have been applied": its cases as a table
-- (pure), what the retry policy makes of them, koophone.errors; then the symptoms it fixes,
-- against the simulator: a 2210 after an ambiguous attempt for a request of several pairs, and
-- the copy sent again with a new token after a 401 (never a resend after a lost answer).
local koophone = require "koophone"
local applied = require "koophone.applied"
local errors = require "koophone.errors"
local retry = require "koophone.retry"
local sim = require "helpers.sim"
local creds = require "helpers.creds"

local TOKEN = sim.token

local function E(t)
  t.kind, t.message = t.kind or "api", t.message or "msg"
  if t.sent == nil then t.sent = true end
  t.attempts, t.resends = t.attempts or 1, t.resends or 0
  return errors.new(t)
end

describe("koophone.applied", function()
  -- name, err, may the call have been applied, why
  local cases = {
    { "not sent (connect refused)", E { kind = "network", code = "CURLE_COULDNT_CONNECT", sent = false },
      false, "not_sent" },
    { "not started (nginx thread pool full)", E { kind = "network", code = "WORKER_THREAD_UNAVAILABLE",
      sent = false, attempts = 0 }, false, "not_sent" },
    { "IAM failed before sending (its 500 is IAM's)", E { kind = "auth", code = "IAM_FAILED", status = 500,
      sent = false }, false, "not_sent" },
    { "answer lost (timeout)", E { kind = "timeout", code = "CURLE_OPERATION_TIMEDOUT" }, true, "no_answer" },
    { "answer lost (empty reply)", E { kind = "network", code = "CURLE_GOT_NOTHING" }, true, "no_answer" },
    { "500 after the service saw it", E { status = 500, code = "KOOPHONE.API.9999" }, true, "server_error" },
    { "unreadable 2xx", E { kind = "decode", status = 200, code = "BAD_JSON" }, true, "bad_response" },
    { "401 from the gateway, before KooPhone", E { status = 401, code = "APIGW.0307" }, false, "token" },
    { "throttled", E { status = 429, code = "APIGW.0308" }, false, "throttled" },
    { "2210 to a first copy", E { status = 400, code = "KOOPHONE.API.2210" }, false, "rejected" },
    { "2210 to libcurl's silent resend", E { status = 400, code = "KOOPHONE.API.2210", attempts = 2,
      resends = 1 }, true, "resent" },
    { "503 to libcurl's silent resend", E { status = 503, code = "APIGW.0613", attempts = 2, resends = 1 },
      true, "resent" },
    { "2210 to the copy sent again with a new token", E { status = 400, code = "KOOPHONE.API.2210",
      attempts = 2, renewed = true }, false, "rejected" },
    { "503 to the copy sent again with a new token", E { status = 503, code = "APIGW.0613", attempts = 2,
      renewed = true }, false, "unavailable" },
    { "a renewal whose first copy was resent by libcurl", E { status = 400, code = "KOOPHONE.API.2210",
      attempts = 3, resends = 1, renewed = true }, true, "resent" },
  }
  for _, c in ipairs(cases) do
    it(("attempt: %s -> %s"):format(c[1], c[3] and "maybe applied" or "not applied"), function()
      local maybe, why = applied.attempt(c[2])
      assert.equals(c[3], maybe)
      assert.equals(c[4], why)
      assert.equals(not c[3], applied.clean(c[2]))
    end)
  end

  it("clean: an earlier attempt that may have been applied, or the core's word, taints the call", function()
    local rejected = E { status = 400, code = "KOOPHONE.API.2210" }
    assert.is_true(applied.clean(rejected, { maybe_applied = false }))
    assert.is_false(applied.clean(rejected, { maybe_applied = true }))
    assert.is_false(applied.clean(E { status = 400, code = "KOOPHONE.API.2210", maybe_applied = true }))
  end)

  it("resent: counts libcurl's resends of copies that left, none of a call never sent", function()
    assert.equals(1, applied.resent(E { attempts = 2, resends = 1 }))
    assert.equals(0, applied.resent(E { attempts = 2, renewed = true }))
    assert.equals(0, applied.resent(E { kind = "auth", sent = false, attempts = 2, resends = 1 }))
  end)

  -- earlier copy may have been applied, pairs of the request, outcome of a 2210
  local not_found = {
    { false, 1, "not_bound" }, { false, 3, "not_bound" },
    { true, 1, "assumed_unassigned" }, { true, 3, "unconfirmed" }, { true, nil, "unconfirmed" },
  }
  for _, c in ipairs(not_found) do
    it(("not_found: 2210 for %s pair(s), %s -> %s"):format(tostring(c[2]),
       c[1] and "after a copy that may have been applied" or "nothing before", c[3]), function()
      assert.equals(c[3], applied.not_found(c[1], c[2]))
    end)
  end

  it("renewed: counts both copies, keeps the resends apart, marks the renewal", function()
    local out = applied.renewed(E { status = 401, code = "APIGW.0307", attempts = 1 },
                                { outcome = "unassigned", attempts = 1, resends = 0 })
    assert.same({ outcome = "unassigned", attempts = 2, resends = 0, renewed = true }, out)
    out = applied.renewed(E { status = 401, code = "APIGW.0307", attempts = 2, resends = 1 },
                          E { status = 503, code = "APIGW.0613" })
    assert.equals(3, out.attempts)
    assert.equals(1, out.resends)
  end)

  it("row: a row not final may have been applied by its own request or an earlier one", function()
    local refused = E { status = 400, code = "KOOPHONE.API.0005" }
    local cases = {
      { { outcome = "unconfirmed" }, true },
      { { outcome = "failed", err = E { kind = "transport", code = "CURLE_GOT_NOTHING",
                                        maybe_applied = true } }, true },
      { { outcome = "failed", err = refused }, false },
      { { outcome = "failed", err = refused, tainted = true }, true }, -- resent, refused
      { { outcome = "failed", err = refused, tainted = "read bound" }, true },
      { { outcome = "failed", err = refused, maybe_applied = true }, true },
      { { outcome = "assumed_unassigned", tainted = true, maybe_applied = true }, false },
      { { outcome = "unassigned", tainted = true }, false },
      { { outcome = "not_bound", err = E { code = "KOOPHONE.API.2210", maybe_applied = true } }, false },
    }
    for i, c in ipairs(cases) do
      assert.equals(c[2], applied.row(c[1]), "case " .. i)
    end
  end)
end)

describe("the retry policy reads the rule", function()
  local function policy(opts)
    opts = opts or {}
    opts.sleep = function() end
    return retry.new(opts, koophone.sleep)
  end

  local function after_lost_answer(pairs)
    local p = policy { ambiguous_attempts = 1 }
    local s = p:new_state(pairs)
    assert.is_true((p:decide(E { kind = "timeout", code = "CURLE_OPERATION_TIMEDOUT" }, 1, s)))
    local e2210 = E { status = 400, code = "KOOPHONE.API.2210", message = "binding does not exist" }
    assert.is_false((p:decide(e2210, 2, s)))
    return p:finish(nil, e2210, 2, s)
  end

  it("a 2210 after a lost answer: assumed_unassigned for one pair", function()
    local res = assert(after_lost_answer(1))
    assert.equals("assumed_unassigned", res.outcome)
  end)

  it("a 2210 after a lost answer: for 3 pairs an error that may have been applied, never done", function()
    local res, err = after_lost_answer(3)
    assert.is_nil(res)
    assert.is_true(err.maybe_applied)
    assert.equals("KOOPHONE.API.2210", err.code)
    assert.equals(2, err.attempts)
    assert.matches("no proof for a request of 3 pairs", tostring(err), 1, true)
    assert.equals(1, select(2, tostring(err):gsub("check the bindings", "")))
  end)

  it("retries a 503 to the copy sent again with a new token, and says nothing may have been applied", function()
    local p = policy { max_attempts = 3 }
    local s = p:new_state(1)
    local e = E { status = 503, code = "APIGW.0613", attempts = 2, renewed = true }
    assert.is_true((p:decide(e, 2, s)))
    assert.is_false(s.maybe_applied)
    local again, _, why = p:decide(E { status = 503, code = "APIGW.0613" }, 3, s)
    assert.is_false(again)
    assert.equals("max_attempts", why)
    local _, err = p:finish(nil, E { status = 503, code = "APIGW.0613" }, 3, s)
    assert.is_false(err.maybe_applied)
    assert.is_nil(tostring(err):find("may have been applied", 1, true))
  end)
end)

describe("koophone.errors.new", function()
  it("makes a koophone.Error of the table itself, printed as the core's are", function()
    local t = { kind = "journal", code = "JOURNAL_IO", message = "cannot write" }
    local err = errors.new(t)
    assert.equals(t, err)
    assert.equals(koophone.Error, getmetatable(err))
    assert.equals("koophone: JOURNAL_IO: cannot write", tostring(err))
    assert.equals("x koophone: JOURNAL_IO: cannot write", "x " .. err)
  end)

  it("raises without a kind or a message", function()
    assert.has_error(function() errors.new { kind = "api" } end)
    assert.has_error(function() errors.new { message = "m" } end)
  end)
end)

-- A pair whose call opens the keep-alive connection that libcurl then reuses (and resends on).
local WARM = { user_id = "u-warm-1", instance_id = "warm0001" }

-- Seeds tenant t1 with the instances of `list`, the first `bound` of them bound, and WARM bound.
local function seed(list, bound)
  sim.control("POST", "/_sim/reset")
  local instances, bindings = { WARM.instance_id }, { [WARM.instance_id] = WARM.user_id }
  for i, p in ipairs(list) do
    instances[#instances + 1] = p.instance_id
    if i <= bound then bindings[p.instance_id] = p.user_id end
  end
  sim.control("POST", "/_sim/seed", { tenants = { { name = "t1", token = TOKEN, exists = true,
    instances = instances, bindings = bindings } } })
end

-- How many pairs of list are still bound.
local function bound_count(list)
  local now, n = sim.bindings(), 0
  for _, p in ipairs(list) do if now[p.instance_id] then n = n + 1 end end
  return n
end

describe("a 2210 after an ambiguous attempt, for a request of 3 pairs (2 of them still bound)", function()
  local list = sim.make_pairs(3, "amb")

  it("from koophone.unassign after libcurl's silent resend: nil, err that may have been applied", function()
    local c = koophone.new(sim.client_opts("http"))
    seed(list, 2)
    assert(c:unassign(TOKEN, { WARM }))
    sim.faults { type = "drop" } -- read, nothing applied, closed unanswered: libcurl resends
    local res, err = c:unassign(TOKEN, list)
    c:close()
    assert.is_nil(res)
    assert.equals("KOOPHONE.API.2210", err.code)
    assert.equals(2, err.attempts)
    assert.equals(1, err.resends)
    assert.is_true(err.maybe_applied)
    assert.matches("no proof for a request of 3 pairs", err.message, 1, true)
    assert.equals(2, bound_count(list)) -- why: the 2210 was about the third pair, nothing was applied
  end)

  it("keeps one pair's 2210 after the silent resend assumed_unassigned", function()
    local c = koophone.new(sim.client_opts("http"))
    seed(list, 1)
    assert(c:unassign(TOKEN, { WARM }))
    sim.faults { type = "drop_after_apply" }
    local res = assert(c:unassign(TOKEN, { list[1] }))
    c:close()
    assert.equals("assumed_unassigned", res.outcome)
    assert.equals(1, res.resends)
  end)

  it("from koophone.client with ambiguous_attempts = 1 after a timeout: an error, maybe_applied", function()
    seed(list, 2)
    local c = koophone.client(sim.client_opts("http", { timeout = 0.5,
      retry = { ambiguous_attempts = 1, sleep = function() end } }))
    sim.faults { type = "delay", seconds = 1.5 } -- the first copy: 2210 (pair 3), too late
    local res, err = c:unassign(TOKEN, list)
    c:close()
    assert.is_nil(res)
    assert.equals("KOOPHONE.API.2210", err.code)
    assert.equals(2, err.attempts)
    assert.is_true(err.maybe_applied)
    assert.equals("final", err.retry_stopped)
    assert.matches("no proof for a request of 3 pairs", tostring(err), 1, true)
    assert.equals(2, bound_count(list))
  end)

  it("from koophone.client after the silent resend: the core's note once, maybe_applied", function()
    seed(list, 2)
    local c = koophone.client(sim.client_opts("http", { retry = { sleep = function() end } }))
    assert(c:unassign(TOKEN, { WARM }))
    sim.faults { type = "drop" }
    local res, err = c:unassign(TOKEN, list)
    c:close()
    assert.is_nil(res)
    assert.is_true(err.maybe_applied)
    assert.equals(1, select(2, tostring(err):gsub("check the bindings", "")))
  end)
end)

describe("the copy sent again with a new token after a 401", function()
  local PASSWORD = "pw-" .. string.rep("Appl1ed", 4)
  local function provider() return creds.provider(PASSWORD) end
  local function seed_iam(list, bound)
    creds.seed(list, creds.iam_user(PASSWORD))
    if not bound then -- the tenant owns the instances, nobody is bound to them
      local instances = {}
      for i, p in ipairs(list) do instances[i] = p.instance_id end
      sim.control("POST", "/_sim/seed", { tenants = { { name = "t1", project_id = creds.PROJECT,
        domain = "acct", exists = true, instances = instances } } })
    end
  end

  it("leaves a never-bound pair not bound (a 2210, not assumed_unassigned)", function()
    local list = sim.make_pairs(1, "nb")
    seed_iam(list, false)
    local tp = provider()
    assert(tp:token())
    sim.control("POST", "/_sim/iam/revoke")
    local c = koophone.client(sim.client_opts("http", { retry = { sleep = function() end } }))
    local res, err = c:unassign(tp, list)
    assert.is_nil(res)
    assert.equals("KOOPHONE.API.2210", err.code)
    assert.equals(2, err.attempts)
    assert.is_true(err.renewed)
    assert.equals(0, err.resends)
    assert.is_false(err.maybe_applied)
    assert.is_nil(tostring(err):find("may have been applied", 1, true))

    sim.control("POST", "/_sim/iam/revoke") -- the same through a bulk run
    local report = assert(c:unassign_all(tp, sim.copy_pairs(list)))
    assert.equals(1, report.counts.not_bound)
    c:close()
  end)

  it("retries a 503 answered to it (koophone.client), which then succeeds", function()
    local list = sim.make_pairs(1, "r503")
    seed_iam(list, true)
    local tp = provider()
    assert(tp:token())
    sim.control("POST", "/_sim/iam/revoke")
    sim.faults { type = "unavailable", at = 2 } -- 1: the refused copy, 2: the one with a new token
    local c = koophone.client(sim.client_opts("http", { retry = { sleep = function() end } }))
    local res, err = c:unassign(tp, list)
    c:close()
    assert.is_nil(err)
    assert.equals("unassigned", res.outcome)
    assert.equals(3, res.attempts)
    assert.same({}, sim.bindings())
  end)

  it("ends with an error that says nothing was applied when the 503s go on", function()
    local list = sim.make_pairs(1, "e503")
    seed_iam(list, true)
    local tp = provider()
    assert(tp:token())
    sim.control("POST", "/_sim/iam/revoke")
    sim.faults { type = "unavailable", at = 2, count = -1 }
    local c = koophone.client(sim.client_opts("http", { retry = { sleep = function() end } }))
    local res, err = c:unassign(tp, list)
    c:close()
    assert.is_nil(res)
    assert.equals("APIGW.0613", err.code)
    assert.equals("max_attempts", err.retry_stopped)
    assert.equals(3, err.attempts)
    assert.is_false(err.maybe_applied)
    assert.is_nil(tostring(err):find("may have been applied", 1, true))
    assert.equals(1, bound_count(list))
  end)
end)
