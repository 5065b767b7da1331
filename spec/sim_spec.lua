-- Tests for the local KooPhone simulator (sim/). The simulator must already be running:
--   sim/simctl start && lua5.4 /usr/bin/busted spec/sim_spec.lua
-- The spec resets the simulator before every test, so do not run it against a simulator that
-- another test run is using at the same time.
local http = require "socket.http"
local ltn12 = require "ltn12"
local socket = require "socket"
local cjson = require "cjson"

local HTTP_PORT = tonumber(os.getenv("KOOPHONE_SIM_HTTP_PORT") or "18080")
local BASE = "http://127.0.0.1:" .. HTTP_PORT
local API = "/v1/instances/unassign"

local T1 = "t1-token-" .. string.rep("abcdefghij", 800)   -- 8 KB, like a real IAM token
local T2 = "t2-token-tenant-does-not-exist"
local T3 = "t3-token-other-tenant"

-- Control API over socket.http. Returns status, decoded JSON body.
local function control(method, path, body)
  local src = body and cjson.encode(body) or ""
  local out = {}
  local _, code = http.request {
    url = BASE .. path, method = method,
    headers = { ["content-type"] = "application/json", ["content-length"] = #src },
    source = ltn12.source.string(src), sink = ltn12.sink.table(out),
  }
  return code, cjson.decode(table.concat(out))
end

local function schedule(...) return control("POST", "/_sim/faults", { faults = { ... } }) end

local function state()
  local _, s = control("GET", "/_sim/state")
  return s.tenants
end

local function bound(tenant)
  local out = {}
  for _, b in ipairs(state()[tenant].bindings) do out[b.instance_id] = b.user_id end
  return out
end

local function log() return select(2, control("GET", "/_sim/log")).requests end

-- Minimal raw HTTP/1.1 client on a LuaSocket TCP connection (keeps the connection open).
local function connect()
  local sock = assert(socket.tcp())
  sock:settimeout(5)
  assert(sock:connect("127.0.0.1", HTTP_PORT))
  return sock
end

-- Returns a response table {status, headers, body}, or nil, err, partial body.
local function exchange(sock, method, path, headers, body)
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1:" .. HTTP_PORT }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  assert(sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")))
  local line, err = sock:receive("*l")
  if not line then return nil, err, "" end
  local res = { status = tonumber(line:match("^HTTP/1%.%d (%d+)")), headers = {} }
  while true do
    local l, e = sock:receive("*l")
    if not l then return nil, e, "" end
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.*)$")
    res.headers[k:lower()] = v
  end
  if res.headers["content-length"] then
    local b, e, partial = sock:receive(tonumber(res.headers["content-length"]))
    if not b then return nil, e, partial end
    res.body = b
  elseif (res.headers["transfer-encoding"] or ""):lower() == "chunked" then
    local parts = {}
    while true do
      local size = tonumber(assert(sock:receive("*l")):match("^(%x+)"), 16)
      if size == 0 then assert(sock:receive("*l")); break end
      parts[#parts + 1] = assert(sock:receive(size))
      assert(sock:receive("*l"))
    end
    res.body = table.concat(parts)
  end
  return res
end

local function json(res) return cjson.decode(res.body) end

local function pairs_body(list)
  local ui = {}
  for i, p in ipairs(list) do ui[i] = { user_id = p[1], instance_id = p[2] } end
  return cjson.encode({ user_instances = ui })
end

-- One unassign request. opts: pairs, body, token (false = none), rid (false = none),
-- method, path, sock (reuse a connection). Returns res or nil, err, partial; and the socket.
local function unassign(opts)
  opts = opts or {}
  local headers = { ["Content-Type"] = "application/json" }
  if opts.token ~= false then headers["X-Auth-Token"] = opts.token or T1 end
  if opts.rid ~= false then headers["x-request-id"] = opts.rid or "req-" .. math.random(1e9) end
  local body = opts.body or pairs_body(opts.pairs or { { "u1", "i1" } })
  local sock = opts.sock or connect()
  local res, err, partial = exchange(sock, opts.method or "POST", opts.path or API, headers, body)
  if not opts.sock and not opts.keep then sock:close() end
  return res, err, partial, sock
end

local function curl(args)
  local p = io.popen("curl -sS -o /dev/null -w '%{http_code}' " .. args .. " 2>/dev/null; echo \" $?\"")
  local out = p:read("*a")
  p:close()
  local code, rc = out:match("(%d+)%s+(%d+)")
  return tonumber(code), tonumber(rc)
end

describe("KooPhone simulator", function()
  setup(function()
    local ok, code = pcall(control, "GET", "/_sim/info")
    assert(ok and code == 200, "simulator not running on " .. BASE .. " (run sim/simctl start)")
  end)

  before_each(function()
    assert.equal(200, (control("POST", "/_sim/reset")))
    local code = control("POST", "/_sim/seed", { tenants = {
      { name = "t1", token = T1, instances = { "i4", "i1", "i2", "i3" },
        bindings = { i1 = "u1", i2 = "u2", i3 = "u3" } },
      { name = "t2", token = T2, exists = false, instances = {} },
      { name = "t3", token = T3, instances = { "x1" }, bindings = { x1 = "ux" } },
    } })
    assert.equal(200, code)
  end)

  describe("control API", function()
    it("seeds and reports state without tokens", function()
      local _, s = control("GET", "/_sim/state")
      assert.same({ "i1", "i2", "i3", "i4" }, s.tenants.t1.instances)
      assert.same({ { instance_id = "i1", user_id = "u1" }, { instance_id = "i2", user_id = "u2" },
                    { instance_id = "i3", user_id = "u3" } }, s.tenants.t1.bindings)
      assert.is_true(s.tenants.t1.exists)
      assert.is_false(s.tenants.t2.exists)
      local _, raw = pcall(function()
        local out = {}
        http.request { url = BASE .. "/_sim/state", sink = ltn12.sink.table(out) }
        return table.concat(out)
      end)
      assert.is_nil(raw:find("t1-token", 1, true))
      assert.is_truthy(raw:find('"instances":[]', 1, true)) -- empty arrays stay arrays
    end)

    it("reset clears everything", function()
      unassign()
      schedule({ type = "error", count = -1 })
      control("POST", "/_sim/reset")
      assert.same({}, state())
      assert.same({}, log())
      assert.same({}, select(2, control("GET", "/_sim/faults")).faults)
    end)

    it("rejects unknown fault types and reports info", function()
      local code, body = schedule({ type = "nope" })
      assert.equal(400, code)
      assert.is_false(body.ok)
      local _, info = control("GET", "/_sim/info")
      assert.equal(HTTP_PORT, info.http_port)
      assert.is_number(info.pid)
      assert.truthy(info.ca:match("/ca%.pem$"))
    end)
  end)

  describe("unassign", function()
    it("removes bindings and returns one job per pair", function()
      local res = unassign({ pairs = { { "u2", "i2" }, { "u1", "i1" } }, path = "/gw/prefix" .. API })
      assert.equal(200, res.status)
      assert.equal("application/json", res.headers["content-type"])
      local b = json(res)
      assert.equal("0", b.error_code)
      assert.equal("ok", b.error_msg)
      assert.truthy(b.data.task_id:match("^RM_" .. string.rep("%x", 32) .. "$"))
      assert.equal(2, #b.data.cmd_jobs)
      assert.equal("i2", b.data.cmd_jobs[1].instance_id)
      assert.equal("i1", b.data.cmd_jobs[2].instance_id)
      assert.truthy(b.data.cmd_jobs[1].job_id:match("^" .. string.rep("%x", 32) .. "$"))
      assert.are_not.equal(b.data.cmd_jobs[1].job_id, b.data.cmd_jobs[2].job_id)
      assert.same({ i3 = "u3" }, bound("t1"))
      -- not idempotent: repeating the call reports the missing binding
      local again = unassign({ pairs = { { "u1", "i1" } } })
      assert.equal(400, again.status)
      assert.equal("KOOPHONE.API.2210", json(again).error_code)
    end)

    it("answers 401 APIGW.0301 for a missing or unknown token", function()
      for _, tok in ipairs({ false, "wrong" }) do
        local res = unassign({ token = tok, rid = "rid-401" })
        assert.equal(401, res.status)
        assert.same({ error_code = "APIGW.0301", request_id = "rid-401",
          error_msg = "Incorrect IAM authentication information: token missing or invalid" }, json(res))
      end
      assert.same({ i1 = "u1", i2 = "u2", i3 = "u3" }, bound("t1"))
    end)

    it("answers 200 KOOPHONE.API.0000 for a tenant that does not exist", function()
      local res = unassign({ token = T2 })
      assert.equal(200, res.status)
      assert.equal("KOOPHONE.API.0000", json(res).error_code)
    end)

    it("answers 200 KOOPHONE.API.0002 without x-request-id", function()
      local res = unassign({ rid = false })
      assert.equal(200, res.status)
      assert.same({ error_code = "KOOPHONE.API.0002", error_msg = "missing header x-request-id" }, json(res))
      assert.equal("u1", bound("t1").i1)
    end)

    it("answers 404 APIGW.0101 for other methods", function()
      local res = unassign({ method = "PUT" })
      assert.equal(404, res.status)
      assert.equal("APIGW.0101", json(res).error_code)
    end)

    it("answers 400 KOOPHONE.API.1000 for malformed bodies", function()
      local bad = {
        "not json", "{}", "[]", '{"user_instances":[]}', '{"user_instances":{"a":1}}',
        '{"user_instances":[{"user_id":1123422,"instance_id":"i1"}]}',     -- numeric user_id
        '{"user_instances":[{"user_id":"u1"}]}',
        '{"user_instances":[{"user_id":"","instance_id":"i1"}]}',
        pairs_body({ { string.rep("u", 33), "i1" } }),
      }
      local over = {}
      for i = 1, 1001 do over[i] = { "u1", "i1" } end
      bad[#bad + 1] = pairs_body(over)
      for _, body in ipairs(bad) do
        local res = unassign({ body = body })
        assert.equal(400, res.status, body:sub(1, 60))
        assert.same({ error_code = "KOOPHONE.API.1000", error_msg = "The request parameter is incorrect." }, json(res))
      end
      assert.same({ i1 = "u1", i2 = "u2", i3 = "u3" }, bound("t1"))
    end)

    it("accepts more than 100 pairs and 32-character ids", function()
      local many = {}
      for i = 1, 150 do many[i] = { "u1", "i1" } end
      local res = unassign({ pairs = many })
      assert.equal(200, res.status)
      assert.equal(150, #json(res).data.cmd_jobs)
      local res2 = unassign({ pairs = { { string.rep("u", 32), "i2" } } })
      assert.equal("KOOPHONE.API.2210", json(res2).error_code) -- valid shape, wrong user
    end)

    it("answers 400 KOOPHONE.API.1001 for a foreign instance and changes nothing", function()
      local res = unassign({ pairs = { { "u1", "i1" }, { "ux", "x1" } } })
      assert.equal(400, res.status)
      assert.same({ error_code = "KOOPHONE.API.1001", error_msg = "Insufficient instance permissions." }, json(res))
      assert.same({ i1 = "u1", i2 = "u2", i3 = "u3" }, bound("t1"))
      assert.same({ x1 = "ux" }, bound("t3"))
    end)

    it("fails the whole request with 2210 when one pair is not bound", function()
      local res = unassign({ pairs = { { "u1", "i1" }, { "u9", "i2" }, { "u4", "i4" } } })
      assert.equal(400, res.status)
      assert.equal("KOOPHONE.API.2210", json(res).error_code)
      assert.same({ i1 = "u1", i2 = "u2", i3 = "u3" }, bound("t1"))
    end)
  end)

  describe("faults", function()
    it("delay sleeps, then processes normally", function()
      schedule({ type = "delay", seconds = 0.3 })
      local t0 = socket.gettime()
      local res = unassign()
      assert.is_true(socket.gettime() - t0 >= 0.29)
      assert.equal("0", json(res).error_code)
      assert.is_nil(bound("t1").i1)
    end)

    it("delay_body sends half the body, waits, then the rest", function()
      schedule({ type = "delay_body", seconds = 0.3 })
      local t0 = socket.gettime()
      local res = unassign()
      assert.is_true(socket.gettime() - t0 >= 0.29)
      assert.equal("0", json(res).error_code)
    end)

    it("reset closes before reading the body; drop reads it; neither applies", function()
      schedule({ type = "reset" }, { type = "drop", at = 2 })
      for _ = 1, 2 do
        local res, err = unassign()
        assert.is_nil(res)
        assert.equal("closed", err)
      end
      assert.equal("u1", bound("t1").i1)
      local l = log()
      assert.same({ "reset", "drop" }, { l[1].fault, l[2].fault })
      assert.same({ 444, 444 }, { l[1].status, l[2].status })
      assert.equal(cjson.null, l[1].pairs)
      assert.equal(1, l[2].pairs)
    end)

    it("drop_after_apply removes the binding and never answers", function()
      schedule({ type = "drop_after_apply" })
      local res, err = unassign({ pairs = { { "u2", "i2" } } })
      assert.is_nil(res)
      assert.equal("closed", err)
      assert.is_nil(bound("t1").i2)
      assert.is_true(log()[1].applied)
      -- the retry a client might make now fails with 2210
      assert.equal("KOOPHONE.API.2210", json(unassign({ pairs = { { "u2", "i2" } } })).error_code)
    end)

    it("error_after_apply applies then answers 500; error does not apply", function()
      schedule({ type = "error_after_apply" }, { type = "error", at = 2 })
      local res = unassign({ pairs = { { "u1", "i1" } } })
      assert.equal(500, res.status)
      assert.same({ error_code = "KOOPHONE.API.9999", error_msg = "Internal service error" }, json(res))
      assert.is_nil(bound("t1").i1)
      res = unassign({ pairs = { { "u2", "i2" } } })
      assert.equal(500, res.status)
      assert.equal("u2", bound("t1").i2)
    end)

    it("throttle answers 429 APIGW.0308 with Retry-After", function()
      schedule({ type = "throttle", retry_after = "3" })
      local res = unassign({ rid = "rid-429" })
      assert.equal(429, res.status)
      assert.equal("3", res.headers["retry-after"])
      assert.same({ error_code = "APIGW.0308", error_msg = "The throttling threshold has been reached",
                    request_id = "rid-429" }, json(res))
      assert.equal("u1", bound("t1").i1)
    end)

    it("unavailable, bad_gateway, respond and api_error answer as configured", function()
      schedule({ type = "unavailable" }, { type = "bad_gateway", status = 504, at = 2 },
        { type = "respond", at = 3, status = 503, body = "not json", headers = { ["Content-Type"] = "text/plain", ["X-Sim"] = "1" } },
        { type = "api_error", at = 4, status = 200, code = "KOOPHONE.API.1012", msg = "not yours" })
      local res = unassign()
      assert.equal(503, res.status)
      assert.equal("APIGW.0613", json(res).error_code)
      res = unassign()
      assert.equal(504, res.status)
      assert.equal("text/html", res.headers["content-type"])
      assert.truthy(res.body:find("<h1>504", 1, true))
      res = unassign()
      assert.same({ 503, "not json", "text/plain", "1" },
        { res.status, res.body, res.headers["content-type"], res.headers["x-sim"] })
      res = unassign()
      assert.equal(200, res.status)
      assert.same({ error_code = "KOOPHONE.API.1012", error_msg = "not yours" }, json(res))
      assert.equal("u1", bound("t1").i1)
    end)

    it("truncate applies, promises more bytes than it sends, and aborts", function()
      schedule({ type = "truncate" })
      local res, err, partial = unassign()
      assert.is_nil(res)
      assert.equal("closed", err)
      assert.truthy(partial:match('^{"'))
      assert.is_nil(bound("t1").i1)
    end)

    it("big_body sends exactly that many bytes, with or without Content-Length", function()
      schedule({ type = "big_body", bytes = 3000000 }, { type = "big_body", bytes = 200000, chunked = true, at = 2 })
      local res = unassign()
      assert.equal("3000000", res.headers["content-length"])
      assert.equal(3000000, #res.body)
      assert.equal("0", json(res).error_code)
      res = unassign()
      assert.is_nil(res.headers["content-length"])
      assert.equal("chunked", res.headers["transfer-encoding"])
      assert.equal(200000, #res.body)
      assert.equal("u1", bound("t1").i1)
    end)

    it("trickle sends the body slowly", function()
      schedule({ type = "trickle", bytes_per_second = 100, total_bytes = 60 })
      local t0 = socket.gettime()
      local res = unassign()
      assert.is_true(socket.gettime() - t0 >= 0.4)
      assert.equal(60, #res.body)
      assert.equal("0", json(res).error_code)
    end)

    it("redirect points at the target server, which records whether a token came along", function()
      schedule({ type = "redirect" })
      local res = unassign()
      assert.equal(302, res.status)
      local target = tonumber(os.getenv("KOOPHONE_SIM_TARGET_PORT") or "18081")
      assert.equal("http://127.0.0.1:" .. target .. API, res.headers["location"])
      -- a careless client follows it with the token, a careful one without
      http.request { url = res.headers["location"], headers = { ["X-Auth-Token"] = T1 } }
      http.request { url = res.headers["location"] .. "?second" }
      local _, tl = control("GET", "/_sim/target_log")
      assert.equal(2, #tl.requests)
      assert.is_true(tl.requests[1].has_token)
      assert.is_false(tl.requests[2].has_token)
      assert.equal(API .. "?second", tl.requests[2].path)
      local raw = {}
      http.request { url = BASE .. "/_sim/target_log", sink = ltn12.sink.table(raw) }
      assert.is_nil(table.concat(raw):find("t1-token", 1, true))
    end)

    it("at/count schedule faults relative to the next request; count -1 repeats until cleared", function()
      unassign({ pairs = { { "u3", "i3" } } }) -- request 1, before scheduling
      local _, r = schedule({ type = "error", at = 2, count = 2 })
      assert.same({ 3, 4 }, { r.scheduled[1].first, r.scheduled[1].last })
      local statuses = {}
      for i = 1, 4 do statuses[i] = unassign({ pairs = { { "u9", "i1" } } }).status end
      assert.same({ 400, 500, 500, 400 }, statuses)
      schedule({ type = "api_error", code = "KOOPHONE.API.0005", msg = "x", count = -1 })
      for _ = 1, 3 do assert.equal("KOOPHONE.API.0005", json(unassign()).error_code) end
      control("DELETE", "/_sim/faults")
      assert.equal("0", json(unassign()).error_code)
      local faults = {}
      for i, e in ipairs(log()) do faults[i] = e.fault end
      assert.same({ cjson.null, cjson.null, "error", "error", cjson.null,
                    "api_error", "api_error", "api_error", cjson.null }, faults)
    end)
  end)

  describe("request log", function()
    it("records request ids, pairs and keep-alive connections, never the token", function()
      local _, _, _, sock = unassign({ rid = "first", keep = true, pairs = { { "u1", "i1" } } })
      unassign({ rid = "second", sock = sock, pairs = { { "u9", "i2" } } })
      sock:close()
      unassign({ rid = false, token = false })
      local l = log()
      assert.equal(3, #l)
      assert.same({ "first", "second", cjson.null }, { l[1].request_id, l[2].request_id, l[3].request_id })
      assert.equal(l[1].connection, l[2].connection)
      assert.are_not.equal(l[1].connection, l[3].connection)
      assert.same({ 1, 2 }, { l[1].connection_requests, l[2].connection_requests })
      assert.same({ 200, 400, 401 }, { l[1].status, l[2].status, l[3].status })
      assert.same({ true, false }, { l[1].applied, l[2].applied })
      assert.same({ { "u9", "i2" } }, l[2].pair_list)
      assert.equal("KOOPHONE.API.2210", l[2].error_code)
      assert.same({ true, false }, { l[1].has_token, l[3].has_token })
      assert.same({ 1, 2, 3 }, { l[1].seq, l[2].seq, l[3].seq })
      assert.equal("http", l[1].scheme)
      local raw = {}
      http.request { url = BASE .. "/_sim/log", sink = ltn12.sink.table(raw) }
      assert.is_nil(table.concat(raw):find("abcdefghij", 1, true))
      assert.equal(1, #select(2, control("GET", "/_sim/log?since=2")).requests)
    end)
  end)

  describe("TLS", function()
    local info
    before_each(function() info = select(2, control("GET", "/_sim/info")) end)

    it("serves HTTPS for localhost with ca.pem", function()
      local code, rc = curl("--cacert " .. info.ca .. " -X POST -H 'x-request-id: tls-1' -H 'X-Auth-Token: " .. T3 ..
        "' -d '{\"user_instances\":[{\"user_id\":\"ux\",\"instance_id\":\"x1\"}]}' " .. info.https_url .. API)
      assert.same({ 200, 0 }, { code, rc })
      local l = log()
      assert.equal("https", l[1].scheme)
      assert.equal("tls-1", l[1].request_id)
      assert.is_nil(bound("t3").x1)
    end)

    it("fails verification with the unrelated CA", function()
      local _, rc = curl("--cacert " .. info.other_ca .. " " .. info.https_url .. "/_sim/info")
      assert.equal(60, rc)
    end)

    it("fails verification on the wrong-name port", function()
      local _, rc = curl("--cacert " .. info.ca .. " " .. info.wrongname_url .. "/_sim/info")
      assert.equal(60, rc)
      local port = string.format("%d", info.wrongname_port) -- cjson decodes numbers as floats
      local code, rc2 = curl("--cacert " .. info.ca .. " --resolve wrong.example:" .. port ..
        ":127.0.0.1 https://wrong.example:" .. port .. "/_sim/info")
      assert.same({ 200, 0 }, { code, rc2 })
    end)
  end)
end)
