-- examples/openresty in Debian's nginx + lua-nginx-module (LuaJIT), pointed at the simulator.
-- Proves the admin endpoint works end to end and that a call waiting on a slow KooPhone answer
-- (koophone.ngx in a thread pool) leaves the single worker free to answer other requests.
local sim = require "helpers.sim"
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson.safe"
local shell = require "helpers.shell"

local ROOT = shell.read("pwd")
local PORT = tonumber(os.getenv("KOOPHONE_OPENRESTY_PORT") or "") or sim.http_port + 20
local DIR = os.getenv("KOOPHONE_OPENRESTY_DIR") or (sim.run_dir:sub(1, 1) == "/" and sim.run_dir
  or ROOT .. "/" .. sim.run_dir) .. "/openresty"
local NGINX = os.getenv("KOOPHONE_SIM_NGINX") or "/usr/sbin/nginx"
local BASE = "http://127.0.0.1:" .. PORT

local function render_conf()
  local src = assert(io.open(ROOT .. "/examples/openresty/nginx.conf")):read("*a")
  local values = {
    PREFIX = DIR, PORT = tostring(PORT),
    LUA_PATH = ROOT .. "/lua/?.lua;" .. ROOT .. "/examples/openresty/?.lua",
    LUA_CPATH = ROOT .. "/build/luajit/?.so",
    USER = shell.read("id -u") == "0" and "user root;" or "",
  }
  local conf = src:gsub("@([%u_]+)@", function(name) return assert(values[name], name) end)
  local f = assert(io.open(DIR .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
end

local function start_nginx()
  -- nginx runs LuaJIT: it needs the LuaJIT build whatever runtime runs these specs
  shell.make("build LUA=luajit")
  shell.read("mkdir -p " .. shell.quote(DIR .. "/tmp"))
  render_conf()
  shell.read(("env KOOPHONE_TOKEN=%s KOOPHONE_ENDPOINT=%s KOOPHONE_CAFILE=%s %s -p %s -c %s -e %s")
    :format(shell.quote(sim.token), shell.quote(sim.https_url), shell.quote(sim.ca), shell.quote(NGINX),
            shell.quote(DIR .. "/"), shell.quote(DIR .. "/nginx.conf"), shell.quote(DIR .. "/error.log")))
  for _ = 1, 100 do
    if http.request(BASE .. "/health") then return end
    socket.sleep(0.05)
  end
  error("the example nginx does not answer on port " .. PORT)
end

local function stop_nginx()
  shell.run(("p=$(cat %s 2>/dev/null) && kill -QUIT $p && "
    .. "for i in $(seq 50); do kill -0 $p 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL $p")
    :format(shell.quote(DIR .. "/nginx.pid")))
end

-- POST to the admin endpoint; returns the status and the decoded body.
local function admin(body)
  local src = type(body) == "string" and body or assert(cjson.encode(body))
  local out = {}
  local _, status = http.request {
    url = BASE .. "/admin/unassign", method = "POST", source = ltn12.source.string(src),
    headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#src) },
    sink = ltn12.sink.table(out),
  }
  return status, cjson.decode(table.concat(out)), table.concat(out)
end

-- The same request on a socket of its own, answer read later (HTTP/1.0: no chunking).
local function admin_start(body)
  local src = assert(cjson.encode(body))
  local s = assert(socket.tcp())
  s:settimeout(60)
  assert(s:connect("127.0.0.1", PORT))
  assert(s:send(("POST /admin/unassign HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json"
    .. "\r\nContent-Length: %d\r\n\r\n%s"):format(#src, src)))
  return s
end

local function admin_finish(s)
  local raw = assert(s:receive("*a"))
  s:close()
  local status = tonumber(raw:match("^HTTP/1%.%d (%d+)"))
  return status, cjson.decode(raw:match("\r\n\r\n(.*)$") or "")
end

local function in_flight(seq)
  for _, e in ipairs(sim.log()) do
    if e.seq == seq then return e.status == 0 end
  end
  return false
end

describe("examples/openresty with koophone.ngx", function()
  setup(start_nginx)
  teardown(stop_nginx)

  it("unassigns the pairs of the JSON body and answers with the jobs", function()
    local list = sim.make_pairs(3, "or")
    sim.reset(list)
    local status, body = admin { pairs = list, request_id = "admin-1" }
    assert.equals(200, status)
    assert.equals("unassigned", body.outcome)
    assert.equals("admin-1", body.request_id)
    assert.matches("^RM_", body.task_id)
    assert.equals(3, #body.jobs)
    for i, job in ipairs(body.jobs) do
      assert.equals(list[i].instance_id, job.instance_id)
      assert.matches("^%x+$", job.job_id)
    end
    assert.same({}, sim.bindings())
    local log = sim.log()
    assert.equals(1, #log)
    assert.equals("https", log[1].scheme)
    assert.equals("admin-1", log[1].request_id)
  end)

  it("reuses the thread side's client and its connection for the next call", function()
    local list = sim.make_pairs(4, "re")
    sim.reset(list)
    for i = 1, 4 do assert.equals(200, (admin { pairs = { list[i] } })) end
    local connections = {}
    for _, e in ipairs(sim.log()) do connections[e.connection] = true end
    local n = 0
    for _ in pairs(connections) do n = n + 1 end
    assert.is_true(n < 4, "every call opened a new connection")
  end)

  it("answers an API refusal with the error, its request id, and no token", function()
    local list = sim.make_pairs(1, "nb")
    sim.reset(list, { unbound = true })
    local status, body, raw = admin { pairs = list }
    assert.equals(409, status)
    assert.equals("api", body.error.kind)
    assert.equals("KOOPHONE.API.2210", body.error.code)
    assert.is_true(body.error.sent)
    assert.equals(sim.log()[1].request_id, body.error.request_id)
    -- the error came back through the thread boundary with its koophone.Error metatable
    assert.matches("^koophone: KOOPHONE%.API%.2210", body.error.text)
    assert.is_nil(raw:find(sim.token:sub(1, 40), 1, true))
  end)

  it("answers a failure without a KooPhone answer with 502 and the error", function()
    local list = sim.make_pairs(1, "gw")
    sim.reset(list)
    sim.faults { type = "bad_gateway", status = 504 }
    local status, body = admin { pairs = list }
    assert.equals(502, status)
    assert.equals("http", body.error.kind)
    assert.equals(504, body.error.status)
    assert.is_true(body.error.sent)
    assert.equals(list[1].user_id, sim.bindings()[list[1].instance_id])
  end)

  it("retries a throttled call with the same request id, sleeping with ngx.sleep", function()
    local list = sim.make_pairs(1, "thr")
    sim.reset(list)
    sim.faults { type = "throttle", retry_after = "0" }
    local status, body = admin { pairs = list }
    assert.equals(200, status)
    assert.equals(2, body.attempts)
    local log = sim.log()
    assert.equals(2, #log)
    assert.equals(429, log[1].status)
    assert.equals(log[1].request_id, log[2].request_id)
    assert.same({}, sim.bindings())
  end)

  it("refuses a bad body before anything is sent", function()
    sim.reset(sim.make_pairs(1, "bad"))
    local status, body = admin { pairs = { { user_id = "u", instance_id = ("x"):rep(33) } } }
    assert.equals(400, status)
    assert.matches("pairs%[1%]", body.error.message)
    assert.equals(400, (admin("not json")))
    assert.equals(0, #sim.log())
  end)

  it("keeps the single worker serving while an unassign waits on a slow answer", function()
    local slow, fast = sim.make_pairs(1, "slow")[1], sim.make_pairs(1, "fast")[1]
    sim.reset({ slow, fast })
    sim.faults { type = "delay", seconds = 3 } -- the next request waits 3 s, then is processed
    local pending = admin_start { pairs = { slow } }
    for _ = 1, 200 do
      if in_flight(1) then break end
      socket.sleep(0.02)
    end
    assert.is_true(in_flight(1), "the slow request never reached the simulator")

    -- the worker answers while the slow call is in its thread: by itself and with another call
    assert.equals(200, select(2, http.request(BASE .. "/health")))
    local status, body = admin { pairs = { fast } }
    assert.equals(200, status)
    assert.equals(fast.instance_id, body.jobs[1].instance_id)

    -- all of that happened before the slow request was even processed
    assert.is_true(in_flight(1))
    assert.equals(slow.user_id, sim.bindings()[slow.instance_id])
    assert.is_nil(sim.bindings()[fast.instance_id])
    assert.equals(0, #socket.select({ pending }, nil, 0))

    status, body = admin_finish(pending)
    assert.equals(200, status)
    assert.equals(slow.instance_id, body.jobs[1].instance_id)
    assert.same({}, sim.bindings())
  end)
end)

-- The parts of koophone.ngx that run without nginx: option checks, the thread-side function
-- (called here directly, in this VM), close.
describe("koophone.ngx outside nginx", function()
  local kngx = require "koophone.ngx"

  it("checks the options when the client is made", function()
    assert.has_error(function() kngx.new { retries = 3 } end, "koophone.new: unknown option 'retries'")
    assert.has_error(function() kngx.new { thread_pool = 1 } end,
      "koophone.ngx.new: option 'thread_pool': expected a thread_pool name")
    assert.matches("thread_pool pool2", tostring(kngx.new { thread_pool = "pool2" }))
  end)

  it("raises on a closed client before reaching nginx", function()
    local c = kngx.new(sim.client_opts("http"))
    c:close()
    assert.has_error(function() c:unassign(sim.token, sim.make_pairs(1)) end, "koophone: client is closed")
    assert.matches("closed", tostring(c))
  end)

  it("runs the call on the thread side and keeps one client per option set", function()
    local list = sim.make_pairs(2, "th")
    sim.reset(list)
    local opts = sim.client_opts("http")
    local done, res, err = kngx.thread_unassign("k1", opts, sim.token, { list[1] })
    assert.is_true(done)
    assert.is_nil(err)
    assert.equals("unassigned", res.outcome)
    done, res = kngx.thread_unassign("k1", opts, sim.token, { list[2] }, { request_id = "second" })
    assert.is_true(done)
    assert.equals("second", res.request_id)
    local log = sim.log()
    assert.equals(log[1].connection, log[2].connection) -- the same client, its kept-alive connection
    done, res, err = kngx.thread_unassign("k1", opts, sim.token, { list[1] })
    assert.is_true(done)
    assert.is_nil(res)
    assert.equals("KOOPHONE.API.2210", err.code)
    -- raised errors come back as false, message: the request side raises them again
    done, res = kngx.thread_unassign("k1", opts, sim.token, "not a list")
    assert.is_false(done)
    assert.matches("bad argument #2", res, 1, true)
    done, res = kngx.thread_unassign("k2", { endpoint = "ftp://x" }, sim.token, { list[1] })
    assert.is_false(done)
    assert.matches("option 'endpoint'", res, 1, true)
  end)
end)
