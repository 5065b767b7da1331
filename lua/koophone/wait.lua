-- Waiting for the jobs of unassign calls (the data wipes) to end, through GetTask.
--
--   local report, err = client:wait_jobs(token, what, opts)   -- = wait.wait_jobs(client, ...)
--
-- `what`: an unassign result (task_id, jobs), an unassign_all report (its results), or a list of
-- unassign results, of unassign_all rows (task_id, job_id) or of task ids. Each task has its own next-poll time: its
-- first poll at once, then after interval, 2 * interval, ... up to max_interval; a task whose jobs
-- are all final is never polled again. A task GetTask does not know (KOOPHONE.API.1323, a 404, or
-- any other final error) makes its jobs "unknown" with the error attached; nothing else fails.
-- Time is koophone.now, never behind the end of the last sleep (an injected sleep that returns at
-- once moves the wait forward all the same, so a test sees the same polls and sleeps).
local argerror = require "koophone.argerror"
local bucket = require "koophone.bucket"
local classify = require("koophone.classify").classify
local codes = require("koophone.codes").names
local core = require "koophone.core"
local errors = require "koophone.errors"

local _M = {}

local FNAME = "koophone.wait_jobs"
_M.defaults = { timeout = 600, interval = 1, max_interval = 15 }
local OPTIONS = { rate = true, on_poll = true, sleep = true, on_job = true, deadline = true,
                  cancel = true }
for name in pairs(_M.defaults) do OPTIONS[name] = true end

-- States a job does not leave. "unknown" too: a status nobody documents, or a task GetTask does
-- not know; polling again would not tell more.
_M.FINAL = { succeeded = true, failed = true, unknown = true }

-- check(opts, fname, argn, path) -> the options with their defaults (path: "opts" or "opts.wait").
function _M.check(opts, fname, argn, path)
  if opts == nil or opts == true then opts = {} end
  if type(opts) ~= "table" then
    argerror.raise(fname, argn, path, "expected a table, got %s", type(opts))
  end
  argerror.check_names(opts, OPTIONS, fname, argn, path)
  local o = {}
  for name, default in pairs(_M.defaults) do
    local v = opts[name]
    if v == nil then v = default end
    if type(v) ~= "number" or not (v > 0 and v <= 86400 * 365) then
      argerror.raise(fname, argn, path .. "." .. name, "expected a number > 0, got %s", tostring(v))
    end
    o[name] = v
  end
  if opts.rate ~= nil and (type(opts.rate) ~= "number" or not (opts.rate > 0 and opts.rate < math.huge)) then
    argerror.raise(fname, argn, path .. ".rate", "expected a number > 0, got %s", tostring(opts.rate))
  end
  for _, name in ipairs { "on_poll", "sleep", "on_job" } do
    if opts[name] ~= nil and type(opts[name]) ~= "function" then
      argerror.raise(fname, argn, path .. "." .. name, "expected a function, got %s", type(opts[name]))
    end
  end
  o.rate, o.on_poll, o.sleep, o.on_job = opts.rate, opts.on_poll, opts.sleep, opts.on_job
  -- deadline and cancel: as koophone.client's per call (they bound the GetTask calls too)
  o.limit = require("koophone.client").limit(opts, fname, argn, path)
  return o
end

