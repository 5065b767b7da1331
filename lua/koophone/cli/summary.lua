-- koophone.cli.summary: what a run of `koophone unassign` did, as a table for people or one JSON
-- object for programs (--summary-format; the fields are documented in docs/cli.md#the-summary),
-- and the run's exit status with what it means.
local koophone = require "koophone"
local cjson = require("cjson.safe").new()
local outcomes = require "koophone.outcomes"
local output = require "koophone.cli.output"
local reasons = require "koophone.cli.reasons"

local esc = output.utf8_escaped

local _M = {}

local JOB_STATES = { "succeeded", "failed", "pending", "unknown" }
local LISTED = 20 -- task ids the table names; the JSON object has them all

-- s as one word of a summary line: as it is when it is plain, else quoted with escapes.
function _M.word(s)
  s = tostring(s or "-")
  return s:find("^[%w%-%./_:@+]+$") and s or (("%q"):format(s):gsub("\\\n", "\\n"))
end

-- A failed job ({ instance_id, task_id, job_id, code }) as the summary and stderr name it.
function _M.failed_job_text(j)
  return ("instance=%s task=%s job=%s code=%s"):format(_M.word(j.instance_id), _M.word(j.task_id),
                                                       _M.word(j.job_id), _M.word(j.code))
end

local function iso_time(t)
  return os.date("!%Y-%m-%dT%H:%M:%SZ", t)
end

-- The exit status of a run (report: koophone.bulk's) and what it means, in words.
function _M.exit_status(report, strict)
  local stop = output.stop_status(report.interrupted)
  if stop then
    return stop, report.interrupted == "SIGINT" and "stopped by SIGINT"
                 or report.interrupted == "SIGTERM" and "stopped by SIGTERM"
                 or "stopped: the output, the log or the journal could not be written"
  end
  local failing, fine = {}, {}
  for _, k in ipairs(outcomes.names) do
    local n = report.counts[k]
    if not reasons.fails_run(k, strict) then
      fine[#fine + 1] = k
    elseif n > 0 then
      failing[#failing + 1] = ("%s %d"):format(k, n)
    end
  end
  local jobs_failed = report.jobs and report.jobs.failed or 0
  local still = report.verify and #report.verify.still_bound or 0 -- read bound after the run
  local unread = report.verify and #report.verify.unread or 0 -- their read failed: not verified
  if #failing == 0 and jobs_failed == 0 and still == 0 and unread == 0 then
    return 0, ("every pair %s or %s"):format(table.concat(fine, ", ", 1, #fine - 1), fine[#fine])
  end
  local why = {}
  if #failing > 0 then why[1] = "pairs that fail the run: " .. table.concat(failing, ", ") end
  if jobs_failed > 0 then why[#why + 1] = ("failed jobs: %d"):format(jobs_failed) end
  if still > 0 then why[#why + 1] = ("pairs read still bound (--verify): %d"):format(still) end
  if unread > 0 then why[#why + 1] = ("pairs that could not be read (--verify): %d"):format(unread) end
  local aborted = report.aborted -- a koophone.Error (a token refused, a tenant's every pair refused)
  if aborted then why[#why + 1] = "the run stopped early on " .. tostring(aborted.code or aborted.kind) end
  return 1, table.concat(why, "; ")
end

-- A recorder of the run, started when the run starts: add(r) for each result row (the task ids
-- of the answers, in the order met); finish(...) when it ended gives the summary's fields.
function _M.recorder()
  local started, clock = os.time(), koophone.now()
  local task_ids, seen = {}, {}
  local rec = {}
  function rec.add(r)
    local id = r.task_id
    if id and not seen[id] then
      seen[id] = true
      task_ids[#task_ids + 1] = esc(id)
    end
  end
  -- finish(report, run) -> the fields; run: endpoint (the URL the requests went to), input,
  -- tally (koophone.cli.reasons), failed_jobs ({ instance_id, task_id, job_id, code } each),
  -- open_tasks, strict.
  function rec.finish(report, run)
    local status, meaning = _M.exit_status(report, run.strict)
    local done, unfinished = 0, 0 -- unfinished: nil when not known
    for _, n in pairs(report.counts) do done = done + n end
    if report.interrupted then unfinished = report.unfinished end
    local reason_list, open_tasks = {}, {}
    for i, id in ipairs(run.open_tasks) do open_tasks[i] = esc(id) end
    for i, g in ipairs(run.tally.groups()) do
      local codes = {}
      for k, c in ipairs(g.codes) do
        codes[k] = { code = esc(c.code), count = c.n, message = esc(c.example) }
      end
      reason_list[i] = { outcome = g.outcome, count = report.counts[g.outcome], codes = codes }
    end
    return {
      start = iso_time(started), ["end"] = iso_time(os.time()),
      duration = math.floor((koophone.now() - clock) * 1000 + 0.5) / 1000,
      endpoint = run.endpoint, input = esc(run.input), requests = report.requests,
      bisect_requests = report.bisect_requests, exit_status = status, exit_meaning = meaning,
      counts = report.counts, interrupted = report.interrupted,
      unfinished = unfinished, total = report.total or unfinished and done + unfinished,
      jobs = report.jobs, task_ids = task_ids, maybe_applied = run.tally.maybe_applied,
      still_bound = report.verify and #report.verify.still_bound or nil,
      reasons = reason_list, reason_lines = run.tally.lines(report.counts),
      failed_jobs = run.failed_jobs, open_tasks = open_tasks,
    }
  end
  return rec
end

-- ------------------------------------------------------------------ the table

-- The summary as lines of "name  value" (--summary-format text).
function _M.text(s)
  local out = {}
  local function line(name, value) out[#out + 1] = ("%-19s %s\n"):format(name, value) end
  line("start", s.start)
  line("end", s["end"])
  line("duration", ("%.1f s"):format(s.duration))
  line("endpoint", s.endpoint)
  line("input", _M.word(s.input))
  line("requests", s.requests .. (s.bisect_requests > 0
                                   and (" (%d of them bisecting refused batches)"):format(s.bisect_requests) or ""))
  line("exit status", ("%d: %s"):format(s.exit_status, s.exit_meaning))
  for _, k in ipairs(outcomes.names) do line(k, s.counts[k]) end
  if s.interrupted and s.unfinished then line("unfinished", s.unfinished) end
  if s.total then line("total", s.total) end
  for _, k in ipairs(s.jobs and JOB_STATES or {}) do line("jobs " .. k, s.jobs[k]) end
  if s.maybe_applied > 0 then line("maybe applied", s.maybe_applied) end
  if s.still_bound then line("still bound", s.still_bound) end
  line("tasks", #s.task_ids)
  for i = 1, math.min(LISTED, #s.task_ids) do line("task", _M.word(s.task_ids[i])) end
  if #s.task_ids > LISTED then
    line("task", ("and %d more (--summary-format json lists them all)"):format(#s.task_ids - LISTED))
  end
  for _, l in ipairs(s.reason_lines) do out[#out + 1] = "reason " .. l .. "\n" end
  for _, j in ipairs(s.failed_jobs) do out[#out + 1] = "failed job " .. _M.failed_job_text(j) .. "\n" end
  for _, id in ipairs(s.open_tasks) do out[#out + 1] = "open task " .. _M.word(id) .. "\n" end
  return table.concat(out)
end

-- ------------------------------------------------------------------ the JSON object

local OBJECT, ARRAY = {}, {} -- metatables: an object with its keys in order; a list (even empty)

-- object(key, value, key, value, ...): n counts them, as a value may be nil
local function object(...) return setmetatable({ n = select("#", ...), ... }, OBJECT) end
local function array(t) return setmetatable(t, ARRAY) end

-- v as JSON: lua-cjson 2.1.0 writes an empty table as {} and keys in no order, so the lists
-- and objects of the summary are written here; nil is null.
local function json(v)
  local mt = getmetatable(v)
  if mt == ARRAY then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = json(x) end
    return "[" .. table.concat(parts, ",") .. "]"
  elseif mt == OBJECT then
    local parts = {}
    for i = 1, v.n, 2 do parts[#parts + 1] = cjson.encode(v[i]) .. ":" .. json(v[i + 1]) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif v == nil then
    return "null"
  end
  return assert(cjson.encode(v))
end

-- An object of the names of list, each with the value map gives it.
local function named(list, map)
  local o = object()
  for _, k in ipairs(list) do
    o[o.n + 1], o[o.n + 2], o.n = k, map[k], o.n + 2
  end
  return o
end

-- The summary as one JSON object, one line (--summary-format json).
function _M.json(s)
  local reason_list, failed_jobs = array {}, array {}
  for i, g in ipairs(s.reasons) do
    local codes = array {}
    for k, c in ipairs(g.codes) do codes[k] = object("code", c.code, "count", c.count, "message", c.message) end
    reason_list[i] = object("outcome", g.outcome, "count", g.count, "codes", codes)
  end
  for i, j in ipairs(s.failed_jobs) do
    failed_jobs[i] = object("instance_id", j.instance_id, "task_id", j.task_id, "job_id", j.job_id,
                            "code", j.code)
  end
  return json(object(
    "start", s.start, "end", s["end"], "duration", s.duration, "endpoint", s.endpoint,
    "input", s.input, "requests", s.requests, "bisect_requests", s.bisect_requests,
    "exit_status", s.exit_status, "exit_meaning", s.exit_meaning,
    "counts", named(outcomes.names, s.counts), "unfinished", s.unfinished, "total", s.total,
    "jobs", s.jobs and named(JOB_STATES, s.jobs), "maybe_applied", s.maybe_applied,
    "still_bound", s.still_bound,
    "task_count", #s.task_ids, "task_ids", array(s.task_ids), "reasons", reason_list,
    "failed_jobs", failed_jobs, "open_tasks", array(s.open_tasks))) .. "\n"
end

return _M
