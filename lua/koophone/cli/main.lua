-- koophone.cli.main: the command line's dispatch (bin/koophone is its launcher): help,
-- --version, `unassign` and `task`. Results go to stdout, progress and messages to stderr.
local koophone = require "koophone"
local errors = require "koophone.cli.errors"
local options = require "koophone.cli.options"

local _M = {}

local function main(argv)
  local cmd = argv[1]
  if cmd == "help" or cmd == "--help" or cmd == "-h" then
    io.stdout:write(options.usage())
    return 0
  end
  if cmd == "--version" or cmd == "version" then
    io.stdout:write(("koophone %s (libcurl %s)\n"):format(koophone._VERSION,
                                                          require("koophone.core").curl_version))
    return 0
  end
  if cmd == nil then -- as git: the usage on stderr, a usage error's status
    io.stderr:write(options.usage())
    return 2
  end
  if cmd ~= "unassign" and cmd ~= "task" then errors.usage_error("unknown command " .. tostring(cmd)) end
  for _, a in ipairs(argv) do
    if a == "--help" or a == "-h" then -- koophone unassign --help, koophone task --help
      io.stdout:write(options.usage())
      return 0
    end
  end
  koophone.catch_signals()
  local o = options.parse(argv)
  require("koophone.cli.connection").check_endpoint(o)
  return require("koophone.cli." .. cmd).run(o, argv)
end

-- run(argv) -> exit status. argv: the command line (arg; argv[0] the program, for the resume
-- command). A usage error found while reading (the input) ends in one line too; anything else
-- is a bug: its traceback on stderr, status 70.
function _M.run(argv)
  local ok, rc = xpcall(function() return main(argv) end, function(e)
    if type(e) == "table" and e.usage then return e end
    return debug.traceback(tostring(e), 2)
  end)
  if ok then return rc end
  if type(rc) == "table" then errors.fail(rc.usage) end
  io.stderr:write("koophone: internal error: ", tostring(rc), "\n")
  return 70 -- EX_SOFTWARE
end

return _M
