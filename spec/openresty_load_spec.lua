-- examples/openresty under load, in Debian's nginx + lua-nginx-module: small thread pools, a slow
-- simulator, concurrent calls. What must hold: a call puts at most the requests its policy allows
-- on the wire, all under one request id, and `attempts` counts them; a full pool never reaches
-- lua-nginx-module's abort (koophone.ngx refuses first) and a refusal is a 503; refusals do not
-- flood the error log. Bounded: a few concurrent calls, one storm of 200 requests.
local sim = require "helpers.sim"
local openresty = require "helpers.openresty"
local shell = require "helpers.shell"
local socket = require "socket"

local PORT = sim.http_port + 21

-- The example with `thread_pool koophone threads=T max_queue=Q`, `lua_worker_thread_vm_pool_size V`
-- and `init(<init>)`: <init> is Lua source for koophone_admin.init's overrides.
local function example(threads, max_queue, vms, init)
  return openresty.new("openresty-load", PORT, function(conf)
    local n1, n2, n3
    conf, n1 = conf:gsub("thread_pool koophone [^;]*;",
                         ("thread_pool koophone threads=%d max_queue=%d;"):format(threads, max_queue))
    conf, n2 = conf:gsub("lua_worker_thread_vm_pool_size %d+;", ("lua_worker_thread_vm_pool_size %d;"):format(vms))
    conf, n3 = conf:gsub('require%("koophone_admin"%)%.init%(%)', 'require("koophone_admin").init(' .. init .. ')')
    assert(n1 == 1 and n2 == 1 and n3 == 1, "the example's nginx.conf changed: update this spec")
    return conf
  end)
end

-- Starts one admin call per pair at once; returns status, body, headers of each, in order.
local function concurrent(nginx, list)
  local socks = {}
  for i, p in ipairs(list) do socks[i] = nginx:admin_start { pairs = { p } } end
  local out = {}
  for i, s in ipairs(socks) do out[i] = { openresty.admin_finish(s) } end
  return out
end

-- Waits until no request is in progress at the simulator (a delayed one finishes after its
-- caller gave up), so the next spec's log starts clean.
local function settle()
  for _ = 1, 250 do
    local busy = false
    for _, e in ipairs(sim.log()) do busy = busy or e.status == 0 end
    if not busy then return end
    socket.sleep(0.02)
  end
end

-- Every request on the wire belongs to one answered call, each call's requests share its id, and
-- its `attempts` is their number. Returns the number of requests per call.
local function check_ids_and_attempts(answers)
  local sent = {}
  for _, e in ipairs(sim.log()) do sent[e.request_id] = (sent[e.request_id] or 0) + 1 end
  local calls, per_call = {}, {}
  for i, a in ipairs(answers) do
    local body = a[2]
    local r = body.error or body
    assert.is_string(r.request_id, "answer " .. i .. " has no request id")
    assert.is_nil(calls[r.request_id], "two calls share a request id")
    calls[r.request_id] = true
    per_call[i] = sent[r.request_id] or 0
    assert.equals(per_call[i], r.attempts, "answer " .. i .. ": attempts is not the requests sent")
  end
  for id in pairs(sent) do assert.is_true(calls[id], "a request under an id no call answered with") end
  return per_call
end

local function is_refusal(a)
  local status, body, head = a[1], a[2], a[3]
  return status == 503 and body.error.code == "WORKER_THREAD_UNAVAILABLE" and body.error.sent == false
    and body.error.attempts == 0 and head:match("\r\nRetry%-After: 1\r?\n?") ~= nil
end

describe("the example with one thread and one VM", function()
  local nginx = example(1, 1, 1,
    "{ max_in_flight = 1, queue_timeout = 0, timeout = 0.5, retry = { max_attempts = 3, base_delay = 0.001 } }")
  setup(function() nginx:start() end)
  teardown(function() nginx:stop() end)
  after_each(settle)

  it("puts at most one request per call on the wire for concurrent calls to a slow KooPhone", function()
    local list = sim.make_pairs(4, "one")
    sim.reset(list)
    -- every request is answered after 1 s; the client gives up after 0.5 s: ambiguous, not retried
    sim.faults { type = "delay", seconds = 1, count = -1 }
    local answers = concurrent(nginx, list)
    local sent, refused = 0, 0
    for i, n in ipairs(check_ids_and_attempts(answers)) do
      assert.is_true(n <= 1, "call " .. i .. " sent " .. n .. " requests")
      sent = sent + n
      if is_refusal(answers[i]) then refused = refused + 1 end
    end
    assert.is_true(sent >= 1)
    assert.is_true(refused >= 1)
    assert.equals(4, sent + refused)
    -- the refused calls' retry delays (under 1 ms here) were slept as 1 ms, not as ngx.sleep(0)
    assert.is_nil(nginx:error_log():find("ngx.sleep(0)", 1, true))
  end)
end)

