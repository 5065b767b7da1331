-- examples/embed admin_console as a host whose main thread must never wait on koophone (issue
-- #24): the call runs in a worker thread with its own lua_State, bounded by a deadline (-d) and
-- cancelled from the main thread (-c) through koophone_cancel, against the simulator's slow
-- ("delay") and throttling ("throttle", Retry-After: 5) faults. The host measures how long the
-- call blocked its thread (CLOCK_MONOTONIC) and prints it; the bound asserted is the issue's,
-- the deadline (or the cancel) + 100 ms. The request log must show nothing sent after it.
local sim = require "helpers.sim"
local shell = require "helpers.shell"
local socket = require "socket"

local LUA = os.getenv("KOOPHONE_LUA") or "lua5.4"
local DIR = "build/" .. LUA .. "/embed"
local ROOT = shell.read("pwd")
local BOUND = 0.1 -- the issue's: returns by the deadline + 100 ms

-- Runs the host with the simulator's endpoint, token and CA, on one pair; returns its output,
-- exit status and the seconds it printed that the call blocked.
local function console(binary, flags, pair)
  local out, status = shell.run(("env KOOPHONE_TOKEN=%s KOOPHONE_ENDPOINT=%s KOOPHONE_CAFILE=%s %s/%s %s "
                                 .. "examples/embed/admin.lua unassign %s:%s")
    :format(shell.quote(sim.token), shell.quote(sim.https_url), shell.quote(sim.ca:find("^/") and sim.ca or ROOT .. "/" .. sim.ca), DIR,
            binary, flags, pair.user_id, pair.instance_id))
  return out, status, tonumber(out:match("thread 1: returned after ([%d.]+) s"))
end

-- the simulator's request log, once the faults' slow answers have had time to end
local function log_after(seconds)
  socket.sleep(seconds)
  return sim.log()
end

describe("an embedding host bounds the call it runs in a worker thread, on " .. LUA, function()
  setup(function() shell.make("embed LUA=" .. LUA) end)

  local pair
  before_each(function()
    pair = sim.make_pairs(1, "hd")[1]
    sim.reset({ pair })
  end)

  for _, binary in ipairs { "admin_console", "admin_console_static" } do
    it(binary .. ": two Retry-After: 5 answers and a 2 s deadline: back at once, nothing more sent", function()
      sim.faults({ type = "throttle", retry_after = "5", count = 2 })
      local out, status, took = console(binary, "-d 2", pair)
      assert.equals(1, status, out)
      assert.matches("failed: koophone: DEADLINE_EXCEEDED", out, 1, true)
      assert.is_true(took < 2 + BOUND, out)
      assert.equals(1, #log_after(0.5))
      assert.equals(pair.user_id, sim.bindings()[pair.instance_id])
    end)

    it(binary .. ": a slow answer and a 1 s deadline: back by the deadline + 100 ms", function()
      sim.faults({ type = "delay", seconds = 2.5 })
      local out, status, took = console(binary, "-d 1", pair)
      assert.equals(1, status, out)
      assert.matches("CURLE_OPERATION_TIMEDOUT", out, 1, true)
      assert.matches("may have been applied", out, 1, true)
      assert.is_true(took >= 0.95 and took < 1 + BOUND, out)
      assert.equals(1, #log_after(2)) -- no retry after the deadline
    end)
  end

  it("the main thread cancels a slow transfer after 300 ms: back within 100 ms of it", function()
    sim.faults({ type = "delay", seconds = 2.5 })
    local out, status, took = console("admin_console", "-d 10 -c 300", pair)
    assert.equals(1, status, out)
    assert.matches("failed: koophone: CANCELLED: cancelled during the transfer", out, 1, true)
    assert.is_true(took < 0.3 + BOUND, out)
    assert.equals(1, #log_after(2.5))
  end)

  it("the main thread cancels during a retry's Retry-After wait: the retry is never sent", function()
    sim.faults({ type = "throttle", retry_after = "1", count = 2 })
    local out, status, took = console("admin_console_static", "-d 10 -c 400", pair)
    assert.equals(1, status, out)
    assert.matches("failed: koophone: CANCELLED: cancelled: not sent", out, 1, true)
    assert.is_true(took < 0.4 + BOUND, out)
    assert.equals(1, #log_after(1.5))
    assert.equals(pair.user_id, sim.bindings()[pair.instance_id])
  end)

  it("without bounds the same host unassigns the pair", function()
    local out, status = console("admin_console", "", pair)
    assert.equals(0, status, out)
    assert.matches("thread 1: unassigned " .. pair.instance_id, out, 1, true)
    assert.same({}, sim.bindings())
  end)
end)
