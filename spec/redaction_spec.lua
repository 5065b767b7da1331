-- Answers are decoded as the server sent them; only the text that leaves the library (messages,
-- codes, body excerpts, journal and report reasons) is redacted (src/redact.c). Against the
-- running simulator: its own answers, and `respond`/`api_error` faults for echoing servers.
local koophone = require "koophone"
local sim = require "helpers.sim"

-- A realistic token (IAM tokens are several KB) in which every 16-byte slice is unique, unlike
-- sim.token, so that a slice from its middle is told apart from its start.
local function random_token(n)
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  local out, x = {}, 20261201
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    local k = math.floor(x / 65536) % 64 + 1
    out[i] = alphabet:sub(k, k)
  end
  return table.concat(out)
end
local TOKEN = "MIIT" .. random_token(6000)

-- The 16-byte slices of a secret, as a set (made once per secret).
local slices_of = setmetatable({}, { __mode = "k" })
local function slices(secret)
  local set = slices_of[secret]
  if not set then
    set = {}
    for i = 1, #secret - 15 do set[secret:sub(i, i + 15)] = true end
    slices_of[secret] = set
  end
  return set
end

-- Fails when any 16-byte slice of `secret` (the whole secret when shorter) occurs in s.
local function assert_no_slice(secret, s, what)
  assert.equals("string", type(s), what .. ": not a string")
  if #secret < 16 then
    assert(not s:find(secret, 1, true), ("%s: the secret occurs in %q"):format(what, s:sub(1, 120)))
    return
  end
  local set = slices(secret)
  for i = 1, #s - 15 do
    assert(not set[s:sub(i, i + 15)],
           ("%s: 16 bytes of the secret at byte %d of %q"):format(what, i, s:sub(1, 120)))
  end
end

local function assert_error_clean(secret, err, what)
  assert_no_slice(secret, err.message, what .. " err.message")
  assert_no_slice(secret, err.code, what .. " err.code")
  assert_no_slice(secret, tostring(err), what .. " tostring(err)")
end

