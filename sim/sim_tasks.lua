-- KooPhone simulator: the tasks an unassign creates and GET <prefix>/v1/instances/tasks/{task_id}.
-- A job waits `delay` seconds (status 0), runs `seconds` (status 1), then succeeds (2) or, for an
-- instance marked to fail, fails with status -1 or 3 and an error code. Times are on the
-- simulator's clock (st.now), so POST /_sim/clock moves every job forward.
local st = require "sim_state"

local M = {}

local NOT_FOUND = { error_code = "KOOPHONE.API.1323", error_msg = "The task does not exist." }
local FAIL_CODE, FAIL_MSG = "CPS0005", "Phone not found."

-- ---------------------------------------------------------------- settings

local function nonneg(v) return v == nil or (type(v) == "number" and v >= 0) end

-- One instance's settings {delay, seconds, fail = true | -1 | 3, error_code, error_msg}.
local function instance_from(iid, spec)
  if type(spec) ~= "table" then return nil, "jobs.instances." .. iid .. " must be an object" end
  if not nonneg(spec.delay) or not nonneg(spec.seconds) then
    return nil, "jobs.instances." .. iid .. ": delay and seconds must be numbers >= 0"
  end
  local fail = spec.fail
  if fail == true then fail = -1 elseif fail == false then fail = nil end
  if fail ~= nil and fail ~= -1 and fail ~= 3 then
    return nil, "jobs.instances." .. iid .. ".fail must be true, false, -1 or 3"
  end
  for _, k in ipairs({ "error_code", "error_msg" }) do
    if spec[k] ~= nil and type(spec[k]) ~= "string" then return nil, k .. " must be a string" end
  end
  return { delay = spec.delay, seconds = spec.seconds, fail = fail,
           error_code = spec.error_code, error_msg = spec.error_msg }
end

-- Merges job settings {delay, seconds, instances = {iid = {...}}} into `into` (a tenant's
-- `jobs`, or a fresh table). Returns it, or nil, err (and changes nothing).
function M.jobs_from(spec, into)
  into = into or { delay = 0, seconds = 0, instances = {} }
  if spec == nil then return into end
  if type(spec) ~= "table" then return nil, "jobs must be an object" end
  if not nonneg(spec.delay) or not nonneg(spec.seconds) then
    return nil, "jobs: delay and seconds must be numbers >= 0"
  end
  if spec.instances ~= nil and type(spec.instances) ~= "table" then
    return nil, "jobs.instances must be an object"
  end
  local per = {}
  for iid, s in pairs(spec.instances or {}) do
    local ok, err = instance_from(tostring(iid), s)
    if not ok then return nil, err end
    per[iid] = ok
  end
  into.delay = spec.delay or into.delay
  into.seconds = spec.seconds or into.seconds
  for iid, s in pairs(per) do into.instances[iid] = s end
  return into
end

-- ---------------------------------------------------------------- tasks

-- Records the task of a successful unassign of `user_instances` (the request's pairs, in the
-- order of cmd_jobs); returns its task_id. Each instance's latest job is kept in
-- tenant.unassigning, for ListInstances to show the instance assigned until the job ends.
function M.create(tenant, cmd_jobs, user_instances)
  local now = st.now()
  local conf = tenant.jobs or M.jobs_from(nil)
  local jobs = {}
  for i, cj in ipairs(cmd_jobs) do
    local per = conf.instances[cj.instance_id] or {}
    local start = now + (per.delay or conf.delay)
    jobs[i] = { job_id = cj.job_id, instance_id = cj.instance_id, user_id = user_instances[i].user_id, start = start,
                finish = start + (per.seconds or conf.seconds), fail = per.fail,
                error_code = per.error_code or FAIL_CODE, error_msg = per.error_msg or FAIL_MSG }
    tenant.unassigning[cj.instance_id] = jobs[i]
  end
  local c = st.counters
  c.tasks_created = c.tasks_created + 1
  local id = "RM_" .. st.hex(32)
  st.tasks[id] = { task_id = id, seq = c.tasks_created, tenant = tenant.name, jobs = jobs }
  return id
end

