-- Test helper: run shell commands from specs the same way on Lua 5.1 .. 5.4 and LuaJIT.
local _M = {}

-- A make invoked by a spec builds the ordinary tree: it must not inherit the command-line
-- variables of the make that runs the specs (BUILD=build/asan, SAN=..., see mk/hardening.mk).
-- make exports command-line variables to its recipes' environment too, so they go as well: with
-- SAN, CC and OPT left in, the LuaJIT core for nginx was built with ASan whenever it was stale.
local MAKE = "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u SAN -u CC -u OPT -u BUILD -u BUSTED "
             .. "-u SPECS make -s --no-print-directory"

-- Runs cmd; returns its output (stdout and stderr) and its exit status. A sanitizer runtime
-- preloaded into the spec runner (make asan) is meant for the interpreter, not for the tools,
-- servers and programs the specs start.
function _M.run(cmd)
  local f = assert(io.popen("unset LD_PRELOAD; (" .. cmd .. ") 2>&1; echo \"<exit $?>\""))
  local out = f:read("*a")
  f:close()
  local body, status = out:match("^(.-)<exit (%d+)>%s*$")
  return body, tonumber(status)
end

-- Output of cmd without trailing white space; raises when it fails.
function _M.read(cmd)
  local out, status = _M.run(cmd)
  assert(status == 0, cmd .. " failed: " .. out)
  return (out:gsub("%s+$", ""))
end

-- make TARGET... in the repository; raises with make's output when it fails.
function _M.make(args)
  return _M.read(MAKE .. " " .. args)
end

-- 'value' for a shell command line.
function _M.quote(value)
  return "'" .. tostring(value):gsub("'", "'\\''") .. "'"
end

return _M
