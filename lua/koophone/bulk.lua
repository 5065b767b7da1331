-- Bulk unassign: every pair of a large input ends with exactly one outcome.
--
--   local report = client:unassign_all(token, pairs, opts)   -- = bulk.unassign_all(client, ...)
--
-- The rows (koophone.rows) become batches; batches go out in rounds through the C core's
-- unassign_many (the only concurrency a Lua script has); each answer decides the outcome of its
-- pairs. A batch refused as a whole because of some of its pairs (2210, 1000, 1001, 1012) is split
-- in halves until those pairs are alone (bisection); other failures are retried as the client's
-- policy says. The journal (koophone.journal) records each request before it leaves and each
-- outcome after, so a resumed run never sends a finished pair again.
local codes = require("koophone.codes").names
local classify = require("koophone.classify").classify
local rows_new = require("koophone.rows").new
local journal = require "koophone.journal"
local bucket = require "koophone.bucket"
local match_jobs = require("koophone.jobs").match
local core = require "koophone.core"

local _M = {}

_M.OUTCOMES = { "unassigned", "assumed_unassigned", "not_bound", "denied", "invalid", "duplicate",
                "unconfirmed", "failed" }

-- A batch that fails with one of these failed because of some of its pairs: bisect it. Alone,
-- a pair's failure is its outcome.
local SINGLE = {
  [codes.BINDING_NOT_FOUND] = "not_bound",
  [codes.BAD_PARAMETER] = "invalid",
  [codes.NO_PERMISSION] = "denied",
  [codes.NOT_TENANT_INSTANCE] = "denied",
}

local ROUND_PER_CONNECTION = 8 -- batches handed to unassign_many per request in flight

local FNAME = "koophone.unassign_all"
local OPTIONS = {
  batch_size = "number", concurrency = "number", rate = "number", journal = "string",
  resume = "boolean", on_progress = "function", on_result = "function", keep_results = "boolean",
  shard = "table", timeout = "number", max_bisect_requests = "number", input = "table",
  wait = "boolean or table", -- koophone.bulk_wait
}

-- The identity of the input that the journal records (see koophone.journal).
local INPUT_FIELDS = { name = "string", size = "number", digest = "string", rows = "number" }

-- Failures every later request would meet as well: the run stops sending.
local function fatal(err)
  local _, why = classify(err)
  return why == "token" or err.status == 401 or err.status == 403
      or err.code == codes.TENANT_NOT_FOUND
end

local function check_integer(opts, name, default, min, max)
  local v = opts[name]
  if v == nil then return default end
  if v % 1 ~= 0 or v < min or v > max then
    error(("%s: option '%s': expected an integer from %d to %s, got %s"):format(
      FNAME, name, min, tostring(max), tostring(v)), 3)
  end
  return v
end

