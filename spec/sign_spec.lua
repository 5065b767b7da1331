-- koophone.sign (src/sign.c) and koophone.aksk (src/aksk.c): the published SDK-HMAC-SHA256 test
-- vectors of auth-notes.md 1.6 reproduced exactly, the canonicalisation rules, argument errors,
-- the credentials object; and one signature checked against the simulator's own verifier.
local koophone = require "koophone"
local sim = require "helpers.sim"

local VPC = "https://service.region.example.com/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs?limit=2&marker=13551d6b-755d-4757-b956-536f674975c0"
local UNASSIGN = "https://koophone.myhuaweicloud.com/v1/instances/unassign"
local BODY = '{"user_instances":[{"user_id":"u1","instance_id":"i1"}]}'
local PROJECT = "0123456789abcdef0123456789abcdef"
local EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

local function auth(ak, signed, signature)
  return ("SDK-HMAC-SHA256 Access=%s, SignedHeaders=%s, Signature=%s"):format(ak, signed, signature)
end

local function raises(text, fn, ...)
  local ok, msg = pcall(fn, ...)
  assert.is_false(ok, "expected an error with " .. text)
  assert.is_string(msg)
  assert.matches(text, msg, 1, true)
  return msg
end

-- opts of a valid call, with `extra` merged in
local function opts(extra)
  local o = { ak = "AccessKey", sk = "SecretKey", method = "GET", url = "https://h.example.com/p",
              headers = { ["X-Sdk-Date"] = "20200101T000000Z" } }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- the canonical request koophone.sign signs for opts(extra)
local function canonical(extra)
  local o = opts(extra)
  o.debug = true
  local _, _, cr = koophone.sign(o)
  return cr
end

