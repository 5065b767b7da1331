-- get_task: GetTask (GET /v1/instances/tasks/{id}) through the C pipeline, against the
-- simulator's tasks (sim/README.md, "Tasks"): state mapping, errors, the retry client.
local koophone = require "koophone"
local sim = require "helpers.sim"
local cjson = require "cjson"

local TOKEN = sim.token

-- Seeds i1..i5 bound to u1..u5; i2 fails with 3, i3 with -1, i4 stays at 0 for 100 s, i5 runs
-- (1) for 100 s; i1 succeeds at once.
local function seed()
  sim.control("POST", "/_sim/reset")
  sim.control("POST", "/_sim/seed", { tenants = { {
    name = "t1", token = TOKEN, instances = { "i1", "i2", "i3", "i4", "i5" },
    bindings = { i1 = "u1", i2 = "u2", i3 = "u3", i4 = "u4", i5 = "u5" },
    jobs = { delay = 0, seconds = 0, instances = {
      i2 = { fail = 3, error_code = "WIPE.0001", error_msg = "wipe failed" },
      i3 = { fail = -1 }, i4 = { delay = 100 }, i5 = { seconds = 100 } } } } } })
end

local function unassign_all_five(client)
  local list = {}
  for i = 1, 5 do list[i] = { user_id = "u" .. i, instance_id = "i" .. i } end
  return assert(client:unassign(TOKEN, list))
end

