-- list_instances: ListInstances (GET /v1/instances/batch-query) through the C pipeline, against
-- the simulator's (sim/README.md, "ListInstances"): paging, the instance_id filter, assign_status
-- after an unassign, every kind of credentials (the AK/SK signature covers the query), errors
-- inside data, the retry client, argument errors, redaction and the event.
local koophone = require "koophone"
local sim = require "helpers.sim"
local creds = require "helpers.creds"
local cjson = require "cjson"

local TOKEN = sim.token -- 6 KB, every 16-byte slice looked for in errors and events
local PROJECT = creds.PROJECT
local SK = "SK-list-" .. string.rep("l1stKEY7", 6)
local PASSWORD = "pw-" .. string.rep("L1stH0rse", 4)

-- "li0001" .. "li0250"; the odd ones bound to "u-li-<n>"
local ALL = sim.make_pairs(250, "li")

local function list_log() return sim.control("GET", "/_sim/list_log").requests end

local function seed()
  local instances, bindings = sim.half_bound(ALL)
  sim.control("POST", "/_sim/reset")
  sim.control("POST", "/_sim/seed", {
    tenants = { { name = "t1", token = TOKEN, project_id = PROJECT, domain = "acct",
                  instances = instances, bindings = bindings },
                { name = "gone", token = "gone-token-0123456789", exists = false, instances = {} } },
    iam_users = { { domain = "acct", name = "admin", password = PASSWORD } },
    access_keys = { { ak = "AKLIST0001", sk = SK, project_id = PROJECT } },
  })
end

local function ids(res)
  local out = {}
  for i, inst in ipairs(res.instances) do out[i] = inst.instance_id end
  return out
end

