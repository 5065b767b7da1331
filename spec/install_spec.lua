-- Installed as the README says: `luarocks --tree DIR make` and then DIR/bin/koophone works from any
-- directory with no LUA_PATH / LUA_CPATH set (the launcher finds the tree it was installed in),
-- and a koophone that cannot find its modules says in one line what to set. One build of the
-- rock, reused by every test.
local sim = require "helpers.sim"
local shell = require "helpers.shell"

local ROCKSPEC = "koophone-scm-1.rockspec"
local LUA = os.getenv("KOOPHONE_LUA") or "lua5.4"
local VERSION = LUA == "luajit" and "5.1" or LUA:match("^lua(%d%.%d)$") -- LuaJIT takes 5.1 rocks

-- No Lua search path from the environment: only the interpreter's defaults (where Debian's
-- lua-cjson is) and what the program finds by itself.
local CLEAN_ENV = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_2 -u LUA_CPATH_5_2 -u LUA_PATH_5_3 "
                  .. "-u LUA_CPATH_5_3 -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT -u LUA_INIT_5_4"

describe("luarocks --tree DIR make, then DIR/bin/koophone (Lua " .. VERSION .. ")", function()
  local dir, tree, elsewhere

  -- Runs the shell command cmd from a directory outside the checkout and the tree, with a clean
  -- environment plus env (variables).
  local function run(cmd, env)
    return shell.run(("cd %s && %s %s %s"):format(elsewhere, CLEAN_ENV, env or "", cmd))
  end

  setup(function()
    dir = shell.read("mktemp -d /tmp/koophone-install.XXXXXX")
    tree, elsewhere = dir .. "/tree", dir .. "/elsewhere"
    -- in a copy: luarocks builds in the source directory
    shell.read(("mkdir %s/src %s && cp -r %s src lua bin include %s/src/")
      :format(dir, elsewhere, ROCKSPEC, dir))
    local out, status = shell.run(("cd %s/src && luarocks --lua-version=%s --tree %s make --deps-mode=none %s")
      :format(dir, VERSION, tree, ROCKSPEC))
    assert(status == 0, out)
  end)
  teardown(function() shell.run("rm -rf " .. shell.quote(dir)) end)

  it("runs --version and help by its path", function()
    local out, status = run(tree .. "/bin/koophone --version")
    assert.equals(0, status, out)
    assert.matches("^koophone %S+ %(libcurl %d+%.%d+%.%d+%)\n$", out)
    out, status = run(tree .. "/bin/koophone help")
    assert.equals(0, status, out)
    assert.matches("^usage: koophone unassign", out)
  end)

  it("runs as `koophone` on the PATH and unassigns with the modules and the core of the tree", function()
    local out, status = run("koophone help", ("PATH=%s/bin:$PATH"):format(tree))
    assert.equals(0, status, out)
    assert.matches("^usage: koophone unassign", out)
    local list = sim.make_pairs(1, "inst")
    sim.reset(list)
    sim.write_file(elsewhere .. "/pairs.csv", ("user_id,instance_id\n%s,%s\n"):format(list[1].user_id, list[1].instance_id))
    sim.write_file(elsewhere .. "/token", sim.token)
    out, status = run(("koophone unassign --input pairs.csv --token-file token --endpoint %s --yes --output-format jsonl")
      :format(sim.http_url), ("PATH=%s/bin:$PATH"):format(tree))
    assert.equals(0, status, out)
    assert.matches('"outcome":"unassigned"', out, 1, true)
    assert.same({}, sim.bindings())
  end)

  it("without a tree to find, says in one line what to set and exits 2", function()
    -- the installed script alone, in a directory of its own: nothing beside it
    local script = shell.read(("find %s/lib/luarocks -path '*/bin/koophone'"):format(tree))
    shell.read(("mkdir -p %s/lonely/bin && cp %s %s/lonely/bin/koophone"):format(dir, shell.quote(script), dir))
    local lua = LUA == "luajit" and "lua5.1" or LUA
    local out, status = run(("%s %s/lonely/bin/koophone --version"):format(lua, dir))
    assert.equals(2, status, out)
    assert.equals(1, select(2, out:gsub("\n", "")), out)
    assert.matches("^koophone: module 'koophone' not found", out)
    assert.matches(('set LUA_PATH and LUA_CPATH: eval "$(luarocks --lua-version=%s --tree DIR path)"'):format(VERSION),
                   out, 1, true)
  end)
end)
