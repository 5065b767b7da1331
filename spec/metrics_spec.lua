-- koophone.ngx.metrics outside nginx: a table with ngx.shared.DICT's get, incr and get_keys
-- stands in for the lua_shared_dict, and a real client's on_event feeds it from real exchanges
-- with the simulator (KooPhone and its IAM). spec/openresty_example_spec.lua scrapes it in nginx.
local koophone = require "koophone"
local metrics = require "koophone.ngx.metrics"
local sim = require "helpers.sim"
local creds = require "helpers.creds"

local PASSWORD = "pw-" .. string.rep("Metr1csH0rse", 4)

local new_dict = require("helpers.shared_dict").new

-- The scrape as name{labels} -> value, and the # lines.
local function scrape(m)
  local text = m:text()
  local values, comments = {}, {}
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 1) == "#" then
      comments[#comments + 1] = line
    else
      local name, value = line:match("^(%S+) (%S+)$")
      assert(name, "not a sample line: " .. line)
      values[name] = tonumber(value)
    end
  end
  return values, comments, text
end

describe("koophone.ngx.metrics", function()
  it("counts an IAM login and the unassign it was for under different names", function()
    local list = sim.make_pairs(2, "met")
    creds.seed(list, creds.iam_user(PASSWORD))
    local m = metrics.new(new_dict())
    local client = koophone.new(sim.client_opts("http", { on_event = m.on_event }))
    local tp = creds.provider(PASSWORD)
    assert.equals("unassigned", assert(client:unassign(tp, { list[1] })).outcome)
    local v, _, text = scrape(m)
    assert.equals(1, v['koophone_iam_logins_total{code="OK"}'], text)
    assert.equals(1, v['koophone_requests_total{call="unassign",code="OK"}'], text)
    assert.equals(1, v["koophone_iam_login_duration_seconds_count"], text)
    assert.equals(1, v['koophone_request_duration_seconds_count{call="unassign"}'], text)
    -- a login is not a KooPhone request
    assert.is_nil(text:find('call="iam_token"', 1, true), text)
    -- the token is cached: the next call makes no login
    assert.equals("unassigned", assert(client:unassign(tp, { list[2] })).outcome)
    v, _, text = scrape(m)
    assert.equals(1, v['koophone_iam_logins_total{code="OK"}'], text)
    assert.equals(2, v['koophone_requests_total{call="unassign",code="OK"}'], text)
    assert.equals(2, v['koophone_request_duration_seconds_bucket{call="unassign",le="+Inf"}'], text)
    assert.same({}, sim.bindings())
    client:close()
  end)

  it("counts a refused login by its code, and no KooPhone request", function()
    local list = sim.make_pairs(1, "metbad")
    creds.seed(list, creds.iam_user(PASSWORD))
    local m = metrics.new(new_dict())
    local client = koophone.new(sim.client_opts("http", { on_event = m.on_event }))
    local res, err = client:unassign(creds.provider("wrong-" .. PASSWORD), list)
    assert.is_nil(res)
    assert.equals("auth", err.kind)
    local v, _, text = scrape(m)
    assert.equals(1, v['koophone_iam_logins_total{code="' .. err.code .. '"}'], text)
    assert.is_nil(text:find("koophone_requests_total{", 1, true), text)
    assert.is_nil(text:find("koophone_request_duration_seconds_bucket{", 1, true), text)
    client:close()
  end)

  it("writes every family with HELP and TYPE, the unlabelled ones from the start", function()
    local m = metrics.new(new_dict())
    local v, comments = scrape(m)
    assert.same({
      "# HELP koophone_requests_total HTTP exchanges with KooPhone by call and error code (OK: success)",
      "# TYPE koophone_requests_total counter",
      "# HELP koophone_request_duration_seconds Duration of the exchanges with KooPhone (libcurl's total time)",
      "# TYPE koophone_request_duration_seconds histogram",
      "# HELP koophone_iam_logins_total IAM password logins of a token provider by error code (OK: success)",
      "# TYPE koophone_iam_logins_total counter",
      "# HELP koophone_iam_login_duration_seconds Duration of the IAM password logins",
      "# TYPE koophone_iam_login_duration_seconds histogram",
      "# HELP koophone_retries_total Retries of the policy (on_retry) and libcurl's resends of KooPhone exchanges",
      "# TYPE koophone_retries_total counter",
      "# HELP koophone_in_flight Calls in progress (enter/leave)",
      "# TYPE koophone_in_flight gauge",
    }, comments)
    assert.equals(0, v.koophone_retries_total)
    assert.equals(0, v.koophone_in_flight)
    assert.equals(0, v.koophone_iam_login_duration_seconds_count)
    m:enter()
    m:enter()
    m:leave()
    m.on_retry()
    m.on_event { call = "get_task", code = 'A"B\nC', duration = 0.02, resends = 1 }
    v = scrape(m)
    assert.equals(1, v.koophone_in_flight)
    assert.equals(2, v.koophone_retries_total)
    assert.equals(1, v['koophone_requests_total{call="get_task",code="A\\"B\\nC"}'])
    assert.equals(0, v['koophone_request_duration_seconds_bucket{call="get_task",le="0.01"}'])
    assert.equals(1, v['koophone_request_duration_seconds_bucket{call="get_task",le="0.025"}'])
    assert.equals(0.02, v['koophone_request_duration_seconds_sum{call="get_task"}'])
  end)

  it("raises on a missing dict", function()
    assert.has_error(function() metrics.new(nil) end,
      "koophone.ngx.metrics.new: bad argument #1 (dict): expected a lua_shared_dict (ngx.shared.NAME), got nil")
    assert.has_error(function() metrics.new({}) end,
      "koophone.ngx.metrics.new: bad argument #1 (dict): expected a lua_shared_dict (ngx.shared.NAME), got table")
  end)
end)
