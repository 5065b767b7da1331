-- examples/embed: a C host program embeds the runtime these specs run on, loads koophone (core.so
-- and lua/ found relative to the program or through KOOPHONE_CORE_DIR / KOOPHONE_LUA_DIR, or the
-- core and the Lua layer linked in and put in package.preload) and runs the admin command script
-- against the simulator, in one or several OS threads, from the build tree and from copies.
local sim = require "helpers.sim"
local shell = require "helpers.shell"

local LUA = os.getenv("KOOPHONE_LUA") or "lua5.4"
local DIR = "build/" .. LUA .. "/embed"
local SCRIPT = "examples/embed/admin.lua"

local ROOT = shell.read("pwd")

-- Runs the host (a path, default: the build tree's binary of that name) with the simulator's
-- endpoint, token and CA in its environment after `env` (env's options, then variables), from
-- cwd (default: the checkout); returns its output and exit status.
local function console(binary, args, env, cwd)
  local vars = ("env %s KOOPHONE_TOKEN=%s KOOPHONE_ENDPOINT=%s KOOPHONE_CAFILE=%s"):format(env or "",
    shell.quote(sim.token), shell.quote(sim.https_url),
    shell.quote(sim.ca:find("^/") and sim.ca or ROOT .. "/" .. sim.ca))
  local program = binary:find("/", 1, true) and binary or DIR .. "/" .. binary
  return shell.run(("cd %s && %s %s %s"):format(shell.quote(cwd or ROOT), vars, program, args))
end

-- Whether the program has a path into the checkout compiled in (as the first version had).
local function knows_checkout(program)
  local f = assert(io.open(program, "rb"))
  local bytes = f:read("*a")
  f:close()
  return bytes:find(ROOT .. "/lua", 1, true) ~= nil or bytes:find(ROOT .. "/build", 1, true) ~= nil
end

-- No Lua file of the checkout or of a LUA_PATH can be found (cjson comes from the system's cpath).
local NO_LUA_PATH = "-u LUA_PATH_5_2 -u LUA_PATH_5_3 -u LUA_PATH_5_4 LUA_PATH=/nonexistent/?.lua"

local function words(list)
  local out = {}
  for i, p in ipairs(list) do out[i] = p.user_id .. ":" .. p.instance_id end
  return table.concat(out, " ")
end

-- Runs a copy of the program at path (default: the build tree's `binary`) made in a new directory
-- outside the checkout, beside a copy of the script, from that directory, on the pairs of list;
-- returns its output and exit status.
local function run_copy(binary, list, env, path)
  path = path or DIR .. "/" .. binary
  assert.is_false(knows_checkout(path))
  local tmp = shell.read("mktemp -d /tmp/koophone-embed.XXXXXX")
  shell.read(("cp %s %s %s/"):format(shell.quote(path), SCRIPT, tmp))
  local out, status = console(tmp .. "/" .. binary, "admin.lua unassign " .. words(list), env, tmp)
  shell.read("rm -rf " .. shell.quote(tmp))
  return out, status
end

-- The sh block of docs/embedding.md whose first line is `first` (a comment), as a command for
-- this runtime: the block's indentation removed, lua5.4 (interpreter and pkg-config name)
-- replaced by the runtime under test.
local function doc_block(first)
  local f = assert(io.open("docs/embedding.md", "rb"))
  local text = f:read("*a")
  f:close()
  local indent, block = text:match("\n( *)```sh\n *(" .. first:gsub("%p", "%%%0") .. ".-)\n *```")
  assert(block, "no sh block starting with '" .. first .. "' in docs/embedding.md")
  return (block:gsub("\n" .. indent, "\n"):gsub("lua5%.4", LUA))
end

-- The Lua files of the checkout in make's order ($(sort ...) compares bytes), relative to lua/.
local function lua_modules()
  local out = {}
  for path in shell.read("cd lua && find . -name '*.lua' | sed 's|^\\./||' | LC_ALL=C sort"):gmatch("[^\n]+") do
    out[#out + 1] = path
  end
  return out
end

local function mktemp()
  local tmp = shell.read("mktemp -d /tmp/koophone-embed.XXXXXX")
  finally(function() shell.run("rm -rf " .. shell.quote(tmp)) end)
  return tmp
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

  it("runs from a copy of the program in another directory, given KOOPHONE_LUA_DIR and KOOPHONE_CORE_DIR", function()
    local list = sim.make_pairs(2, "cp")
    sim.reset(list)
    -- nothing compiled in points at the checkout: without the variables the copy finds no koophone
    local out, status = run_copy("admin_console", list, NO_LUA_PATH)
    assert.equals(1, status, out)
    assert.matches("module 'koophone' not found", out, 1, true)
    out, status = run_copy("admin_console", list, ("%s KOOPHONE_LUA_DIR=%s/lua KOOPHONE_CORE_DIR=%s/build/%s")
                                                    :format(NO_LUA_PATH, ROOT, ROOT, LUA))
    assert.equals(0, status, out)
    assert.matches("thread 1: unassigned " .. list[2].instance_id .. " job %x+", out)
    assert.same({}, sim.bindings())
  end)

  it("runs the static program from a copy with no koophone file on the disk it can reach", function()
    local list = sim.make_pairs(2, "mem")
    sim.reset(list)
    local out, status = run_copy("admin_console_static", list, NO_LUA_PATH)
    assert.equals(0, status, out)
    assert.matches("thread 1: unassigned " .. list[1].instance_id .. " job %x+", out)
    assert.same({}, sim.bindings())
  end)

  it("runs the command of docs/embedding.md as written, against the simulator's demo data", function()
    local f = assert(io.open("docs/embedding.md", "rb"))
    local command = assert(f:read("*a"):match("```sh\n(.-)```"), "no sh block in docs/embedding.md")
    f:close()
    -- the simulator of these specs runs already (seeded instead of started and stopped), and
    -- setup built this runtime's programs
    command = command:gsub("make embed[^\n]*", ""):gsub("make sim%-stop[^\n]*", "")
      :gsub("make sim%-start[^\n]*", "sim/simctl seed sim/seed-demo.json >/dev/null")
      :gsub("build/lua5%.4/", "build/" .. LUA .. "/")
    local out, status = shell.run(command)
    assert.equals(0, status, out)
    assert.matches("thread 1: unassigned demo0002 job %x+", out)
    assert.matches("thread 2: unassigned demo0003 job %x+", out)
  end)

  it("builds a host with docs/embedding.md's line that compiles everything in, outside the checkout", function()
    local command = doc_block("# everything compiled in, from the checkout")
    local tmp = mktemp()
    shell.read(("cp -r src include lua examples %s/"):format(tmp))
    local out, status = shell.run(("cd %s && %s"):format(tmp, command))
    assert.equals(0, status, out)
    -- the program it built needs no file of the copy: the Lua layer is in it
    shell.read(("rm -rf %s/lua %s/src"):format(tmp, tmp))
    local list = sim.make_pairs(2, "dl")
    sim.reset(list)
    out, status = run_copy("admin_console_static", list, NO_LUA_PATH, tmp .. "/admin_console_static")
    assert.equals(0, status, out)
    assert.matches("thread 1: unassigned " .. list[2].instance_id .. " job %x+", out)
    assert.same({}, sim.bindings())
  end)

  it("builds a host with docs/embedding.md's pkg-config line against make install-embed's koophone.pc", function()
    local command = doc_block("# with koophone.pc")
    local tmp = mktemp()
    shell.make(("install-embed LUA=%s PREFIX=%s/prefix"):format(LUA, tmp))
    for _, file in ipairs { "include/koophone.h", "lib/libkoophone.a", "lib/pkgconfig/koophone.pc" } do
      assert.equals(0, select(2, shell.run(("test -f %s/prefix/%s"):format(tmp, file))), file)
    end
    -- nothing of the checkout but the program's source
    shell.read(("mkdir -p %s/host/examples/embed && cp examples/embed/admin_console.c %s/host/examples/embed/")
      :format(tmp, tmp))
    local out, status = shell.run(("cd %s/host && PKG_CONFIG_PATH=%s/prefix/lib/pkgconfig && export PKG_CONFIG_PATH && %s")
      :format(tmp, tmp, command))
    assert.equals(0, status, out)
    local list = sim.make_pairs(2, "pc")
    sim.reset(list)
    out, status = run_copy("admin_console_static", list, NO_LUA_PATH, tmp .. "/host/admin_console_static")
    assert.equals(0, status, out)
    assert.matches("thread 1: unassigned " .. list[1].instance_id .. " job %x+", out)
    assert.same({}, sim.bindings())
  end)

  it("lua2c.lua takes absolute and relative paths in any layout from any directory, with --root", function()
    local tmp = mktemp()
    local lua2c = shell.quote(ROOT .. "/examples/embed/lua2c.lua")
    -- the modules in an installed tree's layout, and lua2c run from elsewhere
    shell.read(("mkdir -p %s/share/lua/5.x %s/cwd && cp -r lua/. %s/share/lua/5.x/"):format(tmp, tmp, tmp))
    local absolute, relative = {}, {}
    for i, path in ipairs(lua_modules()) do
      absolute[i] = shell.quote(tmp .. "/share/lua/5.x/" .. path)
      relative[i] = "../share/lua/5.x/" .. path
    end
    local out, status = shell.run(("cd %s/cwd && %s %s --root %s/share/lua/5.x abs.c %s"):format(tmp, LUA, lua2c, tmp,
      table.concat(absolute, " ")))
    assert.equals(0, status, out)
    out, status = shell.run(("cd %s/cwd && %s %s --root ../share/lua/5.x/ rel.c %s"):format(tmp, LUA, lua2c,
      table.concat(relative, " ")))
    assert.equals(0, status, out)
    -- modules named from the root, not from where the files are: the build tree's file, byte for byte
    for _, name in ipairs { "abs.c", "rel.c" } do
      out, status = shell.run(("cmp %s/cwd/%s %s/koophone_lua.c"):format(tmp, name, DIR))
      assert.equals(0, status, out)
    end
    local c = shell.read(("cat %s/cwd/abs.c"):format(tmp))
    assert.truthy(c:find('{ "koophone.ngx.inflight", "=koophone.ngx.inflight",', 1, true))
    assert.is_nil(c:find(tmp, 1, true))
    -- a file outside the root: one line, exit 2
    out, status = shell.run(("cd %s/cwd && %s %s --root %s/share/lua/5.x x.c %s/lua/koophone.lua"):format(tmp, LUA,
      lua2c, tmp, ROOT))
    assert.equals(2, status)
    assert.equals(("lua2c.lua: %s/lua/koophone.lua: not a .lua file under the root %s/share/lua/5.x (--root DIR)\n")
      :format(ROOT, tmp), out)
  end)

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