describe("the example with a thread pool that waits for a free slot", function()
  local nginx = example(1, 1, 1, "{ max_in_flight = 1, queue_timeout = 5 }")
  setup(function() nginx:start() end)
  teardown(function() nginx:stop() end)

  it("runs concurrent calls one after the other instead of refusing them", function()
    local list = sim.make_pairs(3, "wait")
    sim.reset(list)
    sim.faults { type = "delay", seconds = 0.2, count = 3 }
    local answers = concurrent(nginx, list)
    for i, a in ipairs(answers) do assert.equals(200, a[1], "call " .. i .. ": " .. tostring(a[2])) end
    for _, n in ipairs(check_ids_and_attempts(answers)) do assert.equals(1, n) end
    assert.same({}, sim.bindings())
  end)
end)

-- threads=1 max_queue=1 with 50 VMs: lua-nginx-module alone would post a third concurrent call
-- into the full queue and abort the worker. max_in_flight = 1 (<= max_queue) refuses it first.
describe("the example with a thread pool configured to overflow", function()
  local nginx = example(1, 1, 50, "{ max_in_flight = 1, queue_timeout = 0, timeout = 5, retry = false }")
  setup(function() nginx:start() end)
  teardown(function() nginx:stop() end)
  after_each(settle)

  -- A slow call holding the only slot while `f` runs; returns its answer.
  local function while_slot_held(seconds, f)
    local slow = sim.make_pairs(1, "slow")
    sim.reset(slow)
    sim.faults { type = "delay", seconds = seconds, count = 1 }
    local s = nginx:admin_start { pairs = slow }
    assert.is_true(openresty.wait_in_flight(1), "the slow call never reached the simulator")
    f()
    return { openresty.admin_finish(s) }
  end

  it("refuses the calls beyond max_in_flight with 503 and keeps its worker", function()
    local workers = nginx:workers()
    local answers
    local slow = while_slot_held(1, function() answers = concurrent(nginx, sim.make_pairs(5, "over")) end)
    assert.equals(200, slow[1])
    for i, a in ipairs(answers) do assert.is_true(is_refusal(a), "call " .. i .. " answered " .. tostring(a[1])) end
    assert.equals(1, #sim.log())
    assert.equals(workers, nginx:workers())
    local log = nginx:error_log()
    assert.is_nil(log:find("exited on signal", 1, true))
    assert.is_nil(log:find("ngx_thread_task_post", 1, true))
  end)

  it("keeps the error log small under a storm of refusals", function()
    socket.sleep(1.1) -- the line for the refusals of the spec before, written by a timer
    local before = #nginx:error_log()
    local body = os.tmpname()
    local cfg = os.tmpname()
    local f = assert(io.open(body, "w"))
    f:write('{"pairs":[{"user_id":"u","instance_id":"storm"}]}')
    f:close()
    f = assert(io.open(cfg, "w"))
    for _ = 1, 200 do f:write(('url = "%s/admin/unassign"\noutput = "/dev/null"\n'):format(nginx.base)) end
    f:close()
    local codes, t0, elapsed = nil, nil, nil
    while_slot_held(2, function()
      t0 = socket.gettime()
      codes = shell.read(("curl -s --no-progress-meter --parallel --parallel-max 32 -H 'Content-Type: application/json'"
        .. " --data-binary @%s -w '%%{http_code}\\n' -K %s"):format(shell.quote(body), shell.quote(cfg)))
      elapsed = socket.gettime() - t0
    end)
    os.remove(body)
    os.remove(cfg)
    local refused = select(2, codes:gsub("503", ""))
    assert.is_true(refused >= 100, refused .. " refusals")
    -- the lines, the last one written by a timer at most a second after the last refusal
    local lines, counted
    for _ = 1, 100 do
      lines, counted = 0, 0
      for n in nginx:error_log():sub(before + 1):gmatch("koophone%.ngx: (%d+) call%(s%) not started") do
        lines, counted = lines + 1, counted + tonumber(n)
      end
      if counted >= refused then break end
      socket.sleep(0.05)
    end
    assert.equals(refused, counted)
    -- at most one line a second
    assert.is_true(lines <= math.ceil(elapsed) + 2, lines .. " lines in " .. elapsed .. " s")
    assert.is_nil(nginx:error_log():sub(before + 1):find("unassign failed", 1, true))
  end)
end)
