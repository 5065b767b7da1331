-- `make openresty-example`, the documented way to try examples/openresty: it starts, answers,
-- logs every unassign (success included) and maps KooPhone's failures to the right answers.
local sim = require "helpers.sim"
local shell = require "helpers.shell"
local openresty = require "helpers.openresty"
local http = require "socket.http"

local example = openresty.new("example", sim.http_port + 21)

-- /metrics as name{labels} -> value
local function scrape()
  local body, status = http.request(example.base .. "/metrics")
  assert.equals(200, status)
  local m = {}
  for line in body:gmatch("[^\n]+") do
    local name, value = line:match("^([%w_]+[^ ]*) ([%d.]+)$")
    if name then m[name] = tonumber(value) end
  end
  return m
end

describe("make openresty-example", function()
  setup(function()
    local out, status = shell.run(("env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL KOOPHONE_EXAMPLE_PORT=%d "
      .. "KOOPHONE_EXAMPLE_DIR=%s KOOPHONE_TOKEN=%s make -s --no-print-directory openresty-example")
      :format(example.port, shell.quote(example.dir), shell.quote(sim.token)))
    assert(status == 0, out)
    assert(out:find(example.base .. "/admin/unassign", 1, true), out)
  end)
  teardown(function() example:stop() end)

  it("answers, and logs the success with its request id, task id and job ids at INFO", function()
    local list = sim.make_pairs(2, "ex")
    sim.reset(list)
    local status, body = example:admin { pairs = list, request_id = "example-1" }
    assert.equals(200, status)
    local jobs = body.jobs[1].job_id .. "," .. body.jobs[2].job_id
    local line = example:error_log():match("[^\n]*unassign unassigned request_id=example%-1[^\n]*")
    assert.truthy(line)
    assert.truthy(line:find("[info]", 1, true))
    assert.truthy(line:find(("task_id=%s jobs=%s,"):format(body.task_id, jobs), 1, true))
  end)

  it("serves metrics that count what was sent, shared through a lua_shared_dict", function()
    local list = sim.make_pairs(3, "exm")
    sim.reset(list)
    local before = scrape()
    for i = 1, 3 do assert.equals(200, (example:admin { pairs = { list[i] } })) end
    local list2 = sim.make_pairs(1, "exm2")
    sim.reset(list2)
    sim.faults({ type = "unavailable" })
    assert.equals(200, (example:admin { pairs = list2 })) -- a 503 then a retry that succeeds
    local after = scrape()
    local ok_key = 'koophone_requests_total{call="unassign",code="OK"}'
    assert.equals(4, after[ok_key] - (before[ok_key] or 0))
    local u_key = 'koophone_requests_total{call="unassign",code="APIGW.0613"}'
    assert.equals(1, after[u_key] - (before[u_key] or 0))
    local count_key = 'koophone_request_duration_seconds_count{call="unassign"}'
    assert.equals(5, after[count_key] - (before[count_key] or 0))
    assert.equals(after[count_key], after['koophone_request_duration_seconds_bucket{call="unassign",le="+Inf"}'])
    assert.equals(1, after.koophone_retries_total - (before.koophone_retries_total or 0))
    assert.equals(0, after.koophone_in_flight)
    assert.equals(#sim.log(), 2)
  end)

  it("answers 405 to a GET", function()
    local _, status, headers = http.request(example.base .. "/admin/unassign")
    assert.equals(405, status)
    assert.equals("POST", headers.allow)
  end)

  it("answers KooPhone's 401 with 502 and a clear message", function()
    local list = sim.make_pairs(1, "ex401")
    sim.reset(list)
    sim.faults({ type = "respond", status = 401,
                 body = '{"error_code":"APIGW.0301","error_msg":"Incorrect IAM authentication information"}' })
    local status, body = example:admin { pairs = list }
    assert.equals(502, status)
    assert.matches("credentials were refused", body.error.message, 1, true)
  end)

  it("passes KooPhone's throttling on with a Retry-After", function()
    local list = sim.make_pairs(1, "ex429")
    sim.reset(list)
    sim.faults({ type = "throttle", retry_after = "1", count = 3 })
    local s = example:admin_start { pairs = list }
    local status, body, head = openresty.admin_finish(s)
    assert.equals(429, status)
    assert.equals("APIGW.0308", body.error.code)
    assert.truthy(head:lower():find("\r\nretry%-after: 1"))
  end)
end)
