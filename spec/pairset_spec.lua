-- core.pairset: the exact duplicate set of a bulk run (no false positives, no lost pairs).
local core = require "koophone.core"

describe("koophone.core.pairset", function()
  it("returns nil for a new pair and the first row for a repeat", function()
    local s = core.pairset()
    assert.is_nil(s:add("u1", "i1", 7))
    assert.equals(7, s:add("u1", "i1", 9))
    assert.equals(7, s:add("u1", "i1", 10)) -- the first row stays
    assert.equals(1, #s)
  end)

  it("tells apart pairs whose concatenations are equal", function()
    local s = core.pairset()
    assert.is_nil(s:add("ab", "c", 1))
    assert.is_nil(s:add("a", "bc", 2))
    assert.is_nil(s:add("c", "ab", 3))
    assert.is_nil(s:add("", "abc", 4))
    assert.equals(2, s:add("a", "bc", 5))
    assert.equals(4, #s)
  end)

  it("keeps every pair exactly across growth", function()
    local s, n = core.pairset(), 50000
    for i = 1, n do
      assert.is_nil(s:add("user-" .. i, "inst-" .. (i % 97), i))
    end
    assert.equals(n, #s)
    for i = n, 1, -1 do
      assert.equals(i, s:add("user-" .. i, "inst-" .. (i % 97), n + i))
    end
    assert.is_nil(s:add("user-1", "inst-2", 0)) -- same user, other instance
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
      assert.equals(ref[key], s:add(u, i, row))
      ref[key] = ref[key] or row
    end
  end)

  it("keeps large row numbers", function()
    local s = core.pairset()
    assert.is_nil(s:add("u", "i", 2 ^ 40))
    assert.equals(2 ^ 40, s:add("u", "i", 1))
  end)

  it("raises for a user_id with NUL and for a bad row", function()
    local s = core.pairset()
    assert.has_error(function() s:add("a\0b", "i", 1) end)
    assert.has_error(function() s:add("a", "i", -1) end)
    assert.has_error(function() s:add("a", "i") end)
  end)
end)
