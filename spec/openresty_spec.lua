-- examples/openresty in Debian's nginx + lua-nginx-module (LuaJIT), pointed at the simulator.
-- Proves the admin endpoint works end to end and that a call waiting on a slow KooPhone answer
-- (koophone.ngx in a thread pool) leaves the single worker free to answer other requests.
local sim = require "helpers.sim"
local openresty = require "helpers.openresty"
local socket = require "socket"
local http = require "socket.http"

-- GET /task?id=RM_…: get_task, then wait_jobs, through a kngx.client; GET /list?id=…:
-- list_instances through one (the spec's own locations)
local TASK = [[
        location = /task {
            content_by_lua_block {
                local kngx, cjson = require "koophone.ngx", require "cjson.safe"
                local calls = {}
                local c = kngx.client { endpoint = os.getenv("KOOPHONE_ENDPOINT"),
                                        cafile = os.getenv("KOOPHONE_CAFILE"),
                                        on_event = function(ev) calls[#calls + 1] = ev.call end,
                                        retry = { base_delay = 0.001 } }
                local token, id = os.getenv("KOOPHONE_TOKEN"), ngx.var.arg_id
                local task, err = c:get_task(token, id)
                local report = task and c:wait_jobs(token, { id }, { timeout = 5, interval = 0.01 })
                ngx.say(cjson.encode { jobs = task and task.jobs, calls = calls,
                  err = err and { code = err.code, status = err.status, attempts = err.attempts },
                  succeeded = report and report.succeeded })
            }
        }
        location = /list {
            content_by_lua_block {
                local kngx, cjson = require "koophone.ngx", require "cjson.safe"
                local calls = {}
                local c = kngx.client { endpoint = os.getenv("KOOPHONE_ENDPOINT"),
                                        cafile = os.getenv("KOOPHONE_CAFILE"),
                                        on_event = function(ev) calls[#calls + 1] = ev.call end,
                                        retry = { base_delay = 0.001 } }
                local res, err = c:list_instances(os.getenv("KOOPHONE_TOKEN"),
                                                  { instance_id = ngx.var.arg_id, page_size = 10 })
                ngx.say(cjson.encode { res = res, calls = calls, err = err and err.code })
            }
        }
        location = /health {]]

local example = openresty.new("openresty",
  tonumber(os.getenv("KOOPHONE_OPENRESTY_PORT") or "") or sim.http_port + 20, function(conf)
    local edited, n = conf:gsub("        location = /health {", function() return TASK end)
    assert(n == 1, "the example's nginx.conf changed: update this spec")
    return edited
  end)
local BASE = example.base
local function admin(body) return example:admin(body) end
local function admin_start(body) return example:admin_start(body) end
local admin_finish, in_flight = openresty.admin_finish, openresty.in_flight

describe("examples/openresty with koophone.ngx", function()
  setup(function() example:start() end)
  teardown(function() example:stop() end)

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

  it("queries a task and waits for its jobs through kngx.client, in the thread pool", function()
    local list = sim.make_pairs(2, "tk")
    sim.reset(list)
    local _, res = admin { pairs = list }
    local function task(id) return require("cjson").decode((assert(http.request(BASE .. "/task?id=" .. id)))) end
    local body = task(res.task_id)
    assert.equals(2, #body.jobs)
    assert.equals(res.jobs[1].job_id, body.jobs[1].job_id)
    assert.equals("get_task", body.calls[1])
    assert.equals(2, body.succeeded, "wait_jobs did not see both jobs succeed")
    local missing = task("RM_missing")
    assert.equals("KOOPHONE.API.1323", missing.err.code)
    assert.equals(1, missing.err.attempts) -- a 4xx is final
  end)

  it("lists an instance through kngx.client, in the thread pool, a failed read retried", function()
    local list = sim.make_pairs(2, "ls")
    sim.reset(list)
    sim.faults({ type = "error", api = "list" })
    local body = require("cjson").decode((assert(http.request(BASE .. "/list?id=ls0002"))))
    assert.same({ "list_instances", "list_instances" }, body.calls)
    assert.same({ 1, 1, "ls0002", 1, "u-ls-2" }, { body.res.total_count, #body.res.instances,
      body.res.instances[1].instance_id, body.res.instances[1].assign_status, body.res.instances[1].assign_user })
    local log = sim.control("GET", "/_sim/list_log").requests
    assert.same({ 2, log[1].request_id }, { #log, log[2].request_id })
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

-- The rule next to the example's thread_pool line: lua-nginx-module up to 0.10.31 aborts the
-- worker when a call finds the pool's max_queue full; neither the VM pool nor koophone.ngx's
-- max_in_flight may let more calls be in flight than max_queue.
describe("examples/openresty/nginx.conf", function()
  -- directive name -> list of argument strings, comments dropped
  local function directives(conf)
    local found = {}
    for line in conf:gmatch("[^\n]+") do
      local name, args = line:gsub("#.*", ""):match("^%s*([%w_]+)%s+([^;]*);")
      if name then
        found[name] = found[name] or {}
        table.insert(found[name], args)
      end
    end
    return found
  end

  it("gives the thread pool a max_queue no smaller than the VM pool and max_in_flight", function()
    local d = directives(openresty.example_conf())
    local pools = {}
    for _, args in ipairs(d.thread_pool) do
      local name = args:match("^(%S+)")
      -- nginx's defaults: threads=32 max_queue=65536
      pools[name] = { threads = tonumber(args:match("threads=(%d+)") or 32),
                      max_queue = tonumber(args:match("max_queue=(%d+)") or 65536) }
    end
    -- lua-nginx-module's default: 10 VMs
    local vms = tonumber(d.lua_worker_thread_vm_pool_size and d.lua_worker_thread_vm_pool_size[1] or 10)
    package.path = openresty.root .. "/examples/openresty/?.lua;" .. package.path
    local opts = require("koophone_admin").options()
    local pool = assert(pools[opts.thread_pool], "no thread_pool " .. opts.thread_pool)
    assert.is_true(vms <= pool.max_queue, ("VM pool %d > max_queue %d"):format(vms, pool.max_queue))
    assert.is_true(opts.max_in_flight <= pool.max_queue,
                   ("max_in_flight %d > max_queue %d"):format(opts.max_in_flight, pool.max_queue))
    -- the handler's client takes those options
    assert.matches("max_in_flight " .. opts.max_in_flight, tostring(require("koophone.ngx").client(opts)), 1, true)
  end)
end)

-- The parts of koophone.ngx that run without nginx: option checks, the thread-side function
-- (called here directly, in this VM), close.
describe("koophone.ngx outside nginx", function()
  local kngx = require "koophone.ngx"

  it("checks the options when the client is made", function()
    assert.has_error(function() kngx.new { retries = 3 } end, "koophone.ngx.new: bad argument #1 (opts): unknown option 'retries'")
    assert.has_error(function() kngx.new { thread_pool = 1 } end,
      "koophone.ngx.new: bad argument #1 (opts.thread_pool): expected a thread_pool name, got 1")
    assert.has_error(function() kngx.new { max_in_flight = 0 } end,
      "koophone.ngx.new: bad argument #1 (opts.max_in_flight): expected an integer >= 1, got 0")
    assert.has_error(function() kngx.new { queue_timeout = -1 } end,
      "koophone.ngx.new: bad argument #1 (opts.queue_timeout): expected a number of seconds >= 0, "
      .. "got -1")
    assert.matches("max_in_flight 10)", tostring(kngx.new {}), 1, true)
    assert.matches("thread_pool pool2", tostring(kngx.new { thread_pool = "pool2" }))
  end)

  it("gets koophone.client's retry rules, with request ids made in the request's VM", function()
    local c = kngx.client(sim.client_opts("http"))
    assert.equals(getmetatable(require("koophone").client(sim.client_opts("http"))), getmetatable(c))
    local a, b = c.core:request_id(), c.core:request_id()
    assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+$", a)
    assert.are_not.equal(a, b)
    c:close()
  end)

  it("refuses bulk with an error that names the alternatives, before anything is opened", function()
    local text = " is not available in nginx (it would block the worker); run bulk jobs with "
      .. "bin/koophone or koophone.client outside nginx, or call client:unassign per batch"
    local list, journal = sim.make_pairs(2, "blk"), os.tmpname()
    os.remove(journal)
    local c = kngx.client(sim.client_opts("http"))
    sim.reset(list)
    assert.has_error(function() c:unassign_all(sim.token, list, { journal = journal }) end,
                     "koophone.ngx: unassign_all" .. text)
    assert.has_error(function() c:unassign_many(sim.token, { list }) end, "koophone.ngx: unassign_many" .. text)
    assert.has_error(function() c:start_many(sim.token, { list }) end, "koophone.ngx: start_many" .. text)
    assert.has_error(function() kngx.new(sim.client_opts("http")):start_many(sim.token, { list }) end,
                     "koophone.ngx: start_many" .. text)
    assert.has_error(function() kngx.new(sim.client_opts("http")):unassign_many(sim.token, { list }) end,
                     "koophone.ngx: unassign_many" .. text)
    assert.is_nil(io.open(journal))
    assert.equals(0, #sim.log())
  end)

  it("raises on a closed client before reaching nginx", function()
    local c = kngx.new(sim.client_opts("http"))
    c:close()
    assert.has_error(function() c:unassign(sim.token, sim.make_pairs(1)) end, "koophone: client is closed")
    assert.matches("closed", tostring(c))
  end)

  it("runs the call on the thread side and keeps one client per option set", function()
    local thread = require "koophone.ngx.thread"
    local list = sim.make_pairs(2, "th")
    sim.reset(list)
    local opts = sim.client_opts("http")
    local done, res, err = thread.unassign("k1", opts, sim.token, { list[1] })
    assert.is_true(done)
    assert.is_nil(err)
    assert.equals("unassigned", res.outcome)
    done, res = thread.unassign("k1", opts, sim.token, { list[2] }, { request_id = "second" })
    assert.is_true(done)
    assert.equals("second", res.request_id)
    local log = sim.log()
    assert.equals(log[1].connection, log[2].connection) -- the same client, its kept-alive connection
    done, res, err = thread.unassign("k1", opts, sim.token, { list[1] })
    assert.is_true(done)
    assert.is_nil(res)
    assert.equals("KOOPHONE.API.2210", err.code)
    -- raised errors come back as false, message: the request side raises them again
    done, res = thread.unassign("k1", opts, sim.token, "not a list")
    assert.is_false(done)
    assert.matches("bad argument #2", res, 1, true)
    done, res = thread.unassign("k2", { endpoint = "ftp://x" }, sim.token, { list[1] })
    assert.is_false(done)
    assert.matches("bad argument #1 (opts.endpoint)", res, 1, true)
  end)
end)
