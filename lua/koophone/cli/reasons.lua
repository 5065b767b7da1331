-- koophone.cli.reasons: why pairs failed, for stderr and the summary, and which outcomes fail
-- the run.
local outcomes = require "koophone.outcomes" -- failure: exit 1
local applied_row = require("koophone.applied").row

local _M = {}

-- Whether a row with this outcome makes the run exit 1 (--strict: not_bound too).
function _M.fails_run(outcome, strict)
  return outcomes.failure[outcome] or (strict and outcome == "not_bound") or false
end

-- A tally of the rows: per outcome that fails the run, the error codes with a count and the
-- first message of each, and how many pairs may have been applied all the same.
function _M.tally(strict)
  local t = { by_outcome = {}, maybe_applied = 0 }
  function t.add(r)
    local err = r.err
    if applied_row(r) then
      t.maybe_applied = t.maybe_applied + 1
    end
    if not _M.fails_run(r.outcome, strict) then return end
    local codes = t.by_outcome[r.outcome] or { list = {} }
    t.by_outcome[r.outcome] = codes
    local code = err and err.code or r.outcome
    local c = codes[code]
    if not c then
      c = { code = code, n = 0, example = tostring(err and err.message or r.reason or "") }
      codes[code], codes.list[#codes.list + 1] = c, c
    end
    c.n = c.n + 1
  end
  -- groups() -> { outcome =, codes = { { code =, n =, example = }, ... } } per failing outcome
  -- met, in the order of outcomes.names, the most frequent code first.
  function t.groups()
    local out = {}
    for _, k in ipairs(outcomes.names) do
      local codes = t.by_outcome[k]
      if codes then
        table.sort(codes.list, function(a, b) return a.n > b.n or a.n == b.n and a.code < b.code end)
        out[#out + 1] = { outcome = k, codes = codes.list }
      end
    end
    return out
  end
  -- lines(counts) -> "failed 20: CURLE_COULDNT_CONNECT x20 \"Failed to connect ...\"", ...
  function t.lines(counts)
    local out = {}
    for _, g in ipairs(t.groups()) do
      local parts = {}
      for i = 1, math.min(3, #g.codes) do
        local c = g.codes[i]
        local example = #c.example > 160 and c.example:sub(1, 157) .. "..." or c.example
        parts[i] = ("%s x%d %q"):format(c.code, c.n, example):gsub("\\\n", "\\n")
      end
      if #g.codes > 3 then parts[#parts + 1] = ("and %d more codes"):format(#g.codes - 3) end
      out[#out + 1] = ("%s %d: %s"):format(g.outcome, counts[g.outcome], table.concat(parts, "; "))
    end
    return out
  end
  return t
end

return _M
