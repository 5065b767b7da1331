-- The simulator's tasks (sim/sim_tasks.lua): every successful unassign creates a task whose
-- jobs progress on the simulator's clock; GET /v1/instances/tasks/{task_id}, over real HTTP.
local sim = require "spec.helpers.sim"
local cjson = require "cjson"

local TOKEN = "tasks-token"
local PROJECT = "p-tasks"

local function unassign(list)
  local ui = {}
  for i, p in ipairs(list) do ui[i] = { user_id = p[1], instance_id = p[2] } end
  local code, doc = sim.request_json("POST", "/v1/instances/unassign",
    { ["x-auth-token"] = TOKEN, ["x-request-id"] = "rid-u", ["content-type"] = "application/json" },
    cjson.encode({ user_instances = ui }))
  assert.same({ 200, "0" }, { code, doc.error_code })
  return doc.data
end

local function get_task(id, headers)
  headers = headers or { ["x-auth-token"] = TOKEN, ["x-request-id"] = "rid-t" }
  return sim.request_json("GET", "/v1/instances/tasks/" .. id, headers)
end

-- job_id -> status of the task's jobs, through GetTask
local function statuses(id)
  local code, doc = get_task(id)
  assert.same({ 200, "0" }, { code, doc.error_code })
  local out = {}
  for _, j in ipairs(doc.data.jobs) do out[j.job_id] = j.status end
  return out, doc.data.jobs
end

