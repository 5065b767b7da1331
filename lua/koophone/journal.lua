-- Write-ahead journal of a bulk run: one JSON object per line. This module writes the records and
-- reads them back, so that writer and reader cannot drift.
--
--   {"type":"run","version":1,"time":1732770000,"shard":"0/2",
--    "input":{"name":"pairs.csv","size":123,"digest":"fnv1a64:…"}}      a run (re)started; a
--        journal starts with one, "type" first; a resume refuses a file that does not
--   {"type":"send","request_id":"…","pairs":[["u1","i1"],["u2","i2",true],…]}
--        written BEFORE the request goes out (every attempt, every bisection half); a third
--        element true: this pair may have been unassigned by an earlier request whose answer
--        was lost
--   {"type":"done","request_id":"…","user_id":"u1","instance_id":"i1","outcome":"unassigned",
--    "task_id":"…","job_id":"…","code":"…","message":"…","maybe_applied":true}
--        one per pair after its request ended; `failed` (and any outcome not in FINAL) is not
--        final; `maybe_applied`: its request may have unassigned it all the same
--   {"type":"clear","request_id":"…"}   that request ended and certainly changed nothing
--   {"type":"job","task_id":"…","job_id":"…","state":"failed","status":3,"code":"…","message":"…"}
--        a job that became final while the run waited for it (koophone.bulk_wait); a resume
--        takes its state from here instead of asking GetTask again
--
-- Resuming reads it back: a pair with a final `done` is not sent again; a pair is "tainted" (a
-- 2210 for it then means assumed_unassigned, never not_bound) when a `send` or `done` record marks
-- it, or when it was in a request that never ended (no `clear`, not every pair `done`). A damaged
-- line in the middle may have been any `send`: then every pair not final is tainted. A line torn
-- by a crash (the last one, without its newline) is dropped.
--
-- The journal file and its name (a "<journal>.lock" file beside it, removed at the end) are
-- locked while a run uses it (core.jfile: flock, released when the process dies): a second run
-- on it is refused, also after the journal was moved away. A new journal is created 0600. Records are buffered and written with one write: the bulk
-- layer writes the outcomes of each request when it ends (they survive the death of the process)
-- and brings the file to the disk (fsync) before each round's first request leaves (with the
-- round's sends and the previous round's outcomes), before waiting for a retry and at the end,
-- so a power cut loses at most the round in flight, whose pairs a resume treats as maybe applied.
--
-- Memory of a resume: per pair only the offset of its final line (in a core.pairset, ~25 bytes a
-- pair) and, for tainted pairs, one entry of another; the final line is read again when the
-- input reaches its pair.
--
-- Failures are koophone.Error objects of kind "journal" with one of these codes:
--   JOURNAL_LOCKED   another run uses the file
--   JOURNAL_EXISTS   the file holds a journal and the run does not resume it
--   JOURNAL_FORMAT   a resume of a file that does not start as a journal (it is left unchanged)
--   JOURNAL_VERSION, JOURNAL_SHARD, JOURNAL_INPUT   the journal is of another version, shard or input
--   JOURNAL_IO       the file cannot be opened, read, written, synced or cut (the message says which)
local cjson = require("cjson.safe").new()
local core = require "koophone.core"
local outcomes = require "koophone.outcomes"

local _M = { VERSION = 1 }

local Journal = {}
Journal.__index = Journal

local FINAL, MAYBE_APPLIED = outcomes.final, outcomes.maybe_applied

local function failure(code, message)
  return require("koophone.errors").new { kind = "journal", code = code, message = message }
end

