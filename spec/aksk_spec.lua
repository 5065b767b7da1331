-- AK/SK signed calls (koophone.aksk) through every entry point, against the simulator's own
-- verifier (sim/sim_aksk.lua): signed at send time, on every attempt, and no SK or security token
-- in anything that leaves the library.
local koophone = require "koophone"
local core = require "koophone.core"
local sim = require "helpers.sim"
local read = require("helpers.cli").read_file

local creds = require "helpers.creds"
local PROJECT = creds.PROJECT
local SK = "SK-perm-" .. string.rep("s3cr3tKEY", 6)
local TEMP_SK = "SK-temp-" .. string.rep("t3mpKEY0", 6)
local SECURITY_TOKEN = "SECTOK-" .. string.rep("gQdFb2NhbA", 8)
local SECRETS = { SK, TEMP_SK, SECURITY_TOKEN }

-- Seeds tenant t1 (project PROJECT) with `list` bound, a permanent and a temporary key.
local function seed(list)
  creds.seed(list, { access_keys = {
    { ak = "AKPERM0001", sk = SK, project_id = PROJECT },
    { ak = "AKTEMP0001", sk = TEMP_SK, security_token = SECURITY_TOKEN, project_ids = { PROJECT } } } })
end

local function perm() return koophone.aksk { ak = "AKPERM0001", sk = SK, project_id = PROJECT } end

-- Fails when text holds a secret or any 16-byte slice of one.
local function assert_no_secret(text) creds.assert_no_slices(SECRETS, text) end

local function assert_no_secret_in(v)
  for _, s in ipairs(sim.strings(v)) do assert_no_secret(s) end
  if getmetatable(v) and getmetatable(v).__tostring then assert_no_secret(tostring(v)) end
end

