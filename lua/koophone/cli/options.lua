-- koophone.cli.options: every option of the command line, stated once. The one table below makes
-- the usage text (koophone help), parses argv, and is checked against the README's options table
-- by spec/cli_options_table_spec.lua.
local errors = require "koophone.cli.errors"
local number_problem = require("koophone.argerror").number_problem

local usage_error = errors.usage_error

local _M = {}

-- name: the option is --name (old_name: an earlier name, still accepted).
-- kind: "flag" (no value), "optional" (--name or --name=VALUE), else the kind of its value:
--   "string", "integer", "number", "choice" (one of `choices`), "shard" (i/n), "char" (a string;
--   "tab" and \t are a tab).
-- arg: the value's placeholder in the usage. default: what applies without the option, as the
--   usage and the README say it; a number is the value parse gives the option when it is not
--   given, so that the CLI passes it to the library rather than rely on the library's own.
-- range: { min, max } of a number (max math.huge: no upper bound), checked here and only here:
--   each is within what the library accepts (spec/cli_options_table_spec.lua).
-- help: the usage's text. commands: the commands that take the option (without it: unassign
--   only); parse refuses it for any other, which would ignore it.
local READS = { unassign = true, plan = true, verify = true } -- the input and the output
local ALL = { unassign = true, plan = true, verify = true, task = true } -- the connection

_M.list = {
  { name = "input", commands = READS, kind = "string", arg = "FILE|-", default = "stdin",
    help = 'CSV with a "user_id,instance_id" header, or JSON Lines with one '
           .. '{"user_id":...,"instance_id":...} per line' },
  { name = "format", commands = READS, kind = "choice", choices = { "csv", "jsonl" },
    default = "jsonl for *.jsonl / *.json, else csv" },
  { name = "separator", commands = READS, kind = "char", arg = "C", default = ",",
    help = 'the CSV input\'s field separator, one byte; "tab" or \\t for TSV' },
  { name = "batch-size", commands = READS, kind = "integer", arg = "N", default = 100, range = { 1, 100000 },
    help = "pairs per request" },
  { name = "concurrency", kind = "integer", arg = "N", default = 4, range = { 1, 64 },
    help = "requests at once" },
  { name = "rate", kind = "number", arg = "R", default = "unlimited", range = { 0.001, 100000 },
    help = "requests per second" },
  { name = "journal", kind = "string", arg = "FILE", default = "none", help = "write-ahead journal" },
  { name = "resume", kind = "flag", help = "go on from the --journal (needs it)" },
  { name = "shard", commands = READS, kind = "shard", arg = "i/n", default = "all", help = "only shard i of n (0 <= i < n)" },
  { name = "dry-run", kind = "flag", help = "print the batches; nothing sent, no token needed" },
  { name = "strict", kind = "flag", help = "not_bound fails the run (exit 1)" },
  { name = "skip-unbound", kind = "flag",
    help = "read the bindings first (ListInstances); send only the pairs read bound" },
  { name = "verify", kind = "flag", help = "read every pair after the run; exit 1 if some are still bound" },
  { name = "output-format", old_name = "output", commands = READS, kind = "choice", choices = { "jsonl", "csv", "summary" },
    default = "summary",
    help = "one JSON object per row, a CSV row per row (with a header), or a summary (--output is "
           .. "the old name of this option)" },
  { name = "summary-format", kind = "choice", choices = { "text", "json" }, default = "text",
    help = "the summary as a table, or as one JSON object (with --output-format jsonl or csv, "
           .. "the JSON summary is the last line of stderr)" },
  { name = "output-file", commands = READS, kind = "string", arg = "FILE", default = "stdout",
    help = "write the results to FILE instead of stdout" },
  { name = "max-attempts", kind = "integer", arg = "N", default = 3, range = { 1, math.huge },
    help = "tries per request" },
  { name = "ambiguous-attempts", kind = "integer", arg = "N", default = 0, range = { 0, math.huge },
    help = "resends after an answer was lost (the request may have been applied; a resend of an "
           .. "applied pair is answered 2210 and the pair counts as assumed_unassigned)" },
  { name = "max-bisect-requests", kind = "integer", arg = "N", default = "none", range = { 0, math.huge },
    help = "cap on the requests that bisect refused batches, for the whole run" },
  { name = "wait", kind = "optional", arg = "SECONDS", default = "no wait; 600", range = { 0.001, 86400 },
    help = "then wait for the jobs (data wipes)" },
  { name = "log", kind = "string", arg = "FILE", default = "none",
    help = "every request as a JSON line, written as it ends" },
  { name = "verbose", kind = "flag", help = "one line per request on stderr" },
  { name = "yes", kind = "flag", help = "no confirmation (asked only when stdin is a terminal)" },
  { name = "endpoint", commands = ALL, kind = "string", arg = "URL", default = "$KOOPHONE_ENDPOINT",
    help = "http:// or https:// URL" },
  { name = "cafile", commands = ALL, kind = "string", arg = "FILE", default = "the system's",
    help = "CA certificates (PEM)" },
  { name = "timeout", commands = ALL, kind = "number", arg = "S", default = 30, range = { 0.001, 86400 },
    help = "seconds per request" },
  { name = "token-file", commands = ALL, kind = "string", arg = "FILE", default = "$KOOPHONE_TOKEN",
    help = "the token; never on the command line" },
  { name = "password-file", commands = ALL, kind = "string", arg = "FILE",
    default = "$KOOPHONE_IAM_PASSWORD", help = "the IAM password" },
}

