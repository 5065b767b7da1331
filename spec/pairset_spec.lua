-- core.pairset and core.row_entry: the exact duplicate set of a bulk run (no false positives, no
-- lost pairs) and the entry each input row becomes.
local core = require "koophone.core"

-- Adds the pair as row `row`: nil when it is new, else the row it was first seen at.
local function add(s, user_id, instance_id, row)
  local e = core.row_entry(s, { user_id = user_id, instance_id = instance_id }, row, row)
  assert.equals(row, e.row)
  if e.duplicate_of then
    assert.equals("duplicate", e.outcome)
    assert.equals("repeats row " .. ("%d"):format(e.duplicate_of), e.reason)
  else
    assert.is_nil(e.outcome)
  end
  return e.duplicate_of
end

describe("koophone.core.pairset", function()
  it("returns nil for a new pair and the first row for a repeat", function()
    local s = core.pairset()
    assert.is_nil(add(s, "u1", "i1", 7))
    assert.equals(7, add(s, "u1", "i1", 9))
    assert.equals(7, add(s, "u1", "i1", 10)) -- the first row stays
    assert.equals(1, #s)
  end)

  it("tells apart pairs whose concatenations are equal", function()
    local s = core.pairset()
    assert.is_nil(add(s, "ab", "c", 1))
    assert.is_nil(add(s, "a", "bc", 2))
    assert.is_nil(add(s, "c", "ab", 3))
    assert.is_nil(add(s, "abc", "d", 4))
    assert.equals(2, add(s, "a", "bc", 5))
    assert.equals(4, #s)
  end)

  it("close frees the set at once; closing again does nothing; a closed set raises when used", function()
    local s = core.pairset()
    for k = 1, 5000 do s:add("u" .. k, "i" .. k, k) end
    s:close()
    s:close()
    local closed = "koophone.pairset: the set is closed"
    for _, use in ipairs {
      function() s:add("u", "i", 1) end,
      function() s:get("u1", "i1") end,
      function() return #s end,
      function() core.row_entry(s, { user_id = "u", instance_id = "i" }, 1, 1) end,
    } do
      local ok, err = pcall(use)
      assert.is_false(ok)
      assert.matches(closed, err, 1, true)
    end
    -- __close is close: a Lua 5.4 `local s <close>` frees it when the block ends
    local t = core.pairset()
    t:add("u", "i", 1)
    getmetatable(t).__close(t, nil)
    assert.has_error(function() return #t end, closed)
    if _VERSION == "Lua 5.4" then
      local u = core.pairset()
      assert(load("local s <close> = ...; s:add('u', 'i', 1)"))(u)
      assert.has_error(function() return #u end, closed)
    end
  end)

  it("keeps every pair exactly across growth", function()
    local s, n = core.pairset(), 50000
    for i = 1, n do
      assert.is_nil(add(s, "user-" .. i, "inst-" .. (i % 97), i))
    end
    assert.equals(n, #s)
    for i = n, 1, -1 do
      assert.equals(i, add(s, "user-" .. i, "inst-" .. (i % 97), n + i))
    end
    assert.is_nil(add(s, "user-1", "inst-2", 0)) -- same user, other instance
    assert.equals(n + 1, #s)
  end)

  it("agrees with a Lua table on random pairs with many repeats", function()
    local s, ref, rnd = core.pairset(), {}, 12345
    local function next_int(n) -- a fixed LCG: the same pairs on every runtime
      rnd = (rnd * 1103515245 + 12345) % 2147483648
      return rnd % n
    end
    for row = 1, 20000 do
      local u, i = "u" .. next_int(300), ("i"):rep(next_int(3) + 1) .. next_int(40)
      local key = u .. "\0" .. i
      assert.equals(ref[key], add(s, u, i, row))
      ref[key] = ref[key] or row
    end
  end)

  it("keeps large row numbers", function()
    local s = core.pairset()
    assert.is_nil(add(s, "u", "i", 2 ^ 40))
    assert.equals(2 ^ 40, add(s, "u", "i", 1))
  end)

  it("maps pairs to integers through add and get (koophone.journal's offsets)", function()
    local s = core.pairset()
    assert.is_nil(s:get("u", "i")) -- empty
    assert.is_nil(s:add("u", "i", 123456789012))
    assert.equals(123456789012, s:add("u", "i", 5)) -- the first value stays
    assert.equals(123456789012, s:get("u", "i"))
    assert.is_nil(s:get("u", "j"))
    assert.is_nil(s:get("ui", ""))
    assert.has_error(function() s:add("u\0x", "i", 1) end)
    assert.has_error(function() s:add("u", "i", -1) end)
  end)
end)

describe("koophone.core.row_entry", function()
  it("makes the entry of a pair to send, with an integer user_id as its decimal string", function()
    local e = core.row_entry(core.pairset(), { user_id = 1123422, instance_id = "i1" }, 3, 5)
    assert.same({ pos = 3, row = 5, user_id = "1123422", instance_id = "i1" }, e)
  end)

  it("keeps an invalid row out of the set, with the reason and the ids as given", function()
    local s = core.pairset()
    local e = core.row_entry(s, { user_id = "a\0b", instance_id = "i" }, 1, 1)
    assert.same({ pos = 1, row = 1, user_id = "a\0b", instance_id = "i", outcome = "invalid",
                  reason = "user_id: contains a control character" }, e)
    e = core.row_entry(s, "i", 2, 2)
    assert.same({ pos = 2, row = 2, outcome = "invalid", reason = "expected a table, got string" }, e)
    assert.equals(0, #s)
  end)

  it("raises for a bad set, position or row", function()
    local s = core.pairset()
    local pair = { user_id = "u", instance_id = "i" }
    assert.has_error(function() core.row_entry({}, pair, 1, 1) end)
    assert.has_error(function() core.row_entry(s, pair, 1, -1) end)
    assert.has_error(function() core.row_entry(s, pair, 1) end)
    assert.has_error(function() core.row_entry(s, pair, nil, 1) end)
    assert.has_error(function() core.row_entry(s) end)
    assert.equals(0, #s)
  end)
end)
