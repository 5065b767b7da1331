-- koophone.bindings (client:bindings): the state of each pair read through list_instances, and
-- the strategy with fewer requests. A fake client (spec/helpers/fake_list.lua) stands for
-- ListInstances here; spec/settle_spec.lua reads the simulator over HTTP.
local bindings = require "koophone.bindings"
local fake = require "helpers.fake_list"

local function read(client, list, opts)
  return bindings.read(client, "tok", list, opts)
end

describe("koophone.bindings", function()
  it("tells bound, unbound, other and missing apart, per pair", function()
    local c = fake.new { bindings = { a = "u1", b = false, c = "u9", d = "42" } }
    local b = read(c, {
      { user_id = "u1", instance_id = "a" }, { user_id = "u2", instance_id = "b" },
      { user_id = "u3", instance_id = "c" }, { user_id = "u4", instance_id = "zz" },
      { user_id = 42, instance_id = "d" }, { user_id = "u9", instance_id = "c" },
    })
    assert.same({ "bound", "unbound", "other", "missing", "bound", "bound" }, b.states)
    assert.same({ bound = 3, unbound = 1, other = 1, missing = 1, unknown = 0 }, b.counts)
  end)

  it("reads a few instances of a large tenant one request each", function()
    local c = fake.new { bindings = fake.tenant(5000) }
    local b = read(c, { { user_id = "u7", instance_id = "i0007" }, { user_id = "u4000", instance_id = "i4000" },
                        { user_id = "x", instance_id = "i4000" } })
    -- page 1 (it counts the tenant: 50 pages) answers for i0007; i4000 is read alone
    assert.equals("instance", b.strategy)
    assert.equals(2, b.requests)
    assert.equals(2, c.requests)
    assert.same({ "bound", "bound", "other" }, b.states)
    assert.equals("i4000", c.queries[2].instance_id)
  end)

  it("pages through a small tenant when that takes fewer requests than one per instance", function()
    local c = fake.new { bindings = fake.tenant(250, 10) }
    local list = {}
    for k = 5, 250, 5 do list[#list + 1] = { user_id = "u" .. k, instance_id = ("i%04d"):format(k) } end
    list[#list + 1] = { user_id = "u1", instance_id = "nope" }
    local b = read(c, list)
    assert.equals("page", b.strategy)
    assert.equals(3, b.requests) -- ceil(250 / 100)
    assert.equals(25, b.counts.bound)
    assert.equals(25, b.counts.unbound) -- every 10th instance is free
    assert.equals(1, b.counts.missing)
  end)

  it("one pair costs one request; strategy and page_size can be chosen", function()
    local c = fake.new { bindings = fake.tenant(300) }
    local b = read(c, { { user_id = "u5", instance_id = "i0005" } })
    assert.same({ 1, "instance", { "bound" } }, { b.requests, b.strategy, b.states })
    b = read(c, { { user_id = "u5", instance_id = "i0005" } }, { strategy = "page", page_size = 50 })
    assert.same({ 6, "page", { "bound" } }, { b.requests, b.strategy, b.states })
    b = read(c, { { user_id = "u5", instance_id = "i0005" }, { user_id = "u6", instance_id = "i0006" } },
             { strategy = "instance" })
    assert.same({ 2, "instance" }, { b.requests, b.strategy })
  end)

  it("a failed read leaves its pairs unknown, with the error; the others are read", function()
    local err = { kind = "api", code = "KOOPHONE.API.1001", message = "no permission" }
    local c = fake.new { bindings = fake.tenant(10), fail = function(q)
      return q.instance_id == "i0002" and err or nil
    end }
    local b = read(c, { { user_id = "u1", instance_id = "i0001" }, { user_id = "u2", instance_id = "i0002" } },
                   { strategy = "instance" })
    assert.same({ "bound", "unknown" }, b.states)
    assert.equals(err, b.errors[2])
  end)

  it("pages that list fewer instances than total_count leave the unseen ones unknown, never missing", function()
    -- a server whose first page is page 0 would skip page 0's instances when read from page 1
    local c = fake.new { bindings = fake.tenant(150) }
    local real = c.list_instances
    c.list_instances = function(self, cred, q)
      local res = real(self, cred, q)
      if not q.instance_id and q.page_no == 1 then res.total_count = 250 end
      return res
    end
    local b = read(c, { { user_id = "u1", instance_id = "i0001" }, { user_id = "u1", instance_id = "x1" },
                        { user_id = "u1", instance_id = "x2" }, { user_id = "u1", instance_id = "x3" },
                        { user_id = "u1", instance_id = "x4" } }, { strategy = "page" })
    assert.same({ "bound", "unknown", "unknown", "unknown", "unknown" }, b.states)
    assert.equals("LIST_INCOMPLETE", b.errors[2].code)
  end)

  it("a client without list_instances reads nothing: every pair unknown", function()
    local b = read({}, { { user_id = "u1", instance_id = "i1" } })
    assert.same({ "unknown" }, b.states)
    assert.equals(0, b.requests)
    assert.equals("NO_LIST_INSTANCES", b.errors[1].code)
  end)

  it("raises on bad arguments in the one shape", function()
    local c = fake.new { bindings = {} }
    assert.has_error(function() read(c, "x") end,
      "koophone.bindings: bad argument #2 (pairs): expected an array of pairs, got string")
    assert.has_error(function() read(c, { { user_id = "u", instance_id = "i" }, { user_id = true, instance_id = "i" } }) end,
      "koophone.bindings: bad argument #2 (pairs[2].user_id): expected a string or an integer, got boolean")
    assert.has_error(function() read(c, {}, { page_size = 0 }) end,
      "koophone.bindings: bad argument #3 (opts.page_size): expected an integer from 1 to 1000, got 0")
    assert.has_error(function() read(c, {}, { strategy = "all" }) end,
      'koophone.bindings: bad argument #3 (opts.strategy): expected "auto", "instance" or "page", got all')
    assert.has_error(function() read(c, {}, { pages = 1 }) end,
      "koophone.bindings: bad argument #3 (opts): unknown option 'pages'")
  end)
end)