describe("koophone.sign", function()
  describe("published test vectors (auth-notes.md 1.6)", function()
    local D_URL = "https://service.endpoint.myhuaweicloud.com/resources?size=1"
    local vectors = {
      { "A: APIG doc worked example", "QTWAOYTTINDUT2QVKYUC", "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc", "GET", VPC,
        { ["Content-Type"] = "application/json", ["X-Sdk-Date"] = "20191115T033655Z" }, nil,
        "content-type;host;x-sdk-date", "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe" },
      { "B: Java testAKSKSigner", "AccessKey", "SecretKey", "GET", VPC, { ["X-Sdk-Date"] = "20191115T033655Z" }, nil,
        "host;x-sdk-date", "fd95e7da6f695cfb4cabbb9d6b0968aec155bc576b064835282473539ae9ea1d" },
      { "C: Java testAKSKSigner2 (POST)", "AccessKey", "SecretKey", "POST",
        "https://service.region.example.com/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpc/123",
        { ["X-Sdk-Date"] = "20191115T033655Z" }, '{"key":"value"}',
        "host;x-sdk-date", "b5649aa774f6cac7437631662f08815fc65c70e40e486df6db2436ce68902771" },
      { "D: Python test_signer1", "AccessKey", "SecretKey", "GET", D_URL, { ["X-Sdk-Date"] = "20200608T023900Z" }, "",
        "host;x-sdk-date", "cfb4171acec81de07d50e53d57eb77edd537414d66ddb1d7d780f128e12cd842" },
      { "E: Python test_signer2 (POST)", "AccessKey", "SecretKey", "POST", D_URL, { ["X-Sdk-Date"] = "20200608T023900Z" },
        '{"name":"test","id":1}',
        "host;x-sdk-date", "436b1ac0a1ae03705934bb70ef2f2e09f7bfed2117d731a38235053199323a1f" },
      -- the Go SDK signs no host when none was set: a URL that is only a path signs none
      { "F: Go TestSigner_Sign test1 (no host)", "AccessKey", "SecretKey", "GET", "/path?limit=1",
        { ["X-Sdk-Date"] = "20060102T150405Z" }, nil,
        "x-sdk-date", "5a2ce64c865e0e6046321c6f3d5a77ba8413eeaf355c3166c03d58d02ac79624" },
      { "G: Go test2 (body with the encoder's trailing newline)", "AccessKey", "SecretKey", "POST", "/path?key=value",
        { ["X-Sdk-Date"] = "20060102T150405Z" }, '{"Name":"test","Id":1}\n',
        "x-sdk-date", "cecc2af119b18ab70b4d094c0750f3b42c02f254903179a0fc2cc72fc9db4f59" },
      { "KooPhone unassign (ours)", "AccessKey", "SecretKey", "POST", UNASSIGN, { ["X-Sdk-Date"] = "20250101T000000Z" }, BODY,
        "host;x-sdk-date", "97bfc312a403939dfaa643ae8359e6602e6852ced31085d36b80a5613262d867" },
      { "KooPhone unassign with project and content type (ours)", "AccessKey", "SecretKey", "POST", UNASSIGN,
        { ["X-Sdk-Date"] = "20250101T000000Z", ["Content-Type"] = "application/json", ["X-Project-Id"] = PROJECT }, BODY,
        "content-type;host;x-project-id;x-sdk-date", "e49fcb7b0f253fcb817a3346f3ba2c80f4f52f6b11c25dbb46edc0da0421b418" },
    }
    for _, v in ipairs(vectors) do
      it("vector " .. v[1], function()
        local value, date = koophone.sign { ak = v[2], sk = v[3], method = v[4], url = v[5], headers = v[6], body = v[7] }
        assert.equal(auth(v[2], v[8], v[9]), value)
        assert.equal(v[6]["X-Sdk-Date"], date)
      end)
    end

    it("vector A step by step: the canonical request and its published hash", function()
      local _, _, cr = koophone.sign { ak = "QTWAOYTTINDUT2QVKYUC", sk = "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc",
        method = "GET", url = VPC, headers = { ["Content-Type"] = "application/json", ["X-Sdk-Date"] = "20191115T033655Z" },
        debug = true }
      assert.equal(table.concat({ "GET", "/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs/",
        "limit=2&marker=13551d6b-755d-4757-b956-536f674975c0",
        "content-type:application/json\nhost:service.region.example.com\nx-sdk-date:20191115T033655Z\n",
        "content-type;host;x-sdk-date", EMPTY_SHA256 }, "\n"), cr)
      assert.equal("b25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a", sim.openssl_sha256(cr))
    end)

    it("KooPhone vector step by step: the canonical request's published hash", function()
      local _, _, cr = koophone.sign { ak = "AccessKey", sk = "SecretKey", method = "POST", url = UNASSIGN,
        headers = { ["X-Sdk-Date"] = "20250101T000000Z" }, body = BODY, debug = true }
      assert.equal("5458c9b6c58248dc0a443c41bc1f5246bf7d5d222452f39dd2590e384c965268", sim.openssl_sha256(cr))
      assert.equal("a0640738828bab08a0992c984eaf5b8fe35d4e32bf6fb98cefddb0ba4880e934", cr:match("(%x+)$"))
    end)
  end)

  describe("canonical request", function()
    it("canonical query string of the SDK test (encoding, byte order, repeated names)", function()
      local cr = canonical { url = "/?test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29&path=%2Ftmp%2F123&multi=3&multi=1&multi=2&limit=1&enable=true" }
      assert.equal("enable=true&limit=1&multi=1&multi=2&multi=3&path=%2Ftmp%2F123&test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29",
                   cr:match("^GET\n/\n([^\n]*)\n"))
    end)

    it("query: names sorted before values, '=' kept for empty values, '+' and escapes as bytes, fragment dropped", function()
      local cr = canonical { url = "https://h/p?b=2&a-b=1&a=z&a=&flag&sp=a+b%20c&&x=%zz#frag" }
      assert.equal("a=&a=z&a-b=1&b=2&flag=&sp=a%2Bb%20c&x=%25zz", cr:match("^GET\n/p/\n([^\n]*)\n"))
    end)

    -- The SDKs sort the names and values they are given, then encode them: "_" < "|" but
    -- "%7C" < "_", "z" < "é" but "%C3%A9" < "z". "%7E" and "~" are the same value.
    it("query: names, then the values of a repeated name, sorted by their decoded text, as the SDKs sort", function()
      local cr = canonical { url = "/?v=%7C&v=_&v=a%2Bb&v=a%20c&v=a%20b&v=%C3%A9&v=z&v=~&v=%7E&k%7Cx=1&k_x=2&%C3%A9=1&z=1" }
      assert.equal("k_x=2&k%7Cx=1&v=_&v=a%20b&v=a%20c&v=a%2Bb&v=z&v=%7C&v=~&v=~&v=%C3%A9&z=1&%C3%A9=1",
                   cr:match("^GET\n/\n([^\n]*)\n"))
    end)

    -- Queries and the canonical query the official Node.js SDK core (@huaweicloud/huaweicloud-sdk-core
    -- 3.1.211, AKSKSigner.CanonicalQueryString) made of them: each one differs from an encoded-text order.
    it("query: the canonical query of the official Node.js SDK for repeated and non-ASCII names", function()
      local sdk = {
        { "%C3%A9=9*&%C3%A9=%26*&%C3%A9=%E4%B8%80", "%C3%A9=%26%2A&%C3%A9=9%2A&%C3%A9=%E4%B8%80" },
        { "%F0%9F%98%80=%C2%A0&%F0%9F%98%80=%26%C3%A9&k1=.", "k1=.&%F0%9F%98%80=%26%C3%A9&%F0%9F%98%80=%C2%A0" },
        { "k0=%C3%A9%26a&k0=%E4%B8%80Z%F0%9F%98%80&k0=0-%20", "k0=0-%20&k0=%C3%A9%26a&k0=%E4%B8%80Z%F0%9F%98%80" },
        { "z=b&z=-%20&k1=!.&k1=%C2%A0~&k2=9%E4%B8%80!&k2=-%7C&k1=*%2F&k2=%3D",
          "k1=%21.&k1=%2A%2F&k1=%C2%A0~&k2=-%7C&k2=9%E4%B8%80%21&k2=%3D&z=-%20&z=b" },
        { "*~0=-&*~0=%F0%9F%98%80A&*~0=.%E4%B8%80&a=*%20&k1=b%3D&k1=A%25",
          "%2A~0=-&%2A~0=.%E4%B8%80&%2A~0=%F0%9F%98%80A&a=%2A%20&k1=A%25&k1=b%3D" },
        { "~=9_%3D&~=.-&~=%3D", "~=.-&~=9_%3D&~=%3D" },
        { "%25=z&%25=%7Ca*&%C2%A0=*0", "%25=z&%25=%7Ca%2A&%C2%A0=%2A0" },
      }
      for _, v in ipairs(sdk) do
        assert.equal(v[2], canonical({ url = "/?" .. v[1] }):match("^GET\n/\n([^\n]*)\n"), v[1])
      end
    end)

    it("path: segments decoded then encoded (no double encoding), a trailing / added, none for the root", function()
      assert.equal("/a%20b/c%2Fd/%C3%A9~x/", canonical({ url = "https://h/a%20b/c%2fd/%c3%a9~x" }):match("^GET\n([^\n]*)\n"))
      assert.equal("/v1/x/", canonical({ url = "https://h/v1/x/" }):match("^GET\n([^\n]*)\n"))
      assert.equal("/", canonical({ url = "https://h" }):match("^GET\n([^\n]*)\n"))
      assert.equal("/", canonical({ url = "https://h?q=1" }):match("^GET\n([^\n]*)\n"))
    end)

    it("host: the scheme's default port left out, any other port kept", function()
      local function host(url) return canonical({ url = url }):match("\nhost:([^\n]*)\n") end
      assert.equal("h.example.com", host("https://h.example.com:443/p"))
      assert.equal("h.example.com", host("http://h.example.com:80/p"))
      assert.equal("h.example.com:8443", host("https://h.example.com:8443/p"))
      assert.equal("127.0.0.1:80", host("https://127.0.0.1:80/p"))
      assert.equal("[::1]:8080", host("http://[::1]:8080/p"))
      assert.equal("[::1]", host("http://[::1]/p"))
      -- a Host header given is signed instead
      assert.equal("other:1", canonical({ headers = { Host = "other:1", ["X-Sdk-Date"] = "20200101T000000Z" } })
                                :match("\nhost:([^\n]*)\n"))
    end)

    it("headers: lower-cased, values trimmed, sorted; names with _ and Authorization not signed", function()
      local value = koophone.sign(opts { headers = { ["X-Sdk-Date"] = "20200101T000000Z", ["X_Custom"] = "skip",
        ["Zeta"] = "  z \t", ["a-first"] = "1", Authorization = "old", ["Content-Type"] = "application/json" } })
      assert.matches("SignedHeaders=a-first;content-type;host;x-sdk-date;zeta, ", value, 1, true)
      local cr = canonical { headers = { ["X-Sdk-Date"] = "20200101T000000Z", ["X_Custom"] = "skip", ["Zeta"] = "  z \t" } }
      assert.equal("host:h.example.com\nx-sdk-date:20200101T000000Z\nzeta:z\n\nhost;x-sdk-date;zeta",
                   cr:match("\n(host:.-)\n%x+$"))
    end)

    it("payload: hex SHA-256 of the exact body, or UNSIGNED-PAYLOAD when X-Sdk-Content-Sha256 says so", function()
      assert.equal(EMPTY_SHA256, canonical():match("\n(%x+)$"))
      assert.equal(sim.openssl_sha256("a\0b\n"), canonical({ body = "a\0b\n" }):match("\n(%x+)$"))
      local cr = canonical { body = "ignored", headers = { ["X-Sdk-Date"] = "20200101T000000Z",
                                                          ["X-Sdk-Content-Sha256"] = " UNSIGNED-PAYLOAD " } }
      assert.equal("host;x-sdk-content-sha256;x-sdk-date\nUNSIGNED-PAYLOAD", cr:match("\n([^\n]*\n[^\n]*)$"))
      local value = koophone.sign(opts { body = "ignored", headers = { ["X-Sdk-Date"] = "20200101T000000Z",
                                                                      ["X-Sdk-Content-Sha256"] = "UNSIGNED-PAYLOAD" } })
      assert.matches("SignedHeaders=host;x%-sdk%-content%-sha256;x%-sdk%-date, Signature=%x+$", value)
    end)

    it("the signature is hex HMAC-SHA256 of the string to sign, keyed with the SK (checked with openssl)", function()
      local value, date, cr = koophone.sign(opts { sk = "a secret with 'quotes'", debug = true })
      local sts = "SDK-HMAC-SHA256\n" .. date .. "\n" .. sim.openssl_sha256(cr)
      assert.equal(sim.openssl_sha256(sts, "a secret with 'quotes'"), value:match("Signature=(%x+)$"))
    end)
  end)

  it("without X-Sdk-Date signs the current UTC time and returns it", function()
    local before = os.time()
    local value, date, cr = koophone.sign { ak = "AccessKey", sk = "SecretKey", method = "POST", url = UNASSIGN,
                                            body = BODY, debug = true }
    assert.matches("^%d%d%d%d%d%d%d%dT%d%d%d%d%d%dZ$", date)
    local t = os.time { year = tonumber(date:sub(1, 4)), month = tonumber(date:sub(5, 6)), day = tonumber(date:sub(7, 8)),
                        hour = tonumber(date:sub(10, 11)), min = tonumber(date:sub(12, 13)), sec = tonumber(date:sub(14, 15)) }
    local after = os.time()
    local utc_offset = os.time(os.date("*t", before)) - os.time(os.date("!*t", before))
    assert.is_true(before <= t + utc_offset and t + utc_offset <= after, date)
    assert.matches("\nx-sdk-date:" .. date .. "\n", cr, 1, true)
    assert.matches("SignedHeaders=host;x-sdk-date, ", value, 1, true)
  end)

  it("matches the simulator's independent verifier (POST /_sim/aksk/sign-check) for a KooPhone unassign", function()
    local headers = { ["X-Sdk-Date"] = "20261201T101500Z", ["Content-Type"] = "application/json",
                      ["X-Project-Id"] = PROJECT, ["X-Security-Token"] = "temp-token", ["x-request-id"] = "rid-1" }
    local url = "https://koophone.myhuaweicloud.com:8443/v1/instances/unassign"
    local check = sim.control("POST", "/_sim/aksk/sign-check",
      { method = "POST", url = url, headers = headers, body = BODY, ak = "AK-X", sk = "SK-x" })
    local value, _, cr = koophone.sign { ak = "AK-X", sk = "SK-x", method = "POST", url = url, headers = headers,
                                         body = BODY, debug = true }
    assert.equal("content-type;host;x-project-id;x-request-id;x-sdk-date;x-security-token", check.signed_headers)
    assert.equal(check.canonical_request, cr)
    assert.equal(check.authorization, value)
  end)

  it("a request it signs is accepted by the simulator's API Gateway", function()
    sim.control("POST", "/_sim/reset")
    sim.control("POST", "/_sim/seed", {
      tenants = { { name = "t1", project_id = PROJECT, instances = { "i1" }, bindings = { i1 = "u1" } } },
      access_keys = { { ak = "AK-PERM", sk = "SK-perm-secret", project_id = PROJECT } } })
    local headers = { ["Content-Type"] = "application/json", ["X-Project-Id"] = PROJECT, ["x-request-id"] = "rid-sign" }
    local value, date = koophone.sign { ak = "AK-PERM", sk = "SK-perm-secret", method = "POST",
                                        url = sim.http_url .. "/v1/instances/unassign", headers = headers, body = BODY }
    headers.Authorization, headers["X-Sdk-Date"] = value, date
    local code, doc = sim.request_json("POST", "/v1/instances/unassign", headers, BODY)
    assert.equal(200, code)
    assert.equal("0", doc.error_code)
    assert.is_nil(sim.bindings().i1)
    assert.equal("aksk", sim.log()[1].auth)
  end)

  it("a request with repeated query names it signs is accepted by the simulator's API Gateway", function()
    sim.control("POST", "/_sim/reset")
    sim.control("POST", "/_sim/seed", {
      tenants = { { name = "t1", project_id = PROJECT, instances = { "i1" }, bindings = { i1 = "u1" } } },
      access_keys = { { ak = "AK-PERM", sk = "SK-perm-secret", project_id = PROJECT } } })
    local path = "/v1/instances/unassign?v=%7C&v=_&v=a%2Bb&v=a%20b&v=%C3%A9&v=z&v=%7E&k%7Cx=1&k_x=2"
    local headers = { ["Content-Type"] = "application/json", ["X-Project-Id"] = PROJECT, ["x-request-id"] = "rid-q" }
    local value, date = koophone.sign { ak = "AK-PERM", sk = "SK-perm-secret", method = "POST",
                                        url = sim.http_url .. path, headers = headers, body = BODY }
    headers.Authorization, headers["X-Sdk-Date"] = value, date
    local code, doc = sim.request_json("POST", path, headers, BODY)
    assert.equal(200, code, doc.error_msg)
    assert.is_nil(sim.bindings().i1)
  end)

  describe("argument errors", function()
    local cases = {
      { "opts", "bad argument #1 (opts): expected a table, got nil", nil },
      { "sk missing", "koophone.sign: bad argument #1 (opts.sk): expected a non-empty string, got nil", { sk = false } },
      { "sk empty", "koophone.sign: bad argument #1 (opts.sk): expected a non-empty string, got an empty one", { sk = "" } },
      { "ak missing", "koophone.sign: bad argument #1 (opts.ak): expected a non-empty string", { ak = false } },
      { "ak with a comma", "(opts.ak): only printable ASCII without spaces or commas", { ak = "a,b" } },
      { "method", "(opts.method): expected a non-empty string, got number", { method = 1 } },
      { "method with CR", "(opts.method): expected an HTTP method", { method = "GET\r\nX: y" } },
      { "url scheme", "(opts.url): expected an http:// or https:// URL", { url = "ftp://h/p" } },
      { "url with LF", "(opts.url): expected a URL of printable ASCII without spaces", { url = "https://h/p\nX: y" } },
      { "url without host", "(opts.url): the URL has no host", { url = "https:///p" } },
      { "url with user", "(opts.url): a URL with user information cannot be signed", { url = "https://u:p@h/p" } },
      { "body", "(opts.body): expected a string, got table", { body = {} } },
      { "unknown option", "koophone.sign: bad argument #1 (opts): unknown option 'header'", { header = {} } },
      { "headers", "(opts.headers): expected a table, got string", { headers = "x" } },
      { "header value with CR", "(opts.headers['X-A']): contains CR, LF or NUL", { headers = { ["X-A"] = "a\rb" } } },
      { "header value with LF", "(opts.headers['X-A']): contains CR, LF or NUL", { headers = { ["X-A"] = "a\nb" } } },
      { "header value with NUL", "(opts.headers['X-A']): contains CR, LF or NUL", { headers = { ["X-A"] = "a\0b" } } },
      { "header name with LF", "(opts.headers): a name is empty or holds CR, LF, NUL, a space or a separator",
        { headers = { ["X-A\nB"] = "v" } } },
      { "header name with NUL", "(opts.headers): a name is empty", { headers = { ["X\0A"] = "v" } } },
      { "header value not a string", "(opts.headers['X-N']): expected a string, got number", { headers = { ["X-N"] = 1 } } },
      { "X-Sdk-Date format", "(opts.headers['x-sdk-date']): expected UTC as YYYYMMDDTHHMMSSZ",
        { headers = { ["x-sdk-date"] = "2020-01-01T00:00:00Z" } } },
      { "a name twice", "koophone.sign: two headers have the same name (names are case-insensitive)",
        { headers = { ["X-A"] = "1", ["x-a"] = "2" } } },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        if c[3] == nil then
          raises(c[2], koophone.sign)
        else
          local o = opts(c[3])
          for k, v in pairs(c[3]) do if v == false then o[k] = nil end end
          raises(c[2], koophone.sign, o)
        end
      end)
    end

    it("an error never shows the SK", function()
      local msg = raises("two headers", koophone.sign, opts { sk = "TOP-SECRET-SK", headers = { a = "1", A = "2" } })
      assert.is_nil(msg:find("TOP-SECRET-SK", 1, true))
    end)
  end)
end)

