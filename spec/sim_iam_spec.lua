-- The simulator's IAM (POST /v3/auth/tokens, sim/sim_iam.lua) and the gateway's handling of the
-- tokens it issues, over real HTTP.
local sim = require "spec.helpers.sim"
local cjson = require "cjson"

local API = "/v1/instances/unassign"
local PROJECT = "p-0001"

local function unassign(token, user, instance)
  local body = cjson.encode({ user_instances = { { user_id = user or "u1", instance_id = instance or "i1" } } })
  return sim.request_json("POST", API, { ["x-auth-token"] = token, ["x-request-id"] = "rid-iam",
                                         ["content-type"] = "application/json" }, body)
end

local function login(scope, password)
  return sim.iam_login("acct", "admin", password or "pw-admin", scope or { id = PROJECT })
end

describe("simulator IAM", function()
  setup(function() assert(pcall(sim.control, "GET", "/_sim/info"), "simulator not running") end)

  before_each(function()
    sim.control("POST", "/_sim/reset")
    sim.control("POST", "/_sim/seed", {
      tenants = { { name = "t1", token = "seeded-token", project_id = PROJECT, project_name = "cn-north-4",
                    domain = "acct", instances = { "i1", "i2", "i3" }, bindings = { i1 = "u1", i2 = "u2", i3 = "u3" } },
                  { name = "t2", project_id = "p-0002", project_name = "cn-south-1", domain = "other", instances = {} } },
      iam_users = { { domain = "acct", name = "admin", password = "pw-admin" } },
    })
  end)

  it("issues a project-scoped token (by id or by name) that the KooPhone API accepts", function()
    local code, doc, token = login()
    assert.equal(201, code)
    assert.equal(2048, #token)
    assert.truthy(token:match("^MII"))
    local t = doc.token
    assert.truthy(t.expires_at:match("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$"))
    assert.same({ "password" }, t.methods)
    assert.same({ PROJECT, "cn-north-4", "acct" }, { t.project.id, t.project.name, t.project.domain.name })
    assert.equal("admin", t.user.name)
    assert.is_nil(t.catalog) -- nocatalog
    local code2, _, by_name = login({ name = "cn-north-4" })
    assert.equal(201, code2)
    assert.are_not.equal(token, by_name)
    local c, res = unassign(token)
    assert.same({ 200, "0" }, { c, res.error_code })
    c, res = unassign(by_name, "u2", "i2")
    assert.same({ 200, "0" }, { c, res.error_code })
    local e = sim.log()
    assert.same({ "iam", "iam" }, { e[1].auth, e[2].auth })
    assert.same({ i3 = "u3" }, sim.bindings())
    assert.same({ 2, 2 }, { sim.state().counters.iam_requests, sim.state().counters.iam_tokens_issued })
  end)

  it("answers a wrong password or unknown user with 401, a bad scope with 400, and issues nothing", function()
    local code, doc, token = login(nil, "wrong")
    assert.equal(401, code)
    assert.same({ error = { code = 401, title = "Unauthorized", message = "The username or password is wrong." } }, doc)
    assert.is_nil(token)
    code, doc = sim.iam_login("acct", "nobody", "pw-admin", { id = PROJECT })
    assert.same({ 401, "The username or password is wrong." }, { code, doc.error.message })
    code, doc = login({ id = "p-0002" }) -- a project of another domain
    assert.same({ 400, "Bad Request" }, { code, doc.error.title })
    code, doc = login({ name = "cn-south-1" })
    assert.equal(400, code)
    code = sim.request("POST", "/v3/auth/tokens", { ["content-type"] = "application/json" }, '{"auth":{}}')
    assert.equal(400, code)
    assert.equal(0, sim.state().counters.iam_tokens_issued)
    local log = sim.control("GET", "/_sim/iam_log").requests
    assert.same({ 401, 401, 400, 400, 400 }, { log[1].status, log[2].status, log[3].status, log[4].status, log[5].status })
    assert.equal("The username or password is wrong.", log[1].error)
  end)

  it("token lifetime comes from the control API; an expired token gets 401 APIGW.0301", function()
    sim.control("POST", "/_sim/iam", { lifetime = 600 })
    local _, doc, token = login()
    local issued, expires = doc.token.issued_at, doc.token.expires_at
    assert.are_not.equal(issued, expires)
    sim.advance(599)
    assert.equal(200, (unassign(token)))
    sim.advance(2)
    local code, res = unassign(token, "u2", "i2")
    assert.equal(401, code)
    assert.same({ error_code = "APIGW.0301", request_id = "rid-iam",
                  error_msg = "Incorrect IAM authentication information: token expires, expires_at: " .. expires }, res)
    assert.equal("u2", sim.bindings().i2)
    assert.same({ 0, 1 }, { sim.control("GET", "/_sim/iam").tokens_active, sim.state().counters.iam_tokens_issued })
  end)

  it("revoking all tokens answers 401 APIGW.0307; a new token works; seeded tokens stay valid", function()
    local _, _, token = login()
    assert.same({ ok = true, revoked = 1 }, sim.control("POST", "/_sim/iam/revoke"))
    local code, res = unassign(token)
    assert.equal(401, code)
    assert.same({ error_code = "APIGW.0307", error_msg = "The token must be updated.", request_id = "rid-iam" }, res)
    assert.equal("u1", sim.bindings().i1)
    local _, _, fresh = login()
    assert.equal(200, (unassign(fresh)))
    assert.equal(200, (unassign("seeded-token", "u2", "i2")))
    assert.equal(1, sim.control("GET", "/_sim/iam").tokens_revoked)
  end)

  it("answers 5xx while the failure switch is on, then recovers", function()
    local conf = sim.control("POST", "/_sim/iam", { fail_status = 503, fail_count = 2 })
    assert.same({ 503, 2 }, { conf.fail_status, conf.fail_count })
    for _ = 1, 2 do
      local code, doc, token = login()
      assert.same({ 503, "Service Unavailable" }, { code, doc.error.title })
      assert.is_nil(token)
    end
    assert.equal(201, (login()))
    sim.control("POST", "/_sim/iam", { fail_status = 500 }) -- until switched off
    assert.equal(500, (login()))
    assert.equal(500, (login()))
    sim.control("POST", "/_sim/iam", { fail_status = false })
    assert.equal(201, (login()))
    assert.equal(2, sim.state().counters.iam_tokens_issued)
  end)

  it("never shows a password or an issued token in control output", function()
    local _, _, token = login()
    login(nil, "wrong-password")
    for _, path in ipairs({ "/_sim/state", "/_sim/log", "/_sim/iam", "/_sim/iam_log", "/_sim/info" }) do
      local _, _, raw = sim.request("GET", path)
      assert.is_nil(raw:find("pw-admin", 1, true), path)
      assert.is_nil(raw:find("wrong-password", 1, true), path)
      assert.is_nil(raw:find(token:sub(1, 16), 1, true), path)
    end
  end)
end)
