-- Write-ahead journal of a bulk run: one JSON object per line, appended and flushed per batch.
--
--   {"type":"run","version":1,"time":1732770000,"shard":"0/2"}          a run (re)started
--   {"type":"send","request_id":"…","pairs":[["u1","i1"],…],"tainted":true}
--        written BEFORE the request goes out (every attempt, every bisection half); `tainted`:
--        these pairs may have been unassigned by an earlier request whose answer was lost
--   {"type":"done","request_id":"…","user_id":"u1","instance_id":"i1","outcome":"unassigned",
--    "task_id":"…","job_id":"…","code":"…","message":"…","maybe_applied":true}
--        one per pair, after its request ended; `failed` is not final, the others are
--   {"type":"clear","request_id":"…"}   that request ended and certainly changed nothing
--
-- Resuming reads it back: a pair with a final `done` is not sent again; a pair of a `send` that
-- was neither cleared nor finished (in flight when the run died), or that failed in a way that may
-- have applied it, is "tainted": a 2210 for it then means assumed_unassigned, never not_bound.
-- A line torn by a crash is skipped. The file is flushed to the OS after each batch, which
-- survives the death of the process (not of the machine: Lua has no fsync).
local cjson = require("cjson.safe").new()
local rows = require "koophone.rows"

local _M = { VERSION = 1 }

local Journal = {}
Journal.__index = Journal

_M.FINAL = { unassigned = true, assumed_unassigned = true, not_bound = true, denied = true,
             invalid = true }

-- Folds one record into the resume state.
local function load_record(self, rec, line)
  if rec.type == "send" and type(rec.pairs) == "table" then
    self.open[rec.request_id] = rec.pairs
    if rec.tainted then
      for _, p in ipairs(rec.pairs) do self.taint[rows.key(p[1], p[2])] = true end
    end
  elseif rec.type == "clear" then
    self.open[rec.request_id] = nil
  elseif rec.type == "done" and type(rec.user_id) == "string" and type(rec.instance_id) == "string" then
    local key = rows.key(rec.user_id, rec.instance_id)
    if _M.FINAL[rec.outcome] then
      self.finals[key] = line -- decoded again when the input reaches this pair
    else
      self.finals[key] = nil
      if rec.maybe_applied then self.taint[key] = true end
    end
  elseif rec.type == "run" then
    if rec.version ~= _M.VERSION then
      return ("journal version %s, this is %d"):format(tostring(rec.version), _M.VERSION)
    end
    if (rec.shard or "") ~= (self.shard or "") then
      return ("journal of shard %s, this run is shard %s"):format(rec.shard or "none",
                                                                    self.shard or "none")
    end
  end
end

local function load(self, f)
  local ended_with_newline = true
  for line in f:lines() do
    local rec = cjson.decode(line)
    if type(rec) == "table" then
      local problem = load_record(self, rec, line)
      if problem then return nil, problem end
    elseif line ~= "" then
      self.skipped = self.skipped + 1
    end
  end
  f:seek("end", -1)
  ended_with_newline = f:read(1) == "\n"
  -- requests that never ended: their pairs may have been applied
  for _, list in pairs(self.open) do
    for _, p in ipairs(list) do
      local key = rows.key(p[1], p[2])
      if not self.finals[key] then self.taint[key] = true end
    end
  end
  self.open = nil
  return ended_with_newline
end

-- open(path, { resume = bool, shard = "i/n" }) -> journal, or nil, message.
-- Without resume, an existing non-empty journal is an error: its pairs would count as done.
function _M.open(path, opts)
  local self = setmetatable({ path = path, shard = opts.shard, finals = {}, taint = {}, open = {},
                              skipped = 0 }, Journal)
  local old = io.open(path, "rb")
  local needs_newline = false
  if old then
    local size = old:seek("end")
    old:seek("set")
    if size > 0 and not opts.resume then
      old:close()
      return nil, ("journal %s exists: resume it or choose another file"):format(path)
    end
    if size > 0 then
      local ended, problem = load(self, old)
      if ended == nil then
        old:close()
        return nil, ("journal %s: %s"):format(path, problem)
      end
      needs_newline = not ended
    end
    old:close()
  end
  local f, err = io.open(path, "ab")
  if not f then return nil, "journal: " .. tostring(err) end
  self.file = f
  local ok, werr = self:write({ { type = "run", version = _M.VERSION, time = os.time(),
                                  shard = opts.shard } }, needs_newline and "\n" or nil)
  if not ok then return nil, werr end
  return self
end

-- write(records [, prefix]) -> true, or nil, message: one write and one flush.
function Journal:write(records, prefix)
  local out = { prefix }
  for _, rec in ipairs(records) do out[#out + 1] = cjson.encode(rec) .. "\n" end
  local ok, err = self.file:write(table.concat(out))
  if ok then ok, err = self.file:flush() end
  if not ok then return nil, ("journal %s: %s"):format(self.path, tostring(err)) end
  return true
end

-- The journaled final record of a pair (a table), or nil. Each is handed out once.
function Journal:final(key)
  local line = self.finals[key]
  if not line then return nil end
  self.finals[key] = nil
  return cjson.decode(line)
end

-- Whether an earlier run may have applied this pair without learning it.
function Journal:tainted(key)
  return self.taint[key] == true
end

function Journal:close()
  if self.file then self.file:close() end
  self.file = nil
end

return _M
