-- koophone.eventlog: the CLI's request log (bin/koophone --log FILE, --verbose).
--
--   local log = eventlog.open(path, verbose_stream, on_error)
--        path or nil, stream (io.stderr) or nil; on_error(message): called once, on the first
--        line the file did not take
--   log:start{ endpoint = ..., input = ..., ... }     -- {"event":"start", ...}
--   client options: on_event = log.on_event           -- {"event":"request", <the event>}
--   log:finish{ counts = ..., total = ..., ... }      -- {"event":"end", ...}
--
-- One JSON line per request, written and flushed as the request ends, so the run's request ids,
-- statuses, task ids and timings are on disk even when stdout is lost or the process is killed
-- (a line is one write: a kill leaves every earlier line whole). The file is appended to, so a
-- resumed run adds to the log of the first; a new one is created 0600. Events hold no secret and
-- no pair id (docs/events.md).
local cjson = require("cjson.safe").new()
local core = require "koophone.core"

local _M = {}

local Log = {}
Log.__index = Log

local function now_utc()
  return os.date("!%Y-%m-%dT%H:%M:%SZ")
end

-- Writes one JSON line of `fields` with event = kind. A write error closes the file log (a later
-- line would leave a hole in it) and is told to on_error, once: the log is then missing lines,
-- and the last one may be torn.
function Log:write(kind, fields)
  if not self.file then return end
  local t = { event = kind, time = now_utc() }
  for k, v in pairs(fields) do t[k] = v end
  local ok, err = self.file:write(cjson.encode(t), "\n")
  if ok then ok, err = self.file:flush() end
  if not ok then
    self.file:close()
    self.file = nil
    if self.on_error then self.on_error(("%s: %s"):format(self.path, tostring(err))) end
  end
end

-- LuaJIT's compiled file:write and file:flush return true whatever the C library said: a log
-- that filled up after the first few dozen lines went unnoticed. Never compiled, they tell.
if rawget(_G, "jit") then rawget(_G, "jit").off(Log.write) end

-- The --verbose line of an event.
local function verbose_line(ev)
  return ("koophone: %s %s status=%d attempt=%d pairs=%d %s%.3fs%s%s\n"):format(
    ev.call, ev.request_id, ev.status, ev.attempt, ev.pairs,
    ev.task_id and ("task=" .. ev.task_id .. " ") or "", ev.duration,
    ev.code and (" " .. ev.code) or "", ev.kind and (" (" .. ev.kind .. ")") or "")
end

-- open_file(path, mode) -> file, or nil, err: io.open(path, mode), except that a file it creates
-- is 0600 whatever the umask (a log or a run's results carry a tenant's ids and request ids); a
-- file that exists keeps its mode.
function _M.open_file(path, mode)
  local made, err = core.private_file(path)
  if made == nil then return nil, err end
  return io.open(path, mode)
end

-- open(path, verbose, on_error) -> log, or nil and the error; path nil: --verbose only.
function _M.open(path, verbose, on_error)
  local self = setmetatable({ verbose = verbose, path = path, on_error = on_error }, Log)
  if path then
    local f, err = _M.open_file(path, "a")
    if not f then return nil, err end
    self.file = f
  end
  self.on_event = function(ev)
    self:write("request", ev)
    if self.verbose then self.verbose:write(verbose_line(ev)) end
  end
  return self
end

function Log:start(fields) self:write("start", fields) end

function Log:finish(fields)
  self:write("end", fields)
  if self.file then self.file:close() end
  self.file = nil
end

return _M
