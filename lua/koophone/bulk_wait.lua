-- unassign_all's `wait` option: after the run, wait for the jobs of the unassigned rows
-- (koophone.wait) and give each of them job_state (and job_error when it failed or stays unknown).
--
-- The rows that have a job (outcome "unassigned") are held back from on_result until their job
-- state is known: on_result sees every row once, with job_state when it has a job. Every other row
-- goes to on_result at once. With a journal, each job that becomes final is journaled
-- (koophone.journal's `job` record), and a resumed run takes the job states from it: a run killed
-- while waiting is resumed by waiting, its unassigned rows being final in the journal already.
-- A run that was interrupted or stopped before the wait reports the held rows without job_state.
local wait = require "koophone.wait"

local _M = {}

local Waiter = {}
Waiter.__index = Waiter

-- new(client, token, option, on_result) -> waiter; option: true or wait_jobs' options (checked as
-- opts.wait of unassign_all). waiter.on_result takes the run's rows.
function _M.new(client, token, option, on_result)
  local self = setmetatable({ client = client, token = token, held = {}, user_on_result = on_result,
                              opts = wait.check(option, "koophone.unassign_all", 3, "opts.wait") },
                            Waiter)
  local held = self.held
  self.on_result = function(row)
    if row.job_id and row.task_id then
      held[#held + 1] = row
    elseif on_result then
      on_result(row)
    end
  end
  return self
end

local function job_error(j)
  if j.state == "failed" then return { code = j.error_code, message = j.error_msg } end
  if j.err then return { code = j.err.code, message = j.err.message } end
end

-- finish(run): waits (unless the run was interrupted or stopped), sets job_state on the held rows
-- and reports them. Sets self.counts for the run's report, and run.interrupted when a signal
-- ended the wait.
function Waiter:finish(run)
  local held, jnl = self.held, run.journal
  if #held > 0 and not (run.interrupted or run.aborted) then
    local o, on_poll = {}, self.opts.on_poll
    for k, v in pairs(self.opts) do o[k] = v end
    if jnl then
      o.on_job = function(job) jnl:job(job) end
      o.on_poll = function(p)
        local ok, problem = jnl:flush(false)
        if not ok then error({ journal = problem }) end
        if on_poll then on_poll(p) end
      end
    end
    local report = wait.wait_jobs(self.client, self.token, held, o, jnl and jnl.jobs)
    for _, row in ipairs(held) do
      local j = report.jobs[row.job_id]
      row.job_state, row.job_error = j.state, job_error(j)
    end
    self.counts = { succeeded = report.succeeded, failed = report.failed, pending = report.pending,
                    unknown = report.unknown, timed_out = report.timed_out }
    run.interrupted = run.interrupted or report.interrupted
  else
    self.counts = { succeeded = 0, failed = 0, pending = #held, unknown = 0, timed_out = false }
  end
  if self.user_on_result then
    for _, row in ipairs(held) do self.user_on_result(row) end
  end
end

return _M