local BY_NAME = {} -- by name and old name
_M.by_name = BY_NAME
for _, opt in ipairs(_M.list) do
  opt.commands = opt.commands or { unassign = true }
  BY_NAME[opt.name] = opt
  if opt.old_name then BY_NAME[opt.old_name] = opt end
end

-- ------------------------------------------------------------------ usage

local function number_text(n)
  return ("%.14g"):format(n)
end

-- "1..100000", "1.." (no upper bound)
function _M.range_text(range)
  return number_text(range[1]) .. ".." .. (range[2] == math.huge and "" or number_text(range[2]))
end

-- The option as the usage shows it: "--batch-size N", "--format csv|jsonl", "--wait[=SECONDS]".
function _M.synopsis(opt)
  if opt.kind == "flag" then return "--" .. opt.name end
  if opt.kind == "optional" then return ("--%s[=%s]"):format(opt.name, opt.arg) end
  return ("--%s %s"):format(opt.name, opt.arg or table.concat(opt.choices, "|"))
end

local WIDTH, INDENT = 95, 27

-- text in lines of at most WIDTH columns: the first after `left` (padded to INDENT, or two spaces
-- after it), the others indented; with `indent`, one space after `left` and the others indented
-- by `indent`. A \1 in text is a space that does not break the line.
local function wrap(left, text, indent)
  local lines, line = {}, indent and left .. " "
                          or (#left < INDENT - 2 and left .. (" "):rep(INDENT - #left) or left .. "  ")
  indent = indent or INDENT
  local fresh = true -- nothing on this line after its left part yet
  for word in text:gmatch("%S+") do
    if not fresh and #line + 1 + #word > WIDTH then
      lines[#lines + 1] = line
      line, fresh = (" "):rep(indent), true
    end
    line = line .. (fresh and "" or " ") .. word
    fresh = false
  end
  lines[#lines + 1] = line
  return (table.concat(lines, "\n"):gsub("\1", " ")) .. "\n"
end

-- The usage line of one option: its help, range and [default].
local function usage_line(opt)
  local text = opt.help or ""
  if opt.range then text = text .. ", " .. _M.range_text(opt.range) end
  if opt.default ~= nil then
    text = text .. (text == "" and "" or " ") .. "[" .. tostring(opt.default) .. "]"
  end
  return wrap("  " .. _M.synopsis(opt), text)
end

local TRAILER = [==[
credentials, the first that is set: the token; AK/SK from $HUAWEICLOUD_SDK_AK, _SK and
_PROJECT_ID (+ _SECURITY_TOKEN), signing each request; IAM tokens from a password login:
$KOOPHONE_IAM_DOMAIN, _USER, _PASSWORD (or --password-file), _PROJECT (name) or
_PROJECT_ID, _ENDPOINT [https://iam.myhuaweicloud.com].

`plan` reads the input's bindings (ListInstances) and says what a run would send and skip;
`verify` reads them after a run and names the pairs still bound (exit 1). Nothing is sent.
`task` prints the jobs of the given tasks as JSON Lines (task_id, job_id, status, state,
error_code, error_msg, execute_msg). Results go to stdout (or --output-file), progress and
messages to stderr. Failed pairs are grouped by error code on stderr.
Exit status: 0 every pair unassigned, assumed_unassigned, not_bound or duplicate;
1 some pair failed, unconfirmed, denied or invalid (or not_bound with --strict), (--wait) a
job failed, (--verify, `verify`) a pair still bound or not read, (`task`) a task could not be
read other than "not found", or the confirmation was not answered yes; 2 usage error (also
`koophone` alone), unreadable file, two of the input, output, log and journal are one file, or a
journal that cannot be used or written before anything is sent (nothing sent); 74 the output or
the log could not be written, or the journal after requests were sent (the run stopped);
130 / 143 stopped by SIGINT / SIGTERM (the resume command is printed on stderr).
]==]

-- The options of `plan` and `verify` for their usage line: "[--input FILE|-] ... [connection
-- options]".
local function plan_synopsis()
  local words = {}
  for _, opt in ipairs(_M.list) do
    if opt.commands.plan and not opt.commands.task then
      words[#words + 1] = "[" .. _M.synopsis(opt):gsub(" ", "\1") .. "]"
    end
  end
  words[#words + 1] = "[connection\1options]"
  return table.concat(words, " ")
end

-- The usage text, made from the table.
function _M.usage()
  local out = {
    "usage: koophone unassign [options] [--input FILE|-]\n",
    "       koophone task [connection options] TASK_ID...\n",
    wrap("       koophone plan|verify", plan_synopsis(), 16),
    "       koophone --version | help | unassign --help | task --help\n",
    "\nunassign options (default in brackets):\n",
  }
  for _, opt in ipairs(_M.list) do
    if not opt.commands.task then out[#out + 1] = usage_line(opt) end
  end
  out[#out + 1] = "connection options (also for plan, verify and task):\n"
  for _, opt in ipairs(_M.list) do
    if opt.commands.task then out[#out + 1] = usage_line(opt) end
  end
  out[#out + 1] = TRAILER
  return table.concat(out)
end

-- ------------------------------------------------------------------ parsing

-- The value of option opt as given (text), converted and checked; raises a usage error.
local function convert(opt, text)
  local kind = opt.kind
  if kind == "integer" or kind == "number" or kind == "optional" then
    local v = tonumber(text)
    if not v then usage_error(("--%s: expected a number, got %s"):format(opt.name, text)) end
    local problem = opt.range and number_problem(v, opt.range[1], opt.range[2], kind == "integer")
    if problem then usage_error(("--%s: %s"):format(opt.name, problem)) end
    return v
  elseif kind == "choice" then
    for _, c in ipairs(opt.choices) do
      if text == c then return text end
    end
    usage_error(("--%s: %s"):format(opt.name, table.concat(opt.choices, " or ")))
  elseif kind == "shard" then
    local i, n = text:match("^(%d+)/(%d+)$")
    i, n = tonumber(i), tonumber(n)
    if not i or n < 1 or i >= n then usage_error("--shard: expected i/n with 0 <= i < n") end
    return { index = i, count = n }
  elseif kind == "char" and (text == "tab" or text == "\\t") then
    return "\t"
  end
  return text
end

-- parse(argv) -> o: argv[1] the command ("unassign" or "task"); o.command, o.ids (task's ids) and
-- o[name] for each option given: true for a flag, else its value (converted: a number, a
-- { index, count } shard; --wait alone: true), and o.texts[name] the value as given; o[name] is
-- the default of an option not given whose default is a number. Raises a usage error.
function _M.parse(argv)
  local o, i = { command = argv[1], ids = {}, texts = {} }, 2
  local given = {} -- text of each option as given, for the conversion after the loop
  while argv[i] do
    local name, value = argv[i]:match("^%-%-([%w-]+)=(.*)$")
    name = name or argv[i]:match("^%-%-([%w-]+)$")
    local opt = BY_NAME[name]
    if o.command == "task" and not name then
      o.ids[#o.ids + 1] = argv[i]
    elseif opt and not opt.commands[o.command] then
      usage_error(("--%s is no option of %s"):format(name, o.command))
    elseif name == "token" then
      usage_error("--token is not accepted: argv is visible to every user; "
                  .. "use KOOPHONE_TOKEN or --token-file")
    elseif opt and opt.kind == "optional" then
      given[#given + 1] = { opt, name, value or true }
    elseif opt and opt.kind == "flag" and not value then
      given[#given + 1] = { opt, name, true }
    elseif opt and opt.kind ~= "flag" then
      if not value then i = i + 1; value = argv[i] end
      if value == nil then usage_error("--" .. name .. " needs a value") end
      given[#given + 1] = { opt, name, value }
    else
      usage_error("unknown argument " .. argv[i])
    end
    i = i + 1
  end
  local by = {} -- the name each option was given by (its name or its old name)
  for _, g in ipairs(given) do
    local opt, name, value = g[1], g[2], g[3]
    if by[opt.name] and by[opt.name] ~= name then
      usage_error(("--%s is the old name of --%s: give one"):format(opt.old_name, opt.name))
    end
    by[opt.name] = name
    o[opt.name] = value == true and true or convert(opt, value)
    o.texts[opt.name] = value ~= true and value or nil
  end
  for _, opt in ipairs(_M.list) do
    if o[opt.name] == nil and type(opt.default) == "number" then o[opt.name] = opt.default end
  end
  return o
end

-- The shard as the usage writes it: "2/4".
function _M.shard_text(shard)
  return shard and ("%d/%d"):format(shard.index, shard.count)
end

return _M
