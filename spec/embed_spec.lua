-- examples/embed: a C host program embeds the runtime these specs run on, loads koophone from
-- the build tree (core.so through package.cpath, or linked in and put in package.preload) and
-- runs the admin command script against the simulator, in one or several OS threads.
local sim = require "helpers.sim"
local shell = require "helpers.shell"

local LUA = os.getenv("KOOPHONE_LUA") or "lua5.4"
local DIR = "build/" .. LUA .. "/embed"
local SCRIPT = "examples/embed/admin.lua"

-- Runs the host; returns its output and exit status.
local function console(binary, args)
  local env = ("env KOOPHONE_TOKEN=%s KOOPHONE_ENDPOINT=%s KOOPHONE_CAFILE=%s")
    :format(shell.quote(sim.token), shell.quote(sim.https_url), shell.quote(sim.ca))
  return shell.run(env .. " " .. DIR .. "/" .. binary .. " " .. args)
end

local function words(list)
  local out = {}
  for i, p in ipairs(list) do out[i] = p.user_id .. ":" .. p.instance_id end
  return table.concat(out, " ")
end

describe("examples/embed admin_console on " .. LUA, function()
  setup(function()
    shell.make("embed LUA=" .. LUA)
  end)

  for _, variant in ipairs {
    { binary = "admin_console", how = "loading core.so from the build tree", linked = false },
    { binary = "admin_console_static", how = "with the core linked in and preloaded", linked = true },
  } do
    it("unassigns the pairs of the command, " .. variant.how, function()
      local list = sim.make_pairs(3, "em")
      sim.reset(list)
      local out, status = console(variant.binary, SCRIPT .. " unassign " .. words(list))
      assert.equals(0, status, out)
      for _, p in ipairs(list) do
        assert.matches("thread 1: unassigned " .. p.instance_id .. " job %x+", out)
      end
      assert.same({}, sim.bindings())
      local symbols = shell.read("nm " .. DIR .. "/" .. variant.binary .. " | grep -c ' T luaopen_koophone_core$' || true")
      assert.equals(variant.linked and "1" or "0", symbols)
    end)
  end

  it("runs one lua_State and one client per OS thread", function()
    local list = sim.make_pairs(8, "th")
    sim.reset(list)
    local out, status = console("admin_console", "-t 4 " .. SCRIPT .. " unassign " .. words(list))
    assert.equals(0, status, out)
    -- thread i took pairs i and i + 4, in one request of its own
    for i = 1, 4 do
      assert.matches("thread " .. i .. ": unassigned " .. list[i].instance_id .. " ", out)
      assert.matches("thread " .. i .. ": unassigned " .. list[i + 4].instance_id .. " ", out)
    end
    assert.same({}, sim.bindings())
    local log = sim.log()
    assert.equals(4, #log)
    for _, e in ipairs(log) do assert.equals(2, e.pairs) end
  end)

  it("fails with the error and without the token when KooPhone refuses", function()
    local list = sim.make_pairs(1, "ref")
    sim.reset(list, { unbound = true })
    local out, status = console("admin_console_static", SCRIPT .. " unassign " .. words(list))
    assert.equals(1, status, out)
    assert.matches("thread 1: failed: koophone: KOOPHONE.API.2210", out, 1, true)
    assert.is_nil(out:find(sim.token:sub(1, 40), 1, true))
  end)

  it("exits non-zero on a bad command, a missing script and bad usage", function()
    local out, status = console("admin_console", SCRIPT .. " unassign not-a-pair")
    assert.equals(1, status)
    assert.matches("not USER_ID:INSTANCE_ID: not-a-pair", out, 1, true)
    out, status = console("admin_console", "examples/embed/missing.lua")
    assert.equals(1, status)
    assert.matches("cannot open examples/embed/missing.lua", out, 1, true)
    out, status = console("admin_console", "-t 0 " .. SCRIPT)
    assert.equals(2, status)
    assert.matches("usage:", out, 1, true)
  end)
end)
