-- One bulk run (koophone.bulk): its state, and how its requests go out and their answers decide
-- the outcomes of its pairs.
--
-- The rows (koophone.rows) become batches; batches go out in rounds, each round a transfer set of
-- the C core (client.core:start_many, the only concurrency a Lua script has) driven from here one
-- answer at a time; each answer decides the outcome of its pairs. A batch refused as a whole
-- because of some of its pairs (2210, 1000, 1001, 1012) is split in halves until those pairs are
-- alone (bisection), unless every part of its first levels is refused alike (see
-- SATURATED_LEVELS); other failures are retried as the client's policy says. The journal
-- (koophone.journal) records each request before it leaves and each outcome after, so a resumed
-- run never sends a finished pair again.
local codes = require("koophone.codes").names
local classify = require "koophone.classify"
local applied = require "koophone.applied"
local bucket = require "koophone.bucket"
local match_jobs = require("koophone.jobs").match
local outcomes = require "koophone.outcomes"
local core = require "koophone.core"

local _M = {}

-- A batch that fails with one of these failed because of some of its pairs: bisect it. Alone,
-- a pair's failure is its outcome.
local SINGLE = {
  [codes.BINDING_NOT_FOUND] = "not_bound",
  [codes.BAD_PARAMETER] = "invalid",
  [codes.NO_PERMISSION] = "denied",
  [codes.NOT_TENANT_INSTANCE] = "denied",
}

local ROUND_PER_CONNECTION = 8 -- batches of a round per request in flight

-- A batch refused as a whole is split level by level. While every part of a level is refused with
-- the batch's code, each part holds a pair that code refuses, and nothing says more: when all the
-- SATURATED_PARTS parts of level SATURATED_LEVELS are refused so, splitting on would cost about two
-- requests a pair (a wrong tenant, a file already done), and their pairs end `failed` (a refusal
-- of a part proves nothing about each of its pairs). A batch with fewer bad pairs than parts is
-- always isolated to its bad pairs.
local SATURATED_LEVELS, SATURATED_PARTS = 3, 8
-- When this many batches in a row stop so with a code that says the instances are not the
-- tenant's, the token is for another project or tenant: the run stops.
local TENANT_CODES = { [codes.NO_PERMISSION] = true, [codes.NOT_TENANT_INSTANCE] = true }
local REFUSED_BATCHES_STOP = 3

local UNCONFIRMED = "the answer did not confirm this pair"
local STOPPED, NOT_SENT = "not sent again: the run stopped", "not sent: the run stopped"
local MAYBE_STOPPED = "not sent again: the run stopped; an earlier attempt may have applied it"
local NOT_ISOLATED = "not isolated: bisection stopped (%s for the batch and each of its %d parts)"

-- Failures every later request would meet as well: the run stops sending.
local function fatal(err)
  local _, why = classify.classify(err)
  return why == "token" or why == "certificate" or err.status == 401 or err.status == 403
      or err.code == codes.TENANT_NOT_FOUND
end

-- A copy of err whose message ends with `note` in parentheses.
local function noted(err, note)
  local e = {}
  for k, v in pairs(err) do e[k] = v end
  e.message = ("%s (%s)"):format(err.message or "", note)
  return setmetatable(e, getmetatable(err))
end

local Run = {}
Run.__index = Run

-- new(client, token, rows, settings) -> a run of the koophone.rows `rows`. settings (checked
-- by koophone.bulk): batch_size, concurrency, max_bisect, timeout, rate, on_progress, on_result,
-- keep_results, waiter (koophone.bulk_wait: waits for the jobs after the rounds). The journal, when there is one, is set as run.journal before execute().
function _M.new(client, token, rows, s)
  local self = setmetatable({
    client = client, token = token, policy = client.policy, now = core.now,
    provider = type(token) == "table", -- a token provider (koophone.iam_token)
    sleep = client.sleep or core.sleep, rows = rows,
    batch_size = s.batch_size, concurrency = s.concurrency,
    round_size = s.concurrency * ROUND_PER_CONNECTION, max_bisect = s.max_bisect,
    timeout = s.timeout, on_progress = s.on_progress, on_result = s.on_result, waiter = s.waiter,
    deadline_at = s.deadline and core.now() + s.deadline, -- the run stops there ("deadline")
    settle = s.settle, -- koophone.settle: reads before sending, holds maybe-applied rows back
    results = s.keep_results ~= false and {} or nil,
    counts = {}, done = 0, requests = 0, bisect_requests = 0, in_flight = 0,
    ready = {}, waiting = {}, -- jobs for the next round; retries waiting for their delay
    parked = {}, -- job -> true: refused parts waiting for the rest of their level
    doubtful = {}, -- job -> true: not settled, and an earlier request of it may have been applied
    refused_batches = 0, -- batches in a row stopped with a TENANT_CODES code
  }, Run)
  for _, o in ipairs(outcomes.names) do self.counts[o] = 0 end
  -- the run's own rate, else the client's (shared with its other calls, maybe with other workers)
  self.bucket = s.rate and self:new_bucket(s.rate) or client.bucket
  return self