describe("get_task", function()
  local client
  before_each(function()
    seed()
    client = koophone.new { endpoint = sim.http_url, timeout = 5 }
  end)
  after_each(function() client:close() end)

  it("maps every status: 2 succeeded, 3 and -1 failed, 0 pending, 1 running", function()
    local res = unassign_all_five(client)
    local task, err = client:get_task(TOKEN, res.task_id, { request_id = "rid-task-1" })
    assert.is_nil(err)
    assert.same({ res.task_id, "rid-task-1", 200, 5 }, { task.task_id, task.request_id, task.status, #task.jobs })
    local got = {}
    for i, j in ipairs(task.jobs) do
      assert.equal(res.jobs[i].job_id, j.job_id)
      got[i] = { j.status, j.state }
    end
    assert.same({ { 2, "succeeded" }, { 3, "failed" }, { -1, "failed" }, { 0, "pending" }, { 1, "running" } }, got)
    assert.same({ "WIPE.0001", "wipe failed" }, { task.jobs[2].error_code, task.jobs[2].error_msg })
    assert.equal("unassign finished: user data cleared", task.jobs[1].execute_msg)
    assert.equal(math.type and "integer" or "number", math.type and math.type(task.jobs[3].status) or type(task.jobs[3].status))
    local log = sim.control("GET", "/_sim/task_log").requests
    assert.same({ "GET", res.task_id, "rid-task-1", "token" }, { log[1].method, log[1].task_id, log[1].request_id, log[1].auth })
  end)

  it("a status nobody documents is 'unknown' with the raw status kept; the token is redacted from job text", function()
    local res = unassign_all_five(client)
    local body = cjson.encode { error_code = "0", error_msg = "ok", data = { jobs = {
      { job_id = "j7", status = 7, error_code = "", error_msg = "echo " .. TOKEN:sub(1, 40), execute_msg = "" },
      { job_id = "j8" } } } }
    sim.faults({ type = "respond", api = "task", status = 200, body = body })
    local task = assert(client:get_task(TOKEN, res.task_id))
    assert.same({ 7, "unknown" }, { task.jobs[1].status, task.jobs[1].state })
    assert.same({ nil, "unknown" }, { task.jobs[2].status, task.jobs[2].state })
    assert.is_nil(task.jobs[1].error_msg:find(TOKEN:sub(1, 16), 1, true))
    assert.truthy(task.jobs[1].error_msg:find("[REDACTED]", 1, true))
  end)

  it("percent-encodes the task id into the path", function()
    local _, err = client:get_task(TOKEN, "RM_a b%c")
    assert.equal("KOOPHONE.API.1323", err.code)
    local log = sim.control("GET", "/_sim/task_log").requests
    -- a raw space would end the request line: the simulator decodes the encoded segment back
    assert.same({ 1, "RM_a b%c" }, { #log, log[1].task_id })
  end)

  -- "/" is percent-encoded, yet libcurl resolves dot segments and nginx does after decoding %2F:
  -- "../unassign" went out as GET /v1/instances/unassign
  it("raises on '.' or '..' as the task id or between its slashes; nothing is sent", function()
    local pc = koophone.client(sim.client_opts("http"))
    for _, id in ipairs { "..", ".", "../unassign", "a/../../unassign", "./x", "a/.", "a\\..\\unassign" } do
      for _, c in ipairs { client, pc } do
        local ok, msg = pcall(c.get_task, c, TOKEN, id)
        assert.is_false(ok, id)
        assert.equals("koophone.get_task: bad argument #2 (task_id): '.' or '..' as the id or between slashes: "
                      .. "the request would go to another path", msg)
      end
    end
    pc:close()
    assert.same({}, sim.log())
    assert.same({}, sim.control("GET", "/_sim/task_log").requests)
    -- dots inside a part are an id like any other, and so is an encoded dot (sent as %252e)
    for _, id in ipairs { "...", ".a", "a..b", "%2e%2e" } do
      local _, err = client:get_task(TOKEN, id)
      assert.equal("KOOPHONE.API.1323", err.code, id)
    end
    local got = {}
    for i, e in ipairs(sim.control("GET", "/_sim/task_log").requests) do got[i] = e.task_id end
    assert.same({ "...", ".a", "a..b", "%2e%2e" }, got)
  end)

  it("an unknown task is an API error KOOPHONE.API.1323 (400, or 404), not a transport failure", function()
    local task, err = client:get_task(TOKEN, "RM_unknown")
    assert.is_nil(task)
    assert.same({ "api", 400, "KOOPHONE.API.1323", koophone.codes.TASK_NOT_FOUND },
                { err.kind, err.status, err.code, err.code })
    local res = unassign_all_five(client)
    sim.control("POST", "/_sim/tasks", { not_found = true, not_found_status = 404 })
    task, err = client:get_task(TOKEN, res.task_id)
    assert.is_nil(task)
    assert.same({ 404, "KOOPHONE.API.1323" }, { err.status, err.code })
    assert.equal(koophone.Error, getmetatable(err))
  end)

  it("errors as for unassign: gateway 401 with the token redacted, bad shape, HTTP status", function()
    local task, err = client:get_task("not-the-token", "RM_1")
    assert.is_nil(task)
    assert.same({ 401, "APIGW.0301" }, { err.status, err.code })
    sim.faults({ type = "respond", api = "task", status = 200, body = '{"error_code":"0","data":{"jobs":[{"status":2}]}}' },
               { type = "bad_gateway", api = "task", status = 502, at = 2 },
               { type = "api_error", api = "task", at = 3, code = "X.1", msg = "token " .. TOKEN })
    _, err = client:get_task(TOKEN, "RM_1")
    assert.same({ "decode", "BAD_SHAPE" }, { err.kind, err.code })
    _, err = client:get_task(TOKEN, "RM_1")
    assert.same({ "http", "HTTP.502" }, { err.kind, err.code })
    _, err = client:get_task(TOKEN, "RM_1")
    assert.same({ "api", "X.1" }, { err.kind, err.code })
    assert.is_nil(tostring(err):find(TOKEN:sub(1, 16), 1, true))
  end)

  it("a GET on the client's handle leaves unassign's POST and its body intact, on the same connection", function()
    local res = unassign_all_five(client)
    assert(client:get_task(TOKEN, res.task_id))
    sim.control("POST", "/_sim/seed", { tenants = { { name = "t1", token = TOKEN, instances = { "i1" }, bindings = { i1 = "u1" } } } })
    local again = assert(client:unassign(TOKEN, { { user_id = "u1", instance_id = "i1" } }))
    assert.equal("unassigned", again.outcome)
    local log = sim.log()
    assert.same({ "POST", "POST" }, { log[1].method, log[2].method })
    assert.equal(1, #sim.control("GET", "/_sim/task_log").requests)
    assert.same({ 3, log[1].connection }, { log[2].connection_requests, log[2].connection })
    -- unassign_many's pool is made from the client's handle after its GET: it POSTs too
    sim.control("POST", "/_sim/seed", { tenants = { { name = "t1", token = TOKEN, instances = { "i2" }, bindings = { i2 = "u2" } } } })
    assert(client:get_task(TOKEN, res.task_id))
    local results = client:unassign_many(TOKEN, { { { user_id = "u2", instance_id = "i2" } } })
    assert.equal("unassigned", results[1].outcome)
  end)

  it("koophone.get_task uses the default client", function()
    koophone.configure { endpoint = sim.http_url }
    local res = unassign_all_five(client)
    local task = assert(koophone.get_task(TOKEN, res.task_id))
    assert.equal("succeeded", task.jobs[1].state)
  end)

  describe("in the retry client", function()
    it("retries timeouts and 5xx (a read is safe to send again) and keeps one x-request-id", function()
      local res = unassign_all_five(client)
      local slept = {}
      local rc = koophone.client { endpoint = sim.http_url, timeout = 0.3,
                                   retry = { max_attempts = 4, sleep = function(s) slept[#slept + 1] = s end } }
      sim.faults({ type = "error", api = "task" }, { type = "delay", api = "task", seconds = 1, at = 2 },
                 { type = "bad_gateway", api = "task", status = 504, at = 3 })
      local task, err = rc:get_task(TOKEN, res.task_id)
      assert.is_nil(err)
      assert.equal("succeeded", task.jobs[1].state)
      assert.equal(3, #slept)
      local log = sim.control("GET", "/_sim/task_log").requests
      assert.equal(4, #log)
      for i = 2, 4 do assert.equal(log[1].request_id, log[i].request_id) end
      rc:close()
    end)

    it("does not retry a task the API does not know", function()
      local rc = koophone.client { endpoint = sim.http_url, retry = { sleep = function() error("no retry expected") end } }
      local task, err = rc:get_task(TOKEN, "RM_none")
      assert.is_nil(task)
      assert.same({ "KOOPHONE.API.1323", 1 }, { err.code, err.attempts })
      assert.equal(1, #sim.control("GET", "/_sim/task_log").requests)
      rc:close()
    end)
  end)
end)
