-- Input rows of a bulk run: reads an array or an iterator one row at a time, checks each row as
-- koophone.validate_pair does, keeps the rows of one shard, and spots rows that repeat an earlier
-- pair.
-- Nothing here sends anything; koophone.run turns the rows that pass into batches.
local core = require "koophone.core"
local row_entry = core.row_entry

local _M = {}

local Rows = {}
Rows.__index = Rows

-- Shard of an instance id: a polynomial hash mod 2^31 - 1 (exact in every Lua number type), so
-- any tool can compute the same split: h = (h * 31 + byte) % 2147483647 over the bytes.
function _M.shard_of(instance_id, count)
  local h = 0
  for i = 1, #instance_id do
    h = (h * 31 + instance_id:byte(i)) % 2147483647
  end
  return h % count
end


-- new(input, opts): input is an array of pairs or an iterator function returning the next pair,
-- `false, reason` for a row it could not parse, or nil at the end. opts.shard = { index, count }.
function _M.new(input, opts)
  local self = setmetatable({ row = 0, pos = 0, seen = core.pairset(), shard = opts.shard,
                              ended = false }, Rows)
  if type(input) == "function" then
    self.next_row = input
  else
    local i, n = 0, #input
    self.next_row = function()
      i = i + 1
      if i > n then return nil end
      local v = input[i]
      if v == nil then return false, "missing row" end
      return v
    end
    if not opts.shard then self.total = n end -- else known at the end, as for an iterator
  end
  return self
end

-- Whether a row belongs to this run's shard. A row without a string instance_id belongs to shard
-- 0, so the shards together still cover every row once.
function Rows:mine(row)
  local s = self.shard
  if not s then return true end
  local id = type(row) == "table" and row.instance_id
  if type(id) ~= "string" then return s.index == 0 end
  return _M.shard_of(id, s.count) == s.index
end

-- next() -> entry, or nil at the end. entry = { pos, row, user_id, instance_id } for a pair to
-- send, or with `outcome` ("invalid" / "duplicate") and `reason` for a row that is final already
-- (core.row_entry makes it). pos numbers the rows of this shard 1, 2, ...; row numbers every
-- input row.
function Rows:next()
  local next_row, shard = self.next_row, self.shard
  while not self.ended do
    local v, reason = next_row()
    if v == nil then
      self.ended = true
      self.total = self.pos
      return nil
    end
    local row = self.row + 1
    self.row = row
    if not shard or self:mine(v) then
      local pos = self.pos + 1
      self.pos = pos
      if v == false then
        return { pos = pos, row = row, outcome = "invalid", reason = reason }
      end
      return row_entry(self.seen, v, pos, row)
    end
  end
  return nil
end

-- close(): frees the memory of the pairs seen (a bulk run ends); next() must not follow.
function Rows:close()
  self.seen:close()
end

return _M
