-- bin/koophone run from a checkout, with no LUA_PATH or LUA_CPATH and from another directory,
-- finds lua/ and the core built for its runtime (build/<runtime>/) next to itself.
local shell = require "helpers.shell"

local LUA = os.getenv("KOOPHONE_LUA") or "lua5.4"

describe("bin/koophone from a checkout", function()
  it("finds lua/ and build/" .. LUA .. "/ next to itself", function()
    shell.make("build LUA=" .. LUA) -- the ordinary tree, whatever build the specs run on
    local root = shell.read("pwd")
    local out, status = shell.run(("cd /tmp && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_2 "
      .. "-u LUA_CPATH_5_2 -u LUA_PATH_5_3 -u LUA_CPATH_5_3 -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
      .. "%s %s/bin/koophone unassign --dry-run --input %s/examples/bulk-demo.csv")
      :format(LUA, shell.quote(root), shell.quote(root)))
    assert.equals(0, status, out)
    assert.matches('"batch":1', out, 1, true)
  end)
end)
