-- koophone.rows.csv and koophone.rows.jsonl: the bulk input readers on the awkward files a
-- spreadsheet or a script exports, and unassign_all consuming one against the simulator.
local koophone = require "koophone"
local sim = require "helpers.sim"

local DIR = ".tmp/readers_spec"
assert(os.execute("mkdir -p " .. DIR))

-- Writes text to a file of DIR; returns its path.
local function file(name, text)
  local path = DIR .. "/" .. name
  sim.write_file(path, text)
  return path
end

-- Every value of the iterator, as { pair } or { false, reason }, up to its end.
local function drain(it)
  local out = {}
  while true do
    local v, reason = it()
    if v == nil then return out end
    out[#out + 1] = v and { v } or { false, reason }
  end
end

local function pair(u, i) return { { user_id = u, instance_id = i } } end

-- Open descriptors of this process (Linux).
local PID
do
  local stat = assert(io.open("/proc/self/stat"))
  PID = stat:read("*l"):match("^%d+")
  stat:close()
end
local function open_fds()
  local ls = assert(io.popen("ls /proc/" .. PID .. "/fd"))
  local n = #ls:read("*a"):gsub("[^\n]", "")
  ls:close()
  return n
end

describe("koophone.rows.csv", function()
  it("skips a byte-order mark and reads CRLF line ends", function()
    local path = file("bom.csv", "\239\187\191user_id,instance_id\r\nu1,i1\r\nu2,i2\r\n")
    assert.same({ pair("u1", "i1"), pair("u2", "i2") }, drain(assert(koophone.rows.csv(path))))
  end)

  it("reads quoted fields with separators, doubled quotes and line breaks", function()
    local path = file("quoted.csv", 'user_id,instance_id,note\n"u,1","i""1","a, b"\n'
                      .. 'u2,i2,"two\r\nlines"\n"u3",i3,""\n')
    assert.same({ pair("u,1", 'i"1'), pair("u2", "i2"), pair("u3", "i3") },
                drain(assert(koophone.rows.csv(path))))
  end)

  it("takes the header's columns in any order and ignores the other columns", function()
    local path = file("order.csv", "note, instance_id ,region,user_id\nx,i1,eu,u1\n,i2,,u2\n")
    assert.same({ pair("u1", "i1"), pair("u2", "i2") }, drain(assert(koophone.rows.csv(path))))
  end)

  it("returns nil and a reason naming the line and the columns for a repeated user_id or instance_id", function()
    local rows, err = koophone.rows.csv(file("twice.csv", "user_id,instance_id,user_id\nu1,i1,u2\n"))
    assert.is_nil(rows)
    assert.matches("twice.csv: line 1: the header names user_id twice, in columns 1 and 3$", err)
    rows, err = koophone.rows.csv(file("twice2.csv", "\n instance_id;note; instance_id \ni1;x;i2\n"),
                                  { separator = ";" })
    assert.is_nil(rows)
    assert.matches("twice2.csv: line 2: the header names instance_id twice, in columns 1 and 3$", err)
  end)

  it("reads another separator", function()
    local path = file("semi.csv", "user_id;instance_id\nu1;i,1\n")
    assert.same({ pair("u1", "i,1") }, drain(assert(koophone.rows.csv(path, { separator = ";" }))))
  end)

  it("returns nil and a reason for a header without user_id or instance_id", function()
    local rows, err = koophone.rows.csv(file("nohead.csv", "user_id,instance\nu1,i1\n"))
    assert.is_nil(rows)
    assert.matches("nohead.csv: the CSV input needs a header line naming the columns user_id "
                   .. "and instance_id", err, 1, true)
    rows, err = koophone.rows.csv(DIR .. "/missing.csv")
    assert.is_nil(rows)
    assert.matches("cannot open .*missing.csv: No such file", err)
    rows, err = koophone.rows.csv(DIR)
    assert.is_nil(rows)
    assert.matches("koophone.rows.csv: cannot read .*readers_spec: Is a directory", err)
  end)

  it("gives false and 'line N: ...' for a row it cannot parse, and goes on", function()
    local path = file("bad.csv", "user_id,instance_id\n\nu1\n  \nu2,i2,x\n\"u3\"x,i3\nu4,i4\n"
                      .. "u5,\"i5\n")
    assert.same({
      { false, "line 3: 1 fields, the header has 2" },
      { false, "line 5: 3 fields, the header has 2" },
      { false, "line 6: text after a closing quote" },
      pair("u4", "i4"),
      { false, "line 8: unterminated quote" },
    }, drain(assert(koophone.rows.csv(path))))
  end)

  it("does not hold a huge record behind an unclosed quote", function()
    local path = file("unclosed.csv", "user_id,instance_id\nu1,\"i1\n" .. ("x\n"):rep(40000)
                      .. "\"\nu2,i2\n")
    local out = drain(assert(koophone.rows.csv(path)))
    assert.same({ false, "line 2: a quoted field runs over 65536 bytes (an unclosed quote?)" }, out[1])
  end)

  it("raises in the one argument-error shape for a bad source or option", function()
    assert.has_error(function() koophone.rows.csv(42) end,
                     "koophone.rows.csv: bad argument #1 (source): expected a path or a file, got number")
    local f = io.open(file("closed.csv", "user_id,instance_id\n"))
    f:close()
    assert.has_error(function() koophone.rows.csv(f) end,
                     "koophone.rows.csv: bad argument #1 (source): expected a path or a file, got a closed file")
    assert.has_error(function() koophone.rows.csv("x.csv", { separator = "::" }) end,
                     "koophone.rows.csv: bad argument #2 (opts.separator): expected one byte other than a quote, CR or LF")
    assert.has_error(function() koophone.rows.csv("x.csv", { sep = ";" }) end,
                     "koophone.rows.csv: bad argument #2 (opts): unknown option 'sep'")
  end)

  it("leaves a file handle of the caller open and closes a path it opened", function()
    local path = file("handle.csv", "user_id,instance_id\nu1,i1\n")
    local f = assert(io.open(path, "rb"))
    assert.same({ pair("u1", "i1") }, drain(assert(koophone.rows.csv(f))))
    assert.equals("file", io.type(f))
    f:close()
    collectgarbage()
    local before = open_fds()
    local rows = assert(koophone.rows.csv(path))
    assert.equals(before + 1, open_fds())
    drain(rows)
    assert.equals(before, open_fds())
    assert.is_nil(rows()) -- after its end, still the end
    rows = assert(koophone.rows.csv(path)) -- dropped before its end: closed when collected
    assert.equals(before + 1, open_fds())
    rows = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    assert.equals(before, open_fds())
  end)
end)

describe("koophone.rows.jsonl", function()
  it("reads one object per line, skips blank lines and gives 'line N: ...' for a bad one", function()
    local path = file("rows.jsonl", '\239\187\191{"user_id":"u1","instance_id":"i1"}\r\n\n'
                      .. '{"user_id":"u2",\n[1\n{"user_id":"u3","instance_id":"i3"}\n')
    assert.same({ pair("u1", "i1"), { false, "line 3: not a JSON object" },
                  { false, "line 4: not a JSON object" }, pair("u3", "i3") },
                drain(assert(koophone.rows.jsonl(path))))
    local rows, err = koophone.rows.jsonl(DIR)
    assert.is_nil(rows)
    assert.matches("cannot read", err, 1, true)
  end)
end)

describe("unassign_all with a reader", function()
  it("unassigns the pairs of a CSV file and reports its bad rows as invalid", function()
    local list = sim.make_pairs(3, "rd")
    sim.reset(list)
    local path = file("run.csv", "\239\187\191instance_id,user_id\r\n" .. list[1].instance_id .. ","
                      .. list[1].user_id .. "\r\nbroken\r\n\"" .. list[2].instance_id .. "\",\""
                      .. list[2].user_id .. "\"\r\n" .. list[3].instance_id .. "," .. list[3].user_id .. "\r\n")
    local client = koophone.client(sim.client_opts("http"))
    local report = assert(client:unassign_all(sim.token, koophone.rows.csv(path), { batch_size = 2 }))
    client:close()
    assert.equals(3, report.counts.unassigned)
    assert.equals(1, report.counts.invalid)
    assert.equals("line 3: 1 fields, the header has 2", report.results[2].reason)
    assert.same({}, sim.bindings())
  end)

  it("reports a row whose id holds an invisible character as invalid, naming the column; nothing sent", function()
    local list = sim.make_pairs(1, "zw")
    sim.reset(list)
    local path = file("zw.csv", "user_id,instance_id\n" .. list[1].user_id .. "\226\128\139,"
                      .. list[1].instance_id .. "\n")
    local client = koophone.client(sim.client_opts("http"))
    local report = assert(client:unassign_all(sim.token, koophone.rows.csv(path)))
    client:close()
    assert.equals(1, report.counts.invalid)
    assert.same({ "invalid", 1 }, { report.results[1].outcome, report.results[1].row })
    assert.matches("user_id: contains an invisible character (U+200B)", report.results[1].reason, 1, true)
    assert.same({}, sim.log())
    assert.equals(list[1].user_id, sim.bindings()[list[1].instance_id])
  end)
end)
