-- Input rows of a bulk run: reads an array or an iterator one row at a time, checks each row with
-- koophone.validate_pair, keeps the rows of one shard, and spots rows that repeat an earlier pair.
-- Nothing here sends anything; koophone.bulk turns the rows that pass into batches.
local core = require "koophone.core"
local validate_pair = core.validate_pair

local _M = {}

local Rows = {}
Rows.__index = Rows

-- The identity of a pair: what "the same pair twice" and the journal compare.
function _M.key(user_id, instance_id)
  return user_id .. "\0" .. instance_id
end

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
-- send, or with `outcome` ("invalid" / "duplicate") and `reason` for a row that is final already.
-- pos numbers the rows of this shard 1, 2, ...; row numbers every input row.
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
      local user_id, instance_id
      if type(v) == "table" then
        user_id, instance_id = v.user_id, v.instance_id
        -- user_id may be an integer (validate_pair accepts it); it travels as its decimal string
        if type(user_id) == "number" then user_id = ("%d"):format(user_id) end
      end
      -- the nil fields size the table (8 slots) for what koophone.bulk sets on a sent pair: no
      -- rehash per row (err and reason are nil then; other paths are rare)
      local e = { pos = pos, row = row, user_id = user_id, instance_id = instance_id,
                  outcome = nil, request_id = nil, task_id = nil, job_id = nil }
      local ok, why = false, reason
      if v ~= false then ok, why = validate_pair(v) end
      if not ok then
        e.outcome, e.reason = "invalid", why
      else
        -- an exact set in C: a Lua table keyed by pair costs ~80 bytes a row
        local first = self.seen:add(user_id, instance_id, row)
        if first then
          e.outcome, e.reason, e.duplicate_of = "duplicate", ("repeats row %d"):format(first), first
        end
      end
      return e
    end
  end
  return nil
end

return _M
