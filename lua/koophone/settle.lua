-- Settling by reading: a bulk run reads the bindings (koophone.bindings, ListInstances) of the
-- pairs it is unsure of instead of sending them again, and, asked to, of every pair.
--
-- What is read, and what each state does (docs/bulk.md, "Reading the bindings"):
--   a pair that may have been applied (tainted in the journal of a resumed run: in flight at a
--   crash, lost answer, unconfirmed), before it is sent again:
--     unbound, other   outcome "assumed_unassigned", verified = true: never sent again (the read
--                      shows the binding gone, not who removed it: a pair never bound to this
--                      user reads the same, so it is not "unassigned")
--     bound            sent again only as retry.ambiguous_attempts allows (>= 1); else it ends
--                      "unconfirmed" (maybe applied): the binding may still be shown while the
--                      wipe job of the applied request runs, so a bound read proves nothing
--     missing, unknown as without reading (sent again)
--   with skip_unbound, every other pair before it is sent:
--     unbound, other   outcome "not_bound", verified = true (not sent)
--     missing          outcome "denied", verified = true (not sent)
--     bound, unknown   sent
--   in the run, before a request that may have been applied goes out again (as ambiguous_attempts
--   allows): unbound or other leave it as "assumed_unassigned", verified = true; a pair that ends
--   "unconfirmed" or "failed" with maybe_applied: read once after the rounds, likewise; else it
--   keeps its outcome
--   with verify, after the run (and its wait): every pair, reported in report.verify
-- A client that cannot read (no list_instances), or a read that fails, changes nothing.
local bindings = require "koophone.bindings"
local core = require "koophone.core"

local _M = {}

local Settle = {}
Settle.__index = Settle

local READ_UNBOUND = "read unassigned after a request that may have been applied: not sent again"
local READ_OTHER = "read assigned to another user after a request that may have been applied: not sent again"
-- the outcome of a maybe-applied pair read not bound to its user (see above)
local READ_GONE = "assumed_unassigned"
local READ_BOUND = "read still bound after a request that may have been applied (its data wipe may be "
  .. "running still): not sent again; ambiguous_attempts >= 1 (--ambiguous-attempts 1) sends it"
local SKIP = { unbound = { "not_bound", "read unbound: not sent" },
               other = { "not_bound", "read assigned to another user: not sent" },
               missing = { "denied", "read: the tenant has no such instance: not sent" } }

-- new(client, token, o): o.skip_unbound, o.verify, o.settle (false: no reading of maybe-applied
-- pairs), o.chunk (rows read ahead and settled together).
function _M.new(client, token, o)
  return setmetatable({
    client = client, token = token, skip_unbound = o.skip_unbound, chunk = o.chunk,
    settle = o.settle ~= false and client.list_instances ~= nil,
    verify = o.verify and {} or nil, -- the pairs reported, for verify
    deferred = {}, verified = 0, requests = 0,
  }, Settle)
end

function Settle:read(list)
  -- within the run's deadline: a read it leaves no time for reads nothing ("unknown": as without
  -- reading)
  local at = self.run and self.run.deadline_at
  local b = bindings.read(self.client, self.token, list,
                          at and { deadline = math.max(at - core.now(), 0.001) } or nil)
  self.requests = self.requests + b.requests
  return b
end

-- entry gets outcome `outcome` from a read: koophone.run journals and reports it
local function settled(self, e, outcome, reason, verified)
  e.outcome, e.reason, e.verified, e.settled = outcome, reason, verified or nil, true
  e.err, e.maybe_applied = nil, nil
  if verified then self.verified = self.verified + 1 end
end

