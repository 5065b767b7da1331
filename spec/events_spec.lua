-- on_event: one event per HTTP exchange with its outcome, timings and sizes (docs/events.md),
-- never a secret or a pair's ids, and a hook that raises changes nothing.
local koophone = require "koophone"
local sim = require "helpers.sim"
local cli = require "helpers.cli"

local TOKEN = sim.token

-- A client of `make` (koophone.new or koophone.client) whose events land in the returned list.
local function recording(make, opts, scheme)
  local events = {}
  local o = sim.client_opts(scheme or "http", opts)
  o.on_event = function(ev) events[#events + 1] = ev end
  return make(o), events
end

local function assert_transfer(ev)
  for _, k in ipairs { "duration", "connect", "tls" } do
    assert.equals("number", type(ev[k]), k)
    assert.is_true(ev[k] >= 0, k)
  end
  assert.is_true(ev.duration >= ev.connect)
  assert.equals("boolean", type(ev.reused))
  assert.equals("number", type(ev.bytes_sent))
  assert.equals("number", type(ev.bytes_received))
end

describe("on_event", function()
  local list = sim.make_pairs(2, "ev")

  it("gives one event for a success, with its task id, on a new then a reused connection", function()
    sim.reset(list)
    local client, events = recording(koophone.new)
    local res = assert(client:unassign(TOKEN, list))
    assert.equals(1, #events)
    local ev = events[1]
    assert.equals("unassign", ev.call)
    assert.equals(res.request_id, ev.request_id)
    assert.equals(res.task_id, ev.task_id)
    assert.equals("unassigned", ev.outcome)
    assert.equals(1, ev.attempt)
    assert.equals(0, ev.resends)
    assert.equals(200, ev.status)
    assert.is_true(ev.sent)
    assert.equals(2, ev.pairs)
    assert.is_nil(ev.kind)
    assert.is_nil(ev.code)
    assert_transfer(ev)
    assert.is_false(ev.reused)
    assert.is_true(ev.bytes_sent > #TOKEN) -- the headers count
    assert.is_true(ev.bytes_received > #res.task_id)
    sim.reset(list)
    assert(client:unassign(TOKEN, list))
    assert.equals(2, #events)
    assert.is_true(events[2].reused)
    assert.equals(0, events[2].connect)
    assert.equals(0, events[2].tls)
    client:close()
  end)

  it("over TLS on a new connection", function()
    sim.reset(list)
    local client, events = recording(koophone.new, nil, "https")
    assert(client:unassign(TOKEN, list))
    assert.equals(1, #events)
    assert_transfer(events[1])
    assert.is_false(events[1].reused)
    client:close()
  end)

  it("gives the kind and code of an API error", function()
    sim.reset(list)
    sim.faults({ type = "api_error", status = 400, code = "KOOPHONE.API.1012", msg = "bad" })
    local client, events = recording(koophone.new)
    local res, err = client:unassign(TOKEN, list)
    assert.is_nil(res)
    assert.equals(1, #events)
    assert.equals(err.kind, events[1].kind)
    assert.equals("KOOPHONE.API.1012", events[1].code)
    assert.equals(400, events[1].status)
    assert.equals(err.request_id, events[1].request_id)
    assert.is_nil(events[1].task_id)
    client:close()
  end)

  it("gives a timeout as kind timeout, status 0", function()
    sim.reset(list)
    sim.faults({ type = "delay", seconds = 1 })
    local client, events = recording(koophone.new)
    local _, err = client:unassign(TOKEN, list, { timeout = 0.1 })
    assert.equals("timeout", err.kind)
    assert.equals(1, #events)
    assert.equals("timeout", events[1].kind)
    assert.equals(0, events[1].status)
    client:close()
  end)

  it("gives one event per attempt of a throttled call retried by koophone.client", function()
    sim.reset(list)
    sim.faults({ type = "throttle", retry_after = "1" })
    local client, events = recording(koophone.client, { retry = { sleep = function() end } })
    local res = assert(client:unassign(TOKEN, list))
    assert.equals(2, #events)
    assert.equals(429, events[1].status)
    assert.equals("api", events[1].kind)
    assert.equals("APIGW.0308", events[1].code)
    assert.equals(1, events[1].attempt)
    assert.equals(200, events[2].status)
    assert.equals(2, events[2].attempt)
    assert.equals(res.request_id, events[1].request_id)
    assert.equals(res.request_id, events[2].request_id)
    client:close()
  end)

  it("counts libcurl's silent resend in the event of its exchange", function()
    sim.reset(list, { extra_instances = { "spare" } })
    local client, events = recording(koophone.new)
    client:unassign(TOKEN, { { user_id = "nobody", instance_id = "spare" } }) -- opens the connection
    sim.faults({ type = "stale_connection" })
    local res = assert(client:unassign(TOKEN, list))
    assert.equals(2, res.attempts)
    assert.equals(2, #events)
    assert.equals(1, events[2].resends)
    assert.equals(2, events[2].attempt)
    assert.equals(res.task_id, events[2].task_id)
    client:close()
  end)

  it("gives one event per batch of unassign_many", function()
    local more = sim.make_pairs(3, "evm")
    sim.reset(more)
    local client, events = recording(koophone.new)
    local results = client:unassign_many(TOKEN, { { more[1] }, { more[2], more[3] } })
    assert.equals(2, #events)
    local by_id = {}
    for _, ev in ipairs(events) do by_id[ev.request_id] = ev end
    assert.equals(1, by_id[results[1].request_id].pairs)
    assert.equals(2, by_id[results[2].request_id].pairs)
    assert.equals(results[2].task_id, by_id[results[2].request_id].task_id)
    client:close()
  end)

  it("gives get_task's event with the task id asked for", function()
    sim.reset(list)
    local client, events = recording(koophone.new)
    local res = assert(client:unassign(TOKEN, list))
    local task = assert(client:get_task(TOKEN, res.task_id))
    assert.equals(2, #events)
    assert.equals("get_task", events[2].call)
    assert.equals(res.task_id, events[2].task_id)
    assert.equals(task.request_id, events[2].request_id)
    assert.equals(0, events[2].pairs)
    client:close()
  end)

  describe("never carries the token or a pair's ids", function()
    local faults = sim.token_faults()
    for _, scheme in ipairs { "http", "https" } do
      for _, fault in ipairs(faults) do
        it("under fault " .. scheme .. " " .. fault.type .. " " .. tostring(fault.status or ""), function()
          sim.reset(list)
          sim.faults(fault)
          local client, events = recording(koophone.new, { max_response_bytes = 2048 }, scheme)
          client:unassign(TOKEN, list)
          client:close()
          assert.equals(1, #events)
          for _, s in ipairs(sim.strings(events)) do
            assert.is_nil(s:find(TOKEN:sub(1, 32), 1, true), s:sub(1, 80))
            for _, p in ipairs(list) do
              assert.is_nil(s:find(p.user_id, 1, true))
              assert.is_nil(s:find(p.instance_id, 1, true))
            end
          end
        end)
      end
    end
  end)

  describe("a hook that raises", function()
    it("changes nothing in the call's result", function()
      sim.reset(list)
      local client = koophone.new(sim.client_opts("http", { on_event = function() error("boom") end }))
      local res, err = client:unassign(TOKEN, list)
      assert.is_nil(err)
      assert.equals("unassigned", res.outcome)
      local _, err2 = client:unassign(TOKEN, list)
      assert.equals("KOOPHONE.API.2210", err2.code)
      client:close()
    end)

    it("nor does one that uses its own client; the client stays usable", function()
      sim.reset(list)
      local client
      client = koophone.new(sim.client_opts("http", { on_event = function() client:close() end }))
      assert(client:unassign(TOKEN, list))
      local _, err = client:unassign(TOKEN, list)
      assert.equals("KOOPHONE.API.2210", err.code)
      client:close()
    end)

    it("has its first error written to stderr, once per client", function()
      local ctx = cli.new()
      local cmd = cli.CMD:gsub("bin/koophone", "spec/helpers/raising_hook.lua", 1)
      local rc = cli.exit_code(os.execute(("%s %s %s/token >%s/out 2>%s/err"):format(
        cmd, sim.http_url, ctx.dir, ctx.dir, ctx.dir)))
      assert.equals(0, rc)
      assert.truthy(cli.read_file(ctx.dir .. "/out"):match("^KOOPHONE%.API%.%d+\nKOOPHONE%.API%.%d+\n$"))
      local stderr = cli.read_file(ctx.dir .. "/err")
      local _, lines = stderr:gsub("on_event raised", "")
      assert.equals(1, lines)
      assert.truthy(stderr:find("hook failed on purpose", 1, true))
    end)
  end)

  it("must be a function", function()
    local ok, msg = pcall(koophone.new, { on_event = 1 })
    assert.is_false(ok)
    assert.equals("koophone.new: bad argument #1 (opts.on_event): expected a function, got number",
                  msg)
  end)
end)

describe("on_event with an IAM token provider (koophone.iam_token)", function()
  local creds = require "helpers.creds"
  local PASSWORD = "pw-" .. string.rep("Ev3ntH0rse", 4)
  local list = sim.make_pairs(2, "evi")

  local function provider(extra) return creds.provider(PASSWORD, extra) end

  -- no secret, nor any 16-byte slice of one, in any key or value of any event
  local function assert_no_secret(events, secrets)
    creds.assert_no_slices(secrets, table.concat(sim.strings(events), "\n"))
  end

  local function calls(events)
    local out = {}
    for i, ev in ipairs(events) do out[i] = ev.call end
    return out
  end

  before_each(function()
    creds.seed(list, creds.iam_user(PASSWORD))
  end)

  it("gives the token request's event, call iam_token, before the unassign it was made for", function()
    local client, events = recording(koophone.new)
    local tp = provider()
    local res = assert(client:unassign(tp, { list[1] }))
    assert.same({ "iam_token", "unassign" }, calls(events))
    local ev = events[1]
    assert.equals(201, ev.status)
    assert.is_true(ev.sent)
    assert.equals(1, ev.attempt)
    assert.equals(0, ev.resends)
    assert.equals(0, ev.pairs)
    assert.is_nil(ev.kind)
    assert.is_nil(ev.code)
    assert.is_nil(ev.task_id)
    assert_transfer(ev)
    assert.is_false(ev.reused)
    assert.is_true(ev.bytes_sent > #PASSWORD) -- the login body holds it
    assert.is_true(ev.bytes_received > 2048) -- the simulator's token is 2048 bytes
    assert.equals("string", type(ev.request_id))
    assert.not_equals(res.request_id, ev.request_id)
    assert.equals(res.request_id, events[2].request_id)
    assert.equals(1, events[2].attempt)
    assert(client:unassign(tp, { list[2] })) -- the cached token: no exchange with IAM
    assert.same({ "iam_token", "unassign", "unassign" }, calls(events))
    assert_no_secret(events, { PASSWORD, (tp:token()) })
    client:close()
  end)

  it("gives unassign_many's token request its event too", function()
    local client, events = recording(koophone.new)
    local results = client:unassign_many(provider(), { { list[1] }, { list[2] } })
    assert.equals("unassigned", results[2].outcome)
    assert.same({ "iam_token", "unassign", "unassign" }, calls(events))
    assert.equals(201, events[1].status)
    client:close()
  end)

  it("counts the resend after a revoked token as attempt 2, the new token's event in between", function()
    local client, events = recording(koophone.client, { retry = { sleep = function() end } })
    local tp = provider()
    assert(client:unassign(tp, { list[1] }))
    local first = tp:token()
    sim.control("POST", "/_sim/iam/revoke")
    local res = assert(client:unassign(tp, { list[2] }))
    assert.equals(2, res.attempts)
    assert.same({ "iam_token", "unassign", "unassign", "iam_token", "unassign" }, calls(events))
    assert.equals(res.request_id, events[3].request_id)
    assert.equals(401, events[3].status)
    assert.equals("APIGW.0307", events[3].code)
    assert.equals(1, events[3].attempt)
    assert.equals(201, events[4].status)
    assert.equals(1, events[4].attempt)
    assert.equals(res.request_id, events[5].request_id)
    assert.equals(2, events[5].attempt)
    assert.equals(200, events[5].status)
    assert_no_secret(events, { PASSWORD, first, (tp:token()) })
    client:close()
  end)

  it("gives a refused login's event with the failure's kind, code and status", function()
    local client, events = recording(koophone.new)
    local wrong = "not-" .. PASSWORD
    local res, err = client:unassign(provider { password = wrong }, list)
    assert.is_nil(res)
    assert.equals(1, #events) -- nothing was sent to the API
    local ev = events[1]
    assert.equals("iam_token", ev.call)
    assert.equals("auth", ev.kind)
    assert.equals("IAM_FAILED", ev.code)
    assert.equals(err.code, ev.code)
    assert.equals(401, ev.status)
    assert.is_true(ev.sent)
    assert.is_nil(ev.task_id)
    assert_transfer(ev)
    assert.equals(0, #sim.log())
    assert_no_secret(events, { wrong, PASSWORD })
    client:close()
  end)

  it("refuses the provider (and closing its client) to the hook of its token request; the call goes on", function()
    local tp, other = provider(), koophone.new(sim.client_opts("http"))
    local refusals = {}
    local client = koophone.new(sim.client_opts("http", { on_event = function(ev)
      if ev.call ~= "iam_token" then return end
      refusals[1] = select(2, pcall(tp.token, tp))
      refusals[2] = select(2, pcall(other.unassign, other, tp, { list[2] }))
      refusals[3] = select(2, pcall(tp.client.close, tp.client))
    end }))
    assert.equals("unassigned", assert(client:unassign(tp, { list[1] })).outcome)
    assert.matches("cannot be used from its own on_event hook", refusals[1])
    assert.matches("cannot be closed from its own on_event hook", refusals[3])
    assert.matches("koophone.unassign: the token provider is fetching a token already",
                   refusals[2])
    assert.equals(1, #sim.log())
    assert.equals("unassigned", assert(other:unassign(tp, { list[2] })).outcome)
    client:close()
    other:close()
  end)

  it("gives an unreachable IAM's event with status 0, not sent", function()
    local client, events = recording(koophone.new)
    local _, err = client:unassign(provider { endpoint = "http://127.0.0.1:1", connect_timeout = 1 },
                                   list)
    assert.equals("auth", err.kind)
    assert.same({ "iam_token" }, calls(events))
    assert.equals(0, events[1].status)
    assert.is_false(events[1].sent)
    assert.equals("auth", events[1].kind)
    assert_no_secret(events, { PASSWORD })
    client:close()
  end)
end)
