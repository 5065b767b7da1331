-- Security properties against the running simulator: the token never comes back out, header
-- injection is refused before anything is sent, redirects never carry the token, the body cap
-- stops reading, and TLS verification only goes off with insecure = true.
local koophone = require "koophone"
local sim = require "helpers.sim"

local TOKEN = sim.token

-- Every string the module handed back for one call, tostring(err) included.
local function emitted(res, err)
  local out = sim.strings({ res, err })
  if err ~= nil then out[#out + 1] = tostring(err) end
  return out
end

local function assert_no_token(res, err, what)
  for _, s in ipairs(emitted(res, err)) do
    assert(not s:find(TOKEN, 1, true), what .. ": the token came back in " .. s:sub(1, 80))
    assert(not s:find(TOKEN:sub(1, 32), 1, true), what .. ": a piece of the token came back")
  end
end

-- Peak resident memory of this process in KiB (Linux).
local function peak_rss_kib()
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmHWM:%s*(%d+)"))
end

describe("security", function()
  local list = sim.make_pairs(2, "sec")

  describe("the token never appears in anything the module returns", function()
    local faults, echo_ok = sim.token_faults()
    for _, scheme in ipairs { "http", "https" } do
      for _, fault in ipairs(faults) do
        local what = scheme .. " " .. fault.type .. " " .. tostring(fault.status or "")
        it("under fault " .. what, function()
          sim.reset(list)
          sim.faults(fault)
          local client = koophone.new(sim.client_opts(scheme, { max_response_bytes = 2048 }))
          local res, err = client:unassign(TOKEN, list)
          client:close()
          assert.is_true(res ~= nil or err ~= nil)
          assert_no_token(res, err, what)
        end)
      end
    end

    it("on a timeout", function()
      sim.reset(list)
      sim.faults({ type = "delay", seconds = 1 })
      local client = koophone.new(sim.client_opts("http"))
      local res, err = client:unassign(TOKEN, list, { timeout = 0.1 })
      assert.is_nil(res)
      assert.equals("timeout", err.kind)
      assert_no_token(res, err, "timeout")
    end)

    it("on connection refused", function()
      local client = koophone.new { endpoint = "http://127.0.0.1:1" }
      local res, err = client:unassign(TOKEN, list)
      assert.equals("network", err.kind)
      assert_no_token(res, err, "refused")
    end)

    -- a 2xx body echoing the token: its free text (error_msg) is redacted; its identifiers are
    -- data the caller needs byte for byte, kept as sent (README, security)
    it("in the free text of a success answer that echoes it; its ids are kept as sent", function()
      sim.reset(list)
      sim.faults({ type = "respond", status = 200, body = echo_ok })
      local client = koophone.new(sim.client_opts("http"))
      local res, err = client:unassign(TOKEN, list)
      assert.is_nil(err)
      assert.equals("unassigned", res.outcome)
      assert.equals("ok [REDACTED]", res.error_msg)
      assert.equals(TOKEN, res.task_id)
      assert.equals(TOKEN, res.jobs[1].job_id)
    end)

    it("nor in the client's tostring or the error of a bad call", function()
      local client = koophone.new(sim.client_opts("http"))
      assert.is_nil(tostring(client):find(TOKEN, 1, true))
      local ok, msg = pcall(client.unassign, client, TOKEN .. "\n", list)
      assert.is_false(ok)
      assert.is_nil(tostring(msg):find(TOKEN:sub(1, 32), 1, true))
    end)
  end)

  describe("CR, LF and NUL are refused before any request", function()
    local bad = { "\r", "\n", "\0", "\r\nX-Injected: 1" }
    it("in the token, the ids and the request id, with the simulator log empty", function()
      sim.reset(list)
      local client = koophone.new(sim.client_opts("http"))
      local calls = 0
      for _, b in ipairs(bad) do
        local attempts = {
          function() return client:unassign("tok" .. b .. "en", list) end,
          function() return client:unassign(TOKEN, { { user_id = "u" .. b, instance_id = "sec0001" } }) end,
          function() return client:unassign(TOKEN, { { user_id = "u-sec-1", instance_id = "sec" .. b } }) end,
          function() return client:unassign(TOKEN, list, { request_id = "id" .. b }) end,
          function() return koophone.unassign("tok" .. b, list) end,
        }
        for _, call in ipairs(attempts) do
          local ok, msg = pcall(call)
          assert.is_false(ok)
          assert.matches("koophone%.unassign: bad argument", msg)
          calls = calls + 1
        end
      end
      assert.equals(#bad * 5, calls)
      assert.same({}, sim.log())
    end)
  end)

  describe("a redirect never carries the token", function()
    for _, status in ipairs { 301, 302, 303, 307, 308 } do
      it("for " .. status .. ": not followed, the other host sees nothing", function()
        sim.reset(list)
        sim.faults({ type = "redirect", status = status })
        local client = koophone.new(sim.client_opts("http"))
        local res, err = client:unassign(TOKEN, list)
        assert.is_nil(res)
        assert.equals("http", err.kind)
        assert.equals(status, err.status)
        assert.same({}, sim.target_log())
      end)
    end
  end)

  describe("a body over max_response_bytes", function()
    for _, chunked in ipairs { false, true } do
      it("is cut off without being read whole (" .. (chunked and "chunked" or "with length") .. ")", function()
        sim.reset(list)
        sim.faults({ type = "big_body", bytes = 16 * 1024 * 1024, chunked = chunked, count = 3 })
        local client = koophone.new(sim.client_opts("http", { max_response_bytes = 64 * 1024 }))
        local before = peak_rss_kib()
        for _ = 1, 3 do
          local res, err = client:unassign(TOKEN, list)
          assert.is_nil(res)
          assert.equals("decode", err.kind)
          assert.equals("BODY_TOO_LARGE", err.code)
        end
        client:close()
        -- reading 16 MiB into memory would raise the peak by at least that much
        assert.is_true(peak_rss_kib() - before < 8 * 1024)
      end)
    end
  end)

  describe("TLS verification", function()
    it("cannot be turned off by a truthy non-boolean", function()
      for _, v in ipairs { "yes", 1, "true", 0 } do
        local ok, msg = pcall(koophone.new, { endpoint = sim.wrongname_url, insecure = v })
        assert.is_false(ok)
        assert.matches("insecure", msg)
      end
    end)

    it("fails with kind tls for a wrong CA and for a wrong name", function()
      sim.reset(list)
      local cases = {
        { endpoint = sim.https_url, cafile = sim.other_ca },
        { endpoint = sim.wrongname_url, cafile = sim.ca },
        { endpoint = sim.wrongname_url, cafile = sim.ca, insecure = false },
      }
      for _, opts in ipairs(cases) do
        local client = koophone.new(opts)
        local res, err = client:unassign(TOKEN, list)
        assert.is_nil(res)
        assert.equals("tls", err.kind)
        assert.is_false(err.sent)
      end
      assert.same({}, sim.log())
    end)

    it("is not retried by koophone.client: one attempt, and the error says to give the CA", function()
      sim.reset(list)
      local client = koophone.client { endpoint = sim.https_url, cafile = sim.other_ca,
                                       retry = { max_attempts = 5, sleep = function() end } }
      local res, err = client:unassign(TOKEN, list)
      assert.is_nil(res)
      assert.equals("CURLE_PEER_FAILED_VERIFICATION", err.code)
      assert.equals("final", err.class)
      assert.equals(1, err.attempts)
      assert.matches("cafile", err.message)
      assert.same({}, sim.log())
    end)

    it("is off only with insecure = true", function()
      sim.reset(list)
      local client = koophone.new { endpoint = sim.wrongname_url, insecure = true }
      local res, err = client:unassign(TOKEN, list)
      assert.is_nil(err)
      assert.equals("unassigned", res.outcome)
    end)
  end)
end)