-- The tasks of `what`: a list of { id =, jobs = { job_id, ... } } (jobs known beforehand), in
-- the order met.
local function tasks_of(what)
  local list, by_id = {}, {}
  local function add(task_id, job_id, instance_id)
    if type(task_id) ~= "string" or task_id == "" then return end
    local t = by_id[task_id]
    if not t then
      t = { id = task_id, jobs = {}, instance = {} }
      by_id[task_id] = t
      list[#list + 1] = t
    end
    if type(job_id) == "string" then
      t.jobs[#t.jobs + 1] = job_id
      t.instance[job_id] = instance_id
    end
  end
  if type(what) ~= "table" then
    argerror.raise(FNAME, 2, "what", "expected an unassign result, an unassign_all report or a list, got %s",
                   type(what))
  end
  local function add_result(r) -- an unassign result, or a row of unassign_all
    add(r.task_id, r.job_id, r.instance_id)
    if r.job_id == nil and type(r.jobs) == "table" then
      for _, j in ipairs(r.jobs) do add(r.task_id, j.job_id, j.instance_id) end
    end
  end
  if type(what.task_id) == "string" then
    add_result(what)
    return list
  end
  local rows = what.results or what
  for i, r in pairs(rows) do
    if type(r) == "string" then
      add(r)
    elseif type(r) == "table" then
      add_result(r)
    elseif type(i) == "number" then
      argerror.raise(FNAME, 2, ("what[%d]"):format(i), "expected a task id or a row, got %s", type(r))
    end
  end
  return list
end

-- wait_jobs(client, token, what, opts) -> report (report.task_errors: task id -> the error that
-- ended its polling). client: anything with get_task(token, id, opts)
-- and sleep (a koophone.client). opts.on_job(job), when given, sees every job once, when it
-- becomes final (the bulk layer journals it there). known (optional): job_id -> { state,
-- error_code, error_msg } of jobs final already (from a journal): not asked for again.
function _M.wait_jobs(client, token, what, opts, known)
  opts = _M.check(opts, FNAME, 3, "opts")
  local tasks = tasks_of(what)
  local sleep = opts.sleep or client.sleep or core.sleep
  local virtual = core.now()
  local function now() return math.max(core.now(), virtual) end
  local function pause(seconds)
    if seconds > 0 then
      local target = now() + seconds
      sleep(seconds, limit and limit.cancel)
      virtual = math.max(virtual, target)
    end
  end
  local start = now()
  local limit = opts.limit
  -- polls stop at the timeout; a deadline also bounds the polls' GetTask calls and their retries
  local deadline = math.min(start + opts.timeout, limit and limit.at and start + limit.seconds or math.huge)
  local rb = opts.rate and bucket.new(opts.rate, 1, now)
  local report = { jobs = {}, succeeded = 0, failed = 0, pending = 0, unknown = 0,
                   timed_out = false, polls = 0, task_errors = {} }
  local jobs, njobs = report.jobs, 0

  -- jobs[id] = j, counted once per job id
  local function add(j)
    if not jobs[j.job_id] then njobs = njobs + 1 end
    jobs[j.job_id] = j
    return j
  end

  -- jobs not final yet: every job is counted once in report[state] when it becomes final
  local function pending()
    return njobs - report.succeeded - report.failed - report.unknown
  end

  local function final(job)
    report[job.state] = report[job.state] + 1
    if opts.on_job and not job.resumed then opts.on_job(job) end
  end
  -- jobs known beforehand start pending, or as the journal has them
  local open = {}
  for _, t in ipairs(tasks) do
    local left = 0
    for _, id in ipairs(t.jobs) do
      local k = known and known[id]
      if k and _M.FINAL[k.state] then
        final(add { job_id = id, task_id = t.id, instance_id = t.instance[id], state = k.state,
                    error_code = k.error_code, error_msg = k.error_msg, resumed = true })
      else
        add { job_id = id, task_id = t.id, instance_id = t.instance[id], state = "pending" }
        left = left + 1
      end
    end
    if left > 0 or #t.jobs == 0 then
      t.next_at, t.interval = start, opts.interval
      open[#open + 1] = t
    end
  end

  local function progress()
    if not opts.on_poll then return end
    opts.on_poll { succeeded = report.succeeded, failed = report.failed, unknown = report.unknown,
                   pending = pending(), polls = report.polls, tasks = #open, elapsed = now() - start }
  end

  -- A final error for the task: its jobs still open become unknown, with it.
  local function give_up(t, err)
    report.task_errors[t.id] = err
    for _, id in ipairs(t.jobs) do
      local j = jobs[id]
      if not _M.FINAL[j.state] then
        j.state, j.err = "unknown", err
        final(j)
      end
    end
    return true
  end

  -- Takes a GetTask answer; true when every job of the task is final.
  local function update(t, task)
    local seen = {}
    for _, got in ipairs(task.jobs) do
      local id = got.job_id
      local j = jobs[id]
      seen[id] = true
      if not j then
        j = add { job_id = id, task_id = t.id, state = "pending" }
        t.jobs[#t.jobs + 1] = id
      end
      if not _M.FINAL[j.state] then
        j.status, j.state = got.status, got.state
        j.error_code, j.error_msg, j.execute_msg = got.error_code, got.error_msg, got.execute_msg
        if _M.FINAL[j.state] then final(j) end
      end
    end
    local done = true
    for _, id in ipairs(t.jobs) do
      local j = jobs[id]
      if not seen[id] and not _M.FINAL[j.state] then -- a job the task no longer lists
        j.state, j.err = "unknown", { code = "JOB_NOT_LISTED", message = "GetTask did not list this job" }
        final(j)
      end
      done = done and _M.FINAL[j.state]
    end
    return done
  end

  local function poll(t)
    -- an id from an answer that get_task would refuse as a caller's mistake (a server that sends
    -- ".." must not make wait_jobs raise): its jobs become unknown, nothing sent
    local problem = core.task_id_problem(t.id)
    if problem then
      return give_up(t, errors.new { kind = "api", code = "BAD_TASK_ID", sent = false,
                                     message = "this task id cannot be queried: " .. problem })
    end
    report.polls = report.polls + 1
    local bounds = limit and { cancel = limit.cancel }
    if limit and limit.at then bounds.deadline = math.max(deadline - now(), 0.001) end
    local task, err = client:get_task(token, t.id, bounds)
    if task then return update(t, task) end
    if err.kind == "interrupted" or err.retry_stopped == "deadline" then
      return false -- the loop stops: nothing learnt
    end
    if err.code == codes.TASK_NOT_FOUND or err.status == 404 or classify(err) == "final" then
      return give_up(t, err)
    end
    return false -- transient after the client's retries: asked again later
  end

  local function cancelled() return limit and limit.cancel and limit.cancel:cancelled() end
  while #open > 0 and not core.interrupted() and not cancelled() do
    local first = 1
    for i = 2, #open do
      if open[i].next_at < open[first].next_at then first = i end
    end
    local t = open[first]
    local at = math.max(t.next_at, now() + (rb and rb:wait() or 0))
    if at >= deadline then
      pause(deadline - now())
      report.timed_out = true
      break
    end
    pause(at - now())
    if rb then rb:take(1, 1) end
    if poll(t) then
      table.remove(open, first)
    else
      t.next_at = now() + t.interval
      t.interval = math.min(t.interval * 2, opts.max_interval)
    end
    progress()
  end
  for _, j in pairs(jobs) do j.resumed = nil end
  report.pending = pending()
  report.elapsed = now() - start
  -- SIGINT, SIGTERM, interrupt(); "cancelled": opts.cancel
  report.interrupted = #open > 0 and (core.interrupted() or (cancelled() and "cancelled")) or nil
  return report
end

return _M