describe("koophone.aksk", function()
  local SK, TOKEN = "SK-zyxwvu-very-secret", "SECURITY-TOKEN-abcdefghijklmnop"

  it("keeps ak and project_id readable, not the SK or the security token", function()
    local cred = koophone.aksk { ak = "ABCDEFGH", sk = SK, project_id = PROJECT, security_token = TOKEN }
    assert.equal("ABCDEFGH", cred.ak)
    assert.equal(PROJECT, cred.project_id)
    assert.is_true(cred.temporary)
    assert.is_nil(cred.sk)
    assert.is_nil(cred.security_token)
    assert.is_false(koophone.aksk({ ak = "A", sk = SK, project_id = "p" }).temporary)
  end)

  it("tostring shows at most 4 characters of the AK and of the project, nothing of the secrets", function()
    local s = tostring(koophone.aksk { ak = "ABCDEFGH", sk = SK, project_id = PROJECT, security_token = TOKEN })
    assert.equal("koophone.aksk (AK ABCD\226\128\166, project 0123\226\128\166, temporary)", s)
    assert.equal("koophone.aksk (AK AB, project p)", tostring(koophone.aksk { ak = "AB", sk = SK, project_id = "p" }))
    for _, secret in ipairs({ SK, TOKEN }) do
      for i = 1, #secret - 3 do assert.is_nil(s:find(secret:sub(i, i + 3), 1, true)) end
    end
    assert.is_nil(s:find("ABCDE", 1, true))
  end)

  it("close zeroes the secrets: the object says closed and cannot be used", function()
    local cred = koophone.aksk { ak = "ABCDEFGH", sk = SK, project_id = PROJECT }
    cred:close()
    cred:close()
    assert.equal("koophone.aksk (closed)", tostring(cred))
    assert.is_nil(cred.ak)
  end)

  it("raises on a missing or empty ak or sk, naming the field", function()
    raises("koophone.aksk: bad argument #1 (opts.ak): expected a non-empty string, got nil", koophone.aksk, { sk = SK })
    raises("koophone.aksk: bad argument #1 (opts.sk): expected a non-empty string, got nil", koophone.aksk, { ak = "A" })
    raises("koophone.aksk: bad argument #1 (opts.sk): expected a non-empty string, got an empty one",
           koophone.aksk, { ak = "A", sk = "" })
    raises("(opts.project_id): expected a non-empty string, got number", koophone.aksk, { ak = "A", sk = SK, project_id = 1 })
    raises("koophone.aksk: bad argument #1 (opts): unknown option 'secret'",
           koophone.aksk, { ak = "A", sk = SK, project_id = "p", secret = 1 })
    raises("koophone.aksk: bad argument #1 (opts): expected a table or nothing, got string", koophone.aksk, "AK")
  end)

  -- KooPhone is project-level: its gateway refuses AK/SK requests without X-Project-Id
  it("raises before anything is sent when the project id is missing or empty", function()
    local note = " (KooPhone is a project-level API: every request carries X-Project-Id)"
    raises("koophone.aksk: bad argument #1 (opts.project_id): expected a non-empty string, got nil" .. note,
           koophone.aksk, { ak = "A", sk = SK })
    raises("koophone.aksk: bad argument #1 (opts.project_id): expected a non-empty string, got an empty one" .. note,
           koophone.aksk, { ak = "A", sk = SK, project_id = "" })
  end)

  it("rejects CR, LF and NUL in every field (each becomes a header)", function()
    for _, field in ipairs({ "ak", "sk", "project_id", "security_token" }) do
      for _, bad in ipairs({ "a\rb", "a\nb", "a\0b" }) do
        local o = { ak = "A", sk = SK, project_id = "p" }
        o[field] = bad
        local msg = raises("(opts." .. field .. "): contains CR, LF or NUL", koophone.aksk, o)
        assert.is_nil(msg:find(bad, 1, true))
      end
    end
    raises("(opts.ak): only printable ASCII without spaces or commas", koophone.aksk, { ak = "A B", sk = SK, project_id = "p" })
  end)

  describe("from the environment", function()
    local LUA = os.getenv("KOOPHONE_LUA") or "lua5.4"
    local BUILD = os.getenv("KOOPHONE_BUILD") or "build/lua5.4"
    local NO_CHILD_LEAK_CHECK = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true)
      and "ASAN_OPTIONS=\"$ASAN_OPTIONS:detect_leaks=0\" " or ""

    local function run(env)
      local script = "local ok, c = pcall(require('koophone.core').aksk) io.write(tostring(c), ' ', tostring(ok and c.project_id))"
      local cmd = ("%s env -u HUAWEICLOUD_SDK_AK -u HUAWEICLOUD_SDK_SK -u HUAWEICLOUD_SDK_PROJECT_ID " ..
                   "-u HUAWEICLOUD_SDK_SECURITY_TOKEN %s %s -e %q 2>&1"):format(
        NO_CHILD_LEAK_CHECK, env, LUA, "package.cpath='" .. BUILD .. "/?.so;'..package.cpath " .. script)
      local f = assert(io.popen(cmd))
      local out = f:read("*a")
      f:close()
      return out
    end

    it("koophone.aksk() reads HUAWEICLOUD_SDK_AK, _SK, _PROJECT_ID, _SECURITY_TOKEN", function()
      assert.equal("koophone.aksk (AK ENVA\226\128\166, project p123\226\128\166, temporary) p1234567",
        run("HUAWEICLOUD_SDK_AK=ENVAK123 HUAWEICLOUD_SDK_SK=envsecret HUAWEICLOUD_SDK_PROJECT_ID=p1234567 " ..
            "HUAWEICLOUD_SDK_SECURITY_TOKEN=tok"))
      assert.equal("koophone.aksk (AK ENVA\226\128\166, project p123\226\128\166) p1234567",
        run("HUAWEICLOUD_SDK_AK=ENVAK123 HUAWEICLOUD_SDK_SK=envsecret HUAWEICLOUD_SDK_PROJECT_ID=p1234567 " ..
            "HUAWEICLOUD_SDK_SECURITY_TOKEN="))
    end)

    it("raises naming HUAWEICLOUD_SDK_PROJECT_ID when it is missing or empty", function()
      local note = " (KooPhone is a project-level API: every request carries X-Project-Id) false"
      assert.matches("koophone.aksk: HUAWEICLOUD_SDK_PROJECT_ID: expected a non-empty string, got nil" .. note,
                     run("HUAWEICLOUD_SDK_AK=ENVAK123 HUAWEICLOUD_SDK_SK=envsecret"), 1, true)
      assert.matches("koophone.aksk: HUAWEICLOUD_SDK_PROJECT_ID: expected a non-empty string, got an empty one" .. note,
                     run("HUAWEICLOUD_SDK_AK=ENVAK123 HUAWEICLOUD_SDK_SK=envsecret HUAWEICLOUD_SDK_PROJECT_ID="), 1, true)
    end)

    it("raises naming the variable when AK or SK is missing or empty", function()
      assert.matches("koophone.aksk: HUAWEICLOUD_SDK_SK: expected a non-empty string, got nil false",
                     run("HUAWEICLOUD_SDK_AK=ENVAK123"), 1, true)
      assert.matches("koophone.aksk: HUAWEICLOUD_SDK_AK: expected a non-empty string, got an empty one false",
                     run("HUAWEICLOUD_SDK_AK= HUAWEICLOUD_SDK_SK=x"), 1, true)
    end)
  end)
end)
