-- get_task with each kind of credentials the unassign takes: a token (get_task_spec.lua), AK/SK
-- credentials signed at send time, and an IAM token provider. The simulator's GetTask log says
-- how each request was authenticated.
local koophone = require "koophone"
local sim = require "helpers.sim"
local creds = require "helpers.creds"

local PROJECT = creds.PROJECT
local SK = "SK-task-" .. string.rep("t4skKEY9", 6)
local PASSWORD = "pw-" .. string.rep("T4skH0rse", 4)
local list = { { user_id = "u-gt-1", instance_id = "gtc0001" }, { user_id = "u-gt-2", instance_id = "gtc0002" } }

local function task_log() return sim.control("GET", "/_sim/task_log").requests end

describe("get_task with credentials", function()
  local client
  before_each(function()
    local extra = creds.iam_user(PASSWORD)
    extra.access_keys = { { ak = "AKTASK0001", sk = SK, project_id = PROJECT } }
    creds.seed(list, extra)
    client = koophone.client(sim.client_opts("http"))
  end)
  after_each(function() client:close() end)

  it("signs the task query with AK/SK credentials", function()
    local cred = koophone.aksk { ak = "AKTASK0001", sk = SK, project_id = PROJECT }
    local res = assert(client:unassign(cred, list))
    local task = assert(client:get_task(cred, res.task_id))
    assert.equals(res.task_id, task.task_id)
    assert.equals(2, #task.jobs)
    local log = task_log()
    assert.equals(1, #log)
    assert.equals("aksk", log[1].auth)
    creds.assert_no_slice(SK, tostring(cred))
    cred:close()
  end)

  it("asks a token provider for its token, fetched once for both calls", function()
    local tp = creds.provider(PASSWORD)
    local res = assert(client:unassign(tp, list))
    local task = assert(koophone.new(sim.client_opts("http")):get_task(tp, res.task_id))
    assert.equals(2, #task.jobs)
    assert.equals("iam", task_log()[1].auth)
    assert.equals(1, #sim.control("GET", "/_sim/iam_log").requests)
  end)

  it("a wrong SK is refused by the gateway: 401, the SK nowhere in the error", function()
    local res = assert(client:unassign(koophone.aksk { ak = "AKTASK0001", sk = SK, project_id = PROJECT }, list))
    local bad = koophone.aksk { ak = "AKTASK0001", sk = SK .. "x", project_id = PROJECT }
    local task, err = client:get_task(bad, res.task_id)
    assert.is_nil(task)
    assert.equals(401, err.status)
    creds.assert_no_slice(SK, tostring(err))
  end)
end)
