-- The outcomes of a bulk run's pairs, and what each one means: the one list that koophone.bulk,
-- koophone.journal and the CLI read.
--
--   final          a resume does not send the pair again (its `done` record says so; duplicate
--                  rows are not journaled: the input itself says it again)
--   failure        the CLI exits 1 when a pair has it
--   maybe_applied  not final, yet the request may have unassigned the pair
local _M = {}

-- In the order that the summary and the progress line show them.
local OUTCOMES = {
  { "unassigned", final = true },
  { "assumed_unassigned", final = true }, -- 2210 for a pair an earlier lost answer may have done
  { "not_bound", final = true },
  { "denied", final = true, failure = true },
  { "invalid", final = true, failure = true },
  { "duplicate", final = true },
  { "unconfirmed", failure = true, maybe_applied = true },
  { "failed", failure = true },
}

_M.names = {}                  -- the names, in the order above
_M.final, _M.failure, _M.maybe_applied = {}, {}, {} -- name -> true
for i, o in ipairs(OUTCOMES) do
  local name = o[1]
  _M.names[i] = name
  _M.final[name], _M.failure[name], _M.maybe_applied[name] = o.final, o.failure, o.maybe_applied
end

return _M
