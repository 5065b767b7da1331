-- The simulator's AK/SK verification (sim/sim_aksk.lua, sim/sim_gateway.lua): the published
-- test vectors through POST /_sim/aksk/sign-check, and signed requests built by the spec itself
-- with hashes from the openssl command line (spec/helpers/sim.lua sim.sign), over real HTTP.
local sim = require "spec.helpers.sim"

local API = "/v1/instances/unassign"
local PREFIX = "Incorrect IAM authentication information: "
local PROJECT = "0123456789abcdef0123456789abcdef"
local BODY = '{"user_instances":[{"user_id":"u1","instance_id":"i1"}]}' -- bytes of the published vector

local function sign_check(t) return sim.control("POST", "/_sim/aksk/sign-check", t) end

local function unassign(opts)
  opts.method, opts.path, opts.body = "POST", API, opts.body or BODY
  local h = opts.headers or {}
  h["content-type"], h["x-request-id"] = "application/json", h["x-request-id"] or "rid-aksk"
  if opts.project ~= false then h["x-project-id"] = opts.project or PROJECT end
  opts.headers = h
  opts.ak, opts.sk = opts.ak or "AK-PERM", opts.sk or "SK-perm-secret"
  return sim.signed_request(opts)
end

describe("simulator AK/SK", function()
  setup(function() assert(pcall(sim.control, "GET", "/_sim/info"), "simulator not running") end)

  before_each(function()
    sim.control("POST", "/_sim/reset")
    sim.control("POST", "/_sim/seed", {
      tenants = { { name = "t1", project_id = PROJECT, instances = { "i1", "i2" }, bindings = { i1 = "u1", i2 = "u2" } },
                  { name = "t2", project_id = "p-other", instances = { "x1" } } },
      access_keys = { { ak = "AK-PERM", sk = "SK-perm-secret", project_id = PROJECT },
                      { ak = "AK-TEMP", sk = "SK-temp-secret", security_token = "sec-token-1", project_ids = { PROJECT } } },
    })
  end)

  describe("published test vectors (sign-check uses the verifier's canonicalisation)", function()
    local VPC = "https://service.region.example.com/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs?limit=2&marker=13551d6b-755d-4757-b956-536f674975c0"
    local vectors = {
      { "A doc example", { method = "GET", url = VPC, headers = { ["Content-Type"] = "application/json", ["X-Sdk-Date"] = "20191115T033655Z" },
        sk = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc" }, "content-type;host;x-sdk-date",
        "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe" },
      { "B Java", { method = "GET", url = VPC, headers = { ["X-Sdk-Date"] = "20191115T033655Z" }, sk = "SecretKey" },
        "host;x-sdk-date", "fd95e7da6f695cfb4cabbb9d6b0968aec155bc576b064835282473539ae9ea1d" },
      { "C Java POST", { method = "POST", url = "https://service.region.example.com/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpc/123",
        headers = { ["X-Sdk-Date"] = "20191115T033655Z" }, body = '{"key":"value"}', sk = "SecretKey" },
        "host;x-sdk-date", "b5649aa774f6cac7437631662f08815fc65c70e40e486df6db2436ce68902771" },
      { "D Python GET", { method = "GET", url = "https://service.endpoint.myhuaweicloud.com/resources?size=1",
        headers = { ["X-Sdk-Date"] = "20200608T023900Z" }, sk = "SecretKey" },
        "host;x-sdk-date", "cfb4171acec81de07d50e53d57eb77edd537414d66ddb1d7d780f128e12cd842" },
      { "E Python POST", { method = "POST", url = "https://service.endpoint.myhuaweicloud.com/resources?size=1",
        headers = { ["X-Sdk-Date"] = "20200608T023900Z" }, body = '{"name":"test","id":1}', sk = "SecretKey" },
        "host;x-sdk-date", "436b1ac0a1ae03705934bb70ef2f2e09f7bfed2117d731a38235053199323a1f" },
      { "F Go GET without host", { method = "GET", path = "/path", query = "limit=1",
        headers = { ["X-Sdk-Date"] = "20060102T150405Z" }, sk = "SecretKey" },
        "x-sdk-date", "5a2ce64c865e0e6046321c6f3d5a77ba8413eeaf355c3166c03d58d02ac79624" },
      { "G Go POST, body with a trailing newline", { method = "POST", path = "/path", query = "key=value",
        headers = { ["X-Sdk-Date"] = "20060102T150405Z" }, body = '{"Name":"test","Id":1}\n', sk = "SecretKey" },
        "x-sdk-date", "cecc2af119b18ab70b4d094c0750f3b42c02f254903179a0fc2cc72fc9db4f59" },
      { "KooPhone unassign (ours)", { method = "POST", url = "https://koophone.myhuaweicloud.com/v1/instances/unassign",
        headers = { ["X-Sdk-Date"] = "20250101T000000Z" }, body = BODY, sk = "SecretKey" },
        "host;x-sdk-date", "97bfc312a403939dfaa643ae8359e6602e6852ced31085d36b80a5613262d867" },
      { "KooPhone unassign with project (ours)", { method = "POST", url = "https://koophone.myhuaweicloud.com/v1/instances/unassign",
        headers = { ["X-Sdk-Date"] = "20250101T000000Z", ["Content-Type"] = "application/json", ["X-Project-Id"] = PROJECT },
        body = BODY, sk = "SecretKey" },
        "content-type;host;x-project-id;x-sdk-date", "e49fcb7b0f253fcb817a3346f3ba2c80f4f52f6b11c25dbb46edc0da0421b418" },
    }
    for _, v in ipairs(vectors) do
      it("vector " .. v[1], function()
        local req = v[2]
        req.signed_headers = v[3]
        local s = sign_check(req)
        assert.equal(v[3], s.signed_headers)
        assert.equal(v[4], s.signature)
      end)
    end

    it("vector A step by step: canonical request, its hash, string to sign, Authorization", function()
      local s = sign_check({ method = "GET", url = VPC, ak = "QTWAOYTTINDUT2QVKYUC",
        headers = { ["Content-Type"] = "application/json", ["X-Sdk-Date"] = "20191115T033655Z" },
        sk = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc" }) -- default: every header given, plus host
      assert.equal(table.concat({ "GET", "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs/",
        "limit=2&marker=13551d6b-755d-4757-b956-536f674975c0",
        "content-type:application/json\nhost:service.region.example.com\nx-sdk-date:20191115T033655Z\n",
        "content-type;host;x-sdk-date", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" }, "\n"),
        s.canonical_request)
      assert.equal("b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a", s.hashed_canonical_request)
      assert.equal("SDK-HMAC-SHA256\n20191115T033655Z\n" .. s.hashed_canonical_request, s.string_to_sign)
      assert.equal("SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=content-type;host;x-sdk-date, " ..
                   "Signature=7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe", s.authorization)
      -- the simulator's hashes agree with openssl's
      assert.equal(sim.openssl_sha256(s.canonical_request), s.hashed_canonical_request)
      assert.equal(sim.openssl_sha256(s.string_to_sign, "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"), s.signature)
    end)

    it("canonical query string of the SDK test (encoding, byte order, repeated names)", function()
      local s = sign_check({ method = "GET", path = "/", sk = "k", headers = { ["X-Sdk-Date"] = "20200101T000000Z" },
        query = "test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29&path=%2Ftmp%2F123&multi=3&multi=1&multi=2&limit=1&enable=true" })
      assert.equal("enable=true&limit=1&multi=1&multi=2&multi=3&path=%2Ftmp%2F123&test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29",
                   s.canonical_request:match("^GET\n/\n([^\n]*)\n"))
    end)
  end)

  it("sorts the query by decoded name, then by the decoded values of a repeated name, as the SDKs do", function()
    local s = sign_check({ method = "GET", path = "/", sk = "k", headers = { ["X-Sdk-Date"] = "20200101T000000Z" },
      query = "v=%7C&v=_&v=a%2Bb&v=a%20c&v=a%20b&v=%C3%A9&v=z&v=~&v=%7E&k%7Cx=1&k_x=2&%C3%A9=1&z=1" })
    assert.equal("k_x=2&k%7Cx=1&v=_&v=a%20b&v=a%20c&v=a%2Bb&v=z&v=%7C&v=~&v=~&v=%C3%A9&z=1&%C3%A9=1",
                 s.canonical_request:match("^GET\n/\n([^\n]*)\n"))
  end)

  describe("signed unassign", function()
    it("accepts a request signed independently (openssl) and acts for the key's project", function()
      local code, doc = unassign({})
      assert.equal(200, code)
      assert.equal("0", doc.error_code)
      assert.is_nil(sim.bindings().i1)
      local e = sim.log()[1]
      assert.same({ "aksk", "t1", true, false }, { e.auth, e.tenant, e.applied, e.has_token })
    end)

    it("rejects a wrong SK with 401 APIGW.0301 echoing the canonical request with | for newlines", function()
      local code, doc, cr = unassign({ sk = "not-the-secret" })
      assert.equal(401, code)
      assert.same({ error_code = "APIGW.0301", request_id = "rid-aksk",
        error_msg = PREFIX .. "verify aksk signature fail, canonicalRequest:" .. cr:gsub("\n", "|") }, doc)
      assert.truthy(doc.error_msg:find("canonicalRequest:POST|/v1/instances/unassign/||content-type:application/json|", 1, true))
      assert.equal("u1", sim.bindings().i1)
    end)

    it("rejects a tampered body and a wrong signature the same way", function()
      local headers = sim.sign({ method = "POST", path = API, body = BODY, ak = "AK-PERM", sk = "SK-perm-secret",
                                 headers = { ["x-project-id"] = PROJECT, ["x-request-id"] = "r" } })
      local tampered = BODY:gsub("u1", "u2")
      local code, doc = sim.request_json("POST", API, headers, tampered)
      assert.equal(401, code)
      assert.truthy(doc.error_msg:find("verify aksk signature fail, canonicalRequest:POST|", 1, true))
      code, doc = unassign({ signature = string.rep("0", 64) })
      assert.equal(401, code)
      assert.equal("APIGW.0301", doc.error_code)
      assert.equal("u1", sim.bindings().i1)
    end)

    it("answers an unknown AK with 'ak ... not exist'", function()
      local code, doc = unassign({ ak = "AK-NOPE" })
      assert.equal(401, code)
      assert.equal(PREFIX .. "ak AK-NOPE not exist", doc.error_msg)
    end)

    it("accepts X-Sdk-Date within 15 minutes, rejects it beyond as 'signature expired' with the server time", function()
      local old = os.date("!%Y%m%dT%H%M%SZ", os.time() - 16 * 60)
      local code, doc = unassign({ headers = { ["x-sdk-date"] = old } })
      assert.equal(401, code)
      assert.equal("APIGW.0301", doc.error_code)
      local server = doc.error_msg:match("^" .. PREFIX:gsub("%p", "%%%0") ..
        "calc aksk signature fail:signature expired, signature time:" .. old .. ",server time:(%d+T%d+Z)$")
      assert.truthy(server, doc.error_msg)
      local recent = os.date("!%Y%m%dT%H%M%SZ", os.time() - 14 * 60)
      assert.equal(200, (unassign({ headers = { ["x-sdk-date"] = recent } })))
    end)

    it("measures the window on the simulator's clock", function()
      local clock = sim.advance(20 * 60)
      local code, doc = unassign({})
      assert.equal(401, code)
      assert.truthy(doc.error_msg:find("signature expired", 1, true))
      assert.truthy(doc.error_msg:find("server time:" .. clock.sdk_date:sub(1, 11), 1, true))
      assert.equal(200, (unassign({ headers = { ["x-sdk-date"] = clock.sdk_date } })))
      -- the Date header tells the simulated time (a client can estimate its skew from it)
      local _, _, h = sim.request_json("POST", API, {}, "{}")
      local hh, mm, ss = h.date:match(" (%d%d):(%d%d):(%d%d) GMT$")
      local diff = (hh * 3600 + mm * 60 + ss - math.floor(clock.now) % 86400) % 86400
      assert.is_true(diff < 60 or diff > 86400 - 60, h.date)
    end)

    it("requires X-Project-Id, of a project the key may act for", function()
      local code, doc = unassign({ project = false })
      assert.equal(401, code)
      assert.equal(PREFIX .. "x-project-id not found, a project-level API needs it", doc.error_msg)
      code, doc = unassign({ project = "p-other" })
      assert.equal(401, code)
      assert.equal(PREFIX .. "ak AK-PERM has no permission on project p-other", doc.error_msg)
      assert.same({ i1 = "u1", i2 = "u2" }, sim.bindings())
    end)

    it("temporary keys need X-Security-Token, signed and right", function()
      local temp = { ak = "AK-TEMP", sk = "SK-temp-secret" }
      local code, doc = unassign(temp)
      assert.equal(401, code)
      assert.equal(PREFIX .. "x-security-token not found, a temporary ak needs it", doc.error_msg)
      code, doc = unassign({ ak = "AK-TEMP", sk = "SK-temp-secret", headers = { ["x-security-token"] = "wrong" } })
      assert.equal(401, code)
      assert.equal(PREFIX .. "security token invalid", doc.error_msg)
      -- sent but left out of SignedHeaders
      local headers = sim.sign({ method = "POST", path = API, body = BODY, ak = "AK-TEMP", sk = "SK-temp-secret",
                                 headers = { ["x-project-id"] = PROJECT, ["x-request-id"] = "r" } })
      headers["x-security-token"] = "sec-token-1"
      code, doc = sim.request_json("POST", API, headers, BODY)
      assert.equal(401, code)
      assert.equal(PREFIX .. "verify aksk signature fail, x-security-token is not signed", doc.error_msg)
      assert.equal("u1", sim.bindings().i1)
      -- like the gateway, the echo of a failed signature shows every signed header, the security
      -- token included: a client must not pass such a message on unredacted
      code, doc = unassign({ ak = "AK-TEMP", sk = "wrong", headers = { ["x-security-token"] = "sec-token-1" } })
      assert.equal(401, code)
      assert.truthy(doc.error_msg:find("|x-security-token:sec-token-1|", 1, true))
      code, doc = unassign({ ak = "AK-TEMP", sk = "SK-temp-secret", headers = { ["x-security-token"] = "sec-token-1" } })
      assert.equal(200, code)
      assert.equal("0", doc.error_code)
      assert.is_nil(sim.bindings().i1)
    end)

    it("never shows an SK or security token in control output", function()
      unassign({ sk = "wrong" })
      for _, path in ipairs({ "/_sim/state", "/_sim/log", "/_sim/faults", "/_sim/info" }) do
        local _, _, raw = sim.request("GET", path)
        assert.is_nil(raw:find("secret", 1, true), path)
        assert.is_nil(raw:find("sec-token", 1, true), path)
      end
    end)
  end)
end)
