-- koophone-scm-1.rockspec: lists every source and module of the tree, and `luarocks make` builds
-- and installs a koophone that works on the runtime these specs run on.
local sim = require "helpers.sim"
local shell = require "helpers.shell"

local ROCKSPEC = "koophone-scm-1.rockspec"
local LUA = os.getenv("KOOPHONE_LUA") or "lua5.4"
local VERSION = LUA == "luajit" and "5.1" or LUA:match("^lua(%d%.%d)$") -- LuaJIT takes 5.1 rocks

local function load_rockspec()
  local env = {}
  local chunk
  if setfenv then -- 5.1
    chunk = assert(loadfile(ROCKSPEC))
    setfenv(chunk, env)
  else
    chunk = assert(loadfile(ROCKSPEC, "t", env))
  end
  chunk()
  return env
end

local function lines(cmd)
  local out = {}
  for line in shell.read(cmd):gmatch("[^\n]+") do out[#out + 1] = line end
  table.sort(out)
  return out
end

describe("the rockspec", function()
  it("builds every src/*.c and installs every Lua module and bin/koophone", function()
    local spec = load_rockspec()
    assert.same({ "lua >= 5.1", "lua-cjson" }, spec.dependencies)
    local modules = spec.build.modules
    local sources = modules["koophone.core"].sources
    table.sort(sources)
    assert.same(lines("ls src/*.c"), sources)
    local listed = {}
    for name, file in pairs(modules) do
      if type(file) == "string" then
        assert.equals("lua/" .. name:gsub("%.", "/") .. ".lua", file)
        listed[#listed + 1] = file
      end
    end
    table.sort(listed)
    assert.same(lines("find lua -name '*.lua'"), listed)
    assert.equals("bin/koophone", spec.build.install.bin.koophone)
  end)

  it("builds with luarocks make for Lua " .. VERSION .. " and the installed module works", function()
    local dir = shell.read("mktemp -d")
    finally(function() shell.run("rm -rf " .. shell.quote(dir)) end)
    local tree = dir .. "/tree"
    -- in a copy: luarocks builds in the source directory and would leave koophone/core.so at
    -- the top of the work tree, where ./?.so finds it
    shell.read(("cp -r %s src lua bin include %s/"):format(ROCKSPEC, dir))
    local out, status = shell.run(("cd %s && luarocks --lua-version=%s --tree %s make --deps-mode=none %s")
      :format(dir, VERSION, tree, ROCKSPEC))
    assert.equals(0, status, out)
    -- the header of hosts that link the core in, in the rock's directory
    local rock_dir = shell.read(("luarocks --lua-version=%s --tree %s show --rock-dir koophone"):format(VERSION, tree))
    assert.equals(0, select(2, shell.run("cmp include/koophone.h " .. shell.quote(rock_dir .. "/include/koophone.h"))))
    local list = sim.make_pairs(1, "rock")
    sim.reset(list)
    local script = ([[
      local koophone = require "koophone"
      local res = assert(koophone.new { endpoint = %q }:unassign(%q, { { user_id = %q, instance_id = %q } }))
      io.write(res.outcome)
    ]]):format(sim.http_url, sim.token, list[1].user_id, list[1].instance_id)
    local script_file = dir .. "/call.lua"
    local f = assert(io.open(script_file, "w"))
    f:write(script)
    f:close()
    -- the core can come from the rock's tree only; cjson from Debian's directory
    out, status = shell.run(("LUA_PATH='%s/share/lua/%s/?.lua' LUA_CPATH='%s/lib/lua/%s/?.so;/usr/lib/x86_64-linux-gnu/lua/%s/?.so' %s %s")
      :format(tree, VERSION, tree, VERSION, VERSION, LUA, script_file))
    assert.equals(0, status, out)
    assert.equals("unassigned", out)
    assert.same({}, sim.bindings())
  end)
end)
