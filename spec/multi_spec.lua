-- client:unassign_many (src/multi.c) against the running simulator: several requests at once on a
-- pool of libcurl handles, one res/err per batch in input order, each as client:unassign gives it.
local koophone = require "koophone"
local sim = require "helpers.sim"

local TOKEN = sim.token

-- n batches of `size` pairs cut from list, in order
local function batches_of(list, size)
  local out = {}
  for i, p in ipairs(list) do
    local b = math.floor((i - 1) / size) + 1
    out[b] = out[b] or {}
    out[b][#out[b] + 1] = p
  end
  return out
end

local function distinct_connections(log)
  local seen, n = {}, 0
  for _, e in ipairs(log) do
    if not seen[e.connection] then seen[e.connection], n = true, n + 1 end
  end
  return n
end

describe("client:unassign_many", function()
  local client
  before_each(function() client = koophone.new(sim.client_opts("http")) end)
  after_each(function() client:close() end)

  it("returns one res or err per batch, in input order, each as client:unassign would", function()
    local list = sim.make_pairs(12, "ord")
    sim.reset(list, { extra_instances = { "free0001" } })
    local batches = batches_of(list, 3)
    batches[3][2] = { user_id = "nobody", instance_id = "free0001" } -- not bound: 2210
    local results, errors = client:unassign_many(TOKEN, batches, { concurrency = 3 })
    assert.equals(4, #results)
    assert.equals(4, #errors)
    for _, b in ipairs { 1, 2, 4 } do
      local res = results[b]
      assert.is_false(errors[b])
      assert.equals("unassigned", res.outcome)
      assert.equals(200, res.status)
      assert.equals("0", res.error_code)
      assert.equals(1, res.attempts)
      assert.matches("^RM_%x+$", res.task_id)
      for k, job in ipairs(res.jobs) do assert.equals(batches[b][k].instance_id, job.instance_id) end
    end
    local err = errors[3]
    assert.is_false(results[3])
    assert.equals(koophone.Error, getmetatable(err))
    assert.same({ "api", "KOOPHONE.API.2210", 400, true, 1 },
                { err.kind, err.code, err.status, err.sent, err.attempts })
    -- the same failure through client:unassign, for comparison: the same fields
    local res2, err2 = client:unassign(TOKEN, batches[3])
    assert.is_nil(res2)
    assert.same({ err.kind, err.code, err.status, err.message },
                { err2.kind, err2.code, err2.status, err2.message })
    -- the state: everything unassigned but batch 3
    local left = sim.bindings()
    assert.same({ ord0007 = "u-ord-7", ord0008 = "u-ord-8", ord0009 = "u-ord-9" }, left)
  end)

  it("has requests in flight at the same time (proved by the server's order of work)", function()
    local list = sim.make_pairs(1, "par")
    sim.reset(list)
    -- Request 1 sleeps 2 s before it is processed. Both batches carry the same pair: if batch 2 was
    -- sent while request 1 slept, the server processed batch 2 first, so batch 2 unassigned the
    -- pair and batch 1 then found it unbound. Sent one after the other, it would be the reverse.
    sim.faults({ type = "delay", seconds = 2, at = 1, count = 1 })
    local results, errors = client:unassign_many(TOKEN, { list, list }, { concurrency = 2 })
    assert.equals("KOOPHONE.API.2210", errors[1].code)
    assert.equals("unassigned", results[2].outcome)
    local log = sim.log()
    assert.equals(2, #log)
    assert.are_not.equal(log[1].connection, log[2].connection)
  end)

  it("opens one connection per request in flight and keeps them for the next call", function()
    local list = sim.make_pairs(16, "conn")
    sim.reset(list)
    local batches = batches_of(list, 2)
    sim.faults({ type = "delay", seconds = 1, at = 1, count = 4 })
    local results = client:unassign_many(TOKEN, { batches[1], batches[2], batches[3], batches[4] },
                                         { concurrency = 4 })
    for i = 1, 4 do assert.equals("unassigned", results[i].outcome) end
    local first = sim.log()
    assert.equals(4, distinct_connections(first)) -- four sleeping requests need four connections
    results = client:unassign_many(TOKEN, { batches[5], batches[6], batches[7], batches[8] },
                                   { concurrency = 4 })
    for i = 1, 4 do assert.equals("unassigned", results[i].outcome) end
    local log, old = sim.log(), {}
    for _, e in ipairs(first) do old[e.connection] = true end
    for i = 5, 8 do
      assert.is_true(old[log[i].connection]) -- kept alive
      assert.is_true(log[i].connection_requests > 1)
    end
  end)

  it("with concurrency 1 sends one request at a time on one connection", function()
    local list = sim.make_pairs(10, "one")
    sim.reset(list)
    local results = client:unassign_many(TOKEN, batches_of(list, 2), { concurrency = 1 })
    for i = 1, 5 do assert.equals("unassigned", results[i].outcome) end
    local log = sim.log()
    assert.equals(1, distinct_connections(log))
    for i, e in ipairs(log) do assert.equals(i, e.connection_requests) end
  end)

  it("sends the caller's request ids, and fresh UUIDv4 ids for the others", function()
    local list = sim.make_pairs(3, "rid")
    sim.reset(list)
    local results = client:unassign_many(TOKEN, batches_of(list, 1),
                                         { request_ids = { "mine-1", nil, "mine-3" } })
    assert.equals("mine-1", results[1].request_id)
    assert.equals("mine-3", results[3].request_id)
    assert.matches("^%x+%-%x+%-4%x+%-[89ab]%x+%-%x+$", results[2].request_id)
    local sent = {}
    for _, e in ipairs(sim.log()) do sent[e.request_id] = true end
    assert.same({ ["mine-1"] = true, [results[2].request_id] = true, ["mine-3"] = true }, sent)
  end)

  it("gives each batch its own transport failure", function()
    local list = sim.make_pairs(3, "drop")
    sim.reset(list)
    -- twice: on a kept-alive connection libcurl resends a dropped request once by itself
    sim.faults({ type = "drop", at = 2, count = 2 })
    local results, errors = client:unassign_many(TOKEN, batches_of(list, 1), { concurrency = 1 })
    assert.equals("unassigned", results[1].outcome)
    assert.equals("unassigned", results[3].outcome)
    assert.is_false(results[2])
    assert.equals("network", errors[2].kind)
    assert.is_true(errors[2].sent)
    assert.equals(2, errors[2].attempts)
    assert.same({ drop0002 = "u-drop-2" }, sim.bindings())
  end)

  it("over HTTPS resumes the TLS session on the pool's new connections", function()
    local tls = koophone.new(sim.client_opts("https"))
    local list = sim.make_pairs(5, "tls")
    sim.reset(list)
    local batches = batches_of(list, 1)
    assert.equals("unassigned", tls:unassign_many(TOKEN, { batches[1] }, { concurrency = 1 })[1].outcome)
    sim.faults({ type = "delay", seconds = 1, at = 1, count = 4 })
    local results = tls:unassign_many(TOKEN, { batches[2], batches[3], batches[4], batches[5] },
                                      { concurrency = 4 })
    for i = 1, 4 do assert.equals("unassigned", results[i].outcome) end
    local log = sim.log()
    assert.equals(4, distinct_connections(log))
    -- new connections resume the session the pool's shared cache got from the first handle
    -- (at least one: connections made at the same instant may race for the cached ticket)
    local resumed = 0
    for _, e in ipairs(log) do
      if e.connection ~= log[1].connection and e.ssl_session_reused == "r" then resumed = resumed + 1 end
    end
    assert.is_true(resumed >= 1)
    tls:close()
  end)

  it("checks every batch before sending anything", function()
    local list = sim.make_pairs(2, "chk")
    sim.reset(list)
    local function raises(msg, batches, opts)
      local ok, err = pcall(client.unassign_many, client, TOKEN, batches, opts)
      assert.is_false(ok)
      assert.equals(msg, err:sub(1, #msg)) -- numbers print as 65 or 65.0 by Lua version
    end
    raises("koophone.unassign_many: bad argument #2 (batches[2][1].instance_id): missing",
           { { list[1] }, { { user_id = "u" } } })
    raises("koophone.unassign_many: bad argument #2 (batches[2][2]): repeats batches[2][1]",
           { { list[1] }, { list[2], list[2] } })
    raises("koophone.unassign_many: bad argument #2 (batches[1]): expected a non-empty array of "
           .. "pairs, got an empty table", { {} })
    raises("koophone.unassign_many: bad argument #3 (opts.request_ids[1]): only printable ASCII "
           .. "without spaces is allowed", { { list[1] } }, { request_ids = { "a b" } })
    raises("koophone.unassign_many: bad argument #3 (opts.concurrency): expected an integer from 1 "
           .. "to 64, got 65",
           { { list[1] } }, { concurrency = 65 })
    raises("koophone.unassign_many: bad argument #3 (opts): unknown option 'rate'",
           { { list[1] } }, { rate = 1 })
    -- the callbacks it once took: start_many hands each batch back as it ends
    raises("koophone.unassign_many: bad argument #3 (opts.on_done): no longer accepted: use "
           .. "client:start_many to handle each batch as it ends",
           { { list[1] } }, { on_done = function() end })
    raises("koophone.unassign_many: bad argument #3 (opts.on_start): no longer accepted: use "
           .. "client:start_many to handle each batch as it ends",
           { { list[1] } }, { on_start = "x" })
    assert.same({}, sim.log())
    local results, errors = client:unassign_many(TOKEN, {})
    assert.same({}, results)
    assert.same({}, errors)
    client:close()
    assert.has_error(function() client:unassign_many(TOKEN, { { list[1] } }) end,
                     "koophone: client is closed")
  end)
end)

-- client:start_many: the same transfers, driven from Lua one completion at a time.
describe("client:start_many", function()
  local client
  before_each(function() client = koophone.new(sim.client_opts("http")) end)
  after_each(function()
    koophone.clear_interrupt()
    client:close()
  end)

  -- every completion of the set: { i, res, err } in the order next() gave them, then what the
  -- last next() returned after the batches
  local function drain(set)
    local got = {}
    while true do
      local i, res, err = set:next()
      if not i then return got, res, err end
      got[#got + 1] = { i, res, err }
    end
  end

  it("sends nothing until next(), then hands each batch back once, as client:unassign would", function()
    local list = sim.make_pairs(6, "pull")
    sim.reset(list, { extra_instances = { "free0001" } })
    local batches = batches_of(list, 2)
    batches[4] = { { user_id = "nobody", instance_id = "free0001" } } -- not bound: 2210
    local set = client:start_many(TOKEN, batches, { concurrency = 2, request_ids = { "pull-1" } })
    assert.equals("koophone.many", getmetatable(set).__name)
    assert.equals(0, set:started())
    assert.same({}, sim.log())
    local got, tail = drain(set)
    assert.is_nil(tail)
    assert.equals(4, #got)
    assert.equals(4, set:started())
    local seen = {}
    for _, g in ipairs(got) do
      local i, res, err = g[1], g[2], g[3]
      assert.is_nil(seen[i])
      seen[i] = true
      if i == 4 then
        assert.is_nil(res)
        assert.equals(koophone.Error, getmetatable(err))
        assert.same({ "api", "KOOPHONE.API.2210", 400, 1 }, { err.kind, err.code, err.status, err.attempts })
      else
        assert.is_nil(err)
        assert.equals("unassigned", res.outcome)
        for k, job in ipairs(res.jobs) do assert.equals(batches[i][k].instance_id, job.instance_id) end
      end
    end
    for _, g in ipairs(got) do
      if g[1] == 1 then assert.equals("pull-1", g[2].request_id) end
    end
    assert.same({}, sim.bindings())
    assert.equals(4, #sim.log())
    assert.is_nil(set:next()) -- ended: stays ended
    set:close()
    set:close() -- idempotent
  end)

  it("starts the batches in order, concurrency at a time; after stop() those in flight still end", function()
    local list = sim.make_pairs(6, "stop")
    sim.reset(list)
    local set = client:start_many(TOKEN, batches_of(list, 1), { concurrency = 2 })
    local i, res = set:next()
    assert.equals(2, set:started()) -- 1 and 2 went out together
    assert.equals("unassigned", res.outcome)
    set:stop()
    local got = drain(set)
    assert.equals(1, #got)
    assert.equals(3 - i, got[1][1]) -- the other one of the two in flight
    assert.equals(2, set:started())
    assert.equals(2, #sim.log())
    -- nothing was left half done: the client starts its next set at once
    set = client:start_many(TOKEN, batches_of({ list[3], list[4] }, 1), { concurrency = 1 })
    assert.equals(2, #drain(set))
    assert.equals(4, #sim.log())
  end)

  it("refuses a second set on the same client while one is open; unassign and get_task work beside it", function()
    local list = sim.make_pairs(4, "busy")
    sim.reset(list)
    local set = client:start_many(TOKEN, { { list[1] }, { list[2] } }, { concurrency = 2 })
    local busy = "the client has a transfer set open: close it, or call its next() until it returns nil, first"
    assert.has_error(function() client:start_many(TOKEN, { { list[3] } }) end,
                     "koophone.start_many: " .. busy)
    assert.has_error(function() client:unassign_many(TOKEN, { { list[3] } }) end,
                     "koophone.unassign_many: " .. busy)
    local i = set:next() -- one ended, one may be in flight
    assert.is_number(i)
    -- the client's own handle is not the set's: a call beside the set leaves it alone
    local res = assert(client:unassign(TOKEN, { list[3] }))
    assert.equals("unassigned", res.outcome)
    assert(client:get_task(TOKEN, res.task_id))
    local got, tail = drain(set)
    assert.is_nil(tail)
    assert.equals(1, #got)
    assert.equals("unassigned", got[1][2].outcome)
    -- ended: the pool is free again
    assert.equals("unassigned", client:unassign_many(TOKEN, { { list[4] } })[1].outcome)
    assert.same({}, sim.bindings())
    -- a closed set frees it too
    set = client:start_many(TOKEN, { { list[1] } })
    set:close()
    assert.same({}, drain(client:start_many(TOKEN, {})))
    assert.equals(1, #drain(client:start_many(TOKEN, { { list[1] } })))
  end)

  it("a set dropped without close() does not block its client: the next start_many collects it", function()
    local list = sim.make_pairs(2, "drop")
    sim.reset(list)
    do local dropped = client:start_many(TOKEN, { { list[1] } }) end -- never driven nor closed
    local got = drain(client:start_many(TOKEN, { { list[2] } }))
    assert.equals(1, #got)
    assert.equals("unassigned", got[1][2].outcome)
    assert.equals(1, #sim.log()) -- the dropped set sent nothing
  end)

  it("close() abandons the transfers in flight, and the client works afterwards", function()
    local list = sim.make_pairs(4, "aban")
    sim.reset(list)
    -- the first request to arrive sleeps: the other ends first, and it is in flight when the
    -- set closes
    sim.faults({ type = "delay", seconds = 1, at = 1, count = 1 })
    local set = client:start_many(TOKEN, { { list[1] }, { list[2] } }, { concurrency = 2 })
    local ok, msg = pcall(function()
      assert.is_number(set:next())
      error("the caller's own failure", 0) -- e.g. its journal cannot be written
    end)
    assert.is_false(ok)
    assert.equals("the caller's own failure", msg)
    set:close()
    assert.equals(2, set:started())
    assert.is_nil(set:next())
    local results = client:unassign_many(TOKEN, { { list[3] }, { list[4] } })
    assert.equals("unassigned", results[1].outcome)
    assert.equals("unassigned", results[2].outcome)
  end)

  it("cannot be driven or closed from its client's on_event hook", function()
    local list = sim.make_pairs(2, "hook")
    sim.reset(list)
    local set, inside = nil, {}
    local hooked = koophone.new(sim.client_opts("http", { on_event = function()
      inside[#inside + 1] = select(2, pcall(set.next, set))
      inside[#inside + 1] = select(2, pcall(set.close, set))
    end }))
    set = hooked:start_many(TOKEN, { { list[1] }, { list[2] } }, { concurrency = 1 })
    local got = drain(set)
    assert.equals(2, #got)
    for _, g in ipairs(got) do assert.equals("unassigned", g[2].outcome) end
    assert.equals(4, #inside)
    for k = 1, 4, 2 do
      assert.matches("a client cannot be used from its own on_event hook", inside[k], 1, true)
      assert.matches("a transfer set cannot be closed from its client's on_event hook", inside[k + 1], 1, true)
    end
    hooked:close()
  end)

  it("after an interruption starts nothing more and abandons the transfers in flight", function()
    local list = sim.make_pairs(4, "intr")
    sim.reset(list)
    sim.faults({ type = "delay", seconds = 1, at = 1, count = 1 }) -- one of the two sleeps
    local set = client:start_many(TOKEN, batches_of(list, 1), { concurrency = 2 })
    assert.is_number(set:next())
    koophone.interrupt()
    local none, why = set:next()
    assert.is_nil(none)
    assert.equals("interrupted", why)
    assert.equals(2, set:started()) -- the other was in flight: abandoned, maybe applied
    assert.is_nil(set:next())
    koophone.clear_interrupt()
    assert.equals(2, #sim.log())
    -- the same through unassign_many: its fourth value
    koophone.interrupt()
    local results, errors, started, interrupted = client:unassign_many(TOKEN, { { list[3] } })
    assert.same({ {}, {}, 0, "interrupted" }, { results, errors, started, interrupted })
  end)

  it("after its client closed: next() raises, close() does not", function()
    local list = sim.make_pairs(2, "gone")
    sim.reset(list)
    local set = client:start_many(TOKEN, batches_of(list, 1))
    client:close()
    assert.has_error(function() set:next() end, "koophone: client is closed")
    set:close()
    assert.equals(0, set:started())
  end)

  it("checks its arguments as unassign_many does, before anything is sent", function()
    local list = sim.make_pairs(2, "args")
    sim.reset(list)
    local function raises(msg, ...)
      local ok, err = pcall(client.start_many, client, ...)
      assert.is_false(ok)
      assert.equals(msg, err:sub(1, #msg))
    end
    raises("koophone.start_many: bad argument #1 (token): ", 42, { { list[1] } })
    raises("koophone.start_many: bad argument #2 (batches): expected an array of batches, got string",
           TOKEN, "x")
    raises("koophone.start_many: bad argument #2 (batches[2][2]): repeats batches[2][1]",
           TOKEN, { { list[1] }, { list[2], list[2] } })
    raises("koophone.start_many: bad argument #3 (opts): unknown option 'on_done'",
           TOKEN, { { list[1] } }, { on_done = function() end })
    raises("koophone.start_many: bad argument #3 (opts.concurrency): expected an integer from 1 to 64",
           TOKEN, { { list[1] } }, { concurrency = 0 })
    assert.same({}, sim.log())
    -- a failed check leaves no set open
    assert.equals(1, #drain(client:start_many(TOKEN, { { list[1] } })))
  end)
end)
