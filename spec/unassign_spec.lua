-- koophone.unassign / client:unassign against the running simulator: successes and the mapping of
-- every answer the API (or the network) can give to res / err.
local koophone = require "koophone"
local core = require "koophone.core"
local sim = require "helpers.sim"

local TOKEN = sim.token

local function expect_err(res, err)
  assert.is_nil(res)
  assert.is_table(err)
  assert.equals("koophone.Error", getmetatable(err).__name)
  return err
end

describe("koophone.unassign", function()
  it("is the C function itself", function()
    assert.is_true(rawequal(koophone.unassign, core.unassign))
    assert.equals("function", type(koophone.unassign))
  end)

  for _, scheme in ipairs { "http", "https" } do
    describe("over " .. scheme, function()
      local client
      before_each(function() client = koophone.new(sim.client_opts(scheme)) end)
      after_each(function() client:close() end)

      it("unassigns one pair and returns its job", function()
        local list = sim.make_pairs(1, "one")
        sim.reset(list, { extra_instances = { "keep0001" } })
        local res, err = client:unassign(TOKEN, list)
        assert.is_nil(err)
        assert.equals(200, res.status)
        assert.equals("0", res.error_code)
        assert.equals("ok", res.error_msg)
        assert.equals("unassigned", res.outcome)
        assert.equals(1, res.attempts)
        assert.matches("^RM_%x+$", res.task_id)
        assert.equals(1, #res.jobs)
        assert.equals("one0001", res.jobs[1].instance_id)
        assert.matches("^%x+$", res.jobs[1].job_id)
        assert.same({}, sim.bindings())
        local entry = sim.log()[1]
        assert.equals(res.request_id, entry.request_id)
        assert.equals(scheme, entry.scheme)
        assert.same({ { "u-one-1", "one0001" } }, entry.pair_list)
      end)

      it("unassigns 100 pairs, jobs in server order matching the instances", function()
        local list = sim.make_pairs(100, "hund")
        sim.reset(list)
        local res, err = client:unassign(TOKEN, list)
        assert.is_nil(err)
        assert.equals(100, #res.jobs)
        local seen = {}
        for i, job in ipairs(res.jobs) do
          assert.equals(list[i].instance_id, job.instance_id)
          assert.is_nil(seen[job.job_id])
          seen[job.job_id] = true
        end
        assert.same({}, sim.bindings())
        assert.equals(100, sim.state().counters.removed_bindings)
      end)
    end)
  end

  it("sends an integer user_id as its decimal string", function()
    local list = { { user_id = "1123422", instance_id = "a44uhlf7" }, { user_id = "1099511627776", instance_id = "big00001" } }
    sim.reset(list)
    local c = koophone.new(sim.client_opts("http"))
    assert(c:unassign(TOKEN, { { user_id = 1123422, instance_id = "a44uhlf7" },
                               { user_id = 2 ^ 40, instance_id = "big00001" } }))
    assert.same({ { "1123422", "a44uhlf7" }, { "1099511627776", "big00001" } }, sim.log()[1].pair_list)
    assert.same({}, sim.bindings())
  end)

  it("keeps bindings it was not asked to remove", function()
    local list = sim.make_pairs(3, "part")
    sim.reset(list)
    local c = koophone.new(sim.client_opts("http"))
    assert.is_table((c:unassign(TOKEN, { list[2] })))
    assert.same({ part0001 = "u-part-1", part0003 = "u-part-3" }, sim.bindings())
  end)

  it("uses the default client set by configure", function()
    local list = sim.make_pairs(2, "conf")
    sim.reset(list)
    koophone.configure(sim.client_opts("https"))
    local res, err = koophone.unassign(TOKEN, list, { request_id = "own-id-1" })
    assert.is_nil(err)
    assert.equals("own-id-1", res.request_id)
    assert.equals("own-id-1", sim.log()[1].request_id)
    assert.equals("https", sim.log()[1].scheme)
  end)

  it("accepts a success without data (older API) as a success with no jobs", function()
    sim.reset()
    sim.faults { type = "respond", body = '{"error_code":"0","error_msg":"ok"}' }
    local res, err = koophone.new(sim.client_opts("http")):unassign(TOKEN, sim.make_pairs(1))
    assert.is_nil(err)
    assert.same({}, res.jobs)
    assert.is_nil(res.task_id)
  end)
end)

describe("errors from the API", function()
  local client
  setup(function() client = koophone.new(sim.client_opts("http")) end)
  teardown(function() client:close() end)

  it("maps a pair that is not bound to 2210 and changes nothing", function()
    local list = sim.make_pairs(2, "nb")
    sim.reset(list)
    local err = expect_err(client:unassign(TOKEN, { list[1], { user_id = "other", instance_id = "nb0002" } }))
    assert.equals("api", err.kind)
    assert.equals(400, err.status)
    assert.equals(koophone.codes.BINDING_NOT_FOUND, err.code)
    assert.equals(1, err.attempts)
    assert.is_true(err.sent)
    assert.matches("binding", err.message)
    assert.same({ nb0001 = "u-nb-1", nb0002 = "u-nb-2" }, sim.bindings())
    assert.equals("koophone: KOOPHONE.API.2210 (HTTP 400): " .. err.message .. " [request_id=" .. err.request_id .. "]",
      tostring(err))
  end)

  it("maps an unknown token to APIGW.0301 with HTTP 401", function()
    sim.reset(sim.make_pairs(1))
    local err = expect_err(client:unassign("not-the-token", sim.make_pairs(1)))
    assert.equals("api", err.kind)
    assert.equals(401, err.status)
    assert.equals("APIGW.0301", err.code)
  end)

  it("maps an instance of another tenant to 1001", function()
    sim.reset(sim.make_pairs(1), { tenants = { { name = "t2", token = "other-token", instances = { "foreign1" },
                                                 bindings = { foreign1 = "u9" } } } })
    local err = expect_err(client:unassign(TOKEN, { { user_id = "u9", instance_id = "foreign1" } }))
    assert.equals("KOOPHONE.API.1001", err.code)
    assert.equals(400, err.status)
    assert.same({ foreign1 = "u9" }, sim.bindings("t2"))
  end)

  it("maps a tenant that does not exist to 0000 on HTTP 200", function()
    sim.reset({}, { tenants = { { name = "gone", token = "gone-token", exists = false } } })
    local err = expect_err(client:unassign("gone-token", sim.make_pairs(1)))
    assert.equals("api", err.kind)
    assert.equals(200, err.status)
    assert.equals(koophone.codes.TENANT_NOT_FOUND, err.code)
  end)

  -- Every documented code, with the status the API answers it with: kind "api" whatever the status.
  local documented = {
    { 200, "KOOPHONE.API.0002" }, { 200, "KOOPHONE.API.0005" }, { 400, "KOOPHONE.API.1000" },
    { 401, "KOOPHONE.API.1001" }, { 200, "KOOPHONE.API.1012" }, { 500, "KOOPHONE.API.2210" },
    { 500, "KOOPHONE.API.9999" }, { 404, "APIGW.0101" }, { 413, "APIGW.0201" }, { 502, "APIGW.0201" },
    { 401, "APIGW.0307" }, { 403, "APIGW.0302" }, { 403, "APIGW.0306" }, { 429, "APIGW.0308" },
    { 500, "APIGW.0601" }, { 503, "APIGW.0613" },
  }
  for _, case in ipairs(documented) do
    local status, code = case[1], case[2]
    it(("maps %s on HTTP %d to kind api"):format(code, status), function()
      sim.reset(sim.make_pairs(1))
      sim.faults { type = "api_error", status = status, code = code, msg = "message for " .. code }
      local err = expect_err(client:unassign(TOKEN, sim.make_pairs(1)))
      assert.equals("api", err.kind)
      assert.equals(status, err.status)
      assert.equals(code, err.code)
      assert.equals("message for " .. code, err.message)
      assert.is_truthy(koophone.describe(code))
      assert.same({ inst0001 = "u-inst-1" }, sim.bindings())
    end)
  end

  it("treats HTTP 200 with a non-zero error_code as a failure", function()
    sim.reset(sim.make_pairs(1))
    sim.faults { type = "respond", status = 200,
                 body = '{"error_code":"KOOPHONE.API.1012","error_msg":"not yours","data":{"task_id":"RM_1"}}' }
    local err = expect_err(client:unassign(TOKEN, sim.make_pairs(1)))
    assert.equals("api", err.kind)
    assert.equals(200, err.status)
    assert.equals("KOOPHONE.API.1012", err.code)
  end)

  it("reads Retry-After from a throttled answer, as seconds and as an HTTP date", function()
    sim.reset(sim.make_pairs(1))
    sim.faults({ type = "throttle", retry_after = "7" },
               { type = "throttle", retry_after = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 30), at = 2 })
    local err = expect_err(client:unassign(TOKEN, sim.make_pairs(1)))
    assert.equals(429, err.status)
    assert.equals("APIGW.0308", err.code)
    assert.equals(7, err.retry_after)
    err = expect_err(client:unassign(TOKEN, sim.make_pairs(1)))
    assert.is_true(err.retry_after >= 25 and err.retry_after <= 31, tostring(err.retry_after))
  end)
end)

describe("answers that are not the API's", function()
  local client
  setup(function() client = koophone.new(sim.client_opts("http", { max_response_bytes = 4096 })) end)
  teardown(function() client:close() end)
  before_each(function() sim.reset(sim.make_pairs(1)) end)

  it("maps a gateway HTML page to kind http", function()
    sim.faults { type = "bad_gateway", status = 502 }
    local err = expect_err(client:unassign(TOKEN, sim.make_pairs(1)))
    assert.equals("http", err.kind)
    assert.equals(502, err.status)
    assert.equals("HTTP.502", err.code)
    assert.matches("Bad Gateway", err.message)
  end)

  it("maps a 2xx body that is not JSON to decode / BAD_JSON", function()
    sim.faults { type = "respond", status = 200, body = "<html>hello</html>", headers = { ["Content-Type"] = "text/html" } }
    local err = expect_err(client:unassign(TOKEN, sim.make_pairs(1)))
    assert.equals("decode", err.kind)
    assert.equals("BAD_JSON", err.code)
    assert.equals(200, err.status)
  end)

  for _, body in ipairs { '{"error_msg":"ok"}', '[1,2]', '{"error_code":"0","data":{"cmd_jobs":{"a":1}}}',
                          '{"error_code":"0","data":{"cmd_jobs":[{"instance_id":5}]}}', '"0"',
                          '{"error_code":0}' } do
    it("maps JSON of the wrong shape to decode / BAD_SHAPE: " .. body, function()
      sim.faults { type = "respond", status = 200, body = body }
      local err = expect_err(client:unassign(TOKEN, sim.make_pairs(1)))
      assert.equals("decode", err.kind)
      assert.equals("BAD_SHAPE", err.code)
    end)
  end

  for _, chunked in ipairs { false, true } do
    it("cuts off a body over max_response_bytes (chunked=" .. tostring(chunked) .. ")", function()
      sim.faults { type = "big_body", bytes = 4 * 1024 * 1024, chunked = chunked }
      local err = expect_err(client:unassign(TOKEN, sim.make_pairs(1)))
      assert.equals("decode", err.kind)
      assert.equals("BODY_TOO_LARGE", err.code)
      assert.equals(200, err.status)
    end)
  end

  it("does not follow a redirect, and the target never sees the token", function()
    sim.faults { type = "redirect", status = 307 }
    local err = expect_err(client:unassign(TOKEN, sim.make_pairs(1)))
    assert.equals("http", err.kind)
    assert.equals(307, err.status)
    assert.equals("HTTP.307", err.code)
    assert.same({}, sim.target_log())
  end)
end)

describe("transport failures", function()
  before_each(function() sim.reset(sim.make_pairs(1)) end)

  it("reports connection refused as network, never sent", function()
    local c = koophone.new { endpoint = "http://127.0.0.1:9" }
    local err = expect_err(c:unassign(TOKEN, sim.make_pairs(1)))
    assert.equals("network", err.kind)
    assert.equals("CURLE_COULDNT_CONNECT", err.code)
    assert.is_false(err.sent)
    assert.is_nil(err.status)
    assert.equals(1, err.attempts)
    assert.matches("^[%x-]+$", err.request_id)
  end)

  it("reports an unresolvable host as network, never sent", function()
    local err = expect_err(koophone.new { endpoint = "http://koophone.invalid" }:unassign(TOKEN, sim.make_pairs(1)))
    assert.equals("network", err.kind)
    assert.equals("CURLE_COULDNT_RESOLVE_HOST", err.code)
    assert.is_false(err.sent)
  end)

  it("reports a connection closed after the request was read as network, sent", function()
    local c = koophone.new(sim.client_opts("http"))
    sim.faults { type = "drop" }
    local err = expect_err(c:unassign(TOKEN, sim.make_pairs(1)))
    assert.equals("network", err.kind)
    assert.equals("CURLE_GOT_NOTHING", err.code)
    assert.is_true(err.sent)
    assert.equals(1, err.attempts)
    assert.equals(1, #sim.log())
  end)

  it("reports a truncated answer as network, sent", function()
    local c = koophone.new(sim.client_opts("http"))
    sim.faults { type = "truncate" }
    local err = expect_err(c:unassign(TOKEN, sim.make_pairs(1)))
    assert.equals("network", err.kind)
    assert.is_true(err.sent)
  end)

  it("times out after the request was sent (whole-call timeout, per call)", function()
    local c = koophone.new(sim.client_opts("http", { timeout = 30 }))
    sim.faults { type = "delay", seconds = 2 }
    local err = expect_err(c:unassign(TOKEN, sim.make_pairs(1), { timeout = 0.3 }))
    assert.equals("timeout", err.kind)
    assert.equals("CURLE_OPERATION_TIMEDOUT", err.code)
    assert.is_true(err.sent)
  end)

  it("times out a trickling body with the client's timeout", function()
    local c = koophone.new(sim.client_opts("http", { timeout = 0.5 }))
    sim.faults { type = "trickle", bytes_per_second = 2, total_bytes = 64 }
    local err = expect_err(c:unassign(TOKEN, sim.make_pairs(1)))
    assert.equals("timeout", err.kind)
    assert.is_true(err.sent)
  end)

  it("works again on the same client after a failure", function()
    local c = koophone.new(sim.client_opts("http"))
    sim.faults { type = "reset" }
    expect_err(c:unassign(TOKEN, sim.make_pairs(1)))
    local res = assert(c:unassign(TOKEN, sim.make_pairs(1)))
    assert.equals(1, #res.jobs)
  end)
end)
