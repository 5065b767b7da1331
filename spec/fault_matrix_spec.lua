-- The fault matrix: every fault of sim/README.md (and the network failures the simulator cannot
-- fake) against koophone.client with the default policy and with one that allows one retry after
-- an ambiguous failure. Each row says what the call returns and what the simulator saw and kept.
-- Sleeps are injected and recorded: no spec waits for a retry delay.
local koophone = require "koophone"
local sim = require "helpers.sim"

local unpack = table.unpack or unpack
local TOKEN = sim.token
local NO_ANSWER = { "CURLE_GOT_NOTHING", "CURLE_RECV_ERROR", "CURLE_SEND_ERROR" }

local POLICIES = {
  default = {},
  ambiguous = { ambiguous_attempts = 1 },
}

local function json_body(status, code, msg)
  return { type = "respond", status = status,
           body = ('{"error_code":"%s","error_msg":"%s"}'):format(code, msg) }
end

-- One row per fault; `default` and `ambiguous` are what each policy must end with (`both` for
-- both). An expectation is either { outcome, attempts, bound, earlier } for a result or
-- { kind, code, status, class, stopped, attempts, bound, maybe_applied } for an error.
-- `bound`: the binding is still there afterwards ("pending": the server has not finished yet).
-- `reached`: how many requests the simulator logs (default: attempts).
local matrix = {
  { id = "delay", fault = { type = "delay", seconds = 1.5 }, client = { timeout = 0.5 },
    default = { kind = "timeout", code = "CURLE_OPERATION_TIMEDOUT", class = "ambiguous",
                stopped = "ambiguous", attempts = 1, bound = "pending", maybe_applied = true },
    -- the retry arrives while the first copy still sleeps: it does the work, the copy gets 2210
    ambiguous = { outcome = "unassigned", attempts = 2, bound = false } },
  { id = "delaybody", fault = { type = "delay_body", seconds = 1.5 }, client = { timeout = 0.5 },
    default = { kind = "timeout", code = "CURLE_OPERATION_TIMEDOUT", status = 200, class = "ambiguous",
                stopped = "ambiguous", attempts = 1, bound = false, maybe_applied = true },
    ambiguous = { outcome = "assumed_unassigned", attempts = 2, bound = false, earlier = "timeout" } },
  { id = "reset", fault = { type = "reset" },
    default = { kind = "network", code = NO_ANSWER, class = "ambiguous", stopped = "ambiguous",
                attempts = 1, bound = true, maybe_applied = true },
    ambiguous = { outcome = "unassigned", attempts = 2, bound = false } },
  { id = "drop", fault = { type = "drop" },
    default = { kind = "network", code = NO_ANSWER, class = "ambiguous", stopped = "ambiguous",
                attempts = 1, bound = true, maybe_applied = true },
    ambiguous = { outcome = "unassigned", attempts = 2, bound = false } },
  { id = "dropapplied", fault = { type = "drop_after_apply" },
    default = { kind = "network", code = NO_ANSWER, class = "ambiguous", stopped = "ambiguous",
                attempts = 1, bound = false, maybe_applied = true },
    ambiguous = { outcome = "assumed_unassigned", attempts = 2, bound = false, earlier = "network" } },
  { id = "errapplied", fault = { type = "error_after_apply" },
    default = { kind = "api", code = "KOOPHONE.API.9999", status = 500, class = "ambiguous",
                stopped = "ambiguous", attempts = 1, bound = false, maybe_applied = true },
    ambiguous = { outcome = "assumed_unassigned", attempts = 2, bound = false, earlier = "api" } },
  { id = "error", fault = { type = "error" },
    default = { kind = "api", code = "KOOPHONE.API.9999", status = 500, class = "ambiguous",
                stopped = "ambiguous", attempts = 1, bound = true, maybe_applied = true },
    ambiguous = { outcome = "unassigned", attempts = 2, bound = false } },
  { id = "error200", fault = { type = "api_error", code = "KOOPHONE.API.9999", msg = "Internal service error" },
    default = { kind = "api", code = "KOOPHONE.API.9999", status = 200, class = "ambiguous",
                stopped = "ambiguous", attempts = 1, bound = true, maybe_applied = true },
    ambiguous = { outcome = "unassigned", attempts = 2, bound = false } },
  { id = "badjson", fault = { type = "respond", status = 200, body = "{not json" },
    both = { kind = "decode", code = "BAD_JSON", status = 200, class = "final", stopped = "final",
             attempts = 1, bound = true, maybe_applied = true } },
  { id = "badshape", fault = { type = "respond", status = 200, body = "[1,2]" },
    both = { kind = "decode", code = "BAD_SHAPE", status = 200, class = "final", stopped = "final",
             attempts = 1, bound = true, maybe_applied = true } },
  { id = "throttlera", fault = { type = "throttle", retry_after = "7" },
    both = { outcome = "unassigned", attempts = 2, bound = false, sleep_range = { 7, 8.75 } } },
  { id = "throttle", fault = { type = "throttle" },
    both = { outcome = "unassigned", attempts = 2, bound = false, sleep_range = { 1, 2 } } },
  { id = "unavailable", fault = { type = "unavailable" },
    both = { outcome = "unassigned", attempts = 2, bound = false, sleep_range = { 0, 0.5 } } },
  { id = "gw502", fault = { type = "bad_gateway", status = 502 },
    default = { kind = "http", code = "HTTP.502", status = 502, class = "ambiguous", stopped = "ambiguous",
                attempts = 1, bound = true, maybe_applied = true },
    ambiguous = { outcome = "unassigned", attempts = 2, bound = false } },
  { id = "gw504", fault = { type = "bad_gateway", status = 504 },
    default = { kind = "http", code = "HTTP.504", status = 504, class = "ambiguous", stopped = "ambiguous",
                attempts = 1, bound = true, maybe_applied = true },
    ambiguous = { outcome = "unassigned", attempts = 2, bound = false } },
  { id = "backendunavail", fault = json_body(502, "APIGW.0201", "Backend unavailable."),
    both = { outcome = "unassigned", attempts = 2, bound = false } },
  { id = "backendtimeout", fault = json_body(504, "APIGW.0201", "Backend timeout."),
    default = { kind = "api", code = "APIGW.0201", status = 504, class = "ambiguous", stopped = "ambiguous",
                attempts = 1, bound = true, maybe_applied = true },
    ambiguous = { outcome = "unassigned", attempts = 2, bound = false } },
  { id = "truncate", fault = { type = "truncate" },
    default = { kind = "network", code = "CURLE_PARTIAL_FILE", status = 200, class = "ambiguous",
                stopped = "ambiguous", attempts = 1, bound = false, maybe_applied = true },
    ambiguous = { outcome = "assumed_unassigned", attempts = 2, bound = false, earlier = "network" } },
  { id = "bigbody", fault = { type = "big_body", bytes = 2 * 1024 * 1024 },
    both = { kind = "decode", code = "BODY_TOO_LARGE", status = 200, class = "final", stopped = "final",
             attempts = 1, bound = true, maybe_applied = true } },
  { id = "trickle", fault = { type = "trickle", bytes_per_second = 2, total_bytes = 64 },
    client = { low_speed_limit = 100, low_speed_time = 1 },
    default = { kind = "timeout", code = "CURLE_OPERATION_TIMEDOUT", status = 200, class = "ambiguous",
                stopped = "ambiguous", attempts = 1, bound = true, maybe_applied = true },
    ambiguous = { outcome = "unassigned", attempts = 2, bound = false } },
  { id = "redirect", fault = { type = "redirect" },
    both = { kind = "http", code = "HTTP.302", status = 302, class = "final", stopped = "final",
             attempts = 1, bound = true } },
  { id = "e1012", fault = { type = "api_error", code = "KOOPHONE.API.1012", msg = "not yours" },
    both = { kind = "api", code = "KOOPHONE.API.1012", status = 200, class = "final", stopped = "final",
             attempts = 1, bound = true } },
  { id = "e0000", fault = { type = "api_error", code = "KOOPHONE.API.0000", msg = "no tenant" },
    both = { kind = "api", code = "KOOPHONE.API.0000", status = 200, class = "final", stopped = "final",
             attempts = 1, bound = true } },
  { id = "e1000", fault = { type = "api_error", status = 400, code = "KOOPHONE.API.1000", msg = "bad" },
    both = { kind = "api", code = "KOOPHONE.API.1000", status = 400, class = "final", stopped = "final",
             attempts = 1, bound = true } },
  { id = "e1001", foreign = true, -- the instance belongs to another tenant
    both = { kind = "api", code = "KOOPHONE.API.1001", status = 400, class = "final", stopped = "final",
             attempts = 1, bound = true } },
  { id = "e2210", unbound = true, -- 2210 on the first attempt is a plain "not bound"
    both = { kind = "api", code = "KOOPHONE.API.2210", status = 400, class = "final", stopped = "final",
             attempts = 1, bound = false } },
  { id = "token", token = "not-a-known-token",
    both = { kind = "api", code = "APIGW.0301", status = 401, class = "final", stopped = "final",
             attempts = 1, bound = true, says = "get a new IAM token" } },
  { id = "renew", fault = json_body(401, "APIGW.0307", "The token must be updated."),
    both = { kind = "api", code = "APIGW.0307", status = 401, class = "final", stopped = "final",
             attempts = 1, bound = true, says = "get a new IAM token" } },
  { id = "denied", fault = json_body(403, "APIGW.0306", "Access denied."),
    both = { kind = "api", code = "APIGW.0306", status = 403, class = "final", stopped = "final",
             attempts = 1, bound = true } },
  { id = "refused", endpoint = "http://127.0.0.1:1",
    both = { kind = "network", code = "CURLE_COULDNT_CONNECT", class = "safe", stopped = "max_attempts",
             attempts = 3, reached = 0, bound = true, sent = false } },
  -- a certificate that cannot be verified: every attempt would fail alike, so none is retried
  { id = "otherca", scheme = "https", client = { cafile = sim.other_ca },
    both = { kind = "tls", code = "CURLE_PEER_FAILED_VERIFICATION", class = "final", stopped = "final",
             attempts = 1, reached = 0, bound = true, sent = false, says = "cafile" } },
  { id = "wrongname", scheme = "https", endpoint = sim.wrongname_url,
    both = { kind = "tls", code = "CURLE_PEER_FAILED_VERIFICATION", class = "final", stopped = "final",
             attempts = 1, reached = 0, bound = true, sent = false, says = "host name" } },
}

