-- Client objects: TLS, connection reuse, request ids, headers, lifecycle, and the token's secrecy.
local koophone = require "koophone"
local sim = require "helpers.sim"

local TOKEN = sim.token
local one = sim.make_pairs(1)

describe("TLS", function()
  before_each(function() sim.reset(one) end)

  it("fails with kind tls against a CA it does not trust, never sent", function()
    local c = koophone.new { endpoint = sim.https_url, cafile = sim.other_ca }
    local res, err = c:unassign(TOKEN, one)
    assert.is_nil(res)
    assert.equals("tls", err.kind)
    assert.is_false(err.sent)
    assert.same({}, sim.log())
  end)

  it("fails with kind tls when the certificate names another host", function()
    local res, err = koophone.new { endpoint = sim.wrongname_url, cafile = sim.ca }:unassign(TOKEN, one)
    assert.is_nil(res)
    assert.equals("tls", err.kind)
    assert.same({}, sim.log())
  end)

  it("verifies against the system CAs by default (the test CA is not among them)", function()
    local res, err = koophone.new { endpoint = sim.https_url }:unassign(TOKEN, one)
    assert.is_nil(res)
    assert.equals("tls", err.kind)
  end)

  it("succeeds with the right cafile, and with capath", function()
    assert.is_table((koophone.new { endpoint = sim.https_url, cafile = sim.ca }:unassign(TOKEN, one)))
    sim.reset(one)
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute(("mkdir -p %s && cp %s %s/ && openssl rehash %s 2>/dev/null || c_rehash %s >/dev/null")
      :format(dir, sim.ca, dir, dir, dir)))
    local res, err = koophone.new { endpoint = sim.https_url, capath = dir }:unassign(TOKEN, one)
    os.execute("rm -rf " .. dir)
    assert.is_nil(err)
    assert.equals(1, #res.jobs)
  end)

  it("turns verification off only with insecure = true", function()
    local res = koophone.new { endpoint = sim.wrongname_url, insecure = true }:unassign(TOKEN, one)
    assert.is_table(res)
    assert.is_false(pcall(koophone.new, { insecure = "true" }))
  end)

  it("resumes one TLS connection for many calls", function()
    local c = koophone.new(sim.client_opts("https"))
    for _ = 1, 20 do c:unassign(TOKEN, one) end
    local conns = {}
    for _, e in ipairs(sim.log()) do conns[e.connection] = true end
    assert.equals(1, #(function() local t = {} for k in pairs(conns) do t[#t + 1] = k end return t end)())
  end)
end)

describe("requests", function()
  it("keeps one connection for 100 calls", function()
    sim.reset(sim.make_pairs(100))
    local c = koophone.new(sim.client_opts("http"))
    for _, p in ipairs(sim.make_pairs(100)) do assert(c:unassign(TOKEN, { p })) end
    local log = sim.log()
    assert.equals(100, #log)
    for i, e in ipairs(log) do
      assert.equals(log[1].connection, e.connection)
      assert.equals(i, e.connection_requests)
    end
  end)

  it("sends a distinct UUIDv4 request id on each of 1000 calls", function()
    sim.reset()
    local c = koophone.new(sim.client_opts("http"))
    local seen, n = {}, 0
    for _ = 1, 1000 do
      local _, err = c:unassign(TOKEN, one)
      local id = err.request_id
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", id)
      assert.is_nil(seen[id])
      seen[id] = true
      n = n + 1
    end
    local log = sim.log()
    assert.equals(1000, #log)
    for _, e in ipairs(log) do assert.is_true(seen[e.request_id]) end
    assert.equals(1000, n)
  end)

  it("gives distinct request ids in separate processes", function()
    sim.reset()
    local lua = os.getenv("KOOPHONE_LUA") or "lua5.4"
    local script = ([[package.path="lua/?.lua;"..package.path package.cpath=%q..package.cpath
      local c=require("koophone").new{endpoint=%q} for _=1,50 do c:unassign("t",{{user_id="u",instance_id="i"}}) end]])
      :format((os.getenv("KOOPHONE_BUILD") or "build/lua5.4") .. "/?.so;", sim.http_url)
    local cmd = ("%s -e %q & %s -e %q & wait"):format(lua, script, lua, script)
    assert(os.execute(cmd))
    local seen = {}
    local log = sim.log()
    assert.equals(100, #log)
    for _, e in ipairs(log) do
      assert.is_nil(seen[e.request_id])
      seen[e.request_id] = true
    end
  end)

  it("sends the documented headers and no Expect", function()
    sim.reset(sim.make_pairs(100))
    assert(koophone.new(sim.client_opts("http")):unassign(TOKEN, sim.make_pairs(100)))
    local e = sim.log()[1]
    assert.is_true(e.has_token)
    assert.equals("application/json", e.content_type)
    assert.is_nil(e.expect)
    assert.matches("^koophone%-lua/" .. koophone._VERSION:gsub("%.", "%%.") .. " libcurl/", e.user_agent)
  end)

  it("uses the user_agent option and an endpoint path prefix", function()
    sim.reset(one)
    local c = koophone.new { endpoint = sim.http_url .. "/gw/prefix/", user_agent = "my-tool/2" }
    assert(c:unassign(TOKEN, one))
    local e = sim.log()[1]
    assert.equals("my-tool/2", e.user_agent)
    assert.equals("/gw/prefix/v1/instances/unassign", e.uri)
  end)

  it("goes direct with proxy = false and through a proxy given as an option", function()
    sim.reset(one)
    assert(koophone.new(sim.client_opts("http", { proxy = false })):unassign(TOKEN, one))
    local _, err = koophone.new(sim.client_opts("http", { proxy = "http://127.0.0.1:9" })):unassign(TOKEN, one)
    assert.equals("network", err.kind)
    assert.is_false(err.sent)
  end)

  it("turns a 2210 after libcurl's silent re-send into assumed_unassigned", function()
    sim.reset(sim.make_pairs(2))
    local c = koophone.new(sim.client_opts("http"))
    assert(c:unassign(TOKEN, { sim.make_pairs(2)[1] }))   -- opens the keep-alive connection
    sim.faults { type = "drop_after_apply" }               -- the server applies, then closes unanswered
    local res, err = c:unassign(TOKEN, { sim.make_pairs(2)[2] })
    assert.is_nil(err)
    assert.equals("assumed_unassigned", res.outcome)
    assert.equals(2, res.attempts)
    assert.equals("KOOPHONE.API.2210", res.err.code)
    assert.same({}, sim.bindings())
    local log = sim.log()
    assert.equals(3, #log)
    assert.equals(log[2].request_id, log[3].request_id)
    assert.is_true(log[2].applied)
    assert.is_false(log[3].applied)
  end)
end)

describe("lifecycle", function()
  it("close is idempotent and later calls raise", function()
    local c = koophone.new(sim.client_opts("http"))
    c:close()
    c:close()
    local ok, msg = pcall(c.unassign, c, TOKEN, one)
    assert.is_false(ok)
    assert.matches("koophone: client is closed", msg, 1, true)
    assert.matches("closed", tostring(c))
  end)

  it("is a to-be-closed variable and is collected", function()
    local kept
    if _VERSION == "Lua 5.4" then
      kept = assert(load([[
        local koophone, opts = ...
        local kept
        do
          local c <close> = koophone.new(opts)
          kept = c
        end
        return kept
      ]]))(koophone, sim.client_opts("http"))
    else -- no <close> syntax before 5.4: the metamethod is still there for hosts that call it
      kept = koophone.new(sim.client_opts("http"))
      getmetatable(kept).__close(kept)
    end
    assert.is_false(pcall(kept.unassign, kept, TOKEN, one))
    local weak = setmetatable({}, { __mode = "v" })
    weak[1] = koophone.new(sim.client_opts("http"))
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
  end)

  it("configure replaces the default client", function()
    sim.reset(one)
    koophone.configure { endpoint = "http://127.0.0.1:9" }
    local _, err = koophone.unassign(TOKEN, one)
    assert.equals("CURLE_COULDNT_CONNECT", err.code)
    koophone.configure(sim.client_opts("http"))
    assert(koophone.unassign(TOKEN, one))
  end)
end)

describe("the token", function()
  local function assert_no_token(value)
    for _, s in ipairs(sim.strings(value)) do
      assert.is_nil(s:find(TOKEN, 1, true))
      assert.is_nil(s:find(TOKEN:sub(14, 40), 1, true), "a piece of the token leaked")
    end
  end

  local faults = {
    { type = "drop" }, { type = "reset" }, { type = "error" }, { type = "throttle", retry_after = "1" },
    { type = "unavailable" }, { type = "bad_gateway", status = 504 }, { type = "truncate" },
    { type = "big_body", bytes = 2 * 1024 * 1024 }, { type = "redirect" }, { type = "delay", seconds = 1 },
    { type = "api_error", status = 401, code = "APIGW.0301", msg = "bad token " .. TOKEN },
    { type = "respond", status = 200, body = '{"error_code":"X","error_msg":"echo ' .. TOKEN .. '"}' },
    { type = "respond", status = 500, body = "<p>" .. TOKEN .. "</p>", headers = { ["Content-Type"] = "text/html" } },
  }
  for _, fault in ipairs(faults) do
    it("never appears in an error (" .. fault.type .. ")", function()
      sim.reset(one)
      sim.faults(fault)
      local c = koophone.new(sim.client_opts("http", { timeout = 0.5 }))
      local res, err = c:unassign(TOKEN, one)
      assert.is_nil(res)
      assert_no_token(err)
      assert_no_token(tostring(err))
      assert_no_token(tostring(c))
    end)
  end

  it("is redacted when a server echoes it back", function()
    sim.reset(one)
    sim.faults { type = "api_error", status = 400, code = "KOOPHONE.API.1000", msg = "token " .. TOKEN .. " rejected" }
    local _, err = koophone.new(sim.client_opts("http")):unassign(TOKEN, one)
    assert.equals("token [REDACTED] rejected", err.message)
  end)
end)
