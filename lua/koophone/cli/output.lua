-- koophone.cli.output: the results on stdout (or --output-file) and how a run that stopped early
-- ends. stdout is written in blocks (each answered batch's lines) and flushed each time, so that
-- a failed write (a full disk, a closed pipe: SIGPIPE is ignored) is seen at once. It raises the
-- interruption flag: the run stops as on SIGINT, and the journal stays true.
local koophone = require "koophone"
local cjson = require("cjson.safe").new()
local fail = require("koophone.cli.errors").fail
local open_file = require("koophone.eventlog").open_file

local _M = {}

local EXIT_OUTPUT = 74 -- EX_IOERR of sysexits.h
local EXIT_SIGNAL = { SIGINT = 130, SIGTERM = 143 }

-- out: stdout or --output-file; out_failed: it failed, nothing more goes to it; write_error: why
-- the run stopped, the first file that failed
local lines, out, out_failed, write_error = {}, io.stdout, false, nil

function _M.flush()
  if out_failed or #lines == 0 then return end
  local ok, err = out:write(table.concat(lines))
  if ok then ok, err = out:flush() end
  lines = {}
  if not ok then
    out_failed = true
    _M.failed("cannot write the output: " .. tostring(err))
  end
end

-- A file of the run (the output, the log, the journal) could not be written: the run stops as
-- on SIGINT, and stopped() says why (the first failure) with status 74.
function _M.failed(message)
  write_error = write_error or message
  koophone.interrupt()
end

function _M.emit(line)
  lines[#lines + 1] = line
  if #lines >= 1000 then _M.flush() end
end

-- t as one JSON line.
function _M.json_line(t)
  return cjson.encode(t) .. "\n"
end

-- The exit status of a run that stopped early (a signal, or a file of the run failing), else nil;
-- as stopped() will return it, without saying anything (for the summary).
function _M.stop_status(why)
  return EXIT_SIGNAL[why or ""] or (write_error and EXIT_OUTPUT) or nil
end

-- When the run stopped early (a signal, or a file of the run failing): says so on stderr and returns
-- the exit status; else nil. why: the interruption (koophone.interrupted() or the report's).
function _M.stopped(why)
  if EXIT_SIGNAL[why or ""] then
    io.stderr:write("koophone: stopped by ", why, "\n")
    return EXIT_SIGNAL[why]
  end
  if write_error then
    io.stderr:write("koophone: stopped: ", write_error, "\n")
    return EXIT_OUTPUT
  end
end

-- s with every byte that is not part of valid UTF-8 written as the text \xNN, so that every
-- output line is UTF-8 JSON whatever the input held (lua-cjson copies such bytes raw).
function _M.utf8_escaped(s)
  if type(s) ~= "string" or not s:find("[\128-\255]") then return s end
  local parts, i, n = {}, 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = c < 0x80 and 1 or c >= 0xC2 and c <= 0xDF and 2 or c >= 0xE0 and c <= 0xEF and 3
                or c >= 0xF0 and c <= 0xF4 and 4 or 0
    local ok = len > 0 and i + len - 1 <= n
    for k = i + 1, ok and i + len - 1 or 0 do
      local b = s:byte(k)
      if b < 0x80 or b > 0xBF then ok = false end
    end
    local c2 = ok and len > 2 and s:byte(i + 1) -- overlong forms and surrogates
    if c2 and (c == 0xE0 and c2 < 0xA0 or c == 0xED and c2 > 0x9F or c == 0xF0 and c2 < 0x90
               or c == 0xF4 and c2 > 0x8F) then
      ok = false
    end
    if ok then
      parts[#parts + 1] = s:sub(i, i + len - 1)
      i = i + len
    else
      parts[#parts + 1] = ("\\x%02X"):format(c)
      i = i + 1
    end
  end
  return table.concat(parts)
end

local esc = _M.utf8_escaped

-- The fields of a result row, in the order of the CSV output's columns.
_M.FIELDS = { "row", "user_id", "instance_id", "outcome", "task_id", "job_id", "request_id", "code",
              "reason", "resumed", "maybe_applied", "job_state", "job_code", "job_message" }

-- A row of unassign_all (or of the input, in a dry run) as a table of FIELDS.
local function result_record(r)
  return {
    row = r.row, user_id = esc(r.user_id), instance_id = esc(r.instance_id),
    outcome = r.outcome, task_id = esc(r.task_id), job_id = esc(r.job_id),
    request_id = r.request_id,
    code = r.err and esc(r.err.code),
    reason = esc(r.reason or (r.err and r.err.message)), resumed = r.resumed,
    maybe_applied = r.maybe_applied, verified = r.verified,
    job_state = r.job_state, job_code = r.job_error and esc(r.job_error.code),
    job_message = r.job_error and esc(r.job_error.message),
  }
end

-- A row of unassign_all (or of the input, in a dry run) as its JSON line.
function _M.result_json(r)
  local t = result_record(r)
  local json = cjson.encode(t)
  if not json then -- an id JSON cannot hold (1e400 decodes to inf): its text then
    t.user_id, t.instance_id = esc(tostring(r.user_id)), esc(tostring(r.instance_id))
    json = assert(cjson.encode(t))
  end
  return json .. "\n"
end

-- v as a CSV field (RFC 4180): quoted when it holds a comma, a quote, CR or LF, its quotes
-- doubled. A text a spreadsheet would take for a formula (it starts with =, +, -, @, a tab or CR;
-- the ids, codes and messages come from the input and the server) gets a ' before it, as OWASP's
-- advice on CSV injection says: the cell then shows the text instead of computing it. One that
-- starts with ' gets one too, so that removing one leading ' gives every value back.
local function csv_field(v)
  if v == nil then return "" end
  v = type(v) == "number" and ("%.14g"):format(v) or tostring(v)
  if v:find("^[=+%-@\t\r']") then v = "'" .. v end
  if v:find('[,"\r\n]') then v = '"' .. v:gsub('"', '""') .. '"' end
  return v
end

-- The CSV line of values[1..n] (nil: an empty field); CRLF ends it, as RFC 4180 says.
local function csv_line(values, n)
  local fields = {}
  for i = 1, n do fields[i] = csv_field(values[i]) end
  return table.concat(fields, ",") .. "\r\n"
end

-- The CSV output's header line: the names of FIELDS.
function _M.csv_header()
  return csv_line(_M.FIELDS, #_M.FIELDS)
end

-- A row of unassign_all as its CSV line.
function _M.result_csv(r)
  local t, values = result_record(r), {}
  for i, name in ipairs(_M.FIELDS) do values[i] = t[name] end
  return csv_line(values, #_M.FIELDS)
end

-- Fails unless --output-file can be written, without changing it (an existing file is opened to
-- append; a new one is made and removed again): checked before the confirmation, which must not
-- truncate what an earlier run wrote.
function _M.check(o)
  local path = o["output-file"]
  if not path then return end
  local existed = io.open(path, "rb")
  if existed then existed:close() end
  local f, err = open_file(path, "ab")
  if not f then fail("cannot write --output-file: " .. tostring(err)) end
  f:close()
  if not existed then os.remove(path) end
end

-- --output-file becomes the output (truncated; created 0600).
function _M.open(o)
  if not o["output-file"] then return end
  local f, err = open_file(o["output-file"], "wb")
  if not f then fail("cannot write --output-file: " .. tostring(err)) end
  out = f
end

return _M
