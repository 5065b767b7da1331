-- Programmer mistakes raise a clear error naming the argument, index and field, and nothing is sent.
local koophone = require "koophone"
local sim = require "helpers.sim"

local good = { user_id = "u1", instance_id = "i1" }

local function raises(pattern, fn, ...)
  local ok, msg = pcall(fn, ...)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.is_string(msg)
  assert.matches(pattern, msg, 1, true)
  return msg
end

describe("argument checks of unassign", function()
  local client
  setup(function()
    sim.reset({ good })
    client = koophone.new(sim.client_opts("http"))
  end)
  teardown(function()
    -- the point of every case: the server never saw a request
    assert.same({}, sim.log())
    assert.same({ i1 = "u1" }, sim.bindings())
    client:close()
  end)

  local function call(...) return client:unassign(...) end

  local cases = {
    { "bad argument #1 (token): expected a non-empty string, got nil", nil, { good } },
    { "bad argument #1 (token): expected a non-empty string, got an empty one", "", { good } },
    { "bad argument #1 (token): expected a non-empty string, got number", 42, { good } },
    { "bad argument #1 (token): contains CR, LF or NUL", "abc\r\nX-Evil: 1", { good } },
    { "bad argument #1 (token): contains CR, LF or NUL", "abc\0def", { good } },
    { "bad argument #1 (token): contains CR, LF or NUL", "abc\ndef", { good } },
    { "bad argument #2 (pairs): expected a non-empty array of pairs, got string", "t", "pairs" },
    { "bad argument #2 (pairs): expected a non-empty array of pairs, got an empty table", "t", {} },
    { "bad argument #2 (pairs): expected an array of pairs, got a table with keys other than 1..0", "t", good },
    { "bad argument #2 (pairs): expected an array of pairs, got a table with keys other than", "t",
      { good, nil, { user_id = "u3", instance_id = "i3" } } },
    { "bad argument #2 (pairs[2]): expected a table, got string", "t", { good, "u2:i2" } },
    { "bad argument #2 (pairs[1].instance_id): missing", "t", { { user_id = "u1" } } },
    { "bad argument #2 (pairs[1].user_id): missing", "t", { { instance_id = "i1" } } },
    { "bad argument #2 (pairs[1].instance_id): expected a string, got number", "t", { { user_id = "u", instance_id = 7 } } },
    { "bad argument #2 (pairs[1].user_id): expected a string or an integer, got a fractional number", "t",
      { { user_id = 1.5, instance_id = "i" } } },
    { "bad argument #2 (pairs[1].user_id): expected a string or an integer, got boolean", "t",
      { { user_id = true, instance_id = "i" } } },
    { "bad argument #2 (pairs[1].user_id): empty", "t", { { user_id = "", instance_id = "i" } } },
    { "bad argument #2 (pairs[2].instance_id): longer than 32 bytes (33)", "t",
      { good, { user_id = "u", instance_id = ("x"):rep(33) } } },
    { "bad argument #2 (pairs[1].user_id): contains a control character", "t", { { user_id = "a\r", instance_id = "i" } } },
    { "bad argument #2 (pairs[1].instance_id): contains a control character", "t", { { user_id = "a", instance_id = "i\0" } } },
    { "bad argument #2 (pairs[1].user_id): not valid UTF-8", "t", { { user_id = "\255\254", instance_id = "i" } } },
    { "bad argument #2 (pairs[2].user_id): contains a control character (U+0085)", "t",
      { good, { user_id = "u\194\1332", instance_id = "i2" } } },
    { "bad argument #2 (pairs[1].instance_id): contains an invisible character (U+200B)", "t",
      { { user_id = "u", instance_id = "i\226\128\1391" } } },
    { "bad argument #2 (pairs[2].user_id): leading or trailing space", "t", { good, { user_id = " u2", instance_id = "i2" } } },
    { "bad argument #2 (pairs[1].instance_id): leading or trailing space", "t", { { user_id = "u", instance_id = "i1 " } } },
    { "bad argument #2 (pairs[3]): repeats pairs[1]", "t",
      { good, { user_id = "u2", instance_id = "i2" }, { user_id = "u1", instance_id = "i1" } } },
    { "bad argument #3 (opts): unknown option 'retries'", "t", { good }, { retries = 3 } },
    { "bad argument #3 (opts.request_id): only printable ASCII without spaces is allowed", "t", { good },
      { request_id = "id\r\nX-Evil: 1" } },
    { "bad argument #3 (opts.request_id): expected a string, got number", "t", { good }, { request_id = 5 } },
    { "bad argument #3 (opts.request_id): expected 1 to 128 bytes, got 129", "t", { good }, { request_id = ("a"):rep(129) } },
  }
  for _, case in ipairs(cases) do
    it("raises: " .. case[1], function()
      local msg = raises("koophone.unassign: " .. case[1], call, case[2], case[3], case[4])
      assert.not_matches("\n", msg)
    end)
  end

  it("refuses more than max_pairs pairs", function()
    local small = koophone.new(sim.client_opts("http", { max_pairs = 2 }))
    raises("koophone.unassign: bad argument #2 (pairs): 3 pairs, more than max_pairs (2)",
      small.unassign, small, "t", sim.make_pairs(3))
    raises("koophone.unassign: bad argument #2 (pairs): 101 pairs, more than max_pairs (100)",
      call, "t", sim.make_pairs(101))
  end)

  it("accepts an integer user_id", function()
    assert.equals(true, (koophone.validate_pair { user_id = 1123422, instance_id = "a44uhlf7" }))
    assert.equals(true, (koophone.validate_pair { user_id = 2 ^ 40, instance_id = "a44uhlf7" }))
  end)
end)

