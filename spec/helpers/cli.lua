-- Test helper: bin/koophone as a separate process, in a scratch directory of its own per spec
-- file (cli.new()), on the runtime and build the specs run with.
local cjson = require "cjson.safe"
local socket = require "socket"
local sim = require "helpers.sim"

local _M = {}

local LUA = os.getenv("KOOPHONE_LUA") or "lua5.4"
local BUILD = os.getenv("KOOPHONE_BUILD") or "build/lua5.4"
-- Under make asan the CLI inherits the sanitizer runtime. Its leak check at exit is left to the
-- spec runner's own process: LeakSanitizer's tracer at times crashes (SIGSEGV in its
-- stop-the-world thread) in a short-lived child that exits while libcurl's resolver threads wind
-- down, which turned a correct run into exit status 1.
local NO_CHILD_LEAK_CHECK = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true)
  and "ASAN_OPTIONS=\"$ASAN_OPTIONS:detect_leaks=0\" " or ""
-- stdin is not the terminal the specs may run from (it would ask for a confirmation); a later
-- "< file" in the arguments wins.
_M.CMD = ("%sLUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' KOOPHONE_TOKEN= %s bin/koophone </dev/null")
         :format(NO_CHILD_LEAK_CHECK, BUILD, LUA)

function _M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

function _M.exit_code(ok, how, code)
  if type(ok) == "number" then return ok / 256 end -- Lua 5.1: the raw wait status
  return code
end

function _M.json_lines(s)
  local out = {}
  for line in s:gmatch("[^\n]+") do out[#out + 1] = assert(cjson.decode(line), line) end
  return out
end

-- The records of a journal file, in order.
function _M.journal_records(path)
  return _M.json_lines(_M.read_file(path))
end

-- request_id -> true for each `send` record of a journal with neither a `done` nor a `clear`
-- after it: the requests a resume treats as maybe applied.
function _M.open_sends(path)
  local open = {}
  for _, r in ipairs(_M.journal_records(path)) do
    if r.type == "send" then open[r.request_id] = true
    elseif r.type == "done" or r.type == "clear" then open[r.request_id] = nil end
  end
  return open
end

-- Polls test() every 50 ms until it returns a true value, for at most `seconds` (30).
function _M.wait_for(what, test, seconds)
  for _ = 1, (seconds or 30) * 20 do
    local v = test()
    if v then return v end
    socket.sleep(0.05)
  end
  error("gave up waiting for " .. what)
end

-- Whether process pid still runs.
function _M.alive(pid)
  return _M.exit_code(os.execute("kill -0 " .. pid .. " 2>/dev/null")) == 0
end

-- A scratch directory (ctx.dir) with the simulator's token in a file, ctx.endpoint the
-- arguments that point the CLI at the simulator with it, and the functions that use them.
function _M.new()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  sim.write_file(dir .. "/token", sim.token .. "\n")
  local ctx = { dir = dir, endpoint = " --endpoint " .. sim.http_url .. " --token-file " .. dir .. "/token" }

  -- run(args [, redirect]) -> exit status, stdout, stderr; redirect replaces ">dir/out".
  function ctx.run(args, redirect)
    local rc = _M.exit_code(os.execute(("%s %s %s 2>%s/err"):format(
      _M.CMD, args, redirect or (">" .. dir .. "/out"), dir)))
    return rc, _M.read_file(dir .. "/out"), _M.read_file(dir .. "/err")
  end

  -- start(args [, script]) -> pid of the CLI (or of another Lua script, with the same paths)
  -- running in the background; ctx.status() then reads its exit status once it ended (nil
  -- before), ctx.output() its stdout and stderr.
  function ctx.start(args, script)
    os.remove(dir .. "/rc")
    local cmd = script and _M.CMD:gsub("bin/koophone", script, 1) or _M.CMD
    local p = io.popen(("(%s %s >%s/out 2>%s/err & echo $! >%s/pid; wait $!; echo $? >%s/rc) "
                        .. ">/dev/null 2>&1 & sleep 0.01; while [ ! -s %s/pid ]; do sleep 0.01; done; cat %s/pid")
                       :format(cmd, args, dir, dir, dir, dir, dir, dir))
    local pid = tonumber(p:read("*l"))
    p:close()
    os.remove(dir .. "/pid")
    return assert(pid, "no pid")
  end

  -- pty(args [, answer]) -> exit status, what the terminal showed: the CLI in a pseudo-terminal
  -- of 80 columns (util-linux script) as its stdin, stdout and stderr; answer is typed into it.
  function ctx.pty(args, answer)
    -- under make asan only the CLI gets the sanitizer runtime: `script`, `sh` and `stty` would
    -- end with LeakSanitizer's report and exit status 1
    local preload = os.getenv("LD_PRELOAD")
    sim.write_file(dir .. "/pty.sh", ("stty cols 80; %s%s %s\n"):format(
      preload and ("LD_PRELOAD='%s' "):format(preload) or "", (_M.CMD:gsub(" </dev/null$", "")), args))
    local rc = _M.exit_code(os.execute(("printf '%%s' '%s' | env -u LD_PRELOAD script -qfec 'sh %s/pty.sh' /dev/null >%s/pty"):format(
      answer or "", dir, dir)))
    return rc, _M.read_file(dir .. "/pty")
  end

  function ctx.status()
    return tonumber((_M.read_file(dir .. "/rc"):match("%d+")))
  end

  function ctx.output()
    return _M.read_file(dir .. "/out"), _M.read_file(dir .. "/err")
  end

  -- csv(list [, extra lines [, name]]) -> path of a CSV file with the header and the pairs
  function ctx.csv(list, extra, name)
    local lines = { "user_id,instance_id" }
    for _, p in ipairs(list) do lines[#lines + 1] = p.user_id .. "," .. p.instance_id end
    for _, l in ipairs(extra or {}) do lines[#lines + 1] = l end
    local path = dir .. "/" .. (name or "in.csv")
    local f = assert(io.open(path, "wb"))
    f:write(table.concat(lines, "\n") .. "\n")
    f:close()
    return path
  end

  function ctx.cleanup()
    os.execute("rm -rf " .. dir)
  end

  return ctx
end

return _M
