-- koophone.ngx's queue_timeout in Debian's nginx (examples/openresty, one worker): calls that wait
-- for a free slot of max_in_flight (or a free thread VM) must yield to the event loop, so that the
-- worker keeps serving everything else, end by queue_timeout with a result or a 503, and leave an
-- idle worker idle. Before, a wait with under 1 ms left was no wait at all (ngx.semaphore counts
-- whole milliseconds) on a clock that only moves between events: the request looped on the CPU
-- until a thread freed its slot (a thread VM is only freed by the event loop: then forever), the
-- worker answered nothing else and ignored QUIT. Every wait here is bounded (socket timeouts, a
-- time limit per scenario), so that code fails these specs instead of hanging them.
local sim = require "helpers.sim"
local openresty = require "helpers.openresty"
local socket = require "socket"

local PORT = sim.http_port + 24
local HEALTH = 0.25   -- /health must answer within this while calls wait (issue #22)
local LATE = 0.5      -- a refused call ends by its queue_timeout (each attempt's) + this

-- The example with init(<init>) (<init>: Lua source for koophone_admin.init's overrides, "" for
-- the example as shipped).
local function example(name, init)
  return openresty.new(name, PORT, function(conf)
    local n
    conf, n = conf:gsub('require%("koophone_admin"%)%.init%(%)', function()
      return 'require("koophone_admin").init(' .. init .. ')'
    end)
    assert(n == 1, "the example's nginx.conf changed: update this spec")
    return conf
  end)
end

-- GET /health, at most 2 s: the seconds it took, or nil when there was no 200 by then.
local function health(nginx)
  local t0 = socket.gettime()
  local s = assert(socket.tcp())
  s:settimeout(2)
  local raw = s:connect("127.0.0.1", nginx.port) and s:send("GET /health HTTP/1.0\r\n\r\n")
              and s:receive("*a")
  s:close()
  local took = socket.gettime() - t0
  return raw and raw:match("^HTTP/1%.%d 200") and took < 2 and took or nil
end

-- utime + stime of process pid, in clock ticks (/proc/<pid>/stat fields 14 and 15)
local function cpu_ticks(pid)
  local f = assert(io.open("/proc/" .. pid .. "/stat"))
  local stat = f:read("*a")
  f:close()
  local utime, stime = stat:match("^.*%) %S+" .. (" %S+"):rep(10) .. " (%d+) (%d+)")
  return tonumber(utime) + tonumber(stime)
end

-- Starts one admin call per pair at once and, until all are answered (or `limit` seconds),
-- probes /health every 0.1 s. Returns the answers ({status, body, seconds from the start}, nil
-- when none came) and the probes' times (false: no answer).
local function calls_and_probes(nginx, list, limit)
  local t0 = socket.gettime()
  local socks, index = {}, {}
  for i, p in ipairs(list) do
    socks[i] = nginx:admin_start { pairs = { p } }
    socks[i]:settimeout(2) -- read once select says readable: nginx closes right after the answer
    index[socks[i]] = i
  end
  local answers, probes, pending, next_probe = {}, {}, #list, t0
  while pending > 0 and socket.gettime() - t0 < limit do
    local waiting = {}
    for i, s in ipairs(socks) do if not answers[i] then waiting[#waiting + 1] = s end end
    for _, s in ipairs((socket.select(waiting, nil, 0.01))) do
      local i = index[s]
      local status, body = openresty.admin_finish(s)
      answers[i], pending = { status, body, socket.gettime() - t0 }, pending - 1
    end
    if socket.gettime() >= next_probe then
      probes[#probes + 1] = health(nginx) or false
      next_probe = socket.gettime() + 0.1
    end
  end
  for i, s in ipairs(socks) do if not answers[i] then s:close() end end
  return answers, probes
end

-- The worker answered every probe within HEALTH.
local function assert_served(probes)
  for i, took in ipairs(probes) do
    assert.is_truthy(took, "/health probe " .. i .. " was not answered within 2 s")
    assert.is_true(took < HEALTH, ("/health probe %d took %.3f s"):format(i, took))
  end
  assert.is_true(#probes >= 5, #probes .. " /health probes")
end

-- Every call was answered: 200, or a 503 refusal that sent nothing by `refused_by` seconds.
-- Returns the number of each.
local function count_answers(answers, n, refused_by)
  local served, refused = 0, 0
  for i = 1, n do
    local a = assert(answers[i], "call " .. i .. " was never answered")
    if a[1] == 200 then
      served = served + 1
      assert.equals("unassigned", a[2].outcome)
    else
      refused = refused + 1
      assert.equals(503, a[1], "call " .. i)
      assert.equals("WORKER_THREAD_UNAVAILABLE", a[2].error.code)
      assert.is_false(a[2].error.sent)
      assert.is_true(a[3] < refused_by, ("call %d refused after %.3f s, not by %g s"):format(i, a[3], refused_by))
    end
  end
  return served, refused
end

-- The worker spends no CPU time in a second of idleness (a tick is 10 ms; a spinning worker
-- spends ~100).
local function assert_idle(worker)
  local before = cpu_ticks(worker)
  socket.sleep(1)
  local spent = cpu_ticks(worker) - before
  assert.is_true(spent <= 2, spent .. " ticks of CPU in 1 s of idleness")
end

local SLOW = 3 -- seconds the simulator holds the call that got the slot

for _, queue_timeout in ipairs { 0.0005, 0.3, 1 } do
  describe(("max_in_flight = 1, queue_timeout = %g, a KooPhone that answers after %d s"):format(
    queue_timeout, SLOW), function()
    local nginx = example("openresty-queue", ("{ max_in_flight = 1, queue_timeout = %.17g, retry = false }")
      :format(queue_timeout))
    setup(function() nginx:start() end)
    teardown(function() nginx:stop() end)

    it("keeps serving /health while calls wait, refuses them by queue_timeout, then idles", function()
      local list = sim.make_pairs(5, "q")
      sim.reset(list)
      sim.faults { type = "delay", seconds = SLOW, count = 1 }
      local worker = nginx:workers():match("%d+")
      local answers, probes = calls_and_probes(nginx, list, SLOW + queue_timeout + 5)
      assert_served(probes)
      local served, refused = count_answers(answers, #list, queue_timeout + LATE)
      assert.equals(1, served)
      assert.equals(4, refused)
      assert.equals(1, #sim.log()) -- the refused calls sent nothing
      assert_idle(worker)
    end)
  end)
end

-- As shipped: max_in_flight = 16 and 16 thread VMs on threads=4, queue_timeout = 2, 3 attempts.
-- 64 calls outrun both the slots and the VMs; a VM is back in the pool only once the event loop
-- has seen its thread end.
describe("the example as shipped, 64 concurrent calls to a slow KooPhone", function()
  local nginx = example("openresty-queue", "")
  setup(function() nginx:start() end)
  teardown(function() nginx:stop() end)

  it("keeps serving /health, answers every call, then idles", function()
    local list, warm = sim.make_pairs(64, "s"), sim.make_pairs(16, "w")
    local all = sim.copy_pairs(list)
    for _, p in ipairs(warm) do all[#all + 1] = p end
    sim.reset(all)
    -- first a worker that has served calls: a fresh one makes its 16 thread VMs in the event
    -- loop on its first burst (lua-nginx-module), a one-off 50-250 ms on this kind of VM
    for i, a in ipairs((calls_and_probes(nginx, warm, 30))) do assert.equals(200, a[1], "warm-up call " .. i) end
    sim.faults { type = "delay", seconds = 0.3, count = -1 }
    local worker = nginx:workers():match("%d+")
    local answers, probes = calls_and_probes(nginx, list, 30)
    assert_served(probes)
    -- a refusal: three attempts, each refused after queue_timeout, and the retry delays between
    local served = count_answers(answers, #list, 3 * (2 + LATE))
    assert.is_true(served >= 16, served .. " calls served")
    assert_idle(worker)
  end)
end)