-- Every log entry since the reset was a verified signed call (the simulator logs auth "aksk").
local function assert_all_signed(n)
  local log = sim.log()
  assert.equals(n, #log)
  for _, e in ipairs(log) do
    assert.equals("aksk", e.auth)
    assert.equals(200, e.status)
  end
end

describe("AK/SK signed calls", function()
  local client
  before_each(function() client = koophone.new(sim.client_opts("http")) end)
  after_each(function() client:close() end)

  it("koophone.unassign signs the request, over HTTPS too", function()
    local list = sim.make_pairs(2, "mod")
    seed(list)
    koophone.configure(sim.client_opts("https"))
    local cred = perm()
    local res, err = koophone.unassign(cred, { list[1] })
    assert.is_nil(err)
    assert.equals("unassigned", res.outcome)
    res, err = client:unassign(cred, { list[2] })
    assert.is_nil(err)
    assert.equals("unassigned", res.outcome)
    assert_all_signed(2)
    assert.same({}, sim.bindings())
    assert.equals("https", sim.log()[1].scheme)
    koophone.configure(sim.client_opts("http"))
  end)

  it("signs for an endpoint whose scheme is written in capitals", function()
    local list = sim.make_pairs(1, "caps")
    seed(list)
    local caps = koophone.new { endpoint = sim.http_url:gsub("^http", "HTTP") }
    local res, err = caps:unassign(perm(), list)
    caps:close()
    assert.is_nil(err)
    assert.equals("unassigned", res.outcome)
    assert_all_signed(1)
  end)

  it("client:unassign_many signs each batch", function()
    local list = sim.make_pairs(6, "many")
    seed(list)
    local batches = { { list[1], list[2] }, { list[3], list[4] }, { list[5], list[6] } }
    local results, errors = client:unassign_many(perm(), batches, { concurrency = 2 })
    for i = 1, 3 do
      assert.is_false(errors[i])
      assert.equals("unassigned", results[i].outcome)
    end
    assert_all_signed(3)
  end)

  it("a policy client's unassign and unassign_all with a journal sign every request", function()
    local list = sim.make_pairs(5, "pol")
    seed(list)
    local pc = koophone.client(sim.client_opts("http"))
    local res, err = pc:unassign(perm(), { list[1] })
    assert.is_nil(err)
    assert.equals("unassigned", res.outcome)
    local journal = os.tmpname()
    os.remove(journal)
    local report = assert(pc:unassign_all(perm(), { list[2], list[3], list[4], list[5] },
                                          { batch_size = 2, journal = journal }))
    assert.equals(4, report.counts.unassigned)
    assert_all_signed(3)
    assert_no_secret(read(journal))
    os.remove(journal)
    pc:close()
  end)

  it("temporary keys send and sign X-Security-Token", function()
    local list = sim.make_pairs(1, "tmp")
    seed(list)
    local cred = koophone.aksk { ak = "AKTEMP0001", sk = TEMP_SK, project_id = PROJECT,
                                 security_token = SECURITY_TOKEN }
    local res, err = client:unassign(cred, list)
    assert.is_nil(err)
    assert.equals("unassigned", res.outcome)
    assert_all_signed(1)
    -- without the security token the simulator refuses the temporary key
    local without = koophone.aksk { ak = "AKTEMP0001", sk = TEMP_SK, project_id = PROJECT }
    res, err = client:unassign(without, list)
    assert.is_nil(res)
    assert.equals(401, err.status)
  end)

  it("a wrong SK is answered 401 and returned without a retry, with no secret in it", function()
    local list = sim.make_pairs(1, "bad")
    seed(list)
    local pc = koophone.client(sim.client_opts("http", { retry = { base_delay = 0.001 } }))
    -- the simulator echoes its canonical request, security token included: it must be redacted
    local cred = koophone.aksk { ak = "AKTEMP0001", sk = "wrong-" .. TEMP_SK, project_id = PROJECT,
                                 security_token = SECURITY_TOKEN }
    local res, err = pc:unassign(cred, list)
    assert.is_nil(res)
    assert.equals(401, err.status)
    assert.equals("APIGW.0301", err.code)
    assert.equals(1, err.attempts)
    assert.equals(1, #sim.log())
    assert.matches("canonicalRequest", err.message)
    assert.matches("[REDACTED]", err.message, 1, true)
    assert_no_secret_in(err)
    assert_no_secret(tostring(err))
    assert_no_secret(tostring(cred))
    assert.equals(list[1].user_id, sim.bindings()[list[1].instance_id])
    pc:close()
  end)

  -- The gateway's 401 APIGW.0301 says which AK/SK check failed: the advice follows it, never
  -- "get a new IAM token" for a call that carried no token.
  it("a refused AK/SK call says what to fix: signature, access key, project, security token or clock", function()
    local list = sim.make_pairs(1, "adv")
    local pc = koophone.client(sim.client_opts("http", { retry = { base_delay = 0.001 } }))
    local function refused(opts, advance)
      seed(list)
      if advance then sim.advance(advance) end
      local res, err = pc:unassign(koophone.aksk(opts), list)
      assert.is_nil(res)
      assert.equals(401, err.status)
      assert.equals("APIGW.0301", err.code)
      assert.is_nil(err.message:find("IAM token", 1, true), err.message)
      return err.message
    end
    local perm_opts = { ak = "AKPERM0001", sk = SK, project_id = PROJECT }
    local function with(extra)
      local o = {}
      for k, v in pairs(perm_opts) do o[k] = v end
      for k, v in pairs(extra) do o[k] = v end
      return o
    end
    assert.matches("(the AK/SK signature was refused: check that the SK belongs to the AK", refused(with { sk = "wrong" }),
                   1, true)
    assert.matches("(the gateway does not know the access key: check the AK (HUAWEICLOUD_SDK_AK))",
                   refused(with { ak = "AKNOPE0001" }), 1, true)
    assert.matches("(the AK/SK request's project was refused: set project_id (HUAWEICLOUD_SDK_PROJECT_ID)",
                   refused(with { project_id = "p-other" }), 1, true)
    assert.matches("(a temporary access key needs its current security token (HUAWEICLOUD_SDK_SECURITY_TOKEN)",
                   refused(with { ak = "AKTEMP0001", sk = TEMP_SK }), 1, true)
    -- the simulator's clock 20 minutes ahead: the note tells the skew from the gateway's message
    local msg = refused(perm_opts, 1200)
    assert.matches("X-Sdk-Date is more than 15 minutes from the gateway's clock", msg, 1, true)
    assert.matches("%(this host's clock is 120[01] s behind the gateway's%): synchronise this host's clock %(NTP%)%)$", msg)
    assert.equals(list[1].user_id, sim.bindings()[list[1].instance_id])
    pc:close()
  end)

  it("signs a retry at its own send time, not at the call's start", function()
    local list = sim.make_pairs(1, "late")
    seed(list)
    sim.faults { type = "unavailable" }
    local t0 -- taken after the first attempt went: signing at the call's start would be <= t0
    local pc = koophone.client(sim.client_opts("http", { retry = {
      base_delay = 0.001,
      sleep = function()
        -- a second later on our clock, and the simulator's clock 30 minutes ahead: the
        -- resent request is refused as expired and its message shows when it was signed
        t0 = os.time()
        while os.time() <= t0 do core.sleep(0.05) end
        sim.advance(1800)
      end } }))
    local res, err = pc:unassign(perm(), list)
    assert.is_nil(res)
    assert.equals(2, err.attempts)
    local signed = err.message:match("signature time:(%d+T%d+Z)")
    assert.is_string(signed, err.message)
    assert.is_true(signed > os.date("!%Y%m%dT%H%M%SZ", t0), signed)
    pc:close()
  end)

  it("client:unassign_all without a journal signs each batch of a run", function()
    local list = sim.make_pairs(4, "all")
    seed(list)
    local pc = koophone.client(sim.client_opts("http"))
    local report = assert(pc:unassign_all(perm(), list, { batch_size = 1, concurrency = 2 }))
    assert.equals(4, report.counts.unassigned)
    assert_all_signed(4)
    pc:close()
  end)

  it("bin/koophone unassign signs with HUAWEICLOUD_SDK_* when no token is given", function()
    local cli = require "helpers.cli"
    local ctx = cli.new()
    local list = sim.make_pairs(3, "cli")
    seed(list)
    local journal = ctx.dir .. "/run.jsonl"
    local env = ("HUAWEICLOUD_SDK_AK=AKTEMP0001 HUAWEICLOUD_SDK_SK=%s HUAWEICLOUD_SDK_PROJECT_ID=%s "
                 .. "HUAWEICLOUD_SDK_SECURITY_TOKEN=%s "):format(TEMP_SK, PROJECT, SECURITY_TOKEN)
    local rc, out, err = creds.cli(ctx, env, ("unassign --input %s --batch-size 2 --journal %s "
      .. "--endpoint %s"):format(ctx.csv(list), journal, sim.http_url))
    assert.equals(0, rc, err)
    assert.matches("unassigned%s+3\n", out)
    assert.matches("credentials: AK/SK from HUAWEICLOUD_SDK_%* %(koophone.aksk %(AK AKTE", err)
    assert_all_signed(2)
    for _, text in ipairs { out, err, read(journal) } do assert_no_secret(text) end
    ctx.cleanup()
  end)

  it("bin/koophone without HUAWEICLOUD_SDK_PROJECT_ID refuses before sending, naming the variable", function()
    local cli = require "helpers.cli"
    local ctx = cli.new()
    local list = sim.make_pairs(1, "nop")
    seed(list)
    local env = ("env -u HUAWEICLOUD_SDK_PROJECT_ID HUAWEICLOUD_SDK_AK=AKPERM0001 HUAWEICLOUD_SDK_SK=%s "):format(SK)
    local rc, _, err = creds.cli(ctx, env, ("unassign --input %s --endpoint %s"):format(ctx.csv(list), sim.http_url))
    assert.is_true(rc ~= 0)
    assert.matches("HUAWEICLOUD_SDK_PROJECT_ID: expected a non-empty string, got nil (KooPhone is a project-level API",
                   err, 1, true)
    assert_no_secret(err)
    assert.same({}, sim.log())
    ctx.cleanup()
  end)

  it("argument #1 may be credentials, a token, nothing else; closed ones raise", function()
    local cred = perm()
    assert.is_true(core.is_aksk(cred))
    assert.is_false(core.is_aksk("token"))
    cred:close()
    assert.is_false(core.is_aksk(cred))
    assert.has_error(function() client:unassign(cred, sim.make_pairs(1, "x")) end,
                     "koophone.aksk: the credentials are closed")
    assert.has_error(function() client:unassign({}, sim.make_pairs(1, "x")) end)
  end)

  local CLOSED = "koophone.start_many: the credentials were closed during the call: not sent"

  it("credentials closed while a transfer set is open: the next batch ends not sent, nothing more starts", function()
    local list = sim.make_pairs(2, "cls")
    seed(list)
    local cred = perm()
    local set = client:start_many(cred, { { list[1] }, { list[2] } }, { concurrency = 1 })
    cred:close()
    local i, res, err = set:next()
    assert.equals(1, i)
    assert.is_nil(res)
    assert.same({ "network", "NOT_STARTED", false, CLOSED }, { err.kind, err.code, err.sent, err.message })
    assert.is_nil(set:next()) -- ended
    assert.equals(0, set:started())
    assert.equals(0, #sim.log())
    assert.equals("koophone.aksk (closed)", tostring(cred))
  end)

  it("credentials closed during a set: the batches in flight still end and are reported", function()
    local list = sim.make_pairs(3, "clsf")
    seed(list)
    local cred = perm()
    -- the first request sleeps: batch 2 ends first, batch 1 is in flight when cred closes
    sim.faults({ type = "delay", seconds = 1, at = 1, count = 1 })
    local set = client:start_many(cred, { { list[1] }, { list[2] }, { list[3] } }, { concurrency = 2 })
    local i, res = set:next()
    assert.equals(2, i)
    assert.equals("unassigned", res.outcome)
    cred:close()
    local got = {}
    while true do
      local b, r, e = set:next()
      if not b then break end
      got[b] = { r, e }
    end
    assert.same({ 1, 3 }, (function() local t = {} for b in pairs(got) do t[#t + 1] = b end table.sort(t) return t end)())
    assert.equals("unassigned", got[1][1].outcome) -- sent before the close: its answer is kept
    assert.is_nil(got[3][1])
    assert.same({ "NOT_STARTED", false, CLOSED }, { got[3][2].code, got[3][2].sent, got[3][2].message })
    assert.equals(2, set:started())
    assert.equals(2, #sim.log())
  end)

  it("unassign_many keeps the results it has when the credentials close during it", function()
    local list = sim.make_pairs(3, "clsm")
    seed(list)
    local cred = perm()
    sim.faults({ type = "delay", seconds = 1, at = 1, count = 1 })
    local hooked = koophone.new(sim.client_opts("http", { on_event = function(ev)
      if ev.outcome == "unassigned" then cred:close() end -- after the first answer (batch 2)
    end }))
    local results, errors, started = hooked:unassign_many(cred, { { list[1] }, { list[2] }, { list[3] } },
                                                          { concurrency = 2 })
    assert.equals("unassigned", results[1].outcome)
    assert.equals("unassigned", results[2].outcome)
    assert.is_false(results[3])
    assert.same({ "NOT_STARTED", false }, { errors[3].code, errors[3].sent })
    assert.equals(2, started)
  end)
end)

describe("AK/SK signed calls through koophone.ngx in nginx", function()
  local openresty = require "helpers.openresty"
  -- a location that signs with credentials made per request from the JSON body
  local LOCATION = [[
        location = /aksk/unassign {
            content_by_lua_block {
                local koophone, kngx, cjson = require "koophone", require "koophone.ngx", require "cjson.safe"
                ngx.req.read_body()
                local b = cjson.decode(ngx.req.get_body_data())
                local cred = koophone.aksk(b.cred)
                local c = kngx.client { endpoint = os.getenv("KOOPHONE_ENDPOINT"),
                                        cafile = os.getenv("KOOPHONE_CAFILE"), retry = false }
                local res, err = c:unassign(cred, b.pairs)
                ngx.say(cjson.encode { outcome = res and res.outcome, status = err and err.status,
                                       text = err and tostring(err) or "", cred = tostring(cred) })
            }
        }
]]
  local nginx = openresty.new("openresty-aksk", sim.http_port + 20, function(conf)
    return (conf:gsub("(location = /health)", function(h) return LOCATION .. "        " .. h end, 1))
  end)
  setup(function() nginx:start() end)
  teardown(function() nginx:stop() end)

  local function call(cred, list)
    return creds.post(nginx, "/aksk/unassign", { cred = cred, pairs = list })
  end

  it("signs in the worker thread, temporary keys too, and leaks no secret", function()
    local list = sim.make_pairs(2, "ngx")
    seed(list)
    local body, raw = call({ ak = "AKPERM0001", sk = SK, project_id = PROJECT }, { list[1] })
    assert.equals("unassigned", body.outcome)
    assert_no_secret(raw)
    body = call({ ak = "AKTEMP0001", sk = TEMP_SK, project_id = PROJECT,
                  security_token = SECURITY_TOKEN }, { list[2] })
    assert.equals("unassigned", body.outcome)
    assert_all_signed(2)
    body, raw = call({ ak = "AKTEMP0001", sk = "wrong", project_id = PROJECT,
                       security_token = SECURITY_TOKEN }, { list[2] })
    assert.equals(401, body.status)
    assert_no_secret(raw)
    assert_no_secret(nginx:error_log())
  end)
end)
