-- koophone.cli.files: the files of `koophone unassign`. --output-file, --log and --journal are
-- never one file, nor the input or a file of the credentials (an output that truncates the
-- journal makes a resume resend every pair; one that truncates the input loses it), and an input
-- that is not a regular file (a pipe, a FIFO, /dev/stdin, <(...)) is read once: a counting pass
-- would drain it.
local core = require "koophone.core"
local fail = require("koophone.cli.errors").fail

local _M = {}

local STDIN = "/dev/stdin" -- the input when it is stdin: `< pairs.csv` is a file too

-- The files of the run, in the order the message names them: { option, path, written }.
local function files(o)
  local input = o.input
  if not input or input == "-" then input = STDIN end
  return { { "input", input }, { "token-file", o["token-file"] },
           { "password-file", o["password-file"] }, { "cafile", o.cafile },
           { "journal", o.journal, true }, { "output-file", o["output-file"], true },
           { "log", o.log, true } }
end

-- Fails (exit 2, before anything is read, truncated or sent) when a file the run writes is one
-- of its other files, also through a symlink or a hard link. Only regular files are compared
-- (/dev/null may be the output and the log), and names that do not exist yet (both options
-- would create one file).
function _M.check_distinct(o)
  local seen = {}
  for _, f in ipairs(files(o)) do
    local id, regular
    if f[2] then id, regular = core.file_id(f[2]) end
    if not id and f[2] then id, regular = "name " .. f[2], true end
    if regular then
      local other = seen[id]
      if other and (other[3] or f[3]) then
        fail(("--%s and --%s are the same file (%s%s)"):format(other[1], f[1],
             other[2] == STDIN and "stdin, " or "", f[2]))
      end
      seen[id] = other or f
    end
  end
end

-- read_once(o) -> whether the input can be read only once (stdin, or a path that is not a regular
-- file: no counting pass, no digest), and whether it is stdin (also as /dev/stdin).
function _M.read_once(o)
  local path = o.input
  if not path or path == "-" then return true, true end
  local id, regular = core.file_id(path)
  return id ~= nil and not regular, id ~= nil and id == core.file_id(STDIN)
end

return _M