describe("list_instances", function()
  local client
  before_each(function()
    seed()
    client = koophone.new(sim.client_opts("http", { timeout = 5 }))
  end)
  after_each(function() client:close() end)

  describe("paging", function()
    it("250 instances by 100 on the simulator's default page base: 100, 100, 50; total_count 250", function()
      local all, seen = {}, {}
      for no, n in ipairs({ 100, 100, 50 }) do
        local res, err = client:list_instances(TOKEN, { page_no = no, page_size = 100 })
        assert.is_nil(err)
        assert.same({ no, 100, 250, n, 200 }, { res.page_no, res.page_size, res.total_count, #res.instances, res.status })
        for _, id in ipairs(ids(res)) do
          assert.is_nil(seen[id], id .. " on two pages")
          seen[id], all[#all + 1] = true, id
        end
      end
      assert.equal(250, #all)
      assert.same({ "li0001", "li0250" }, { all[1], all[250] })
      assert.equal(3, #list_log())
    end)

    it("page_no 1 and page_size 100 when absent; integers, not floats", function()
      local res = assert(client:list_instances(TOKEN, {}))
      assert.same({ 1, 100, 100 }, { res.page_no, res.page_size, #res.instances })
      assert.truthy(list_log()[1].query:find("&page_no=1&page_size=100", 1, true))
      if math.type then
        assert.same({ "integer", "integer", "integer" },
                    { math.type(res.total_count), math.type(res.instances[1].assign_status), math.type(res.page_no) })
      end
    end)

    it("sends x-request-id in the query (opts.request_id or a fresh one), first, encoded", function()
      local res = assert(client:list_instances(TOKEN, { page_size = 1 }, { request_id = "rid-list-1" }))
      assert.equal("rid-list-1", res.request_id)
      local fresh = assert(client:list_instances(TOKEN, { page_size = 1 }))
      local log = list_log()
      assert.same({ "rid-list-1", fresh.request_id }, { log[1].request_id, log[2].request_id })
      assert.equal("x-request-id=rid-list-1&page_no=1&page_size=1", log[1].query)
      assert(client:list_instances(TOKEN, { page_size = 1, instance_name = "a b&c=d/é" }, { request_id = "r&1" }))
      assert.equal("x-request-id=r%261&page_no=1&page_size=1&instance_name=a%20b%26c%3Dd%2F%C3%A9", list_log()[3].query)
    end)
  end)

  describe("the result", function()
    it("filters by instance_id; every field as sent; assign_status/assign_user from the bindings", function()
      local res = assert(client:list_instances(TOKEN, { instance_id = "li0001" }))
      assert.same({ 1, 1, { "li0001" } }, { res.total_count, #res.instances, ids(res) })
      local inst = res.instances[1]
      assert.same({ 1, "u-li-1", "phone-li0001", 0, PROJECT }, { inst.assign_status, inst.assign_user, inst.instance_name, inst.frozen_status, inst.project_id })
      local free = assert(client:list_instances(TOKEN, { instance_id = "li0002" })).instances[1]
      assert.same({ 0, "" }, { free.assign_status, free.assign_user })
      local none = assert(client:list_instances(TOKEN, { instance_id = "li9999" }))
      assert.same({ 0, 0 }, { none.total_count, #none.instances })
    end)

    it("a JSON null is left out (nil), an absent field stays absent", function()
      for _, setting in ipairs({ "null", "absent" }) do
        sim.control("POST", "/_sim/list", { unassigned_user = setting })
        local free = assert(client:list_instances(TOKEN, { instance_id = "li0002" })).instances[1]
        assert.same({ 0, nil }, { free.assign_status, free.assign_user })
        assert.is_nil(rawget(free, "assign_user"))
      end
    end)

    it("assign_status flips to 0 after an unassign of the pair", function()
      local q = { instance_id = "li0003" }
      assert.same({ 1, "u-li-3" }, { client:list_instances(TOKEN, q).instances[1].assign_status,
                                     client:list_instances(TOKEN, q).instances[1].assign_user })
      assert(client:unassign(TOKEN, { { user_id = "u-li-3", instance_id = "li0003" } }))
      local inst = assert(client:list_instances(TOKEN, q)).instances[1]
      assert.same({ 0, "" }, { inst.assign_status, inst.assign_user })
    end)
  end)

  describe("credentials", function()
    it("AK/SK: the signature covers the query (the simulator verifies it), odd bytes included", function()
      local cred = koophone.aksk { ak = "AKLIST0001", sk = SK, project_id = PROJECT }
      local res, err = client:list_instances(cred, { page_no = 2, page_size = 7, instance_name = "a b&c=d/é~",
                                                     query_start_time = "2026-01-02 03:04:05" })
      assert.is_nil(err)
      assert.same({ 2, 7, 250 }, { res.page_no, #res.instances, res.total_count })
      assert.equal("aksk", list_log()[1].auth)
      local bad = koophone.aksk { ak = "AKLIST0001", sk = SK .. "x", project_id = PROJECT }
      res, err = client:list_instances(bad, { page_size = 1 })
      assert.is_nil(res)
      assert.same({ 401, "APIGW.0301" }, { err.status, err.code })
      creds.assert_no_slice(SK, tostring(err))
      cred:close()
      bad:close()
    end)

    it("an IAM token provider: its token, fetched once", function()
      local tp = creds.provider(PASSWORD)
      assert(client:list_instances(tp, { page_size = 1 }))
      assert(client:list_instances(tp, { page_size = 1, page_no = 2 }))
      local log = list_log()
      assert.same({ "iam", "iam" }, { log[1].auth, log[2].auth })
      assert.equal(1, #sim.control("GET", "/_sim/iam_log").requests)
    end)

    it("koophone.list_instances uses the default client", function()
      koophone.configure(sim.client_opts("http"))
      local res = assert(koophone.list_instances(TOKEN, { instance_id = "li0005" }))
      assert.equal("u-li-5", res.instances[1].assign_user)
    end)
  end)

  describe("errors", function()
    it("an error_code inside data is an API error (200), as is a 400's top-level one", function()
      local res, err = client:list_instances("gone-token-0123456789", {})
      assert.is_nil(res)
      assert.same({ "api", 200, "KOOPHONE.API.0000" }, { err.kind, err.status, err.code })
      assert.equal(koophone.Error, getmetatable(err))
      res, err = client:list_instances(TOKEN, { page_size = 101 }) -- above the simulator's limit
      assert.is_nil(res)
      assert.same({ "api", 400, "KOOPHONE.API.1000" }, { err.kind, err.status, err.code })
      sim.faults({ type = "respond", api = "list", status = 200,
                   body = cjson.encode { data = { error_code = "KOOPHONE.API.1012", error_msg = "not in tenant",
                                                  result = {}, total_count = 0, page_no = 1, page_size = 100 } } })
      res, err = client:list_instances(TOKEN, {})
      assert.is_nil(res)
      assert.same({ "api", "KOOPHONE.API.1012", "not in tenant" }, { err.kind, err.code, err.message })
    end)

    it("a page of another shape is BAD_SHAPE; a gateway page is HTTP.<status>", function()
      local bodies = {
        '{"data":{"result":[{"assign_status":1}],"total_count":1,"page_no":1,"page_size":1,"error_code":"0"}}',
        '{"data":{"result":{"a":1},"total_count":1,"page_no":1,"page_size":1}}',
        '{"data":{"result":[],"page_no":1,"page_size":1}}',
        '{"data":{"result":[],"total_count":1.5,"page_no":1,"page_size":1}}',
        '{"error_code":"0"}',
      }
      for i, body in ipairs(bodies) do
        sim.faults({ type = "respond", api = "list", status = 200, body = body })
        local res, err = client:list_instances(TOKEN, {})
        assert.is_nil(res, body)
        assert.same({ "decode", "BAD_SHAPE", i }, { err.kind, err.code, i })
      end
      sim.faults({ type = "bad_gateway", api = "list", status = 502 })
      local _, err = client:list_instances(TOKEN, {})
      assert.same({ "http", "HTTP.502" }, { err.kind, err.code })
    end)

    it("argument errors name the argument and the field; nothing is sent", function()
      local cases = {
        { nil, "bad argument #2 (query): expected a table, got nil" },
        { { pagesize = 2 }, "bad argument #2 (query.pagesize): unknown parameter" },
        { { ["x-request-id"] = "r" }, "bad argument #2 (query.x-request-id): unknown parameter" },
        { { [1] = "li0001" }, "bad argument #2 (query): parameter names must be strings, got number" },
        { { page_size = 0 }, "bad argument #2 (query.page_size): expected an integer from 1 to 1000, got 0" },
        { { page_size = 1001 }, "bad argument #2 (query.page_size): expected an integer from 1 to 1000, got 1001" },
        { { page_no = -1 }, "bad argument #2 (query.page_no): expected an integer from 0 to 2147483647, got -1" },
        { { page_no = 1.5 }, "bad argument #2 (query.page_no): expected an integer from 0 to 2147483647, got 1.5" },
        { { page_no = "1" }, "bad argument #2 (query.page_no): expected an integer from 0 to 2147483647, got string" },
        { { instance_id = 7 }, "bad argument #2 (query.instance_id): expected a string, got number" },
        { { instance_id = "" }, "bad argument #2 (query.instance_id): expected a non-empty string, got an empty one" },
        { { instance_id = "li0001\r\nX-Evil: 1" }, "bad argument #2 (query.instance_id): contains a control character" },
        { { order_by = "a\0b" }, "bad argument #2 (query.order_by): contains a control character" },
        { { instance_name = "a\nb" }, "bad argument #2 (query.instance_name): contains a control character" },
        -- the filter gets the pair ids' check
        { { instance_id = "li0001\226\128\139" }, "bad argument #2 (query.instance_id): contains an invisible character (U+200B)" },
        { { instance_id = "li\226\128\1741000" }, "bad argument #2 (query.instance_id): contains a bidirectional text control (U+202E)" },
        { { instance_id = " li0001" }, "bad argument #2 (query.instance_id): leading or trailing space" },
      }
      for _, c in ipairs(cases) do
        local ok, msg = pcall(client.list_instances, client, TOKEN, c[1])
        assert.is_false(ok)
        assert.equal("koophone.list_instances: " .. c[2], msg)
      end
      local ok, msg = pcall(client.list_instances, client, TOKEN, {}, { request_id = "a b" })
      assert.is_false(ok)
      assert.truthy(msg:find("bad argument #3 (opts.request_id)", 1, true))
      ok, msg = pcall(client.list_instances, client, "tok\n", {})
      assert.truthy(msg:find("bad argument #1 (token)", 1, true))
      assert.equal(0, #list_log())
    end)
  end)

  describe("redaction and events", function()
    it("no slice of the token in errors or events, whatever the answer echoes", function()
      local events = {}
      local c = koophone.new(sim.client_opts("http", { timeout = 5, on_event = function(ev) events[#events + 1] = ev end }))
      local echo = cjson.encode { data = { error_code = TOKEN:sub(1, 200), error_msg = "bad " .. TOKEN } }
      sim.faults({ type = "respond", api = "list", status = 200, body = echo },
                 { type = "api_error", api = "list", at = 2, status = 400, code = TOKEN, msg = TOKEN },
                 { type = "respond", api = "list", at = 3, status = 502, body = "<html>" .. TOKEN .. "</html>" })
      local errs = {}
      for i = 1, 3 do
        local res, err = c:list_instances(TOKEN, { page_size = 1 })
        assert.is_nil(res)
        errs[i] = tostring(err) .. "\n" .. table.concat(sim.strings(err), "\n")
      end
      local ok = assert(c:list_instances(TOKEN, { page_size = 1 }, { request_id = "rid-ev" }))
      assert.equal(4, #events)
      creds.assert_no_slice(TOKEN, table.concat(errs, "\n"))
      creds.assert_no_slice(TOKEN, table.concat(sim.strings(events), "\n"))
      local ev = events[4]
      assert.same({ "list_instances", "rid-ev", 200, 0, true, 1 }, { ev.call, ev.request_id, ev.status, ev.pairs, ev.sent, ev.attempt })
      assert.same({ "list_instances", "api" }, { events[1].call, events[1].kind })
      assert.equal(ok.request_id, ev.request_id)
      c:close()
    end)
  end)

  describe("in the retry client", function()
    it("retries every transient failure of the read (5xx, timeout, gateway, throttling), one x-request-id", function()
      local slept = {}
      local rc = koophone.client(sim.client_opts("http", { timeout = 0.5,
        retry = { max_attempts = 6, sleep = function(s) slept[#slept + 1] = s end } }))
      sim.faults({ type = "error", api = "list" }, { type = "delay", api = "list", seconds = 1.5, at = 2 },
                 { type = "bad_gateway", api = "list", status = 504, at = 3 },
                 { type = "throttle", api = "list", at = 4 })
      local res, err = rc:list_instances(TOKEN, { instance_id = "li0007" })
      assert.is_nil(err)
      assert.equal("u-li-7", res.instances[1].assign_user)
      assert.equal(4, #slept)
      local log = list_log()
      assert.equal(5, #log)
      for i = 2, 5 do assert.equal(log[1].request_id, log[i].request_id) end
      rc:close()
    end)

    it("does not retry an answer that is final (a bad page, an error_code inside data)", function()
      local rc = koophone.client(sim.client_opts("http", { retry = { sleep = function() error("no retry expected") end } }))
      local res, err = rc:list_instances(TOKEN, { page_size = 500 })
      assert.is_nil(res)
      assert.same({ "KOOPHONE.API.1000", 1 }, { err.code, err.attempts })
      res, err = rc:list_instances("gone-token-0123456789", {})
      assert.same({ "KOOPHONE.API.0000", 1 }, { err.code, err.attempts })
      assert.equal(2, #list_log())
      rc:close()
    end)

    it("checks its opts like the core", function()
      local rc = koophone.client(sim.client_opts("http"))
      local ok, msg = pcall(rc.list_instances, rc, TOKEN, {}, "opts")
      assert.is_false(ok)
      assert.truthy(msg:find("koophone.list_instances: bad argument #3 (opts): expected a table, got string", 1, true))
      rc:close()
    end)
  end)
end)
