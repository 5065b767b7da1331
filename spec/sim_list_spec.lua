-- The simulator's ListInstances (sim/sim_list.lua), GET /v1/instances/batch-query, over real
-- HTTP: paging, the instance_id filter, assign_status after an unassign (both flip settings),
-- every kind of credentials, the query's x-request-id, faults scoped to this call, its log.
local sim = require "spec.helpers.sim"
local cjson = require "cjson"

local PATH = "/v1/instances/batch-query"
local TOKEN = "list-token"
local PROJECT = "p-list"

-- "inst0001" .. "inst0250"; the odd ones bound to "u-inst-<n>"
local ALL = sim.make_pairs(250, "inst")

local function escape(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- The query string of q (parameter name -> value), in the documented parameter order.
local function query(q)
  local parts = {}
  for _, k in ipairs({ "x-request-id", "page_no", "page_size", "instance_id", "instance_name",
                       "query_start_time", "query_end_time", "pool_scene_tag", "order", "order_by" }) do
    if q[k] ~= nil then parts[#parts + 1] = k .. "=" .. escape(tostring(q[k])) end
  end
  return table.concat(parts, "&")
end

-- One ListInstances call with the tenant token (or `headers`). q: query parameters; x-request-id
-- defaults to "rid-list" (false = none). Returns status, decoded body, headers.
local function list(q, headers)
  q = q or {}
  local rid = q["x-request-id"]
  if rid == nil then rid = "rid-list" end
  q["x-request-id"] = rid or nil
  local code, doc, h = sim.request_json("GET", PATH .. "?" .. query(q), headers or { ["x-auth-token"] = TOKEN })
  return code, doc, h
end

-- The data of a successful page.
local function page(no, size, extra)
  local q = { page_no = no, page_size = size }
  for k, v in pairs(extra or {}) do q[k] = v end
  local code, doc = list(q)
  assert.same({ 200, "0" }, { code, doc.data and doc.data.error_code })
  return doc.data
end

local function ids(data)
  local out = {}
  for i, r in ipairs(data.result) do out[i] = r.instance_id end
  return out
end

local function one(iid) return page(1, 10, { instance_id = iid }).result[1] end

local function unassign(user, iid)
  local code, doc = sim.request_json("POST", "/v1/instances/unassign",
    { ["x-auth-token"] = TOKEN, ["x-request-id"] = "rid-u", ["content-type"] = "application/json" },
    cjson.encode({ user_instances = { { user_id = user, instance_id = iid } } }))
  assert.same({ 200, "0" }, { code, doc.error_code })
  return doc.data
end

local function settings(t) return sim.control("POST", "/_sim/list", t) end

describe("simulator ListInstances", function()
  setup(function() assert(pcall(sim.control, "GET", "/_sim/info"), "simulator not running") end)

  before_each(function()
    local instances, bindings = sim.half_bound(ALL)
    sim.control("POST", "/_sim/reset")
    sim.control("POST", "/_sim/seed", {
      tenants = { { name = "t1", token = TOKEN, project_id = PROJECT, domain = "acct",
                    instances = instances, bindings = bindings },
                  { name = "t2", token = "other-token", instances = { "x1" }, bindings = { x1 = "ux" } },
                  { name = "t3", token = "gone-token", exists = false, instances = {} } },
      iam_users = { { domain = "acct", name = "admin", password = "pw" } },
      access_keys = { { ak = "AK-L", sk = "SK-L", project_id = PROJECT } },
    })
  end)

  describe("paging", function()
    it("250 instances by 100 on 1-based pages: 100, 100, 50, then an empty page; total_count 250", function()
      local seen, all = {}, {}
      for no, n in ipairs({ 100, 100, 50, 0 }) do
        local d = page(no, 100)
        assert.same({ no, 100, 250, n }, { d.page_no, d.page_size, d.total_count, #d.result })
        for _, id in ipairs(ids(d)) do
          assert.is_nil(seen[id], id .. " on two pages")
          seen[id] = true
          all[#all + 1] = id
        end
      end
      local want = {}
      for i, p in ipairs(ALL) do want[i] = p.instance_id end
      assert.same(want, all) -- every instance once, in instance id order
      assert.same({ "inst0100", "inst0101" }, { page(1, 100).result[100].instance_id, page(2, 100).result[1].instance_id })
    end)

    it("page_base 0: pages 0, 1, 2 hold the same instances; page_no below the base is refused", function()
      local one_based = { ids(page(1, 100)), ids(page(2, 100)), ids(page(3, 100)) }
      local code, doc = list({ page_no = 0, page_size = 100 })
      assert.same({ 400, "KOOPHONE.API.1000" }, { code, doc.error_code })
      assert.equal(0, settings({ page_base = 0 }).page_base)
      assert.same(one_based, { ids(page(0, 100)), ids(page(1, 100)), ids(page(2, 100)) })
      assert.same({ 0, 250 }, { #page(3, 100).result, page(3, 100).total_count })
      assert.same({ 0, 100 }, { page(0, 100).page_no, #page(0, 100).result })
    end)

    it("a page_size above the limit is refused, or clamped and echoed with oversize=clamp", function()
      local code, doc = list({ page_no = 1, page_size = 101 })
      assert.same({ 400, "KOOPHONE.API.1000" }, { code, doc.error_code })
      assert.is_nil(doc.data)
      settings({ max_page_size = 40, oversize = "clamp" })
      local d = page(2, 100)
      assert.same({ 2, 40, 40, "inst0041" }, { d.page_no, d.page_size, #d.result, d.result[1].instance_id })
      assert.equal(2, #page(1, 2).result)
    end)

    it("page_no and page_size are required decimal integers; a page_size of 0 is refused", function()
      for _, q in ipairs({ { page_size = 10 }, { page_no = 1 }, { page_no = "a", page_size = 10 },
                           { page_no = 1, page_size = "1.5" }, { page_no = -1, page_size = 10 },
                           { page_no = 1, page_size = 0 } }) do
        local code, doc = list(q)
        assert.same({ 400, "KOOPHONE.API.1000", "The request parameter is incorrect." },
                    { code, doc.error_code, doc.error_msg })
      end
    end)
  end)

  describe("the result", function()
    it("carries the documented fields; assign_status/assign_user come from the bindings", function()
      local bound, free = one("inst0001"), one("inst0002")
      assert.same({ "inst0001", 1, "u-inst-1" }, { bound.instance_id, bound.assign_status, bound.assign_user })
      assert.same({ "inst0002", 0, "" }, { free.instance_id, free.assign_status, free.assign_user })
      for _, f in ipairs({ "instance_name", "region", "instance_sku", "frozen_status", "running_status",
                           "login_status", "billing_mode", "project_id", "project_name", "phone_id",
                           "member_name", "account_name", "region_name", "region_name_en", "backup_status",
                           "backup_time", "restore_status", "restore_time" }) do
        assert.is_not_nil(bound[f], f)
      end
      assert.same({ PROJECT, "cn-north-4", 0 }, { bound.project_id, bound.region, bound.frozen_status })
    end)

    it("instance_id matches one id exactly; a prefix, a list, another tenant's id match nothing", function()
      local d = page(1, 100, { instance_id = "inst0042" })
      assert.same({ { "inst0042" }, 1 }, { ids(d), d.total_count })
      for _, id in ipairs({ "inst004", "inst0042,inst0043", "x1", "nope" }) do
        d = page(1, 100, { instance_id = id })
        assert.same({ 0, 0 }, { #d.result, d.total_count }, id)
      end
    end)

    it("the other query parameters are accepted and do not filter; times are checked", function()
      local d = page(1, 100, { instance_name = "whatever", pool_scene_tag = "CLOUD_PHONE", order = "desc",
                               order_by = "instance_id", query_start_time = "2023-08-15 14:30:45",
                               query_end_time = "2026-08-15 14:30:45" })
      assert.same({ 250, "inst0001" }, { d.total_count, d.result[1].instance_id })
      local code, doc = list({ page_no = 1, page_size = 10, query_start_time = "2023-08-15T14:30:45Z" })
      assert.same({ 400, "KOOPHONE.API.5002" }, { code, doc.error_code })
      code, doc = list({ page_no = 1, page_size = 10, query_start_time = "2024-01-02 00:00:00",
                         query_end_time = "2024-01-01 00:00:00" })
      assert.same({ 400, "KOOPHONE.API.5004" }, { code, doc.error_code })
    end)

    it("a free instance's assign_user is \"\", null or absent as set", function()
      settings({ unassigned_user = "null" })
      local _, doc = list({ page_no = 1, page_size = 10, instance_id = "inst0002" })
      local raw = select(3, sim.request("GET", PATH .. "?x-request-id=r&page_no=1&page_size=1&instance_id=inst0002",
                                        { ["x-auth-token"] = TOKEN }))
      assert.truthy(raw:find('"assign_user":null', 1, true))
      assert.equal(0, doc.data.result[1].assign_status)
      settings({ unassigned_user = "absent" })
      raw = select(3, sim.request("GET", PATH .. "?x-request-id=r&page_no=1&page_size=1&instance_id=inst0002",
                                  { ["x-auth-token"] = TOKEN }))
      assert.falsy(raw:find('"assign_user"', 1, true))
      assert.truthy(raw:find('"assign_status":0', 1, true))
    end)
  end)

  describe("after an unassign", function()
    it("flip=immediate: assign_status is 0 as soon as the unassign is accepted", function()
      sim.control("POST", "/_sim/jobs", { tenant = "t1", seconds = 600 })
      assert.same({ 1, "u-inst-3" }, { one("inst0003").assign_status, one("inst0003").assign_user })
      unassign("u-inst-3", "inst0003")
      assert.same({ 0, "" }, { one("inst0003").assign_status, one("inst0003").assign_user })
    end)

    it("flip=after_job: the instance stays assigned to the user until its job ends on the clock", function()
      settings({ flip = "after_job" })
      sim.control("POST", "/_sim/jobs", { tenant = "t1", delay = 10, seconds = 60 })
      local data = unassign("u-inst-5", "inst0005")
      assert.same({ 1, "u-inst-5" }, { one("inst0005").assign_status, one("inst0005").assign_user })
      sim.advance(30) -- job running
      assert.same({ 1, "u-inst-5" }, { one("inst0005").assign_status, one("inst0005").assign_user })
      local _, task = sim.request_json("GET", "/v1/instances/tasks/" .. data.task_id,
                                       { ["x-auth-token"] = TOKEN, ["x-request-id"] = "rid-t" })
      assert.equal(1, task.data.jobs[1].status)
      sim.advance(41) -- job ended
      assert.same({ 0, "" }, { one("inst0005").assign_status, one("inst0005").assign_user })
      assert.equal(1, one("inst0007").assign_status) -- others untouched
    end)

    it("flip=after_job with zero-length jobs shows the change at once", function()
      settings({ flip = "after_job" })
      unassign("u-inst-9", "inst0009")
      assert.equal(0, one("inst0009").assign_status)
    end)
  end)

  describe("credentials and tenant", function()
    it("another tenant's token sees only its own instances", function()
      local code, doc = list({ page_no = 1, page_size = 100 }, { ["x-auth-token"] = "other-token" })
      assert.same({ 200, 1, "x1", "ux" }, { code, doc.data.total_count, doc.data.result[1].instance_id,
                                           doc.data.result[1].assign_user })
    end)

    it("no token or an unknown one: 401 APIGW.0301 in the gateway's shape", function()
      for _, h in ipairs({ {}, { ["x-auth-token"] = "nope" } }) do
        local code, doc = list({ page_no = 1, page_size = 10 }, h)
        assert.same({ 401, "APIGW.0301", "rid-list" }, { code, doc.error_code, doc.request_id })
      end
    end)

    it("a tenant that does not exist: 200 with KOOPHONE.API.0000 inside data", function()
      local code, doc = list({ page_no = 1, page_size = 10 }, { ["x-auth-token"] = "gone-token" })
      assert.same({ 200, { error_code = "KOOPHONE.API.0000", error_msg = "The tenant does not exist." } },
                  { code, doc.data })
      assert.is_nil(doc.error_code)
    end)

    it("an IAM token of the tenant's project", function()
      local code, _, iam_token = sim.iam_login("acct", "admin", "pw", { id = PROJECT })
      assert.equal(201, code)
      local status, doc = list({ page_no = 3, page_size = 100 }, { ["x-auth-token"] = iam_token })
      assert.same({ 200, 50 }, { status, #doc.data.result })
      assert.equal("iam", sim.control("GET", "/_sim/list_log").requests[1].auth)
    end)

    it("an AK/SK signature over the query string; a wrong signature or a changed query is refused", function()
      local opts = { method = "GET", path = PATH, query = "x-request-id=rid-s&page_size=100&page_no=2",
                     headers = { ["x-project-id"] = PROJECT }, ak = "AK-L", sk = "SK-L" }
      local code, doc, cr = sim.signed_request(opts)
      assert.truthy(cr:find("\npage_no=2&page_size=100&x-request-id=rid-s\n", 1, true))
      assert.same({ 200, 100, "inst0101" }, { code, #doc.data.result, doc.data.result[1].instance_id })
      opts.signature = string.rep("0", 64)
      code, doc = sim.signed_request(opts)
      assert.same({ 401, "APIGW.0301" }, { code, doc.error_code })
      assert.truthy(doc.error_msg:find("verify aksk signature fail", 1, true))
      opts.signature = nil
      local headers = sim.sign(opts) -- signed for page 2, sent for page 3
      code, doc = sim.request_json("GET", PATH .. "?x-request-id=rid-s&page_size=100&page_no=3", headers)
      assert.same({ 401, "APIGW.0301" }, { code, doc.error_code })
      local auth = {}
      for i, e in ipairs(sim.control("GET", "/_sim/list_log").requests) do auth[i] = ("%s %d"):format(e.auth, e.status) end
      assert.same({ "aksk 200", "aksk 401", "aksk 401" }, auth)
    end)
  end)

  describe("x-request-id", function()
    it("missing from the query: 200 with KOOPHONE.API.0002 inside data, also when sent as a header", function()
      for _, h in ipairs({ { ["x-auth-token"] = TOKEN }, { ["x-auth-token"] = TOKEN, ["x-request-id"] = "in-header" } }) do
        local code, doc = list({ ["x-request-id"] = false, page_no = 1, page_size = 10 }, h)
        assert.same({ 200, "KOOPHONE.API.0002" }, { code, doc.data.error_code })
        assert.is_nil(doc.data.result)
      end
      local log = sim.control("GET", "/_sim/list_log").requests
      assert.same({ "KOOPHONE.API.0002", "KOOPHONE.API.0002" }, { log[1].error_code, log[2].error_code })
    end)

    it("from the query: echoed as X-Request-Id and logged", function()
      local code, _, h = list({ ["x-request-id"] = "rid-echo", page_no = 1, page_size = 1 })
      assert.same({ 200, "rid-echo" }, { code, h["x-request-id"] })
      local e = sim.control("GET", "/_sim/list_log").requests[1]
      assert.same({ "rid-echo", "GET", PATH, 1 }, { e.request_id, e.method, e.uri, e.results })
      assert.equal("x-request-id=rid-echo&page_no=1&page_size=1", e.query)
    end)

    it("any method but GET: 404 APIGW.0101, logged as a ListInstances request", function()
      local code, doc = sim.request_json("POST", PATH .. "?x-request-id=r&page_no=1&page_size=1",
                                         { ["x-auth-token"] = TOKEN })
      assert.same({ 404, "APIGW.0101" }, { code, doc.error_code })
      local e = sim.control("GET", "/_sim/list_log").requests[1]
      assert.same({ "POST", 404, "t1" }, { e.method, e.status, e.tenant })
    end)
  end)

  describe("faults", function()
    it("api=list faults reach only ListInstances: throttle, 5xx, gateway page, slow answer", function()
      sim.faults({ api = "list", type = "throttle", retry_after = "3" }, { api = "list", type = "error", at = 2 },
                 { api = "list", type = "bad_gateway", status = 504, at = 3 },
                 { api = "list", type = "delay", seconds = 0.2, at = 4 })
      local f = sim.control("GET", "/_sim/faults")
      assert.same({ "list", 1, 1 }, { f.faults[1].api, f.next_list_request, f.next_request })
      unassign("u-inst-1", "inst0001") -- not faulted
      local code, doc, h = list({ page_no = 1, page_size = 1 })
      assert.same({ 429, "APIGW.0308", "3", "rid-list" }, { code, doc.error_code, h["retry-after"], doc.request_id })
      code, doc = list({ page_no = 1, page_size = 1 })
      assert.same({ 500, "KOOPHONE.API.9999" }, { code, doc.error_code })
      local status, _, raw = sim.request("GET", PATH .. "?x-request-id=r&page_no=1&page_size=1", { ["x-auth-token"] = TOKEN })
      assert.same({ 504, true }, { status, raw:find("504 Gateway Time-out", 1, true) ~= nil })
      local d = page(1, 1) -- delayed, then answered normally
      assert.same({ "inst0001", 0 }, { d.result[1].instance_id, d.result[1].assign_status })
      local faulted = {}
      for i, e in ipairs(sim.control("GET", "/_sim/list_log").requests) do faulted[i] = e.fault end
      assert.same({ "throttle", "error", "bad_gateway", "delay" }, faulted)
      assert.is_nil(sim.log()[1].fault)
    end)

    it("a dropped or reset connection gives no answer", function()
      for _, t in ipairs({ "drop", "reset" }) do
        sim.faults({ api = "list", type = t })
        local ok, err = pcall(list, { page_no = 1, page_size = 1 })
        assert.is_false(ok, t)
        assert.truthy(tostring(err):find("closed", 1, true), t .. ": " .. tostring(err))
      end
      local log = sim.control("GET", "/_sim/list_log").requests
      assert.same({ 444, 444 }, { log[1].status, log[2].status })
    end)
  end)

  describe("control", function()
    it("reads and unassigns are counted and logged apart", function()
      page(1, 10)
      page(2, 10)
      unassign("u-inst-1", "inst0001")
      local c = sim.state().counters
      assert.same({ 2, 1 }, { c.list_requests, c.unassign_requests })
      assert.same({ 2, 1 }, { #sim.control("GET", "/_sim/list_log").requests, #sim.log() })
      sim.control("DELETE", "/_sim/log")
      assert.same({}, sim.control("GET", "/_sim/list_log").requests)
    end)

    it("settings: defaults, seed 'list', bad values refused without change, reset restores", function()
      assert.same({ page_base = 1, max_page_size = 100, oversize = "error", flip = "immediate",
                    unassigned_user = "empty" }, sim.control("GET", "/_sim/list"))
      sim.control("POST", "/_sim/seed", { list = { page_base = 0, flip = "after_job" } })
      assert.same({ 0, "after_job" }, { sim.control("GET", "/_sim/list").page_base, sim.control("GET", "/_sim/list").flip })
      for _, bad in ipairs({ { page_base = 2 }, { max_page_size = 0 }, { flip = "later" }, { oversize = true },
                             { colour = "red" } }) do
        local code, doc = sim.request_json("POST", "/_sim/list", { ["content-type"] = "application/json" },
                                           cjson.encode(bad))
        assert.same({ 400, false }, { code, doc.ok })
      end
      local code = sim.request_json("POST", "/_sim/seed", { ["content-type"] = "application/json" },
                                    cjson.encode({ list = { flip = "later" } }))
      assert.equal(400, code)
      assert.equal("after_job", sim.control("GET", "/_sim/list").flip)
      sim.control("POST", "/_sim/reset")
      assert.same({ 1, "immediate" }, { sim.control("GET", "/_sim/list").page_base, sim.control("GET", "/_sim/list").flip })
    end)
  end)
end)
