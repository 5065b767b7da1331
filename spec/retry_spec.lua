-- Unit tests of the retry layer without the network: the classification table, the delays, the
-- stop rules, the budget, what a failed call says, and the koophone.client object itself.
local koophone = require "koophone"
local classify = require("koophone.classify").classify
local applied = require "koophone.applied"
local retry = require "koophone.retry"

local function E(t) return setmetatable(t, koophone.Error) end

local function policy(opts)
  opts = opts or {}
  if opts.sleep == nil then opts.sleep = function() end end
  return retry.new(opts, koophone.sleep)
end

describe("classification", function()
  local cases = {
    -- err, class, why, maybe_applied (koophone.applied's verdict on that one copy)
    { { kind = "network", code = "CURLE_COULDNT_RESOLVE_HOST", sent = false }, "safe", "not_sent", false },
    { { kind = "network", code = "CURLE_COULDNT_CONNECT", sent = false }, "safe", "not_sent", false },
    { { kind = "timeout", code = "CURLE_OPERATION_TIMEDOUT", sent = false }, "safe", "not_sent", false },
    { { kind = "tls", code = "CURLE_PEER_FAILED_VERIFICATION", sent = false }, "final", "certificate", false },
    { { kind = "tls", code = "CURLE_SSL_CACERT_BADFILE", sent = false }, "final", "certificate", false },
    { { kind = "tls", code = "CURLE_SSL_CONNECT_ERROR", sent = false }, "safe", "not_sent", false },
    { { kind = "api", status = 429, code = "APIGW.0308", sent = true }, "safe", "throttled", false },
    { { kind = "api", status = 401, code = "APIGW.0301", sent = false }, "final", "token", false },
    { { kind = "http", status = 429, code = "HTTP.429", sent = true }, "safe", "throttled", false },
    { { kind = "api", status = 503, code = "APIGW.0613", sent = true }, "safe", "unavailable", false },
    { { kind = "http", status = 503, code = "HTTP.503", sent = true }, "safe", "unavailable", false },
    { { kind = "api", status = 502, code = "APIGW.0201", message = "Backend unavailable.", sent = true },
      "safe", "backend_not_reached", false },
    { { kind = "api", status = 504, code = "APIGW.0201", message = "Backend timeout.", sent = true },
      "ambiguous", "server_error", true },
    { { kind = "api", status = 502, code = "APIGW.0201", message = "Bad gateway", sent = true },
      "ambiguous", "server_error", true },
    { { kind = "timeout", code = "CURLE_OPERATION_TIMEDOUT", sent = true }, "ambiguous", "no_answer", true },
    { { kind = "network", code = "CURLE_GOT_NOTHING", sent = true }, "ambiguous", "no_answer", true },
    { { kind = "network", code = "CURLE_RECV_ERROR", sent = true }, "ambiguous", "no_answer", true },
    { { kind = "network", code = "CURLE_PARTIAL_FILE", status = 200, sent = true }, "ambiguous", "no_answer", true },
    { { kind = "api", status = 500, code = "KOOPHONE.API.9999", sent = true }, "ambiguous", "server_error", true },
    { { kind = "api", status = 200, code = "KOOPHONE.API.9999", sent = true }, "ambiguous", "server_error", true },
    { { kind = "api", status = 500, code = "APIGW.0601", sent = true }, "ambiguous", "server_error", true },
    { { kind = "http", status = 502, code = "HTTP.502", sent = true }, "ambiguous", "server_error", true },
    { { kind = "http", status = 504, code = "HTTP.504", sent = true }, "ambiguous", "server_error", true },
    { { kind = "decode", status = 500, code = "BODY_TOO_LARGE", sent = true }, "ambiguous", "server_error", true },
    { { kind = "api", status = 400, code = "KOOPHONE.API.1000", sent = true }, "final", "rejected", false },
    { { kind = "api", status = 400, code = "KOOPHONE.API.1001", sent = true }, "final", "rejected", false },
    { { kind = "api", status = 200, code = "KOOPHONE.API.0000", sent = true }, "final", "rejected", false },
    { { kind = "api", status = 200, code = "KOOPHONE.API.1012", sent = true }, "final", "rejected", false },
    { { kind = "api", status = 400, code = "KOOPHONE.API.2210", sent = true }, "final", "rejected", false },
    { { kind = "api", status = 401, code = "APIGW.0301", sent = true }, "final", "token", false },
    { { kind = "api", status = 401, code = "APIGW.0307", sent = true }, "final", "token", false },
    { { kind = "api", status = 403, code = "APIGW.0306", sent = true }, "final", "rejected", false },
    { { kind = "http", status = 404, code = "HTTP.404", sent = true }, "final", "rejected", false },
    { { kind = "api", status = 413, code = "APIGW.0201", sent = true }, "final", "rejected", false },
    { { kind = "http", status = 302, code = "HTTP.302", sent = true }, "final", "rejected", false },
    { { kind = "decode", status = 200, code = "BAD_JSON", sent = true }, "final", "bad_response", true },
    { { kind = "decode", status = 200, code = "BODY_TOO_LARGE", sent = true }, "final", "bad_response", true },
  }
  for _, c in ipairs(cases) do
    local e = c[1]
    it(("%s %s %s -> %s"):format(e.kind, tostring(e.status), e.code, c[2]), function()
      local class, why = classify(E(e))
      assert.equals(c[2], class)
      assert.equals(c[3], why)
      assert.equals(c[4], (applied.attempt(E(e))))
    end)
  end

  it("tells the caller to get a new token on 401 APIGW.0301", function()
    local _, _, note = classify(E { kind = "api", status = 401, code = "APIGW.0301", sent = true })
    assert.matches("get a new IAM token", note, 1, true)
  end)
end)

describe("delays", function()
  local safe = E { kind = "api", status = 503, code = "APIGW.0613", sent = true }
  local throttled = E { kind = "api", status = 429, code = "APIGW.0308", sent = true }

  it("use full jitter from 0 up to min(max_delay, base_delay * 2^(n-1))", function()
    local p = policy { base_delay = 0.5, max_delay = 3 }
    p.random = function() return 0 end
    assert.equals(0, p:delay(1, safe, "unavailable"))
    p.random = function() return 0.999 end
    for n, cap in ipairs { 0.5, 1, 2, 3, 3, 3 } do
      assert.near(cap * 0.999, p:delay(n, safe, "unavailable"), 1e-9)
    end
    p.random = math.random
    for _ = 1, 1000 do
      local d = p:delay(3, safe, "unavailable")
      assert.is_true(d >= 0 and d <= 2)
    end
  end)

  it("use equal jitter from b/2 to b for throttling, b = min(max_delay, throttle_base_delay * 2^(n-1))", function()
    local p = policy { throttle_base_delay = 2, max_delay = 10 }
    p.random = function() return 0 end
    for n, b in ipairs { 2, 4, 8, 10, 10 } do assert.equals(b / 2, p:delay(n, throttled, "throttled")) end
    p.random = function() return 0.999 end
    assert.near(1.999, p:delay(1, throttled, "throttled"), 1e-9)
  end)

  it("take Retry-After instead, clamped to max_retry_after and not to max_delay, plus up to 25%", function()
    local p = policy { max_delay = 1, max_retry_after = 60 }
    p.random = function() return 0 end
    assert.equals(7, p:delay(1, E { kind = "api", status = 429, retry_after = 7 }, "throttled"))
    assert.equals(30, p:delay(5, E { kind = "api", status = 503, retry_after = 30 }, "unavailable"))
    assert.equals(60, p:delay(1, E { kind = "api", status = 429, retry_after = 3600 }, "throttled"))
    p.random = function() return 0.5 end -- spread: the same Retry-After, another delay
    assert.equals(7.875, p:delay(1, E { kind = "api", status = 429, retry_after = 7 }, "throttled"))
    assert.equals(67.5, p:delay(1, E { kind = "api", status = 429, retry_after = 3600 }, "throttled"))
  end)
end)

describe("decide", function()
  local function err(t) t.attempts = t.attempts or 1; t.request_id = "rid"; return E(t) end
  local unavailable = function() return err { kind = "api", status = 503, code = "APIGW.0613", sent = true } end
  local dropped = function() return err { kind = "network", code = "CURLE_GOT_NOTHING", sent = true } end
  local timeout = function() return err { kind = "timeout", code = "CURLE_OPERATION_TIMEDOUT", sent = true } end

  it("never retries a final error", function()
    local p, s = policy(), nil
    s = p:new_state()
    local again, delay, why = p:decide(err { kind = "api", status = 400, code = "KOOPHONE.API.1000" }, 1, s)
    assert.is_false(again)
    assert.is_nil(delay)
    assert.equals("final", why)
  end)

  it("retries a safe failure until max_attempts", function()
    local p = policy { max_attempts = 3 }
    local s = p:new_state()
    assert.is_true((p:decide(unavailable(), 1, s)))
    assert.is_true((p:decide(unavailable(), 2, s)))
    local again, _, why = p:decide(unavailable(), 3, s)
    assert.is_false(again)
    assert.equals("max_attempts", why)
  end)

  it("counts requests sent, libcurl's resends included, against max_attempts", function()
    local p = policy { max_attempts = 3, ambiguous_attempts = 5 }
    local s = p:new_state()
    local e = unavailable()
    e.attempts, e.resends = 2, 1
    assert.is_true((p:decide(e, 2, s)))
    assert.is_false((p:decide(unavailable(), 3, s)))
  end)

  it("retries ambiguous failures only within ambiguous_attempts, later safe ones included", function()
    local p = policy { max_attempts = 9 }
    local s = p:new_state()
    local again, _, why = p:decide(dropped(), 1, s)
    assert.is_false(again)
    assert.equals("ambiguous", why)
    assert.is_true(s.maybe_applied)

    p = policy { max_attempts = 9, ambiguous_attempts = 1 }
    s = p:new_state()
    assert.is_true((p:decide(dropped(), 1, s)))
    again, _, why = p:decide(unavailable(), 2, s) -- safe, but the first copy may have been applied
    assert.is_false(again)
    assert.equals("ambiguous", why)
  end)

  it("counts a silent resend as a retry after an ambiguous failure", function()
    local p = policy { ambiguous_attempts = 1 }
    local s = p:new_state()
    local e = unavailable()
    e.attempts, e.resends = 2, 1
    local again, _, why = p:decide(e, 2, s)
    assert.is_false(again)
    assert.equals("ambiguous", why)
    assert.is_true(s.maybe_applied)
  end)

  local function not_started()
    return err { kind = "network", code = "WORKER_THREAD_UNAVAILABLE", sent = false, attempts = 0 }
  end

  it("counts an attempt refused before sending against max_attempts, not as a request", function()
    local p = policy { max_attempts = 3 }
    local s = p:new_state()
    assert.is_true((p:decide(not_started(), 0, s)))
    assert.is_true((p:decide(not_started(), 0, s)))
    local again, _, why = p:decide(not_started(), 0, s)
    assert.is_false(again)
    assert.equals("max_attempts", why)
    assert.equals(3, s.not_started)
    assert.equals(0, s.ambiguous_retries)
    assert.is_false(s.maybe_applied)
    local _, e = p:finish(nil, not_started(), 0, s)
    assert.equals(0, e.attempts)
    assert.matches("gave up after 3 attempts, 3 of them not started", e.message, 1, true)
  end)

  it("keeps ambiguous_attempts = 0 after refusals: an ambiguous failure then stops the call", function()
    local p = policy { max_attempts = 9 }
    local s = p:new_state()
    p:decide(not_started(), 0, s)
    p:decide(not_started(), 0, s)
    local again, _, why = p:decide(timeout(), 1, s)
    assert.is_false(again)
    assert.equals("ambiguous", why)
  end)

  it("gives back the ambiguous retry that a refusal did not spend", function()
    local p = policy { max_attempts = 9, ambiguous_attempts = 1 }
    local s = p:new_state()
    assert.is_true((p:decide(dropped(), 1, s)))
    assert.equals(1, s.ambiguous_retries)
    assert.is_true((p:decide(not_started(), 1, s)))
    assert.equals(1, s.ambiguous_retries)
    local again, _, why = p:decide(dropped(), 2, s)
    assert.is_false(again)
    assert.equals("ambiguous", why)
  end)

  it("takes cost per retry and timeout_cost per timeout from a budget shared by calls", function()
    local p = policy { max_attempts = 9, ambiguous_attempts = 9,
                       budget = { capacity = 20, cost = 5, timeout_cost = 10, refund = 1 } }
    local s = p:new_state()
    assert.is_true((p:decide(timeout(), 1, s)))
    assert.equals(10, p.budget.tokens)
    assert.is_true((p:decide(unavailable(), 2, s)))
    assert.equals(5, p.budget.tokens)
    assert.is_false((p:decide(timeout(), 3, s)))
    local s2 = p:new_state()
    assert.is_true((p:decide(unavailable(), 1, s2)))
    local again, _, why = p:decide(unavailable(), 2, s2)
    assert.is_false(again)
    assert.equals("budget", why)
    assert.equals(0, p.budget.tokens)
  end)

  it("refunds on success, up to the capacity", function()
    local p = policy { budget = { capacity = 6, cost = 5, refund = 1 } }
    local s = p:new_state()
    p:decide(unavailable(), 1, s)
    assert.equals(1, p.budget.tokens)
    for _ = 1, 10 do p:finish({ outcome = "unassigned" }, nil, 1, p:new_state()) end
    assert.equals(6, p.budget.tokens)
  end)

  it("has no quota with budget = false", function()
    local p = policy { max_attempts = 1000, budget = false }
    local s = p:new_state()
    for n = 1, 999 do assert.is_true((p:decide(unavailable(), n, s))) end
    assert.is_nil(p.budget)
  end)

  it("calls on_retry with the attempt, the delay, the class and the error", function()
    local seen = {}
    local p = policy { on_retry = function(info) seen[#seen + 1] = info end }
    local s = p:new_state()
    local e = unavailable()
    local _, delay = p:decide(e, 1, s)
    assert.equals(1, #seen)
    assert.equals(1, seen[1].attempt)
    assert.equals(delay, seen[1].delay)
    assert.equals(e, seen[1].err)
    assert.equals("safe", seen[1].class)
    assert.equals("unavailable", seen[1].reason)
    assert.equals("rid", seen[1].request_id)
    p:decide(err { kind = "api", status = 400, code = "KOOPHONE.API.1000" }, 2, s)
    assert.equals(1, #seen)
  end)
end)

describe("finish", function()
  local function err(t) t.attempts = 1; t.request_id = "rid"; t.message = t.message or "msg"; return E(t) end

  it("turns a 2210 after an ambiguous failure into assumed_unassigned with that failure attached", function()
    local p = policy { ambiguous_attempts = 1 }
    local s = p:new_state(1)
    local first = err { kind = "network", code = "CURLE_GOT_NOTHING", sent = true }
    assert.is_true((p:decide(first, 1, s)))
    local e2210 = err { kind = "api", status = 400, code = "KOOPHONE.API.2210", sent = true }
    assert.is_false((p:decide(e2210, 2, s)))
    local res, e = p:finish(nil, e2210, 2, s)
    assert.is_nil(e)
    assert.equals("assumed_unassigned", res.outcome)
    assert.equals(2, res.attempts)
    assert.equals(first, res.err)
    assert.equals("KOOPHONE.API.2210", res.error_code)
    assert.equals("rid", res.request_id)
    assert.same({}, res.jobs)
  end)

  it("keeps a 2210 on the first attempt an error", function()
    local p = policy()
    local s = p:new_state()
    local e2210 = err { kind = "api", status = 400, code = "KOOPHONE.API.2210", sent = true }
    p:decide(e2210, 1, s)
    local res, e = p:finish(nil, e2210, 1, s)
    assert.is_nil(res)
    assert.equals("final", e.class)
    assert.equals("final", e.retry_stopped)
    assert.is_false(e.maybe_applied)
    assert.equals("msg", e.message)
  end)

  it("says why it stopped, in fields and in the message", function()
    local p = policy { budget = { capacity = 0 } }
    local s = p:new_state()
    local e = err { kind = "api", status = 503, code = "APIGW.0613", sent = true }
    p:decide(e, 1, s)
    local _, out = p:finish(nil, e, 1, s)
    assert.equals("budget", out.retry_stopped)
    assert.equals("safe", out.class)
    assert.matches("retry budget is empty", tostring(out), 1, true)

    s = p:new_state()
    e = err { kind = "api", status = 401, code = "APIGW.0301", sent = true }
    p:decide(e, 1, s)
    _, out = p:finish(nil, e, 1, s)
    assert.matches("get a new IAM token", tostring(out), 1, true)
    assert.equals("koophone.Error", getmetatable(out).__name)
  end)
end)

describe("retry options", function()
  it("default to the documented numbers", function()
    local p = policy()
    assert.same({ 3, 0.5, 20, 2, 60, 0 }, { p.max_attempts, p.base_delay, p.max_delay,
      p.throttle_base_delay, p.max_retry_after, p.ambiguous_attempts })
    assert.same({ capacity = 500, cost = 5, timeout_cost = 10, refund = 1, tokens = 500 }, p.budget)
  end)

  it("make a single attempt with retry = false", function()
    assert.equals(1, retry.new(false, koophone.sleep).max_attempts)
  end)

  it("raise on unknown names and bad values, naming them", function()
    local bad = {
      { { max_attempt = 3 }, "unknown option 'max_attempt'" },
      { { max_attempts = 0 }, "retry.max_attempts" },
      { { max_attempts = 2.5 }, "retry.max_attempts" },
      { { ambiguous_attempts = -1 }, "retry.ambiguous_attempts" },
      { { base_delay = "1" }, "retry.base_delay" },
      { { max_delay = 0 / 0 }, "retry.max_delay" },
      { { max_retry_after = math.huge }, "retry.max_retry_after" },
      { { on_retry = true }, "retry.on_retry" },
      { { sleep = 1 }, "retry.sleep" },
      { { budget = 5 }, "retry.budget" },
      { { budget = { size = 1 } }, "unknown option 'size'" },
      { { budget = { cost = -1 } }, "retry.budget.cost" },
    }
    for _, b in ipairs(bad) do
      local ok, msg = pcall(retry.new, b[1], koophone.sleep)
      assert.is_false(ok)
      assert.matches(b[2], msg, 1, true)
      assert.matches("^koophone%.client: bad argument #1 %(opts%.retry[%w_.]*%): ", msg)
    end
    assert.has_error(function() retry.new("yes", koophone.sleep) end,
                     "koophone.client: bad argument #1 (opts.retry): expected a table or false, got string")
  end)
end)

describe("koophone.client", function()
  local opts = { endpoint = "http://127.0.0.1:1/prefix" }

  it("is exported by koophone", function()
    assert.is_true(rawequal(koophone.client, require("koophone.client").new))
  end)

  it("wraps a core client and exposes the policy and its sleep", function()
    local c = koophone.client(opts)
    assert.equals("koophone.client", getmetatable(c.core).__name)
    assert.equals(3, c.policy.max_attempts)
    assert.is_true(rawequal(koophone.sleep, c.sleep))
    local mine = function() end
    c = koophone.client { endpoint = opts.endpoint, retry = { sleep = mine } }
    assert.is_true(rawequal(mine, c.sleep))
  end)

  it("passes every other option to koophone.new and leaves the caller's table alone", function()
    local o = { endpoint = opts.endpoint, timeout = 2, max_pairs = 5, retry = { max_attempts = 2 } }
    local c = koophone.client(o)
    assert.equals(2, o.retry.max_attempts)
    assert.equals(2, c.policy.max_attempts)
    assert.has_error(function() koophone.client { bogus = 1 } end)
    assert.has_error(function() koophone.client "http://x" end,
                     "koophone.client: bad argument #1 (opts): expected a table, got string")
  end)

  it("shows the endpoint and the policy in tostring, never a token", function()
    local c = koophone.client { endpoint = opts.endpoint, retry = false }
    local _, err = c:unassign("SECRET-TOKEN-XYZ-1234567890", { { user_id = "u", instance_id = "i" } })
    assert.equals("CURLE_COULDNT_CONNECT", err.code)
    local s = tostring(c)
    assert.matches("http://127.0.0.1:1/prefix/v1/instances/unassign", s, 1, true)
    assert.matches("max_attempts=1", s, 1, true)
    assert.is_nil(s:find("SECRET", 1, true))
  end)

  it("fixes the call's request id before its first attempt and leaves the caller's opts alone", function()
    local seen = {}
    local c = koophone.client { endpoint = opts.endpoint,
                                retry = { sleep = function() end, on_retry = function(i) seen[#seen + 1] = i end } }
    local call_opts = { timeout = 1 }
    local _, err = c:unassign("t", { { user_id = "u", instance_id = "i" } }, call_opts)
    assert.equals(3, err.attempts)
    assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+$", err.request_id)
    for _, info in ipairs(seen) do assert.equals(err.request_id, info.request_id) end
    assert.same({ timeout = 1 }, call_opts)
    assert.are_not.equal(err.request_id, c.core:request_id())
  end)

  it("closes, also as a to-be-closed value, and raises when used closed", function()
    local c = koophone.client(opts)
    c:close()
    c:close()
    assert.has_error(function() c:unassign("t", { { user_id = "u", instance_id = "i" } }) end,
                     "koophone: client is closed")
    local c2 = koophone.client(opts)
    getmetatable(c2).__close(c2)
    assert.matches("closed", tostring(c2))
  end)
end)

describe("the jitter source", function()
  it("is the core's OS-backed random(), in [0, 1) and not a fixed sequence", function()
    local core = require "koophone.core"
    assert.equals(core.random, require("koophone.retry").new({}).random)
    local seen, lo, hi = {}, 1, 0
    for _ = 1, 1000 do
      local x = core.random()
      assert.is_true(x >= 0 and x < 1)
      seen[x] = true
      lo, hi = math.min(lo, x), math.max(hi, x)
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.is_true(n > 990)
    assert.is_true(lo < 0.1 and hi > 0.9)
    -- a second process draws other values (math.random on 5.1/LuaJIT would repeat them)
    local lua = os.getenv("KOOPHONE_LUA") or "lua5.4"
    local cmd = ("%s -e 'package.cpath=%q..package.cpath print(require(\"koophone.core\").random())'")
      :format(lua, (os.getenv("KOOPHONE_BUILD") or "build/lua5.4") .. "/?.so;")
    local a, b = io.popen(cmd):read("*l"), io.popen(cmd):read("*l")
    assert.is_truthy(tonumber(a))
    assert.are_not.equal(a, b)
  end)
end)
