-- Which pairs of a request a success answer confirms.
--
-- The server answers one job per pair it unassigned (data.cmd_jobs). A pair counts as done only
-- with its own job: matched by instance_id, each job used once, a job id that came already never
-- confirms a second pair. A pair without one may still be bound (a gateway or an API version that
-- answered success without doing all of it): the caller must not report it unassigned.
local _M = {}

-- instance id -> positions of its jobs in `jobs`, in the server's order
local function positions(jobs)
  local by_instance = {}
  for p, j in ipairs(jobs) do
    local list = by_instance[j.instance_id]
    if not list then
      list = {}
      by_instance[j.instance_id] = list
    end
    list[#list + 1] = p
  end
  return by_instance
end

-- match(list, res) -> ids, missing. list: the pairs sent ({ instance_id = ... }), res: the success
-- answer (res.jobs, res.task_id). ids[k] is the job id that confirms list[k], nil for none;
-- missing counts the pairs without one (all of them when the answer has no data, as older API
-- versions answered: nothing says what was done).
function _M.match(list, res)
  local jobs, n, ids, missing = res.jobs or {}, #list, {}, 0
  local used, seen, by_instance = {}, {}, nil -- job positions taken; job ids taken
  for k = 1, n do -- a plain loop: this runs for every pair sent
    local iid, p = list[k].instance_id, k
    local j = jobs[k] -- the server lists them in request order: the common case
    if not (j and j.instance_id == iid and not used[k] and not seen[j.job_id]) then
      by_instance = by_instance or positions(jobs)
      local candidates = by_instance[iid] or {}
      p = nil
      for c = 1, #candidates do
        local q = candidates[c]
        if not used[q] and not seen[jobs[q].job_id] then
          p = q
          break
        end
      end
    end
    if p then
      local id = jobs[p].job_id
      used[p], seen[id], ids[k] = true, true, id
    else
      missing = missing + 1
    end
  end
  return ids, missing
end

-- The pairs of `list` that `res` does not confirm, or nil when it confirms them all.
function _M.unconfirmed(list, res)
  local ids, missing = _M.match(list, res)
  if missing == 0 then return nil end
  local out = {}
  for k = 1, #list do
    if not ids[k] then out[#out + 1] = list[k] end
  end
  return out
end

return _M