end

-- ------------------------------------------------------------------ outcomes

function Run:progress()
  if not self.on_progress then return end
  local counts = {}
  for k, v in pairs(self.counts) do counts[k] = v end
  self.on_progress { done = self.done, total = self.rows.total, counts = counts,
                     elapsed = self.now() - self.started, requests = self.requests }
end

-- Reports rows whose outcome is set: the entry of koophone.rows becomes its result (one table per
-- row, whatever happens to it). One loop for a whole list: this runs for every row.
function Run:report_rows(list)
  local counts, results, on_result, n, settle = self.counts, self.results, self.on_result, #list, self.settle
  local reported = 0
  for k = 1, n do
    local e = list[k]
    if not (settle and settle:report(e)) then -- else held back, to be read after the rounds
      local outcome = e.outcome
      counts[outcome] = counts[outcome] + 1
      if results then results[e.pos] = e end
      -- the taint of an earlier request is the run's own: the result says what it means
      e.maybe_applied = applied.row(e) or nil
      e.pos, e.tainted = nil, nil
      if on_result then on_result(e) end
      reported = reported + 1
    end
  end
  self.done = self.done + reported
end

-- The journal records of a finished request (rows with their outcome set), written with the
-- round's others; clear: the request certainly changed nothing.
function Run:journal_done(list, request_id, clear)
  if self.journal then self.journal:finished(request_id, list, clear) end
end

-- Writes the journal's buffered records, and with sync brings them to the disk; a failure stops
-- the run.
function Run:flush(sync)
  if not self.journal then return end
  local ok, problem = self.journal:flush(sync)
  if not ok then error({ journal = problem }) end
end

-- Every pair of `items` gets `outcome`; the pairs are journaled together, then reported.
function Run:finish(items, request_id, outcome, err, reason, clear)
  for k = 1, #items do
    local item = items[k]
    item.outcome, item.request_id, item.err = outcome, request_id, err
    if reason then item.reason = reason end
  end
  self:journal_done(items, request_id, clear)
  self:report_rows(items)
end

function Run:fail(job, err, reason, clear)
  if reason == STOPPED or reason == NOT_SENT then return self:stop(job, err, reason) end
  self:finish(job.items, job.request_id, "failed", err, reason, clear)
end