describe("simulator tasks", function()
  setup(function() assert(pcall(sim.control, "GET", "/_sim/info"), "simulator not running") end)

  before_each(function()
    sim.control("POST", "/_sim/reset")
    sim.control("POST", "/_sim/seed", {
      tenants = { { name = "t1", token = TOKEN, project_id = PROJECT, domain = "acct",
                    instances = { "i1", "i2", "i3", "i4" }, bindings = { i1 = "u1", i2 = "u2", i3 = "u3", i4 = "u4" },
                    jobs = { delay = 30, seconds = 60, instances = {
                      i2 = { fail = 3, error_code = "WIPE.0001", error_msg = "disk wipe failed" },
                      i3 = { fail = true },
                      i4 = { seconds = 600 } } } },
                  { name = "t2", token = "other-token", instances = { "x1" }, bindings = { x1 = "ux" } } },
      iam_users = { { domain = "acct", name = "admin", password = "pw" } },
      access_keys = { { ak = "AK-T", sk = "SK-T", project_id = PROJECT } },
    })
  end)

  it("jobs go 0 -> 1 -> 2 on the simulator's clock; failing instances end -1 or 3 with their error", function()
    local data = unassign({ { "u1", "i1" }, { "u2", "i2" }, { "u3", "i3" }, { "u4", "i4" } })
    assert.truthy(data.task_id:match("^RM_%x+$"))
    local j = {}
    for i, cj in ipairs(data.cmd_jobs) do j[i] = cj.job_id end
    local s, jobs = statuses(data.task_id)
    assert.same({ 0, 0, 0, 0 }, { s[j[1]], s[j[2]], s[j[3]], s[j[4]] })
    assert.same({ job_id = j[1], status = 0, error_code = "", error_msg = "", execute_msg = "" }, jobs[1])
    sim.advance(31)
    s = statuses(data.task_id)
    assert.same({ 1, 1, 1, 1 }, { s[j[1]], s[j[2]], s[j[3]], s[j[4]] })
    sim.advance(60)
    s, jobs = statuses(data.task_id)
    assert.same({ 2, 3, -1, 1 }, { s[j[1]], s[j[2]], s[j[3]], s[j[4]] })
    assert.same({ "", "WIPE.0001", "CPS0005" }, { jobs[1].error_code, jobs[2].error_code, jobs[3].error_code })
    assert.same({ "disk wipe failed", "Phone not found." }, { jobs[2].error_msg, jobs[3].error_msg })
    assert.truthy(#jobs[1].execute_msg > 0 and #jobs[2].execute_msg > 0)
    sim.advance(600)
    s = statuses(data.task_id)
    assert.equal(2, s[j[4]])
    local list = sim.control("GET", "/_sim/tasks").tasks
    assert.same({ data.task_id, "t1", "i4", 2 }, { list[1].task_id, list[1].tenant, list[1].jobs[4].instance_id, list[1].jobs[4].status })
  end)

  it("job times set through POST /_sim/jobs apply to later tasks; zero means final at once", function()
    local slow = unassign({ { "u1", "i1" } })
    local r = sim.control("POST", "/_sim/jobs", { tenant = "t1", delay = 0, seconds = 0,
                                                   instances = { i4 = { seconds = 0, fail = -1 } } })
    assert.same({ 0, 0, -1 }, { r.delay, r.seconds, r.instances.i4.fail })
    local fast = unassign({ { "u2", "i2" }, { "u4", "i4" } })
    local s = statuses(fast.task_id)
    assert.same({ 3, -1 }, { s[fast.cmd_jobs[1].job_id], s[fast.cmd_jobs[2].job_id] }) -- i2 kept its seeded fail
    assert.equal(0, statuses(slow.task_id)[slow.cmd_jobs[1].job_id])
    local code, err = sim.request_json("POST", "/_sim/jobs", {}, cjson.encode({ tenant = "t1", instances = { i1 = { fail = 7 } } }))
    assert.same({ 400, false }, { code, err.ok })
  end)

  it("checks GetTask like unassign: credentials, x-request-id, method, tenant", function()
    local data = unassign({ { "u1", "i1" } })
    local path = "/v1/instances/tasks/" .. data.task_id
    local code, doc = sim.request_json("GET", path, { ["x-request-id"] = "r401" })
    assert.same({ 401, "APIGW.0301", "r401" }, { code, doc.error_code, doc.request_id })
    code, doc = sim.request_json("GET", path, { ["x-auth-token"] = TOKEN })
    assert.same({ 200, "KOOPHONE.API.0002" }, { code, doc.error_code })
    code, doc = sim.request_json("POST", path, { ["x-auth-token"] = TOKEN, ["x-request-id"] = "r" })
    assert.same({ 404, "APIGW.0101" }, { code, doc.error_code })
    code, doc = get_task(data.task_id, { ["x-auth-token"] = "other-token", ["x-request-id"] = "r" })
    assert.same({ 400, "KOOPHONE.API.1323" }, { code, doc.error_code })
    code, doc = get_task("RM_unknown")
    assert.same({ error_code = "KOOPHONE.API.1323", error_msg = "The task does not exist." }, doc)
    local log = sim.control("GET", "/_sim/task_log").requests
    assert.equal(5, #log)
    assert.same({ data.task_id, 401, "t1" }, { log[1].task_id, log[1].status, log[3].tenant })
    assert.equal(1, #sim.log()) -- the unassign log holds unassign requests only
  end)

  it("the not-found switch hides all or listed unassign tasks, with 400 or 404", function()
    local a, b = unassign({ { "u1", "i1" } }), unassign({ { "u2", "i2" } })
    sim.control("POST", "/_sim/tasks", { not_found = { a.task_id } })
    assert.equal(400, (get_task(a.task_id)))
    assert.equal(200, (get_task(b.task_id)))
    local conf = sim.control("POST", "/_sim/tasks", { not_found = true, not_found_status = 404 })
    assert.same({ true, 404 }, { conf.not_found, conf.not_found_status })
    for _, id in ipairs({ a.task_id, b.task_id }) do
      local code, doc = get_task(id)
      assert.same({ 404, "KOOPHONE.API.1323" }, { code, doc.error_code })
    end
    sim.control("POST", "/_sim/tasks", { not_found = false })
    assert.equal(200, (get_task(a.task_id)))
  end)

  it("answers GetTask for an IAM token and for an AK/SK-signed request", function()
    sim.control("POST", "/_sim/jobs", { tenant = "t1", delay = 0, seconds = 0 })
    local data = unassign({ { "u1", "i1" } })
    local _, _, token = sim.iam_login("acct", "admin", "pw", { id = PROJECT })
    local code, doc = get_task(data.task_id, { ["x-auth-token"] = token, ["x-request-id"] = "r-iam" })
    assert.same({ 200, 2 }, { code, doc.data.jobs[1].status })
    code, doc = sim.signed_request({ method = "GET", path = "/v1/instances/tasks/" .. data.task_id, ak = "AK-T", sk = "SK-T",
                                     headers = { ["x-project-id"] = PROJECT, ["x-request-id"] = "r-aksk" } })
    assert.same({ 200, 2 }, { code, doc.data.jobs[1].status })
    code, doc = sim.signed_request({ method = "GET", path = "/v1/instances/tasks/" .. data.task_id, ak = "AK-T", sk = "wrong",
                                     headers = { ["x-project-id"] = PROJECT, ["x-request-id"] = "r-aksk" } })
    assert.equal(401, code)
    assert.truthy(doc.error_msg:find("canonicalRequest:GET|/v1/instances/tasks/" .. data.task_id .. "/||", 1, true))
    local log = sim.control("GET", "/_sim/task_log").requests
    assert.same({ "iam", "aksk", "aksk" }, { log[1].auth, log[2].auth, log[3].auth })
  end)

  it("faults with api = \"task\" take over GetTask requests, counted apart from unassign", function()
    local data = unassign({ { "u1", "i1" } })
    local r = sim.faults({ type = "throttle", api = "task", retry_after = "1" }, { type = "error", api = "task", at = 2 })
    assert.same({ "task", 1, 2 }, { r.scheduled[1].api, r.scheduled[1].first, r.scheduled[2].first })
    local code, doc = get_task(data.task_id)
    assert.same({ 429, "APIGW.0308" }, { code, doc.error_code })
    code = get_task(data.task_id)
    assert.equal(500, code)
    assert.equal(200, (get_task(data.task_id)))
    unassign({ { "u2", "i2" } }) -- no fault left for unassign
    local log = sim.control("GET", "/_sim/task_log").requests
    assert.same({ "throttle", "error" }, { log[1].fault, log[2].fault })
  end)
end)