-- Reads the entries of a chunk that need it, before the run sees them.
function Settle:screen(entries)
  local run = self.run
  if run.aborted or not (self.settle or self.skip_unbound) then return end
  local jnl, list, tainted = run.journal, {}, {}
  for _, e in ipairs(entries) do
    if not e.outcome then
      local final, problem
      if jnl then final, problem = jnl:final(e.user_id, e.instance_id) end
      if problem then error({ journal = problem }) end
      local maybe = not final and jnl and jnl:tainted(e.user_id, e.instance_id) or false
      if not final and ((maybe and self.settle) or self.skip_unbound) then
        list[#list + 1] = e
        tainted[#list] = maybe
      end
    end
  end
  if #list == 0 then return end
  local b = self:read(list)
  local resend = run.policy.ambiguous_attempts >= 1
  for k, e in ipairs(list) do
    local state = b.states[k]
    if tainted[k] then
      if state == "unbound" or state == "other" then
        settled(self, e, READ_GONE, state == "unbound" and READ_UNBOUND or READ_OTHER, true)
      elseif state == "bound" and self.settle and not resend then
        settled(self, e, "unconfirmed", READ_BOUND)
        e.maybe_applied, e.tainted = true, true
      end
    elseif SKIP[state] then
      settled(self, e, SKIP[state][1], SKIP[state][2], true)
    end
  end
end

-- resend(run, jobs) -> jobs: before a job that may have been applied goes out again in the run
-- (a retry after a lost answer, as ambiguous_attempts allows; a half of such a batch), its
-- pairs are read: those read unbound or other end "assumed_unassigned" (verified) and leave the job, which
-- then goes out with the others under a new request id, or not at all when none is left.
function Settle:resend(run, jobs)
  if not self.settle or run.aborted then return jobs end
  local list, owner = {}, {}
  for _, job in ipairs(jobs) do
    if job.doubt and job.read_at ~= job.attempt then -- read once per attempt that left doubt
      job.read_at = job.attempt
      for _, item in ipairs(job.items) do
        list[#list + 1] = item
        owner[#list] = job
      end
    end
  end
  if #list == 0 then return jobs end
  local b, gone = self:read(list), {}
  for k, item in ipairs(list) do
    local state = b.states[k]
    if state == "unbound" or state == "other" then
      gone[owner[k]] = gone[owner[k]] or {}
      gone[owner[k]][item] = state
    end
  end
  local out = {}
  for _, job in ipairs(jobs) do
    local g = gone[job]
    if not g then
      out[#out + 1] = job
    else
      local keep, done = {}, {}
      for _, item in ipairs(job.items) do
        if g[item] then
          settled(self, item, READ_GONE, g[item] == "unbound" and READ_UNBOUND or READ_OTHER, true)
          item.request_id, done[#done + 1] = job.request_id, item
        else
          keep[#keep + 1] = item
        end
      end
      run:journal_done(done, job.request_id, false)
      run:report_rows(done)
      if #keep > 0 then
        job.items, job.request_id = keep, nil
        out[#out + 1] = job
      else -- nothing left to send
        run.doubtful[job] = nil
        if job.half and job.attempt == 0 then run.bisect_requests = run.bisect_requests - 1 end
      end
    end
  end
  return out
end

-- wrap(rows) -> rows as koophone.run reads them (next, close, total, pos), a chunk read ahead and
-- screened at a time.
function Settle:wrap(rows)
  local buf, i, n = {}, 1, 0 -- n counted: # of a table emptied from its start is any border
  local proxy = {}
  function proxy.next()
    if i > n then
      buf, i, n = {}, 1, 0
      while n < self.chunk do
        local e = rows:next()
        if not e then break end
        n = n + 1
        buf[n] = e
      end
      self:screen(buf)
    end
    local e = buf[i]
    buf[i], i = nil, i + 1 -- handed over: the run owns it
    return e
  end
  function proxy.close() rows:close() end
  return setmetatable(proxy, { __index = function(_, k) return rows[k] end })
end

local maybe_applied = require("koophone.applied").row

-- report(e) -> true when koophone.run must not report row e yet (it is read after the rounds).
-- Called for every row the run reports.
function Settle:report(e)
  if self.settle and not e.settled and maybe_applied(e) then
    self.deferred[#self.deferred + 1] = e
    return true
  end
  if self.verify and e.user_id ~= nil and e.outcome ~= "duplicate" and e.outcome ~= "invalid" then
    self.verify[#self.verify + 1] = { row = e.row, user_id = e.user_id, instance_id = e.instance_id }
  end
  return false
end

-- finish(run [, unread]): after the rounds, the rows held back by report() are read, settled when
-- the read says so (journaled again: final), and reported. unread (the run failed: its journal
-- cannot be written), or an interruption: reported as they are, nothing read.
function Settle:finish(run, unread)
  local list = self.deferred
  self.deferred = {}
  if #list == 0 then return end
  local b = not (unread or run.interrupted or core.interrupted()) and self:read(list) or { states = {} }
  local changed = {}
  for k, e in ipairs(list) do
    local state = b.states[k]
    if state == "unbound" or state == "other" then
      settled(self, e, READ_GONE, state == "unbound" and READ_UNBOUND or READ_OTHER, true)
      e.tainted = nil
      changed[#changed + 1] = e
    end
    e.settled = true
  end
  if #changed > 0 then run:journal_done(changed, nil, false) end
  run:report_rows(list)
  run:progress()
end

-- plan(client, token, rows, batch_size, keep_results) -> the plan of rows (a koophone.rows):
-- nothing sent. See koophone.bulk's plan option for the report.
function _M.plan(client, token, rows, batch_size, keep_results)
  local list, results, report = {}, {}, { plan = true, invalid = 0, duplicate = 0 }
  for e in function() return not core.interrupted() and rows:next() or nil end do
    if e.outcome then
      report[e.outcome] = report[e.outcome] + 1
    else
      list[#list + 1] = e
    end
    results[#results + 1] = e
  end
  report.total, report.interrupted = rows.pos, core.interrupted()
  rows:close()
  local b = bindings.read(client, token, list)
  for k, e in ipairs(list) do e.state, e.err = b.states[k], b.errors[k] end
  report.counts, report.requests, report.strategy = b.counts, b.requests, b.strategy
  report.send = b.counts.bound + b.counts.unknown
  report.skip = #list - report.send
  report.run_requests = math.ceil(report.send / batch_size)
  if keep_results ~= false then report.results = results end
  return report
end

-- verify_report() -> { counts, requests, still_bound = { { row, user_id, instance_id }, ... },
-- unread = { ... } } of the pairs the run reported; unread: those whose read failed (unknown),
-- which verify nothing.
function Settle:verify_report()
  local list = self.verify
  local b = self:read(list)
  local still, unread = {}, {}
  for k, p in ipairs(list) do
    if b.states[k] == "bound" then still[#still + 1] = p end
    if b.states[k] == "unknown" then unread[#unread + 1] = p end
  end
  return { counts = b.counts, requests = b.requests, still_bound = still, unread = unread }
end

return _M
