-- koophone.Error values concatenate with strings and numbers on every runtime (__concat in
-- src/errors.c): "failed: " .. err is what an OpenResty handler writes first.
local koophone = require "koophone"
local sim = require "helpers.sim"

describe("koophone.Error concatenation", function()
  local err = setmetatable({ code = "KOOPHONE.API.2210", status = 400, message = "gone",
                             request_id = "rid-1" }, koophone.Error)
  local text = tostring(err)

  it("works with the error on either side", function()
    assert.equals("failed: " .. text, "failed: " .. err)
    assert.equals(text .. "!", err .. "!")
    assert.equals("1" .. text, 1 .. err)
    assert.equals(text .. text, err .. err)
  end)

  it("works in a chain, with an error returned by a call", function()
    local client = koophone.new { endpoint = "http://127.0.0.1:1" }
    local _, e = client:unassign(sim.token, sim.make_pairs(1, "cat"))
    assert.equals("a " .. tostring(e) .. " b", "a " .. e .. " b")
    assert.is_nil(("x" .. e):find(sim.token:sub(1, 16), 1, true))
  end)

  it("still raises with a value a plain concatenation refuses", function()
    local ok, msg = pcall(function() return {} .. err end)
    assert.is_false(ok)
    assert.matches("attempt to concatenate a table value with a koophone.Error", msg, 1, true)
  end)
end)