local function check_options(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(FNAME .. ": bad argument #3 (opts): expected a table", 3) end
  for k, v in pairs(opts) do
    if not OPTIONS[k] then error(("%s: unknown option '%s'"):format(FNAME, tostring(k)), 3) end
    if not OPTIONS[k]:find(type(v), 1, true) then
      error(("%s: option '%s': expected a %s, got %s"):format(FNAME, k, OPTIONS[k], type(v)), 3)
    end
  end
  if opts.rate and not (opts.rate > 0) then error(FNAME .. ": option 'rate': expected > 0", 3) end
  if opts.resume and not opts.journal then
    error(FNAME .. ": option 'resume' needs the option 'journal'", 3)
  end
  for k, v in pairs(opts.input or {}) do
    if type(v) ~= INPUT_FIELDS[k] then
      error(("%s: option 'input': field '%s': expected %s, got %s"):format(
        FNAME, tostring(k), INPUT_FIELDS[k] and "a " .. INPUT_FIELDS[k] or "no such field", type(v)), 3)
    end
  end
  local s = opts.shard
  if s and not (type(s.count) == "number" and s.count % 1 == 0 and s.count >= 1
                and type(s.index) == "number" and s.index % 1 == 0
                and s.index >= 0 and s.index < s.count) then
    error(FNAME .. ": option 'shard': expected { index = i, count = n } with 0 <= i < n", 3)
  end
  return opts
end

-- ------------------------------------------------------------------ outcomes

local function progress(run)
  if not run.on_progress then return end
  local counts = {}
  for k, v in pairs(run.counts) do counts[k] = v end
  run.on_progress { done = run.done, total = run.rows.total, counts = counts,
                    elapsed = run.now() - run.started, requests = run.requests }
end

-- Reports rows whose outcome is set: the entry of koophone.rows becomes its result (one table per
-- row, whatever happens to it). One loop for a whole list: this runs for every row.
local function report(run, list)
  local counts, results, on_result, n = run.counts, run.results, run.on_result, #list
  for k = 1, n do
    local e = list[k]
    local outcome = e.outcome
    counts[outcome] = counts[outcome] + 1
    if results then results[e.pos] = e end
    e.pos, e.tainted = nil, nil
    if on_result then on_result(e) end
  end
  run.done = run.done + n
end

-- The journal records of a finished request (rows with their outcome set), written with the
-- round's others; clear: the request certainly changed nothing.
local function journal_done(run, list, request_id, clear)
  if run.journal then run.journal:finished(request_id, list, clear) end
end

-- Writes the journal's buffered records, and with sync brings them to the disk; a failure stops
-- the run.
local function journal_flush(run, sync)
  local ok, problem = run.journal:flush(sync)
  if not ok then error({ journal = problem }) end
end

-- Every pair of the job gets `outcome`; the pairs are journaled together, then reported.
local function finish_items(run, job, outcome, err, reason, clear)
  local items, request_id = job.items, job.request_id
  for k = 1, #items do
    local item = items[k]
    item.outcome, item.request_id, item.err = outcome, request_id, err
    if reason then item.reason = reason end
  end
  journal_done(run, items, request_id, clear)
  report(run, items)
end

local function fail_items(run, job, err, reason, clear)
  finish_items(run, job, "failed", err, reason, clear)
end

-- ------------------------------------------------------------------ jobs

local function new_job(run, items)
  return { items = items, attempt = 0, state = run.policy:new_state() }
end

local function taint(job)
  for _, item in ipairs(job.items) do item.tainted = item.tainted or true end
end

-- Splits a job refused because of some of its pairs; both halves go out in the next round.
local function bisect(run, job, err)
  local n = #job.items
  if run.aborted then
    return fail_items(run, job, err, "not sent again: the run stopped", false)
  end
  if run.max_bisect and run.bisect_requests + 2 > run.max_bisect then
    return fail_items(run, job, err, "max_bisect_requests reached", false)
  end
  local mid = math.floor(n / 2)
  local left, right = {}, {}
  for i = 1, n do
    if i <= mid then left[#left + 1] = job.items[i] else right[#right + 1] = job.items[i] end
  end
  run.bisect_requests = run.bisect_requests + 2
  run.ready[#run.ready + 1] = new_job(run, left)
  run.ready[#run.ready + 1] = new_job(run, right)
end

local UNCONFIRMED = "the answer did not confirm this pair"

-- A success answer: a pair is unassigned only with its own job (koophone.jobs); the others are
-- unconfirmed, and may have been applied.
local function succeeded(run, job, res)
  res = run.policy:finish(res, nil, job.attempt, job.state)
  local items, task_id = job.items, res.task_id
  local ids, missing = {}, 0
  if res.outcome == "unassigned" then ids, missing = match_jobs(items, res) end
  for k = 1, #items do -- a plain loop: this runs for every pair sent
    local item = items[k]
    item.task_id, item.job_id = task_id, ids[k]
  end
  if missing == 0 then return finish_items(run, job, res.outcome, res.err, nil, false) end
  local confirmed, open = {}, {}
  for k = 1, #items do
    local item = items[k]
    if ids[k] then
      confirmed[#confirmed + 1] = item
    else
      item.maybe_applied = true
      open[#open + 1] = item
    end
  end
  finish_items(run, { items = confirmed, request_id = job.request_id }, "unassigned", nil, nil, false)
  finish_items(run, { items = open, request_id = job.request_id }, "unconfirmed", nil, UNCONFIRMED,
               false)
end

local function abort(run, err)
  run.aborted = err
  for _, list in ipairs { run.ready, run.waiting } do
    for _, job in ipairs(list) do fail_items(run, job, err, "not sent again: the run stopped", false) end
  end
  run.ready, run.waiting = {}, {}
end

local function failed(run, job, err)
  local single = SINGLE[err.code]
  -- certainly nothing changed: no silent resend (the answer is about this copy only), and no
  -- earlier copy that may have been applied
  local _, _, maybe = classify(err)
  local clean = (err.attempts or 1) == 1 and not (maybe or err.maybe_applied or job.state.maybe_applied)
  if not clean then taint(job) end
  if single then
    if #job.items > 1 then
      journal_done(run, {}, job.request_id, clean)
      return bisect(run, job, err)
    end
    local item = job.items[1]
    if single == "not_bound" and item.tainted then
      local reason = type(item.tainted) == "string" and item.tainted or nil
      return finish_items(run, job, "assumed_unassigned", err, reason, false)
    end
    return finish_items(run, job, single, err, nil, clean)
  end
  local again, delay = run.policy:decide(err, job.attempt, job.state)
  if again and not run.aborted then
    journal_done(run, {}, job.request_id, clean)
    job.ready_at = run.now() + delay
    run.waiting[#run.waiting + 1] = job
    return
  end
  local res
  res, err = run.policy:finish(nil, err, job.attempt, job.state)
  if res then return succeeded(run, job, res) end
  fail_items(run, job, err, nil, clean)
  if fatal(err) and not run.aborted then abort(run, err) end
end

local function new_bucket(run, rate)
  return bucket.new(rate, math.max(1, math.min(run.concurrency, math.floor(rate))), run.now)
end

-- A throttled answer slows the whole run. Without a configured rate the bucket starts from the
-- rate the run has had so far (requests / elapsed), the rate the server just found too high:
-- throttled() halves it, later answers win it back up to that rate.
local function throttled(run)
  if not run.bucket then
    run.bucket = new_bucket(run, run.requests / math.max(run.now() - run.started, 0.001))
  end
  run.bucket:throttled()
end

-- Decides the pairs of an answered request; true when no further request of the round may start
-- (the run stopped, or the server asked to slow down).
local function answered(run, job, res, err)
  local got = res or err
  local throttle = err and (err.status == 429 or err.code == codes.GW_THROTTLED)
  job.attempt = job.attempt + (got.attempts or 1)
  if throttle then
    throttled(run)
  elseif run.bucket then
    run.bucket:answered()
  end
  if res and res.outcome == "assumed_unassigned" and #job.items > 1 then
    -- libcurl resent it silently: the first copy may have done the work, or failed for one pair
    taint(job)
    bisect(run, job, res.err)
  elseif res then
    succeeded(run, job, res)
  else
    failed(run, job, err)
  end
  progress(run)
  return throttle or run.aborted ~= nil
end

-- ------------------------------------------------------------------ rounds

-- Reads rows into a new job of up to batch_size pairs; rows final already are reported on the way.
local function read_job(run)
  local items, n, size, source, jnl = {}, 0, run.batch_size, run.rows, run.journal
  while n < size do
    local e = source:next()
    if not e then break end
    local rec, problem
    if jnl and not e.outcome then
      rec, problem = jnl:final(e.user_id, e.instance_id)
      if problem then error({ journal = problem }) end
    end
    if e.outcome then
      report(run, { e })
    elseif rec then
      e.outcome, e.task_id, e.job_id, e.request_id = rec.outcome, rec.task_id, rec.job_id, rec.request_id
      e.reason, e.resumed = rec.message, true
      report(run, { e })
    elseif run.aborted then
      e.outcome, e.err, e.reason = "failed", run.aborted, "not sent: the run stopped"
      report(run, { e })
    else
      e.tainted = jnl and jnl:tainted(e.user_id, e.instance_id) or nil
      n = n + 1
      items[n] = e
    end
  end
  return n > 0 and new_job(run, items) or nil
end

-- The jobs of the next round: bisection halves and due retries first, then new batches.
local function collect(run)
  local jobs, now, waiting = {}, run.now(), {}
  for _, job in ipairs(run.ready) do jobs[#jobs + 1] = job end
  for _, job in ipairs(run.waiting) do
    if job.ready_at <= now then jobs[#jobs + 1] = job else waiting[#waiting + 1] = job end
  end
  run.ready, run.waiting = {}, waiting
  while #jobs < run.round_size do
    local job = read_job(run)
    if not job then break end
    jobs[#jobs + 1] = job
  end
  if run.bucket and #jobs > 0 then
    local wait = run.bucket:wait()
    if wait > 0 then run.sleep(wait) end
    local n = run.bucket:take(#jobs, 1) -- at least one: the wait was for it
    for i = n + 1, #jobs do run.ready[#run.ready + 1] = jobs[i]; jobs[i] = nil end
  end
  return jobs
end

-- An interrupted round (SIGINT, SIGTERM, core.interrupt) starts nothing more and abandons the
-- requests in flight: their `send` records stay open, so a resume treats them as maybe applied.
local function interrupted(run, jobs, results, errors, why)
  run.interrupted = why
  for i, job in ipairs(jobs) do
    if job.started and not results[i] and not errors[i] then
      run.in_flight = run.in_flight + #job.items
    end
  end
end

-- Sends a round. Its request ids are fixed first (a retry keeps its job's), so that the journal
-- has every request of the round on the disk before the first one leaves, with the outcomes of the
-- round before (one fsync a round); each request's outcomes are written when it ends, which
-- survives the death of the process.
local function send(run, jobs)
  local batches, ids, jnl = {}, {}, run.journal
  for i, job in ipairs(jobs) do
    job.request_id = job.request_id or run.client.core:request_id()
    job.started = nil
    batches[i], ids[i] = job.items, job.request_id
    if jnl then jnl:sent(job.request_id, job.items) end
  end
  if jnl then journal_flush(run, true) end
  local results, errors, _, why = run.client.core:unassign_many(run.token, batches, {
    concurrency = run.concurrency, request_ids = ids, timeout = run.timeout,
    on_start = function(i)
      jobs[i].started = true
      run.requests = run.requests + 1
    end,
    on_done = function(i, res, err)
      local stop = answered(run, jobs[i], res, err)
      if jnl then journal_flush(run, false) end
      if stop then return false end -- start no more of this round
    end,
  })
  if why then interrupted(run, jobs, results, errors, why) end
  for _, job in ipairs(jobs) do
    if not job.started then -- never left: changed nothing
      if jnl then jnl:finished(job.request_id, {}, true) end
      if why then -- interrupted: not reported (report.unfinished); a resume sends it
        run.ready = {}
      elseif run.aborted then
        fail_items(run, job, run.aborted, "not sent: the run stopped", false)
      else -- waits for the bucket
        run.ready[#run.ready + 1] = job
      end
    end
  end
  if jnl then journal_flush(run, false) end
end

local function loop(run)
  while true do
    run.interrupted = run.interrupted or core.interrupted()
    if run.interrupted then return end
    local jobs = collect(run)
    if #jobs > 0 then
      send(run, jobs)
    elseif #run.ready == 0 and #run.waiting == 0 then
      return
    else -- only retries waiting: sleep until the first is due
      local first, waiting = math.huge, {}
      for _, job in ipairs(run.waiting) do first = math.min(first, job.ready_at) end
      if run.journal then journal_flush(run, true) end -- the outcomes so far, before a long wait
      run.sleep(math.max(0, first - run.now()))
      -- due now, whether or not the sleep slept (an injected one may not)
      for _, job in ipairs(run.waiting) do
        if job.ready_at <= first then run.ready[#run.ready + 1] = job else waiting[#waiting + 1] = job end
      end
      run.waiting = waiting
    end
  end
end

-- unassign_all(client, token, pairs, opts) -> report, or nil, message when the journal fails.
-- client: a koophone.client (fields core, policy, sleep). An interrupted run (core.interrupted())
-- returns early: report.interrupted says why, report.unfinished counts the rows read without an
-- outcome (not reported), report.in_flight those of them abandoned in flight (maybe applied).
function _M.unassign_all(client, token, pairs, opts)
  opts = check_options(opts)
  if type(client) ~= "table" or not client.core or not client.policy then
    error(FNAME .. ": bad argument #1 (client): expected a koophone.client", 2)
  end
  if type(token) ~= "string" or token == "" then
    error(FNAME .. ": bad argument #1 (token): expected a non-empty string", 2)
  end
  if type(pairs) ~= "table" and type(pairs) ~= "function" then
    error(FNAME .. ": bad argument #2 (pairs): expected an array or an iterator, got " .. type(pairs), 2)
  end
  local concurrency = check_integer(opts, "concurrency", 4, 1, 64)
  local waiter = opts.wait and require("koophone.bulk_wait").new(client, token, opts.wait, opts.on_result)
  local run = {
    client = client, token = token, policy = client.policy, now = core.now,
    sleep = client.sleep or core.sleep,
    batch_size = check_integer(opts, "batch_size", 100, 1, 100000),
    concurrency = concurrency, round_size = concurrency * ROUND_PER_CONNECTION,
    max_bisect = check_integer(opts, "max_bisect_requests", nil, 0, math.huge),
    timeout = opts.timeout, on_progress = opts.on_progress,
    on_result = waiter and waiter.on_result or opts.on_result,
    results = opts.keep_results ~= false and {} or nil,
    rows = rows_new(pairs, opts), counts = {}, done = 0, requests = 0, bisect_requests = 0,
    in_flight = 0,
    ready = {}, waiting = {},
  }
  for _, o in ipairs(_M.OUTCOMES) do run.counts[o] = 0 end
  if opts.rate then run.bucket = new_bucket(run, opts.rate) end
  local shard = opts.shard and ("%d/%d"):format(opts.shard.index, opts.shard.count)
  if opts.journal then
    local input = opts.input or (type(pairs) == "table" and { rows = #pairs }) or nil
    local j, problem = journal.open(opts.journal, { resume = opts.resume, shard = shard,
                                                    input = input })
    if not j then return nil, problem end
    run.journal = j
  end
  run.started = run.now()
  local ok, e = pcall(loop, run)
  if ok and waiter then ok, e = pcall(waiter.finish, waiter, run) end
  if run.journal then
    local closed, problem = run.journal:close()
    if ok and not closed then ok, e = false, { journal = problem } end
  end
  if not ok then
    if type(e) == "table" and e.journal then return nil, e.journal end
    error(e, 0)
  end
  progress(run)
  return { total = run.rows.total, counts = run.counts, results = run.results,
           requests = run.requests, bisect_requests = run.bisect_requests,
           elapsed = run.now() - run.started, aborted = run.aborted,
           interrupted = run.interrupted, in_flight = run.in_flight,
           unfinished = run.rows.pos - run.done, jobs = waiter and waiter.counts,
           journal_skipped = run.journal and run.journal.skipped or nil,
           journal_damaged = run.journal and run.journal.damaged or nil }
end

return _M