-- A failure of a file operation (its message is core.jfile's) as a koophone.Error.
local function io_failure(ok, message)
  if ok then return ok end
  return nil, failure("JOURNAL_IO", message)
end

local MAX_DAMAGED_LINES = 100 -- line numbers kept for the report; the count goes on

-- ------------------------------------------------------------------ input identity

-- input_identity(path) -> { name, size, digest }, or nil, message. The digest is taken while
-- streaming the file (core.file_digest); a path that is not a regular file (a pipe) gets only
-- its name.
function _M.input_identity(path)
  local size, digest = core.file_digest(path)
  if size == nil then return nil, digest end
  if size == false then return { name = path } end
  return { name = path, size = size, digest = digest }
end

local function describe(id)
  if not id then return "an input without identity" end
  local name = id.name and ("%q"):format(id.name)
               or id.rows and ("an array of %d rows"):format(id.rows) or "an iterator"
  if id.digest then name = ("%s (%d bytes, %s)"):format(name, id.size or -1, id.digest) end
  return name
end

-- Whether the journal's input `old` and this run's `new` may be the same: what both know must
-- agree. A digest says it all (a renamed copy is the same input); without one, the names (stdin
-- is named "stdin") and the row counts are compared.
local function same_input(old, new)
  if not (old and new) then return true end
  if old.digest and new.digest then return old.digest == new.digest and old.size == new.size end
  if old.rows and new.rows and old.rows ~= new.rows then return false end
  if old.name and new.name then return old.name == new.name end
  return true
end

-- ------------------------------------------------------------------ reading

local function id_ok(s)
  return type(s) == "string" and not s:find("\0", 1, true)
end

-- Folds the record at byte `offset` into the resume state; false when it is not a record this
-- module writes, or nil, a message and a code when the journal belongs to another run.
local function fold(self, rec, offset)
  local kind = rec.type
  if kind == "done" then
    local u, i = rec.user_id, rec.instance_id
    if not (id_ok(u) and id_ok(i)) then return false end
    if FINAL[rec.outcome] then
      self.finals:add(u, i, offset)
    elseif rec.maybe_applied or MAYBE_APPLIED[rec.outcome] then
      self.taint:add(u, i, 0)
    end
    local open = self.open[rec.request_id]
    if open then
      open.n = open.n - 1
      if open.n <= 0 then self.open[rec.request_id] = nil end
    end
  elseif kind == "send" then
    local list = rec.pairs
    if type(list) ~= "table" or type(rec.request_id) ~= "string" then return false end
    for _, p in ipairs(list) do
      if type(p) ~= "table" or not (id_ok(p[1]) and id_ok(p[2])) then return false end
      if p[3] then self.taint:add(p[1], p[2], 0) end
    end
    self.open[rec.request_id] = { offset = offset, n = #list }
  elseif kind == "job" then
    if type(rec.job_id) ~= "string" or type(rec.state) ~= "string" then return false end
    self.jobs[rec.job_id] = { state = rec.state, error_code = rec.code, error_msg = rec.message }
  elseif kind == "clear" then
    if type(rec.request_id) ~= "string" then return false end
    self.open[rec.request_id] = nil
  elseif kind == "run" then
    if rec.version ~= _M.VERSION then
      return nil, ("journal version %s, this is %d"):format(tostring(rec.version), _M.VERSION),
             "JOURNAL_VERSION"
    end
    if (rec.shard or "") ~= (self.shard or "") then
      return nil, ("journal of shard %s, this run is shard %s"):format(rec.shard or "none",
                                                                       self.shard or "none"),
             "JOURNAL_SHARD"
    end
    if not same_input(type(rec.input) == "table" and rec.input or nil, self.input) then
      return nil, ("input %s, this run reads %s"):format(describe(rec.input), describe(self.input)),
             "JOURNAL_INPUT"
    end
  else
    return false
  end
  return true
end

local function damaged(self, number)
  local d = self.damaged or { count = 0, lines = {} }
  self.damaged = d
  d.count = d.count + 1
  if #d.lines < MAX_DAMAGED_LINES then d.lines[#d.lines + 1] = number end
end

-- The lines of file f from its start: an iterator returning each line, its byte
-- offset, and whether a newline ended it. f:lines() will not do: on LuaJIT it cuts a line at a NUL
-- byte, which a power cut can leave in a file, and the offsets would go wrong.
local function lines(f)
  local buf, pos, base = "", 1, 0 -- base: the offset of buf's first byte
  return function()
    while true do
      local nl = buf:find("\n", pos, true)
      if nl then
        local line, at = buf:sub(pos, nl - 1), base + pos - 1
        pos = nl + 1
        return line, at, true
      end
      local more = f:read(65536)
      if not more then
        if pos > #buf then return nil end
        local line, at = buf:sub(pos), base + pos - 1
        pos = #buf + 1
        return line, at, false
      end
      base = base + pos - 1
      buf, pos = buf:sub(pos) .. more, 1
    end
  end
end

-- The line at byte offset of the reader. Lookups follow the input, whose pairs the journal holds
-- in about the same order: a window of the file read at the last miss answers most of them.
local WINDOW = 65536
local function line_at(self, offset)
  local w, at = self.window, self.window_at
  if not (w and offset >= at and w:find("\n", offset - at + 1, true)) then
    local f = self.reader
    f:seek("set", offset)
    w, at = f:read(WINDOW) or "", offset
    while not w:find("\n", 1, true) do -- a line longer than the window
      local more = f:read(WINDOW)
      if not more then break end
      w = w .. more
    end
    self.window, self.window_at = w, at
  end
  local from = offset - at + 1
  return w:sub(from, (w:find("\n", from, true) or #w + 1) - 1)
end

-- The record at byte offset of the reader, decoded, or nil and a koophone.Error.
local function record_at(self, offset)
  local rec = cjson.decode(line_at(self, offset))
  if type(rec) ~= "table" then
    return nil, failure("JOURNAL_IO",
                        ("journal %s: the line at byte %d changed while in use"):format(self.path, offset))
  end
  return rec
end

-- Whether the first line of a file is a journal's: a run record, or its start torn by a crash
-- (the header is the first thing a run writes). Anything else (the input named as the journal, a
-- stray file) is refused before a byte of it changes.
local HEAD = '{"type":"run",' -- how this module starts a journal (see open)
local function starts_journal(line, whole)
  if not whole then return line ~= "" and (HEAD:sub(1, #line) == line or line:sub(1, #HEAD) == HEAD) end
  local rec = cjson.decode(line)
  return type(rec) == "table" and rec.type == "run"
end

-- Reads the journal; returns the size of what stays (a line torn by a crash, the last one without
-- its newline, is cut off), or nil and a koophone.Error.
local function load(self, size)
  local number = 0
  self.reader:seek("set")
  for line, offset, whole in lines(self.reader) do
    if offset == 0 and not starts_journal(line, whole) then
      return nil, failure("JOURNAL_FORMAT", ("journal %s does not start with a koophone journal's "
                          .. "run record: not resumed, left as it is"):format(self.path))
    end
    if not whole then -- torn in the middle of a write
      self.skipped = 1
      size = offset
      break
    end
    number = number + 1
    local rec, ok, problem, code = cjson.decode(line), false, nil, nil
    if type(rec) == "table" then ok, problem, code = fold(self, rec, offset) end
    if ok == nil then return nil, failure(code, ("journal %s: %s"):format(self.path, problem)) end
    if not ok and line ~= "" then damaged(self, number) end
  end
  -- requests that never ended: their pairs may have been applied
  for _, open in pairs(self.open) do
    local rec, problem = record_at(self, open.offset)
    if not rec then return nil, problem end
    for _, p in ipairs(rec.pairs) do self.taint:add(p[1], p[2], 0) end
  end
  self.open = nil
  return size
end

-- open(path, { resume = bool, shard = "i/n", input = identity }) -> journal, or nil, err (a
-- koophone.Error, see the codes above).
-- The file is created when missing and locked until close. Without resume, an existing non-empty
-- journal is an error: its pairs would count as done. identity: { name, size, digest, rows },
-- any of them; a journal of another input is refused (see same_input).
function _M.open(path, opts)
  local file, err = core.jfile(path)
  if not file then -- core.jfile tells a held lock only by its message
    return nil, failure(err:find("is in use by another run", 1, true) and "JOURNAL_LOCKED"
                        or "JOURNAL_IO", err)
  end
  local self = setmetatable({ path = path, file = file, shard = opts.shard, input = opts.input,
                              finals = core.pairset(), taint = core.pairset(), open = {}, jobs = {},
                              skipped = 0, out = {} }, Journal)
  local function fail(problem)
    self:close()
    return nil, problem
  end
  local reader
  reader, err = io.open(path, "rb")
  if not reader then return fail(failure("JOURNAL_IO", "journal: " .. tostring(err))) end
  self.reader = reader
  local size = reader:seek("end")
  if size > 0 and not opts.resume then
    return fail(failure("JOURNAL_EXISTS",
                        ("journal %s exists: resume it or choose another file"):format(path)))
  end
  if size > 0 then
    local kept, problem = load(self, size)
    if not kept then return fail(problem) end
    if kept < size then
      local ok
      ok, problem = io_failure(file:truncate(kept))
      if not ok then return fail(problem) end
    end
  end
  self.window = nil -- what load read may since have been cut off
  if #self.finals == 0 then
    reader:close()
    self.reader = nil
  end
  -- "type" first, so that even a header torn by a crash is known for a journal's
  self.out[1] = HEAD .. cjson.encode({ version = _M.VERSION, time = os.time(), shard = opts.shard,
                                       input = opts.input }):sub(2)
  local ok, problem = self:flush(true)
  if not ok then return fail(problem) end
  return self
end

-- ------------------------------------------------------------------ writing

-- Records that `items` (rows with user_id, instance_id, tainted) are about to be sent as
-- request_id. Buffered: flush(true) before the request leaves.
function Journal:sent(request_id, items)
  local list = {}
  for k = 1, #items do
    local item = items[k]
    list[k] = { item.user_id, item.instance_id, item.tainted and true or nil }
  end
  local out = self.out
  out[#out + 1] = cjson.encode { type = "send", request_id = request_id, pairs = list }
end

-- Whether a row whose outcome is set may have been unassigned although it is not final.
local maybe_applied = require("koophone.applied").row

-- Records the outcomes of `items` (rows with outcome set) after request_id ended, and with
-- clear that the request certainly changed nothing, which is written only when no row says it
-- may have been applied. Buffered until the next flush.
function Journal:finished(request_id, items, clear)
  local out = self.out
  for k = 1, #items do
    local r = items[k]
    local err, maybe = r.err, maybe_applied(r)
    if maybe then clear = false end
    out[#out + 1] = cjson.encode {
      type = "done", request_id = request_id, user_id = r.user_id, instance_id = r.instance_id,
      outcome = r.outcome, task_id = r.task_id, job_id = r.job_id,
      code = err and err.code, message = err and err.message, maybe_applied = maybe or nil }
  end
  if clear and request_id then out[#out + 1] = cjson.encode { type = "clear", request_id = request_id } end
end

-- Records a job that became final (job_id, task_id, state, status, error_code, error_msg).
function Journal:job(j)
  local out = self.out
  out[#out + 1] = cjson.encode { type = "job", task_id = j.task_id, job_id = j.job_id,
                                 state = j.state, status = j.status,
                                 code = j.error_code or (j.err and j.err.code),
                                 message = j.error_msg or (j.err and j.err.message) }
end

-- flush(sync) -> true, or nil, err (a koophone.Error): the buffered records in one write; with
-- sync, then fsync when anything was written since the last one.
function Journal:flush(sync)
  local out = self.out
  if #out > 0 then
    out[#out + 1] = ""
    self.out = {}
    local ok, err = io_failure(self.file:write(table.concat(out, "\n")))
    if not ok then return nil, err end
    self.dirty = true
  end
  if sync and self.dirty then
    self.dirty = false
    return io_failure(self.file:sync())
  end
  return true
end

-- ------------------------------------------------------------------ resume lookups

-- The journaled final record of a pair (a table), or nil; or nil and a koophone.Error when it
-- cannot be read back.
function Journal:final(user_id, instance_id)
  local offset = self.finals:get(user_id, instance_id)
  if not offset then return nil end
  return record_at(self, offset)
end

-- Whether an earlier run may have applied this pair without learning it: true, a reason (the
-- journal is damaged), or false.
function Journal:tainted(user_id, instance_id)
  if self.damaged then
    return ("the journal is damaged (%d unreadable lines): an earlier run may have sent this pair")
           :format(self.damaged.count)
  end
  return self.taint:get(user_id, instance_id) ~= nil
end

-- close() -> true, or nil, err (a koophone.Error): flushes what is buffered, releases the lock
-- and the memory of the resume state. Closing again does nothing.
function Journal:close()
  local ok, err = true, nil
  if self.file then
    ok, err = self:flush(true)
    self.file:close()
  end
  if self.reader then self.reader:close() end
  self.finals:close()
  self.taint:close()
  self.file, self.reader, self.window = nil, nil, nil
  return ok, err
end

return _M