-- The JobDetail of `job` at time `now`.
local function detail(job, now)
  local d = { job_id = job.job_id, status = 2, error_code = "", error_msg = "", execute_msg = "" }
  if now < job.start then
    d.status = 0
  elseif now < job.finish then
    d.status, d.execute_msg = 1, "unassigning: clearing user data"
  elseif job.fail then
    d.status, d.error_code, d.error_msg = job.fail, job.error_code, job.error_msg
    d.execute_msg = "unassign failed: " .. job.error_msg
  else
    d.execute_msg = "unassign finished: user data cleared"
  end
  return d
end

local function hidden(id)
  local nf = st.task_conf.not_found
  return nf == true or (type(nf) == "table" and nf[id] == true)
end

-- The task id of the current request: the last path segment, percent-decoded.
function M.task_id()
  return ngx.unescape_uri(ngx.var.request_uri:match("^[^?]*"):match("([^/]*)$"))
end

-- Normal processing of GetTask (the request object's `process`). Returns status, answer table.
function M.process(r)
  local tenant, status, t = r:check("GET")
  if not tenant then return status, t end
  local id = r.entry.task_id
  local task = st.tasks[id]
  if not task or task.tenant ~= tenant.name or hidden(id) then
    return st.task_conf.not_found_status, { error_code = NOT_FOUND.error_code, error_msg = NOT_FOUND.error_msg }
  end
  local now, jobs = st.now(), {}
  for i, job in ipairs(task.jobs) do jobs[i] = detail(job, now) end
  return 200, { error_code = "0", error_msg = "ok", data = { jobs = jobs } }
end

-- ---------------------------------------------------------------- control endpoints

local function list()
  local out, now = {}, st.now()
  for _, task in pairs(st.tasks) do
    local jobs = {}
    for i, job in ipairs(task.jobs) do
      local d = detail(job, now)
      d.instance_id = job.instance_id
      jobs[i] = d
    end
    out[#out + 1] = { task_id = task.task_id, seq = task.seq, tenant = task.tenant, jobs = jobs }
  end
  table.sort(out, function(a, b) return a.seq < b.seq end)
  local nf = st.task_conf.not_found
  return st.reply(200, { tasks = st.array(out), not_found = type(nf) == "table" and st.array(st.keys_of(nf)) or nf,
                         not_found_status = st.task_conf.not_found_status })
end

local function configure()
  local doc = st.body_json()
  if type(doc) ~= "table" then return st.bad("body must be a JSON object") end
  local conf, nf = st.task_conf, doc.not_found
  if nf ~= nil then
    if type(nf) == "table" then
      local set = {}
      for _, id in ipairs(nf) do
        if type(id) ~= "string" then return st.bad("not_found must be true, false or an array of task ids") end
        set[id] = true
      end
      nf = set
    elseif type(nf) ~= "boolean" then
      return st.bad("not_found must be true, false or an array of task ids")
    end
  end
  local status = doc.not_found_status
  if status ~= nil and (type(status) ~= "number" or status < 200 or status > 599) then
    return st.bad("not_found_status must be an HTTP status")
  end
  if nf ~= nil then conf.not_found = nf end
  conf.not_found_status = status or conf.not_found_status
  return list()
end

-- {tenant, delay, seconds, instances}: job settings for the tasks created from now on.
local function set_jobs()
  local doc = st.body_json()
  if type(doc) ~= "table" then return st.bad("body must be a JSON object") end
  local t = st.tenants[doc.tenant or ""]
  if not t then return st.bad("unknown tenant: " .. tostring(doc.tenant)) end
  local copy = { delay = t.jobs.delay, seconds = t.jobs.seconds, instances = {} }
  for k, v in pairs(t.jobs.instances) do copy.instances[k] = v end
  local jobs, err = M.jobs_from(doc, copy)
  if not jobs then return st.bad(err) end
  t.jobs = jobs
  return st.reply(200, { ok = true, tenant = t.name, delay = jobs.delay, seconds = jobs.seconds,
                         instances = jobs.instances })
end

M.routes = {
  ["GET /_sim/tasks"] = list,
  ["POST /_sim/tasks"] = configure,
  ["POST /_sim/jobs"] = set_jobs,
  ["GET /_sim/task_log"] = function() return st.log_view(st.task_log) end,
}

return M
