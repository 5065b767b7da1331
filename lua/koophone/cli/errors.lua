-- koophone.cli.errors: how the command line ends on a usage or environment error: one line on
-- stderr, exit status 2, before anything is sent.
local _M = {}

-- A message never shows where in the Lua files it was raised.
function _M.fail(msg)
  io.stderr:write("koophone: ", (tostring(msg):gsub("[^%s:]*%.lua:%d+: ", "")), "\n")
  os.exit(2)
end

function _M.usage_error(msg)
  _M.fail(msg .. " (see 'koophone help')")
end

-- An option error raised by the library ("... bad argument #3 (opts.batch_size): expected ..."),
-- said with the option's name on this command line.
function _M.option_error(msg)
  msg = tostring(msg)
  local name, what = msg:match("%(opts%.[%w_%.]-([%w_]+)[^)%w_]*%): (.*)$")
  if name then _M.usage_error(("--%s: %s"):format(name:gsub("_", "-"), what)) end
  _M.usage_error(msg)
end

return _M