-- The run stopped before `job` settled: its pairs end `failed` with `reason`, or, where an earlier
-- attempt (of this run, or of a journaled one) may have applied them, `unconfirmed` with that
-- attempt's error.
function Run:stop(job, err, reason)
  self.doubtful[job] = nil
  -- a half never sent is no bisection request
  if job.half and job.attempt == 0 then self.bisect_requests = self.bisect_requests - 1 end
  local maybe_err = err
  if job.err and job.state.maybe_applied then
    local _, e = self.policy:finish(nil, job.err, job.attempt, job.state)
    maybe_err = e or err
  end
  local unsent, open = {}, {}
  for _, item in ipairs(job.items) do
    if job.doubt or item.tainted then
      item.maybe_applied = true
      open[#open + 1] = item
    else
      unsent[#unsent + 1] = item
    end
  end
  if #unsent > 0 then self:finish(unsent, job.request_id, "failed", err, reason, false) end
  if #open > 0 then self:finish(open, job.request_id, "unconfirmed", maybe_err, MAYBE_STOPPED, false) end
end

-- ------------------------------------------------------------------ answers

-- A job of `items`; a part of a bisected batch has its batch's tree (false: not followed) and
-- its level in it, a batch read from the input has neither.
function Run:new_job(items, tree, level)
  return { items = items, attempt = 0, state = self.policy:new_state(), tree = tree, level = level }
end

-- The pairs of job may have been applied by one of its requests: so may they by the next.
local function taint(job)
  job.doubt = true
  for _, item in ipairs(job.items) do item.tainted = item.tainted or true end
end

local function any_tainted(items)
  for k = 1, #items do if items[k].tainted then return true end end
  return false
end

-- Splits a job refused because of some of its pairs; both halves go out in the next round.
-- Returns true when it split.
function Run:bisect(job, err)
  local n = #job.items
  if self.aborted then return self:fail(job, err, STOPPED, false) end
  if self.max_bisect and self.bisect_requests + 2 > self.max_bisect then
    return self:fail(job, err, "max_bisect_requests reached", false)
  end
  local mid = math.floor(n / 2)
  local left, right = {}, {}
  for i = 1, n do
    if i <= mid then left[#left + 1] = job.items[i] else right[#right + 1] = job.items[i] end
  end
  self.bisect_requests = self.bisect_requests + 2
  local tree = job.tree and not job.tree.mixed and job.tree or false
  for _, items in ipairs { left, right } do
    local half = self:new_job(items, tree, tree and job.level + 1 or nil)
    half.doubt, half.half = job.doubt, true
    if half.doubt then self.doubtful[half] = true end
    self.ready[#self.ready + 1] = half
  end
  return true
end

-- A job of several pairs refused with a SINGLE code (its request journaled as ended): split it,
-- or park it until every part of its level has answered (see SATURATED_LEVELS).
function Run:refused(job, err)
  local tree = job.tree
  if tree == nil then -- a batch from the input: the root of its tree
    tree = { code = err.code, expected = { [0] = 1 }, refused = {}, parked = {} }
    job.tree, job.level = tree, 0
  end
  if tree and any_tainted(job.items) then self:mixed(tree) end -- its 2210 is no refusal
  if not tree or tree.mixed or self.aborted then return self:bisect(job, err) end
  job.err, self.parked[job] = err, true
  local list = tree.parked[job.level] or {}
  tree.parked[job.level] = list
  list[#list + 1] = job
  self:level_refused(tree, job.level)
end

-- One more part of level `level` of tree was refused with its code; when that is every part of
-- the level, its parked parts are split, or at SATURATED_LEVELS stopped.
function Run:level_refused(tree, level)
  tree.refused[level] = (tree.refused[level] or 0) + 1
  if tree.mixed or tree.refused[level] < tree.expected[level] then return end
  local list = tree.parked[level] or {}
  tree.parked[level] = nil
  local split = 0
  for _, job in ipairs(list) do
    if self.parked[job] then
      self.parked[job] = nil
      if level >= SATURATED_LEVELS then
        self:finish(job.items, job.request_id, "failed", job.err,
                    NOT_ISOLATED:format(tree.code, SATURATED_PARTS), false)
      elseif self:bisect(job, job.err) then
        split = split + 1
      end
    end
  end
  tree.expected[level + 1] = 2 * split
  if level >= SATURATED_LEVELS and TENANT_CODES[tree.code] and #list > 0 then
    self.refused_batches = self.refused_batches + 1
    if self.refused_batches >= REFUSED_BATCHES_STOP and not self.aborted then
      self:abort(noted(list[1].err, ("%d batches in a row refused as a whole, each of their %d "
        .. "parts too: is the token for the project that holds these instances?")
        :format(REFUSED_BATCHES_STOP, SATURATED_PARTS)))
    end
  end
end

-- A part of tree answered otherwise than refused with its code: the tree is not followed any
-- more, and its parked parts are split.
function Run:mixed(tree)
  if tree.mixed then return end
  tree.mixed = true
  for _, list in pairs(tree.parked) do
    for _, job in ipairs(list) do
      if self.parked[job] then
        self.parked[job] = nil
        self:bisect(job, job.err)
      end
    end
  end
  tree.parked = {}
end

-- A success answer: a pair is unassigned only with its own job (koophone.jobs); the others are
-- unconfirmed, and may have been applied.
function Run:succeeded(job, res)
  res = self.policy:finish(res, nil, job.attempt, job.state)
  local items, task_id = job.items, res.task_id
  self.refused_batches = 0
  local ids, missing = {}, 0
  if res.outcome == "unassigned" then ids, missing = match_jobs(items, res) end
  for k = 1, #items do -- a plain loop: this runs for every pair sent
    local item = items[k]
    item.task_id, item.job_id = task_id, ids[k]
  end
  if missing == 0 then return self:finish(items, job.request_id, res.outcome, res.err, nil, false) end
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
  self:finish(confirmed, job.request_id, "unassigned", nil, nil, false)
  self:finish(open, job.request_id, "unconfirmed", nil, UNCONFIRMED, false)
end

-- Stops the run: nothing more is sent, the jobs not settled end (Run:stop). A token provider's
-- failure while the interruption flag is up (a login cut short by SIGINT, SIGTERM or
-- core.interrupt) is that interruption instead: nothing was sent, the jobs stay unfinished and a
-- resume sends them.
function Run:abort(err)
  local why = core.interrupted()
  if why and err.sent == false and not err.status then
    self.interrupted = self.interrupted or why
    return
  end
  self.aborted = err
  for _, list in ipairs { self.ready, self.waiting } do
    for _, job in ipairs(list) do self:fail(job, err, STOPPED, false) end
  end
  for job in pairs(self.parked) do self:fail(job, job.err, STOPPED, false) end
  self.ready, self.waiting, self.parked = {}, {}, {}
end

function Run:failed(job, err)
  local single = SINGLE[err.code]
  -- certainly nothing changed, by this request or an earlier copy of it (koophone.applied)
  local clean = applied.clean(err, job.state)
  if not clean then taint(job) end
  if single then
    if #job.items > 1 then
      self:journal_done({}, job.request_id, clean)
      return self:refused(job, err)
    end
    local item, tree = job.items[1], job.tree
    if single == "not_bound" then single = applied.not_found(item.tainted, 1) end
    if single == "assumed_unassigned" then
      local reason = type(item.tainted) == "string" and item.tainted or nil
      self:finish(job.items, job.request_id, single, err, reason, false)
      if tree then self:mixed(tree) end
      return
    end
    self:finish(job.items, job.request_id, single, err, nil, clean)
    if tree then self:level_refused(tree, job.level) end
    return
  end
  -- a token provider's token refused by the gateway (before KooPhone saw the request): the
  -- provider fetches a new one for the next round and the request goes once more, same id
  if self.provider and not job.token_renewed and classify.token_refused(err) then
    job.token_renewed = true
    self.token:invalidate()
    if clean then return self:retry_later(job, err, clean, 0) end
    -- an earlier copy may have been applied: once more would be a resend that no policy allowed;
    -- the job ends maybe applied and the run goes on with the new token
    local _, e = self.policy:finish(nil, err, job.attempt, job.state)
    return self:fail(job, e, nil, false)
  end
  local again, delay = self.policy:decide(err, job.attempt, job.state)
  if again and not self.aborted then return self:retry_later(job, err, clean, delay) end
  local res
  res, err = self.policy:finish(nil, err, job.attempt, job.state)
  if res then return self:succeeded(job, res) end
  self:fail(job, err, nil, clean)
  if fatal(err) and not self.aborted then self:abort(err) end
end

-- Puts job back for another attempt after `delay` seconds; err is its last failure.
function Run:retry_later(job, err, clean, delay)
  self:journal_done({}, job.request_id, clean)
  job.err, job.ready_at = err, self.now() + delay
  if job.doubt then self.doubtful[job] = true end
  self.waiting[#self.waiting + 1] = job
end

function Run:new_bucket(rate)
  return bucket.new(rate, math.max(1, math.min(self.concurrency, math.floor(rate))), self.now)
end

-- A throttled answer slows the whole run. Without a configured rate the bucket starts from the
-- rate the run has had so far (requests / elapsed), the rate the server just found too high:
-- throttled() halves it, later answers win it back up to that rate.
function Run:throttled()
  if not self.bucket then
    self.bucket = self:new_bucket(self.requests / math.max(self.now() - self.started, 0.001))
  end
  self.bucket:throttled()
end

-- Decides the pairs of an answered request; true when no further request of the round may start
-- (the run stopped, or the server asked to slow down).
function Run:answered(job, res, err)
  local got = res or err
  self.doubtful[job] = nil
  if job.tree and not (err and err.code == job.tree.code) then self:mixed(job.tree) end
  local throttle = err and classify.throttled(err)
  job.attempt = job.attempt + (got.attempts or 1)
  if throttle then
    self:throttled()
  elseif self.bucket then
    self.bucket:answer(err)
  end
  if res then
    self:succeeded(job, res)
  else
    self:failed(job, err)
  end
  self:progress()
  return throttle or self.aborted ~= nil
end

-- ------------------------------------------------------------------ rounds

-- Reads rows into a new job of up to batch_size pairs; rows final already are reported on the way.
function Run:read_job()
  local items, n, size, source, jnl = {}, 0, self.batch_size, self.rows, self.journal
  while n < size do
    local e = source:next()
    if not e then break end
    local rec, problem
    if jnl and not e.outcome then
      rec, problem = jnl:final(e.user_id, e.instance_id)
      if problem then error({ journal = problem }) end
    end
    if e.outcome then
      if e.settled then self:journal_done({ e }, nil, false) end -- decided by a read (koophone.settle)
      self:report_rows { e }
    elseif rec then
      e.outcome, e.task_id, e.job_id, e.request_id = rec.outcome, rec.task_id, rec.job_id, rec.request_id
      e.reason, e.resumed = rec.message, true
      self:report_rows { e }
    elseif self.aborted then
      e.outcome, e.err, e.reason = "failed", self.aborted, NOT_SENT
      self:report_rows { e }
    else
      e.tainted = jnl and jnl:tainted(e.user_id, e.instance_id) or nil
      n = n + 1
      items[n] = e
    end
  end
  return n > 0 and self:new_job(items) or nil
end

-- The jobs of the next round: bisection halves and due retries first, then new batches.
function Run:collect()
  local jobs, now, waiting = {}, self.now(), {}
  for _, job in ipairs(self.ready) do jobs[#jobs + 1] = job end
  for _, job in ipairs(self.waiting) do
    if job.ready_at <= now then jobs[#jobs + 1] = job else waiting[#waiting + 1] = job end
  end
  self.ready, self.waiting = {}, waiting
  if self.settle then jobs = self.settle:resend(self, jobs) end -- read before sending again
  while #jobs < self.round_size do
    local job = self:read_job()
    if not job then break end
    jobs[#jobs + 1] = job
  end
  if self.bucket and #jobs > 0 then
    local wait = self.bucket:wait()
    if wait > 0 then self.sleep(wait) end
    local n = self.bucket:take(#jobs, 1) -- at least one: the wait was for it
    for i = n + 1, #jobs do self.ready[#self.ready + 1] = jobs[i]; jobs[i] = nil end
  end
  return jobs
end

-- An interrupted round (SIGINT, SIGTERM, core.interrupt) starts nothing more and abandons the
-- requests in flight: their `send` records stay open, so a resume treats them as maybe applied.
function Run:interrupt_round(jobs, ended, why)
  self.interrupted = why
  for i, job in ipairs(jobs) do
    if job.started and not ended[i] then self.in_flight = self.in_flight + #job.items end
  end
end

-- Drives a round's transfer set (client.core:start_many) to its end: each answer decides its pairs
-- and its journal records are written as it comes; an answer after which no further request of
-- the round may start stops the set (those in flight still end).
function Run:drive(set, jobs)
  local started, ended = 0, {}
  while true do
    local i, res, err = set:next()
    local now = set:started() -- jobs 1..now have been handed to libcurl: they may have been sent
    for k = started + 1, now do jobs[k].started = true end
    self.requests = self.requests + now - started
    started = now
    if not i then -- the round ended; res is why an interruption ended it
      if res then self:interrupt_round(jobs, ended, res) end
      return
    end
    ended[i] = true
    if self:answered(jobs[i], res, err) then set:stop() end
    self:flush(false)
  end
end

-- Sends a round. Its request ids are fixed first (a retry keeps its job's), so that the journal
-- has every request of the round on the disk before the first one leaves, with the outcomes of the
-- round before (one fsync a round); each request's outcomes are written when it ends, which
-- survives the death of the process.
function Run:send(jobs)
  local batches, ids, jnl = {}, {}, self.journal
  for i, job in ipairs(jobs) do
    job.request_id = job.request_id or self.client.core:request_id()
    job.started = nil
    batches[i], ids[i] = job.items, job.request_id
    if jnl then jnl:sent(job.request_id, job.items) end
  end
  self:flush(true)
  local set, err = self.client.core:start_many(self.token, batches, {
    concurrency = self.concurrency, request_ids = ids, timeout = self.timeout,
    deadline = self.deadline_at and math.max(self.deadline_at - self.now(), 0.001) })
  if set then
    local ok, e = pcall(self.drive, self, set, jobs)
    -- after an error (the journal's, raised by flush): the requests in flight are abandoned and
    -- their `send` records stay open (maybe applied)
    set:close()
    if not ok then error(e, 0) end
  else -- a token provider failed (err is its error): nothing was sent
    self:abort(err)
  end
  local why = self.interrupted
  for _, job in ipairs(jobs) do
    if not job.started then -- never left: changed nothing
      if jnl then jnl:finished(job.request_id, {}, true) end
      -- interrupted, it stays unreported (report.unfinished counts it): a resume sends it
      if self.aborted and not why then
        self:fail(job, self.aborted, NOT_SENT, false)
      elseif not why then -- waits for the bucket
        self.ready[#self.ready + 1] = job
      end
    end
  end
  self:flush(false)
end

function Run:loop()
  while true do
    self.interrupted = self.interrupted or core.interrupted()
      or (self.deadline_at and self.now() >= self.deadline_at and "deadline")
    if self.interrupted then return end
    local jobs = self:collect()
    if #jobs > 0 then
      self:send(jobs)
    elseif #self.ready == 0 and #self.waiting == 0 then
      return
    else -- only retries waiting: sleep until the first is due
      local first, waiting = math.huge, {}
      for _, job in ipairs(self.waiting) do first = math.min(first, job.ready_at) end
      self:flush(true) -- the outcomes so far, before a long wait
      self.sleep(math.max(0, math.min(first, self.deadline_at or first) - self.now()))
      -- due now, whether or not the sleep slept (an injected one may not)
      for _, job in ipairs(self.waiting) do
        if job.ready_at <= first then self.ready[#self.ready + 1] = job else waiting[#waiting + 1] = job end
      end
      self.waiting = waiting
    end
  end
end

-- ------------------------------------------------------------------ start and end

-- close() -> true, or nil, err: closes the journal (its failure is err) and frees the memory of
-- the rows. Closing again does nothing.
function Run:close()
  self.rows:close()
  if not self.journal then return true end
  return self.journal:close()
end

-- After an interruption: the jobs left unsettled that an earlier request may have applied (a
-- retry waiting, a half of a batch whose answer was lost) count with the requests abandoned in
-- flight (those Run:interrupt_round counted: started, not queued again); their journal records
-- stay open, so a resume treats their pairs as maybe applied.
function Run:count_doubtful()
  local queued = {}
  for _, list in ipairs { self.ready, self.waiting } do
    for _, job in ipairs(list) do queued[job] = true end
  end
  for job in pairs(self.doubtful) do
    if queued[job] or not job.started then self.in_flight = self.in_flight + #job.items end
  end
end

-- execute() -> the report (see koophone.bulk), or nil, err (a koophone.Error of kind "journal").
-- Whatever happens, the journal is closed and the memory freed before it returns or raises.
function Run:execute()
  self.started = self.now()
  local ok, e = pcall(self.loop, self)
  if ok and self.interrupted then self:count_doubtful() end
  if ok and self.settle then ok, e = pcall(self.settle.finish, self.settle, self) end
  if ok and self.waiter then ok, e = pcall(self.waiter.finish, self.waiter, self) end
  local closed, problem = self:close()
  if ok and not closed then ok, e = false, { journal = problem } end
  if not ok then
    if type(e) == "table" and e.journal then
      -- the rows held back for a read still reach on_result, with the outcome they had
      if self.settle then pcall(self.settle.finish, self.settle, self, true) end
      return nil, e.journal
    end
    error(e, 0)
  end
  self:progress()
  local jnl = self.journal
  return { total = self.rows.total, counts = self.counts, results = self.results,
           requests = self.requests, bisect_requests = self.bisect_requests,
           elapsed = self.now() - self.started, aborted = self.aborted,
           interrupted = self.interrupted, in_flight = self.in_flight,
           verified = self.settle and self.settle.verified, reads = self.settle and self.settle.requests,
           unfinished = self.rows.pos - self.done, jobs = self.waiter and self.waiter.counts,
           journal_skipped = jnl and jnl.skipped or nil,
           journal_damaged = jnl and jnl.damaged or nil }
end

return _M
