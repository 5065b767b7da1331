-- koophone.iam_token: the IAM token provider against the simulator's IAM (sim/sim_iam.lua):
-- one fetch for many calls, refresh before expiry, one refresh-and-resend on a refused token,
-- IAM failures as kind "auth" with nothing sent, and no password or token in any output.
local koophone = require "koophone"
local sim = require "helpers.sim"

local creds = require "helpers.creds"
local PROJECT = creds.PROJECT
local PASSWORD = "pw-" .. string.rep("Corr3ctH0rse", 4)

local function seed(list) creds.seed(list, creds.iam_user(PASSWORD)) end
local function provider(extra) return creds.provider(PASSWORD, extra) end

local function iam_log() return sim.control("GET", "/_sim/iam_log").requests end

local assert_no_slice = creds.assert_no_slice

-- err (its fields and tostring) and tostring(tp) carry neither the password nor the token
local function assert_clean(tp, err, token)
  local texts = { tostring(tp) }
  if err then
    texts[#texts + 1] = tostring(err)
    for _, s in ipairs(sim.strings(err)) do texts[#texts + 1] = s end
  end
  for _, text in ipairs(texts) do
    assert_no_slice(PASSWORD, text)
    if token then assert_no_slice(token, text) end
  end
end

describe("koophone.iam_token", function()
  local client
  before_each(function() client = koophone.new(sim.client_opts("http")) end)
  after_each(function() client:close() end)

  it("fetches one token for many calls through every entry point", function()
    local list = sim.make_pairs(8, "one")
    seed(list)
    local tp = provider()
    koophone.configure(sim.client_opts("http"))
    local before = sim.control("GET", "/_sim/clock").now -- the token is fetched by the next call
    assert.equals("unassigned", assert(koophone.unassign(tp, { list[1] })).outcome)
    local after = sim.control("GET", "/_sim/clock").now
    assert.equals("unassigned", assert(client:unassign(tp, { list[2] })).outcome)
    local pc = koophone.client(sim.client_opts("http"))
    assert.equals("unassigned", assert(pc:unassign(tp, { list[3] })).outcome)
    local results, errors = client:unassign_many(tp, { { list[4] }, { list[5] } })
    assert.is_false(errors[1])
    assert.equals("unassigned", results[2].outcome)
    local report = assert(pc:unassign_all(tp, { list[6], list[7], list[8] }, { batch_size = 1 }))
    assert.equals(3, report.counts.unassigned)
    assert.equals(1, #iam_log())
    for _, e in ipairs(sim.log()) do assert.equals("iam", e.auth) end
    assert.same({}, sim.bindings())
    local token, expires_at = tp:token()
    assert.is_true(math.floor(before) + 86400 <= expires_at and expires_at <= math.ceil(after) + 86400,
                   tostring(expires_at))
    assert_clean(tp, nil, token)
    pc:close()
    koophone.configure(sim.client_opts("http"))
  end)

  it("fetches a new token once the cached one is within refresh_before of expiry", function()
    seed({})
    sim.control("POST", "/_sim/iam", { lifetime = 2500 })
    local tp = provider { refresh_before = 2400 }
    local first = tp:token()
    assert.equals(first, (tp:token()))
    assert.equals(1, #iam_log())
    sim.control("POST", "/_sim/iam", { lifetime = 2300 }) -- tokens now live less than 2400 s
    tp:invalidate()
    tp:token()
    assert.equals(2, #iam_log())
  end)

  -- Before, a token that lived less than refresh_before was "due" at once: every call logged in.
  it("a token living less than refresh_before serves half its life: 20 calls, 1 login", function()
    local list = sim.make_pairs(20, "short")
    seed(list)
    sim.control("POST", "/_sim/iam", { lifetime = 600 })
    local tp = provider { refresh_before = 2400 }
    for i = 1, 20 do assert.equals("unassigned", assert(client:unassign(tp, { list[i] })).outcome) end
    assert.equals(1, #iam_log())
    assert.equals(20, #sim.log())
    -- a refused token is still replaced at once
    tp:invalidate()
    tp:token()
    assert.equals(2, #iam_log())
  end)

  it("a clock ahead of IAM's (every token expired on arrival): 20 calls, 1 login", function()
    local list = sim.make_pairs(20, "skew")
    seed(list)
    -- IAM's clock 25 hours behind ours: a 24-hour token's expires_at is an hour ago here
    sim.control("POST", "/_sim/clock", { offset = -25 * 3600 })
    local tp = provider()
    for i = 1, 20 do assert.equals("unassigned", assert(client:unassign(tp, { list[i] })).outcome) end
    local _, expires_at = tp:token()
    assert.is_true(expires_at < os.time(), tostring(expires_at))
    assert.equals(1, #iam_log())
  end)

  it("fresh: refresh_before before expiry, not before half the life seen at the fetch, MIN_REUSE when none", function()
    local fresh, MIN = require("koophone.iam_token").fresh, require("koophone.iam_token").MIN_REUSE
    assert.equals(60, MIN)
    -- a 24-hour token: refreshed 2400 s before its expiry, as before
    assert.is_true(fresh(1000 + 86400 - 2401, 1000, 1000 + 86400, 2400))
    assert.is_false(fresh(1000 + 86400 - 2400, 1000, 1000 + 86400, 2400))
    -- a 600-second token with refresh_before 2400: half its life
    assert.is_true(fresh(1000 + 299, 1000, 1600, 2400))
    assert.is_false(fresh(1000 + 300, 1000, 1600, 2400))
    -- a 30-second life: 15 s, never past its expiry
    assert.is_true(fresh(1000 + 14, 1000, 1030, 2400))
    assert.is_false(fresh(1000 + 15, 1000, 1030, 2400))
    -- expired on arrival (this clock ahead of IAM's): MIN_REUSE seconds
    assert.is_true(fresh(1000 + 59, 1000, 500, 2400))
    assert.is_false(fresh(1000 + 60, 1000, 500, 2400))
    assert.is_false(fresh(1000 + 60, 1000, 1000, 2400))
  end)

  it("refreshes a revoked token once and resends the same request", function()
    local list = sim.make_pairs(2, "rev")
    seed(list)
    local tp = provider()
    assert(client:unassign(tp, { list[1] }))
    sim.control("POST", "/_sim/iam/revoke")
    local res, err = client:unassign(tp, { list[2] }, { request_id = "rid-revoked" })
    assert.is_nil(err)
    assert.equals("unassigned", res.outcome)
    assert.equals(2, res.attempts)
    local log = sim.log()
    assert.equals(3, #log)
    assert.equals("APIGW.0307", log[2].error_code)
    assert.equals("rid-revoked", log[2].request_id)
    assert.equals("rid-revoked", log[3].request_id)
    assert.equals(2, #iam_log())
  end)

  it("ends after one refresh when the new token is refused too", function()
    local list = sim.make_pairs(1, "stay")
    seed(list)
    local tp = provider()
    local refused = '{"error_code":"APIGW.0301","error_msg":"Incorrect IAM authentication information: decrypt token fail"}'
    sim.faults { type = "respond", status = 401, body = refused, count = 3 }
    local pc = koophone.client(sim.client_opts("http"))
    local res, err = pc:unassign(tp, list)
    assert.is_nil(res)
    assert.equals(401, err.status)
    assert.equals("APIGW.0301", err.code)
    assert.equals(2, err.attempts)
    assert.equals(2, #sim.log())
    assert.equals(2, #iam_log())
    assert_clean(tp, err, (tp:token()))
    pc:close()
  end)

  it("IAM down, a wrong password or an unreachable IAM end as kind auth with nothing sent", function()
    local list = sim.make_pairs(1, "down")
    seed(list)
    sim.control("POST", "/_sim/iam", { fail_status = 503 })
    local tp = provider()
    local res, err = client:unassign(tp, list)
    assert.is_nil(res)
    assert.equals("auth", err.kind)
    assert.equals(503, err.status)
    assert.is_false(err.sent)
    assert.matches("IAM refused the token request %(HTTP 503%)", err.message)
    assert_clean(tp, err)
    sim.control("POST", "/_sim/iam", { fail_status = false })

    local wrong = provider { password = "not-" .. PASSWORD }
    local results
    results, err = client:unassign_many(wrong, { list })
    assert.is_nil(results)
    assert.equals("auth", err.kind)
    assert.equals(401, err.status)
    local set, set_err = client:start_many(wrong, { list }) -- the same: no set, nothing sent
    assert.is_nil(set)
    assert.same({ "auth", 401 }, { set_err.kind, set_err.status })
    assert.matches("username or password is wrong", err.message)
    assert_no_slice("not-" .. PASSWORD, tostring(err))

    local pc = koophone.client(sim.client_opts("http"))
    local report = assert(pc:unassign_all(wrong, list))
    assert.equals(1, report.counts.failed)
    assert.equals("auth", report.aborted.kind)
    pc:close()

    sim.control("POST", "/_sim/iam", { token_size = 70000 }) -- past the 64 KiB cap
    res, err = client:unassign(provider(), list)
    assert.is_nil(res)
    assert.equals("auth", err.kind)
    assert.equals(201, err.status)
    assert.matches("malformed.*larger than 64 KiB", err.message)

    local nowhere = provider { endpoint = "http://127.0.0.1:1", connect_timeout = 1 }
    res, err = client:unassign(nowhere, list)
    assert.is_nil(res)
    assert.equals("auth", err.kind)
    assert.is_nil(err.status)
    assert.matches("cannot get a token from IAM", err.message)
    assert.equals(0, #sim.log())
    assert.equals(list[1].user_id, sim.bindings()[list[1].instance_id])
  end)

  it("bin/koophone unassign logs in to IAM and outlives its tokens in a bulk run", function()
    local cli = require "helpers.cli"
    local ctx = cli.new()
    local list = sim.make_pairs(10, "cli")
    seed(list)
    sim.control("POST", "/_sim/iam", { lifetime = 1 }) -- every token dies within the run
    sim.write_file(ctx.dir .. "/pw", PASSWORD .. "\n")
    local journal = ctx.dir .. "/run.jsonl"
    local env = ("KOOPHONE_IAM_DOMAIN=acct KOOPHONE_IAM_USER=admin KOOPHONE_IAM_PROJECT_ID=%s "
                 .. "KOOPHONE_IAM_ENDPOINT=%s "):format(PROJECT, sim.http_url)
    local rc, out, err = creds.cli(ctx, env, ("unassign --input %s --batch-size 1 --concurrency 2 "
      .. "--rate 4 --password-file %s/pw --journal %s --endpoint %s"):format(
        ctx.csv(list), ctx.dir, journal, sim.http_url))
    assert.equals(0, rc, err)
    assert.matches("unassigned%s+10\n", out)
    assert.matches("credentials: IAM token of koophone.iam_token %(", err)
    assert.is_true(#iam_log() >= 2, "one token for the whole run")
    assert.same({}, sim.bindings())
    for _, text in ipairs { out, err, cli.read_file(journal) } do assert_no_slice(PASSWORD, text) end
    ctx.cleanup()
  end)

  it("raises on bad options, naming the field", function()
    assert.has_error(function() koophone.iam_token { domain = "d", user = "u", password = "p" } end,
      "koophone.iam_token: bad argument #1 (opts.project_id): expected project_id or project, got neither")
    assert.has_error(function() provider { password = 1 } end,
      "koophone.iam_token: bad argument #1 (opts.password): expected a non-empty string, got number")
    -- NaN would make every call fetch a new token (now < expires_at - NaN is never true)
    local ok, err = pcall(provider, { refresh_before = 0 / 0 })
    assert.is_false(ok)
    assert.matches("(opts.refresh_before): expected a number >= 0, got", err, 1, true)
    assert.has_error(function() provider { colour = "red" } end,
      "koophone.iam_token: bad argument #1 (opts): unknown option 'colour'")
  end)
end)

describe("koophone.ngx.iam_token in nginx, shared by the workers through a lua_shared_dict", function()
  local openresty = require "helpers.openresty"
  local LOCATION = [[
        location = /iam/unassign {
            content_by_lua_block {
                local kngx, cjson = require "koophone.ngx", require "cjson.safe"
                ngx.req.read_body()
                local b = cjson.decode(ngx.req.get_body_data())
                b.iam.dict = "koophone_tokens"
                local tp = require("koophone.ngx.iam_token").new(b.iam)
                local events = {}
                local opts = { endpoint = os.getenv("KOOPHONE_ENDPOINT"),
                               cafile = os.getenv("KOOPHONE_CAFILE"),
                               on_event = function(ev) events[#events + 1] = ev end }
                opts.retry = b.retry -- then kngx.client: the retry policy around the call
                local c = (b.retry and kngx.client or kngx.new)(opts)
                local res, err = c:unassign(tp, b.pairs, { request_id = b.request_id })
                local got = res or err
                ngx.say(cjson.encode { outcome = res and res.outcome, attempts = got.attempts,
                                       resends = got.resends, renewed = got.renewed,
                                       code = err and err.code, maybe_applied = err and err.maybe_applied,
                                       events = events,
                                       kind = err and err.kind, status = err and err.status,
                                       text = err and tostring(err) or "", tp = tostring(tp),
                                       pid = ngx.worker.pid() })
            }
        }
]]
  local nginx = openresty.new("openresty-iam", sim.http_port + 20, function(conf)
    conf = conf:gsub("worker_processes 1;", "worker_processes 2;", 1)
    conf = conf:gsub("(lua_package_path)", "lua_shared_dict koophone_tokens 1m;\n    %1", 1)
    return (conf:gsub("(location = /health)", function(h) return LOCATION .. "        " .. h end, 1))
  end)
  setup(function() nginx:start() end)
  teardown(function() nginx:stop() end)

  local function call(list, extra, retry)
    local iam = { endpoint = sim.http_url, domain = "acct", user = "admin", password = PASSWORD,
                  project_id = PROJECT }
    for k, v in pairs(extra or {}) do iam[k] = v end
    return creds.post(nginx, "/iam/unassign", { iam = iam, pairs = list, retry = retry })
  end

  -- "call status" of each event of a call, in order
  local function exchanges(body)
    local out = {}
    for i, ev in ipairs(body.events) do out[i] = ("%s %d"):format(ev.call, ev.status) end
    return table.concat(out, ", ")
  end

  it("fetches one token for every request of every worker, refreshes it once when revoked", function()
    local list = sim.make_pairs(9, "ngx")
    seed(list)
    local fetched = 0
    for i = 1, 6 do
      local body, raw = call({ list[i] })
      assert.equals("unassigned", body.outcome, raw)
      assert_no_slice(PASSWORD, raw)
      -- the call whose worker fetched the token has the IAM exchange's event first
      if body.events[1].call == "iam_token" then
        fetched = fetched + 1
        assert.equals("iam_token 201, unassign 200", exchanges(body))
        assert.is_nil(body.events[1].kind)
        assert.is_true(body.events[1].bytes_received > 2048)
      else
        assert.equals("unassign 200", exchanges(body))
      end
    end
    assert.equals(1, fetched)
    assert.equals(1, #iam_log())
    sim.control("POST", "/_sim/iam/revoke")
    local body = call({ list[7] })
    assert.equals("unassigned", body.outcome)
    assert.equals(2, body.attempts)
    assert.equals("unassign 401, iam_token 201, unassign 200", exchanges(body))
    assert.equals(2, #iam_log())
    assert.equals("unassigned", call({ list[8] }).outcome)
    assert.equals(2, #iam_log())
    local wrong, raw = call({ list[9] }, { password = "wrong-password", user = "other" })
    assert.equals("auth", wrong.kind)
    assert.equals(401, wrong.status)
    assert.equals("iam_token 401", exchanges(wrong))
    assert.equals("auth", wrong.events[1].kind)
    assert_no_slice(PASSWORD, raw .. nginx:error_log())
    assert.equals(9, #sim.log()) -- 8 unassigns + the revoked first try; nothing for the 9th
  end)

  it("sends a request again after a revoked token as no lost answer: a never-bound pair's 2210 stays one", function()
    local list = sim.make_pairs(1, "ngxnb")
    seed({})
    sim.control("POST", "/_sim/seed", { tenants = { { name = "t1", project_id = PROJECT, domain = "acct",
      exists = true, instances = { list[1].instance_id } } } }) -- owned, never bound
    assert.equals("KOOPHONE.API.2210", call(list, nil, {}).code) -- the token is fetched and shared
    sim.control("POST", "/_sim/iam/revoke")
    local body, raw = call(list, nil, { max_attempts = 3 })
    assert.is_nil(body.outcome, raw)
    assert.equals("KOOPHONE.API.2210", body.code)
    assert.equals(2, body.attempts)
    assert.equals(0, body.resends)
    assert.is_true(body.renewed)
    assert.is_false(body.maybe_applied)
    assert.is_nil(body.text:find("may have been applied", 1, true))
  end)

  it("a token living less than refresh_before serves half its life: 20 calls, 1 login", function()
    local list = sim.make_pairs(20, "ngxshort")
    seed(list)
    sim.control("POST", "/_sim/iam", { lifetime = 600 })
    -- another endpoint text than the test above: another shared token
    local extra = { endpoint = "http://localhost:" .. sim.http_port, refresh_before = 2400 }
    for i = 1, 20 do
      local body, raw = call({ list[i] }, extra)
      assert.equals("unassigned", body.outcome, raw)
    end
    assert.equals(1, #iam_log())
    assert.equals(20, #sim.log())
  end)
end)