local function read_all(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

describe("redaction", function()
  local list = sim.make_pairs(3, "rd")

  describe("a success answer is read as sent whatever the token", function()
    -- each of these occurs in the simulator's success answer: in its syntax, keys or error_code
    for _, token in ipairs { "0", "t", "data", "job", "{", ":" } do
      it(("with the token %q: unassigned, with its task id and every job"):format(token), function()
        sim.reset(list, { token = token })
        local client = koophone.new(sim.client_opts("http"))
        local res, err = client:unassign(token, list)
        client:close()
        assert.is_nil(err, "token " .. token .. ": the success came back as an error")
        assert.equals("unassigned", res.outcome)
        assert.equals("0", res.error_code)
        assert.matches("^RM_%x+$", res.task_id)
        assert.equals(#list, #res.jobs)
        local ids = {}
        for _, job in ipairs(res.jobs) do
          assert.matches("^%x+$", job.job_id)
          ids[#ids + 1] = job.instance_id
        end
        table.sort(ids)
        assert.same({ "rd0001", "rd0002", "rd0003" }, ids)
        assert.same({}, sim.bindings())
      end)
    end

    it("in a bulk run with the token \"0\": every pair unassigned, the journal says so", function()
      local path = os.tmpname()
      local pairs = sim.make_pairs(6, "rz")
      sim.reset(pairs, { token = "0" })
      local client = koophone.client(sim.client_opts("http", { retry = false }))
      local report = assert(client:unassign_all("0", sim.copy_pairs(pairs),
                                                { batch_size = 2, journal = path }))
      client:close()
      local journal = read_all(path)
      os.remove(path)
      assert.equals(6, report.counts.unassigned)
      assert.equals(0, report.counts.failed)
      assert.is_nil(journal:find('"clear"', 1, true))
      assert.same({}, sim.bindings())
      assert.equals(3, #sim.log()) -- sent once each
    end)

    it("keeps a success's ids as sent when they hold the token; error_msg is redacted", function()
      sim.reset(list, { token = "abc" })
      sim.faults({ type = "respond", status = 200,
        body = '{"error_code":"0","error_msg":"ok abc","data":{"task_id":"RM_abc",'
          .. '"cmd_jobs":[{"instance_id":"rd0001","job_id":"abc1"}]}}' })
      local client = koophone.new(sim.client_opts("http"))
      local res, err = client:unassign("abc", list)
      client:close()
      assert.is_nil(err)
      assert.equals("ok [REDACTED]", res.error_msg)
      assert.equals("RM_abc", res.task_id)
      assert.equals("abc1", res.jobs[1].job_id)
    end)
  end)

  describe("an error answer that echoes pieces of the token", function()
    local cases = {
      { "a slice from its middle", { code = "KOOPHONE.API.1000",
          msg = "token " .. TOKEN:sub(2000, 2040) .. " rejected" }, "token [REDACTED] rejected" },
      { "the token without its first bytes", { code = "KOOPHONE.API.1000",
          msg = "token " .. TOKEN:sub(5) .. " rejected" }, "token [REDACTED] rejected" },
      { "the token split across the code and the message", { code = TOKEN:sub(1, 3001),
          msg = TOKEN:sub(3002) }, "[REDACTED]", "[REDACTED]" },
      { "a slice of 16 bytes exactly between other text", { code = "KOOPHONE.API.1000",
          msg = "a" .. TOKEN:sub(100, 115) .. "b" }, "a[REDACTED]b" },
    }
    for _, case in ipairs(cases) do
      local what, fault, message, code = case[1], case[2], case[3], case[4]
      it("redacts " .. what .. " in err.message, err.code and tostring(err)", function()
        sim.reset(list, { token = TOKEN })
        sim.faults({ type = "api_error", status = 400, code = fault.code, msg = fault.msg })
        local client = koophone.new(sim.client_opts("http"))
        local res, err = client:unassign(TOKEN, list)
        client:close()
        assert.is_nil(res)
        assert.equals("api", err.kind)
        assert.equals(message, err.message)
        if code then assert.equals(code, err.code) end
        assert_error_clean(TOKEN, err, what)
      end)
    end

    it("redacts a slice the server wrote with JSON escapes (redacted once decoded)", function()
      local escaped = TOKEN:sub(500, 540):gsub(".", function(c)
        return ("\\u%04x"):format(c:byte())
      end)
      sim.reset(list, { token = TOKEN })
      sim.faults({ type = "respond", status = 400,
        body = '{"error_code":"KOOPHONE.API.1000","error_msg":"token ' .. escaped .. '"}' })
      local _, err = koophone.new(sim.client_opts("http")):unassign(TOKEN, list)
      assert.equals("token [REDACTED]", err.message)
      assert_error_clean(TOKEN, err, "escaped")
    end)

    it("redacts a slice in the excerpt of a body that is not JSON", function()
      sim.reset(list, { token = TOKEN })
      sim.faults({ type = "respond", status = 502, headers = { ["Content-Type"] = "text/html" },
                   body = "<p>" .. TOKEN:sub(77, 4000) .. "</p>" })
      local client = koophone.new(sim.client_opts("http"))
      local _, err = client:unassign(TOKEN, list)
      client:close()
      assert.equals("http", err.kind)
      assert.equals("<p>[REDACTED]</p>", err.message)
      assert_error_clean(TOKEN, err, "502 body")
    end)

    it("keeps a 15-byte piece of a long token: only 16 bytes or more count as the token", function()
      sim.reset(list, { token = TOKEN })
      sim.faults({ type = "api_error", status = 400, code = "KOOPHONE.API.1000",
                   msg = "x " .. TOKEN:sub(300, 314) .. " y" })
      local _, err = koophone.new(sim.client_opts("http")):unassign(TOKEN, list)
      assert.equals("x " .. TOKEN:sub(300, 314) .. " y", err.message)
    end)

    it("keeps them out of a bulk run's journal, results and reasons", function()
      local path = os.tmpname()
      local pairs = sim.make_pairs(4, "rj")
      sim.reset(pairs, { token = TOKEN })
      -- two pairs per request: one request is rejected with pieces of the token in the code and
      -- message, then the token is refused (401), echoed without its first bytes: the run stops
      sim.faults({ type = "api_error", status = 400, code = "X" .. TOKEN:sub(10, 50),
                   msg = TOKEN:sub(60, 90) .. " / " .. TOKEN:sub(91, 200) },
                 { type = "api_error", status = 401, code = "APIGW.0301",
                   msg = "bad token " .. TOKEN:sub(3), count = -1 })
      local client = koophone.client(sim.client_opts("http", { retry = false }))
      local seen = {}
      local report = assert(client:unassign_all(TOKEN, sim.copy_pairs(pairs), {
        batch_size = 2, concurrency = 1, journal = path,
        on_result = function(e) seen[#seen + 1] = e end }))
      client:close()
      local journal = read_all(path)
      os.remove(path)
      assert.equals(4, report.counts.failed)
      assert.equals("APIGW.0301", report.aborted.code)
      assert.matches("^bad token %[REDACTED%]", report.aborted.message)
      assert.equals(4, #seen)
      for _, e in ipairs(seen) do
        assert.is_not_nil(e.err)
        assert_error_clean(TOKEN, e.err, "result " .. e.instance_id)
        if e.reason then assert_no_slice(TOKEN, e.reason, "reason " .. e.instance_id) end
      end
      assert.is_truthy(journal:find("[REDACTED]", 1, true))
      assert_no_slice(TOKEN, journal, "journal")
    end)
  end)

  describe("a token shorter than 16 bytes", function()
    it("is redacted wherever it occurs whole, a run of copies at once", function()
      sim.reset(list, { token = "abc" })
      sim.faults({ type = "api_error", status = 400, code = "KOOPHONE.API.1000",
                   msg = "xabcx abcabc ab" })
      local _, err = koophone.new(sim.client_opts("http")):unassign("abc", list)
      assert.equals("x[REDACTED]x [REDACTED] ab", err.message)
      assert_error_clean("abc", err, "3-byte token")
    end)

    it("of 15 bytes is redacted whole, a part of it is kept", function()
      local token = TOKEN:sub(1, 15)
      sim.reset(list, { token = token })
      sim.faults({ type = "api_error", status = 400, code = "KOOPHONE.API.1000",
                   msg = token .. " and " .. token:sub(2) })
      local _, err = koophone.new(sim.client_opts("http")):unassign(token, list)
      assert.equals("[REDACTED] and " .. token:sub(2), err.message)
    end)
  end)
end)