describe("koophone.validate_pair", function()
  it("returns true for a good pair and false plus the reason otherwise", function()
    assert.is_true(koophone.validate_pair(good))
    local ok, why = koophone.validate_pair { user_id = "u", instance_id = ("x"):rep(40) }
    assert.is_false(ok)
    assert.matches("instance_id", why)
    ok, why = koophone.validate_pair("u1:i1")
    assert.is_false(ok)
    assert.matches("expected a table", why)
  end)
end)

describe("koophone.validate_pair and invisible characters", function()
  -- each looks like nothing, or like a plain space, yet makes the id another one
  local refused = {
    { "\194\133", "a control character (U+0085)" }, { "\194\128", "a control character (U+0080)" },
    { "\194\159", "a control character (U+009F)" },
    { "\194\160", "a space other than U+0020 (U+00A0)" }, { "\226\128\128", "a space other than U+0020 (U+2000)" },
    { "\226\128\175", "a space other than U+0020 (U+202F)" }, { "\227\128\128", "a space other than U+0020 (U+3000)" },
    { "\226\128\168", "a space other than U+0020 (U+2028)" },
    { "\226\128\139", "an invisible character (U+200B)" }, { "\226\128\141", "an invisible character (U+200D)" },
    { "\226\129\160", "an invisible character (U+2060)" }, { "\239\187\191", "an invisible character (U+FEFF)" },
    { "\194\173", "an invisible character (U+00AD)" }, { "\243\160\128\129", "an invisible character (U+E0001)" },
    { "\226\128\170", "a bidirectional text control (U+202A)" }, { "\226\128\174", "a bidirectional text control (U+202E)" },
    { "\226\129\166", "a bidirectional text control (U+2066)" }, { "\226\129\169", "a bidirectional text control (U+2069)" },
    { "\226\128\142", "a bidirectional text control (U+200E)" }, { "\216\156", "a bidirectional text control (U+061C)" },
  }
  for _, c in ipairs(refused) do
    it("refuses " .. c[2] .. " in an id", function()
      local ok, why = koophone.validate_pair { user_id = "u" .. c[1] .. "1", instance_id = "i1" }
      assert.is_false(ok)
      assert.equals("user_id: contains " .. c[2], why)
      ok, why = koophone.validate_pair { user_id = "u1", instance_id = c[1] .. "i1" }
      assert.is_false(ok)
      assert.equals("instance_id: contains " .. c[2], why)
    end)
  end

  it("accepts other non-ASCII text: letters, CJK, emoji with a variation selector", function()
    for _, id in ipairs { "caf\195\169", "\228\184\128\228\186\140", "\226\152\186\239\184\143", "u\240\159\152\128" } do
      assert.is_true(koophone.validate_pair { user_id = id, instance_id = "i1" }, id)
    end
  end)
end)

describe("options of koophone.new", function()
  local cases = {
    { { bogus = 1 }, "koophone.new: bad argument #1 (opts): unknown option 'bogus'" },
    { "x", "koophone.new: bad argument #1 (opts): expected a table, got string" },
    { { insecure = "yes" }, "koophone.new: bad argument #1 (opts.insecure): expected a boolean, got string" },
    { { insecure = 1 }, "koophone.new: bad argument #1 (opts.insecure): expected a boolean, got number" },
    { { endpoint = "ftp://example.com" }, "koophone.new: bad argument #1 (opts.endpoint): must start with http:// or https://" },
    { { endpoint = "https://user:pw@example.com" }, "koophone.new: bad argument #1 (opts.endpoint): must not carry credentials" },
    { { timeout = -1 }, "koophone.new: bad argument #1 (opts.timeout): expected a number > 0" },
    { { connect_timeout = "10" }, "koophone.new: bad argument #1 (opts.connect_timeout): expected a number > 0, got string" },
    { { max_pairs = 0 }, "koophone.new: bad argument #1 (opts.max_pairs): expected an integer from 1 to 100000" },
    { { max_response_bytes = 0 }, "koophone.new: bad argument #1 (opts.max_response_bytes)" },
    { { user_agent = "ua\r\nX-Evil: 1" }, "koophone.new: bad argument #1 (opts.user_agent): contains a control character" },
    { { proxy = true }, "koophone.new: bad argument #1 (opts.proxy)" },
  }
  for _, case in ipairs(cases) do
    it("raises " .. case[2], function() raises(case[2], koophone.new, case[1]) end)
  end

  it("raises for configure the same way", function()
    raises("koophone.configure: bad argument #1 (opts): unknown option 'bogus'", koophone.configure,
           { bogus = 1 })
  end)
end)