-- A client for `row` under `policy`, recording its sleeps and on_retry calls.
local function new_client(row, policy, rec, extra)
  local retry = {
    sleep = function(s) rec.sleeps[#rec.sleeps + 1] = s end,
    on_retry = function(info) rec.infos[#rec.infos + 1] = info end,
  }
  for k, v in pairs(POLICIES[policy] or policy) do retry[k] = v end
  for k, v in pairs(extra or {}) do retry[k] = v end
  local opts = sim.client_opts(row.scheme or "http", row.client)
  if row.endpoint then opts.endpoint = row.endpoint end
  opts.retry = retry
  return koophone.client(opts)
end

local function run(row, policy)
  local list = sim.make_pairs(1, policy:sub(1, 1) .. row.id)
  local other = { name = "t2", token = "t2-token", instances = { list[1].instance_id },
                  bindings = { [list[1].instance_id] = list[1].user_id } }
  sim.reset(row.foreign and {} or list, { unbound = row.unbound, tenants = row.foreign and { other } })
  local rec = { sleeps = {}, infos = {} }
  local client = new_client(row, policy, rec)
  if row.fault then sim.faults(row.fault) end
  local res, err = client:unassign(row.token or TOKEN, list)
  client:close()
  local tenant = row.foreign and "t2" or "t1"
  return { res = res, err = err, rec = rec, log = sim.log(), target_log = sim.target_log(),
           bound = sim.bindings(tenant)[list[1].instance_id] ~= nil }
end

local function no_token_in(...)
  for _, s in ipairs(sim.strings({ ... })) do
    assert.is_nil(s:find(TOKEN:sub(1, 24), 1, true), "token leaked")
  end
end

local function check_error(want, err)
  assert.is_table(err)
  assert.equals(want.kind, err.kind)
  if type(want.code) == "table" then -- how an unanswered request ends depends on the kernel's timing
    local found = false
    for _, code in ipairs(want.code) do found = found or code == err.code end
    assert.is_true(found, err.code)
  elseif want.code then
    assert.equals(want.code, err.code)
  end
  assert.equals(want.status, err.status)
  assert.equals(want.class, err.class)
  assert.equals(want.stopped, err.retry_stopped)
  assert.equals(want.maybe_applied or false, err.maybe_applied)
  if want.maybe_applied then assert.matches("may have been applied", tostring(err), 1, true) end
  if want.sent ~= nil then assert.equals(want.sent, err.sent) end
  if want.says then assert.matches(want.says, tostring(err), 1, true) end
end

local function check(want, r)
  local got = r.res or r.err
  if want.outcome then
    assert.is_nil(r.err, r.err and tostring(r.err))
    assert.equals(want.outcome, r.res.outcome)
    if want.earlier then assert.equals(want.earlier, r.res.err.kind) end
  else
    assert.is_nil(r.res)
    check_error(want, r.err)
  end
  assert.equals(want.attempts, got.attempts)
  if want.bound ~= "pending" then assert.equals(want.bound, r.bound) end
  -- what the simulator saw: every attempt, one x-request-id, at most one applied copy
  assert.equals(want.reached or want.attempts, #r.log)
  local applied = 0
  for _, e in ipairs(r.log) do
    assert.equals(got.request_id, e.request_id)
    if e.applied then applied = applied + 1 end
  end
  assert.is_true(applied <= 1)
  assert.same({}, r.target_log) -- nothing ever followed a redirect
  -- one recorded sleep and one on_retry per retry
  assert.equals(want.attempts - 1, #r.rec.sleeps)
  assert.equals(want.attempts - 1, #r.rec.infos)
  for i, info in ipairs(r.rec.infos) do
    assert.equals(i, info.attempt)
    assert.equals(r.rec.sleeps[i], info.delay)
    assert.equals(got.request_id, info.err.request_id)
  end
  if want.sleeps then assert.same(want.sleeps, r.rec.sleeps) end
  for _, s in ipairs(want.sleep_range and r.rec.sleeps or {}) do
    assert.is_true(s >= want.sleep_range[1] and s <= want.sleep_range[2], tostring(s))
  end
  no_token_in(r.res, r.err, r.rec.infos)
end

describe("fault matrix", function()
  for _, row in ipairs(matrix) do
    for _, policy in ipairs { "default", "ambiguous" } do
      local want = row[policy] or row.both
      it(("%s, %s policy: %s"):format(row.id, policy, want.outcome or (want.kind .. " " .. want.class)),
        function() check(want, run(row, policy)) end)
    end
  end
end)

-- A fault on every attempt (count = -1) or on several: where the retries stop, and the delays.
local function always(fault, count)
  fault.count = count or -1
  return fault
end

local function call(policy_opts, fault_list, list_prefix, client_extra)
  local list = sim.make_pairs(1, list_prefix)
  sim.reset(list)
  local rec = { sleeps = {}, infos = {} }
  local client = new_client({ client = client_extra }, policy_opts, rec)
  if fault_list then sim.faults(unpack(fault_list)) end
  local res, err = client:unassign(TOKEN, list)
  return res, err, rec, client, list
end

describe("retries stop", function()
  it("after max_attempts on a safe failure, with the Retry-After clamped to max_retry_after", function()
    local res, err, rec = call({ max_delay = 1 }, { always { type = "throttle", retry_after = "120" } }, "ra")
    assert.is_nil(res)
    assert.equals("APIGW.0308", err.code)
    assert.equals(3, err.attempts)
    assert.equals("max_attempts", err.retry_stopped)
    assert.is_false(err.maybe_applied)
    assert.matches("gave up after 3 attempts", tostring(err), 1, true)
    assert.equals(2, #rec.sleeps) -- max_retry_after (plus its jitter), not max_delay
    for _, s in ipairs(rec.sleeps) do assert.is_true(s >= 60 and s <= 75, tostring(s)) end
    assert.equals(3, #sim.log())
  end)

  it("honours Retry-After over the computed delay, also above max_delay", function()
    local _, err, rec = call({ max_delay = 1, max_attempts = 4 },
                             { always { type = "throttle", retry_after = "7" } }, "ra7")
    assert.equals(4, err.attempts)
    assert.equals(3, #rec.sleeps)
    for _, s in ipairs(rec.sleeps) do assert.is_true(s >= 7 and s <= 8.75, tostring(s)) end
  end)

  it("keeps full-jitter delays inside their bounds", function()
    local _, err, rec = call({ max_attempts = 7, base_delay = 0.5, max_delay = 3 },
                             { always { type = "unavailable" } }, "jit")
    assert.equals(7, err.attempts)
    assert.equals(6, #rec.sleeps)
    for n, s in ipairs(rec.sleeps) do
      assert.is_true(s >= 0 and s <= math.min(3, 0.5 * 2 ^ (n - 1)), ("retry %d slept %s"):format(n, s))
    end
  end)

  it("keeps throttling delays inside the equal-jitter bounds", function()
    local _, err, rec = call({ max_attempts = 6, throttle_base_delay = 2, max_delay = 10 },
                             { always { type = "throttle" } }, "eq")
    assert.equals(6, err.attempts)
    for n, s in ipairs(rec.sleeps) do
      local b = math.min(10, 2 * 2 ^ (n - 1))
      assert.is_true(s >= b / 2 and s <= b, ("retry %d slept %s"):format(n, s))
    end
  end)

  it("when the budget is empty, and the client keeps working", function()
    local budget = { capacity = 10, cost = 5, refund = 1 }
    local _, err, rec, client, list = call({ max_attempts = 5, budget = budget },
                                           { always({ type = "unavailable" }, 4) }, "bud")
    assert.equals(3, err.attempts) -- two retries paid 10
    assert.equals("budget", err.retry_stopped)
    assert.matches("retry budget is empty", tostring(err), 1, true)
    assert.equals(2, #rec.sleeps)
    local res
    res, err = client:unassign(TOKEN, list) -- the 4th faulted request: no retry left to pay
    assert.is_nil(res)
    assert.equals(1, err.attempts)
    assert.equals("budget", err.retry_stopped)
    res, err = client:unassign(TOKEN, list) -- no fault: works, and refunds
    assert.is_nil(err)
    assert.equals("unassigned", res.outcome)
    assert.equals(1, client.policy.budget.tokens)
    assert.equals(5, #sim.log())
  end)

  it("after ambiguous_attempts, saying the request may have been applied", function()
    local _, err = call({ ambiguous_attempts = 1 }, { always { type = "drop" } }, "amb")
    assert.equals(2, err.attempts)
    assert.equals("ambiguous", err.retry_stopped)
    assert.is_true(err.maybe_applied)
    assert.matches("may have been applied", tostring(err), 1, true)
  end)

  it("after max_attempts when every ambiguous retry is allowed, and unassigns once", function()
    local _, err, _, _, list = call({ ambiguous_attempts = 5 }, { always { type = "drop_after_apply" } }, "amb3")
    assert.equals(3, err.attempts)
    assert.equals("max_attempts", err.retry_stopped)
    assert.is_nil(sim.bindings()[list[1].instance_id])
    local applied = 0
    for _, e in ipairs(sim.log()) do applied = applied + (e.applied and 1 or 0) end
    assert.equals(1, applied)
  end)

  it("never, with retry = false", function()
    local list = sim.make_pairs(1, "off")
    sim.reset(list)
    local client = koophone.client(sim.client_opts("http", { retry = false }))
    sim.faults(always { type = "unavailable" })
    local _, err = client:unassign(TOKEN, list)
    assert.equals(1, err.attempts)
    assert.equals("max_attempts", err.retry_stopped)
    assert.equals(1, #sim.log())
  end)
end)

-- libcurl resends by itself once when a reused connection closes without an answer (transport.c).
describe("libcurl's silent resend", function()
  local function warm_call(policy, faults)
    local list = sim.make_pairs(1, "warm")
    sim.reset(list, { extra_instances = { "spare" } })
    local rec = { sleeps = {}, infos = {} }
    local client = new_client({}, policy, rec)
    client:unassign(TOKEN, { { user_id = "nobody", instance_id = "spare" } }) -- opens the connection
    sim.control("DELETE", "/_sim/log")
    sim.faults(unpack(faults))
    local res, err = client:unassign(TOKEN, list)
    return res, err, rec, list
  end

  it("after apply-then-drop ends as assumed_unassigned without any retry of ours", function()
    local res, err, rec, list = warm_call("default", { { type = "drop_after_apply" } })
    assert.is_nil(err)
    assert.equals("assumed_unassigned", res.outcome)
    assert.equals(2, res.attempts)
    assert.equals(0, #rec.sleeps)
    local log = sim.log()
    assert.equals(2, #log)
    assert.equals(log[1].request_id, log[2].request_id)
    assert.is_nil(sim.bindings()[list[1].instance_id])
  end)

  it("counts as the ambiguous retry: the default policy stops on the safe failure after it", function()
    local res, err, rec = warm_call("default", { { type = "drop_after_apply" }, { type = "unavailable", at = 2 } })
    assert.is_nil(res)
    assert.equals("APIGW.0613", err.code)
    assert.equals(2, err.attempts)
    assert.equals("ambiguous", err.retry_stopped)
    assert.is_true(err.maybe_applied)
    assert.equals(0, #rec.sleeps)
  end)

  it("then a retry that gets 2210 ends as assumed_unassigned when allowed", function()
    local res, err, rec = warm_call({ ambiguous_attempts = 2 },
                                    { { type = "drop_after_apply" }, { type = "unavailable", at = 2 } })
    assert.is_nil(err)
    assert.equals("assumed_unassigned", res.outcome)
    assert.equals(3, res.attempts)
    assert.equals("APIGW.0613", res.err.code)
    assert.equals(1, #rec.sleeps)
    assert.equals(3, #sim.log())
  end)
end)

describe("koophone.client calls", function()
  it("keep the caller's request id on every attempt", function()
    local list = sim.make_pairs(1, "rid")
    sim.reset(list)
    local client = new_client({}, "default", { sleeps = {}, infos = {} })
    sim.faults(always({ type = "unavailable" }, 2))
    local res = assert(client:unassign(TOKEN, list, { request_id = "my-own-id-1" }))
    assert.equals(3, res.attempts)
    assert.equals("my-own-id-1", res.request_id)
    for _, e in ipairs(sim.log()) do assert.equals("my-own-id-1", e.request_id) end
  end)

  it("raise on a programmer mistake before sending anything", function()
    sim.reset()
    local client = new_client({}, "default", { sleeps = {}, infos = {} })
    assert.has_error(function() client:unassign(TOKEN, {}) end)
    assert.has_error(function() client:unassign(TOKEN, sim.make_pairs(1), { bogus = 1 }) end)
    assert.has_error(function() client:unassign(TOKEN, sim.make_pairs(1), "opts") end)
    assert.same({}, sim.log())
  end)

  it("work over https with a kept-alive connection across retries", function()
    local list = sim.make_pairs(1, "tls")
    sim.reset(list)
    local client = new_client({ scheme = "https" }, "default", { sleeps = {}, infos = {} })
    sim.faults(always({ type = "throttle" }, 2))
    local res = assert(client:unassign(TOKEN, list))
    assert.equals(3, res.attempts)
    local log = sim.log()
    assert.equals(log[1].connection, log[3].connection)
  end)
end)

-- A transport that refuses to start the calls whose numbers are in `refused` (as koophone.ngx does
-- when its thread pool is full: attempts = 0, sent = false) and hands every other call to a real
-- core client against the simulator. It records the request id each call was given.
local function refusing_transport(refused)
  local core = koophone.new(sim.client_opts("http"))
  local t = { ids = {}, refused = {} }
  for _, n in ipairs(refused) do t.refused[n] = true end
  function t.unassign(_, token, list, opts)
    local n = #t.ids + 1
    t.ids[n] = opts and opts.request_id or "none"
    if t.refused[n] then
      return nil, setmetatable({ kind = "network", code = "WORKER_THREAD_UNAVAILABLE",
                                 message = "the call was not started: test", sent = false, attempts = 0,
                                 request_id = opts and opts.request_id }, koophone.Error)
    end
    return core:unassign(token, list, opts)
  end
  function t.request_id() return core:request_id() end
  function t.close() core:close() end
  return t
end

local function refused_call(refused, policy, faults)
  local list = sim.make_pairs(1, "ref")
  sim.reset(list)
  local rec = { sleeps = {}, infos = {} }
  local retry = { sleep = function(s) rec.sleeps[#rec.sleeps + 1] = s end,
                  on_retry = function(info) rec.infos[#rec.infos + 1] = info end }
  for k, v in pairs(policy or {}) do retry[k] = v end
  local transport = refusing_transport(refused)
  local client = require("koophone.client").wrap(transport, { retry = retry })
  if faults then sim.faults(unpack(faults)) end
  local res, err = client:unassign(TOKEN, list)
  client:close()
  return res, err, transport.ids, sim.log(), rec
end

-- every call the transport saw, and every request the simulator logged, carry one id
local function one_id(ids, log, want)
  assert.is_string(want)
  for _, id in ipairs(ids) do assert.equals(want, id) end
  for _, e in ipairs(log) do assert.equals(want, e.request_id) end
end

describe("a transport that refuses to start a call", function()
  it("counts the refusals against max_attempts and sends nothing", function()
    local res, err, ids, log, rec = refused_call({ 1, 2, 3, 4 }, { max_attempts = 3 })
    assert.is_nil(res)
    assert.equals("WORKER_THREAD_UNAVAILABLE", err.code)
    assert.equals(0, err.attempts)
    assert.is_false(err.sent)
    assert.equals("max_attempts", err.retry_stopped)
    assert.is_false(err.maybe_applied)
    assert.matches("gave up after 3 attempts, 3 of them not started", tostring(err), 1, true)
    assert.equals(3, #ids)
    assert.equals(2, #rec.sleeps)
    assert.same({}, log)
    one_id(ids, log, err.request_id)
  end)

  it("sends the call after refusals under the id fixed before the first attempt; attempts = requests sent", function()
    local res, err, ids, log, rec = refused_call({ 1, 2 })
    assert.is_nil(err, err and tostring(err))
    assert.equals("unassigned", res.outcome)
    assert.equals(1, res.attempts)
    assert.equals(3, #ids)
    assert.equals(1, #log)
    one_id(ids, log, res.request_id)
    for _, info in ipairs(rec.infos) do assert.equals(0, info.attempt) end
  end)

  it("does not retry an ambiguous failure after a refusal when ambiguous_attempts = 0", function()
    local res, err, ids, log = refused_call({ 1 }, { max_attempts = 5 }, { always { type = "drop" } })
    assert.is_nil(res)
    assert.equals("ambiguous", err.class)
    assert.equals("ambiguous", err.retry_stopped)
    assert.is_true(err.maybe_applied)
    assert.equals(1, err.attempts)
    assert.equals(1, #log)
    one_id(ids, log, err.request_id)
  end)

  it("does not spend ambiguous_attempts on a retry that was refused", function()
    local res, err, ids, log = refused_call({ 2 }, { ambiguous_attempts = 1 }, { { type = "drop" } })
    assert.is_nil(err, err and tostring(err))
    assert.equals("unassigned", res.outcome)
    assert.equals(2, res.attempts)
    assert.equals(3, #ids)
    assert.equals(2, #log)
    one_id(ids, log, res.request_id)
  end)

  it("stops at max_attempts when refusals and requests together reach it", function()
    local res, err, ids, log = refused_call({ 1, 3 }, { max_attempts = 3 }, { always { type = "unavailable" } })
    assert.is_nil(res)
    assert.equals("max_attempts", err.retry_stopped)
    assert.equals(1, err.attempts)
    assert.equals(3, #ids)
    assert.equals(1, #log)
    one_id(ids, log, err.request_id)
  end)
end)
