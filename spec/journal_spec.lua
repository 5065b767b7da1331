-- The write-ahead journal of unassign_all (lua/koophone/journal.lua) and resuming from it, against
-- the running simulator.
local koophone = require "koophone"
local sim = require "helpers.sim"
local cjson = require "cjson.safe"
local journal = require "koophone.journal"

local TOKEN = sim.token

local copy_pairs = sim.copy_pairs

local function records(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = cjson.decode(line) or line end
  return out
end

local write_file = sim.write_file
local read_file = require("helpers.cli").read_file

local assert_no_pair_twice = sim.assert_no_pair_twice

local function read_lines(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = line end
  return out
end

local function outcomes(report)
  local out = {}
  for i, r in ipairs(report.results) do out[i] = r.outcome end
  return out
end

-- A journal line, as journal.lua writes it.
local function line(rec) return cjson.encode(rec) .. "\n" end
local RUN = line { type = "run", version = 1, time = 0 }

-- Makes the journals opened from now on fail their second fsync ("journal: fsync: injected
-- failure"); returns the function that restores journal.open.
local function fail_second_sync()
  local open, syncs = journal.open, 0
  journal.open = function(...)
    local j, e = open(...)
    local real = j and j.file
    if real then
      j.file = setmetatable({ sync = function()
        syncs = syncs + 1
        if syncs == 2 then return nil, "journal: fsync: injected failure" end
        return real:sync()
      end }, { __index = function(_, k) return function(_, ...) return real[k](real, ...) end end })
    end
    return j, e
  end
  return function() journal.open = open end
end

describe("unassign_all with a journal", function()
  local client, path
  before_each(function()
    client = koophone.client(sim.client_opts("http", { retry = false }))
    path = os.tmpname()
    os.remove(path)
  end)
  after_each(function()
    client:close()
    os.remove(path)
  end)

  it("records each request before it is sent and each pair's outcome after", function()
    local list = sim.make_pairs(25, "wa")
    sim.reset(list)
    local input = copy_pairs(list)
    input[4] = { user_id = "stranger", instance_id = "wa0004" }
    local report = assert(client:unassign_all(TOKEN, input, { batch_size = 10, journal = path }))
    assert.equals(24, report.counts.unassigned)
    local recs = records(path)
    assert.equals("run", recs[1].type)
    assert.equals(1, recs[1].version)
    local sent_at, done = {}, {}
    for i, r in ipairs(recs) do
      if r.type == "send" then sent_at[r.request_id] = sent_at[r.request_id] or i end
      if r.type == "done" then
        assert.is_nil(done[r.user_id]) -- one final record per pair
        done[r.user_id] = r
        assert.is_true(sent_at[r.request_id] < i)
      end
    end
    -- every request the server saw was journaled first
    for _, e in ipairs(sim.log()) do assert.is_not_nil(sent_at[e.request_id]) end
    assert.equals(25, #(function() local t = {} for _, r in pairs(done) do t[#t + 1] = r end return t end)())
    assert.equals("not_bound", done.stranger.outcome)
    assert.equals("KOOPHONE.API.2210", done.stranger.code)
    assert.equals("unassigned", done["u-wa-1"].outcome)
    assert.matches("^%x+$", done["u-wa-1"].job_id)
  end)

  it("resumes a run stopped by a fault: finished pairs are not sent again", function()
    local list = sim.make_pairs(200, "rs")
    sim.reset(list)
    -- from request 4 on the token is refused: the run stops with the rest failed
    sim.faults({ type = "respond", status = 401, at = 4, count = -1,
                 body = '{"error_code":"APIGW.0301","error_msg":"token expired"}' })
    local first = assert(client:unassign_all(TOKEN, copy_pairs(list),
                                             { batch_size = 20, concurrency = 1, journal = path }))
    assert.equals("APIGW.0301", first.aborted.code)
    assert.equals(60, first.counts.unassigned)
    assert.equals(140, first.counts.failed)
    sim.control("DELETE", "/_sim/faults")
    local again = assert(client:unassign_all(TOKEN, copy_pairs(list),
                                             { batch_size = 20, journal = path, resume = true }))
    assert.equals(200, again.total)
    assert.equals(200, again.counts.unassigned)
    for i = 1, 200 do
      assert.equals(i <= 60 or nil, again.results[i].resumed)
    end
    assert.same({}, sim.bindings())
    assert_no_pair_twice()
    -- the resumed run sent only the 140 failed pairs
    local resent = 0
    for _, e in ipairs(sim.log()) do if e.applied then resent = resent + e.pairs end end
    assert.equals(200, resent)
  end)

  it("treats pairs in flight when the run died as possibly done: a 2210 means assumed_unassigned", function()
    local list = sim.make_pairs(6, "fl")
    sim.reset(list)
    -- a run died after sending fl0001..fl0004 (the server applied them) and fl0005..fl0006
    -- (journaled, never reached the server); fl0003 was bound to someone else all along
    local raw = koophone.new(sim.client_opts("http"))
    assert(raw:unassign(TOKEN, { list[1], list[2], list[4] }))
    raw:close()
    local input = copy_pairs(list)
    input[3] = { user_id = "other", instance_id = "fl0003" }
    local function send(id, from, to)
      local pairs = {}
      for i = from, to do pairs[#pairs + 1] = { input[i].user_id, input[i].instance_id } end
      return cjson.encode { type = "send", request_id = id, pairs = pairs } .. "\n"
    end
    write_file(path, cjson.encode { type = "run", version = 1, time = 0 } .. "\n"
               .. send("r1", 1, 4) .. send("r2", 5, 6) .. '{"type":"done","request_id":"r2","us')
    -- settle = false: sent again, not read first (spec/settle_spec.lua reads them)
    local report = assert(client:unassign_all(TOKEN, input, { journal = path, resume = true, settle = false }))
    assert.same({ "assumed_unassigned", "assumed_unassigned", "assumed_unassigned",
                  "assumed_unassigned", "unassigned", "unassigned" },
                { report.results[1].outcome, report.results[2].outcome, report.results[3].outcome,
                  report.results[4].outcome, report.results[5].outcome, report.results[6].outcome })
    assert.equals(1, report.journal_skipped) -- the torn last line
    assert.same({ fl0003 = "u-fl-3" }, sim.bindings())
    -- a new run over an untainted journal says not_bound for the same kind of pair
    os.remove(path)
    local fresh = assert(client:unassign_all(TOKEN, { input[3] }, { journal = path }))
    assert.equals("not_bound", fresh.results[1].outcome)
  end)

  it("keeps the outcomes of the journal for the whole input, without any request", function()
    local list = sim.make_pairs(30, "kp")
    sim.reset(list)
    assert(client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 7, journal = path }))
    local before = #sim.log()
    local again = assert(client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true }))
    assert.equals(before, #sim.log())
    assert.equals(30, again.counts.unassigned)
    assert.equals(0, again.requests)
    assert.matches("^%x+$", again.results[30].job_id)
  end)

  it("refuses an existing journal without resume, and one of another shard or version (koophone.Error codes)", function()
    write_file(path, cjson.encode { type = "run", version = 1, time = 0, shard = "1/2" } .. "\n")
    local list = sim.make_pairs(2, "ref")
    sim.reset(list)
    local report, err = client:unassign_all(TOKEN, copy_pairs(list), { journal = path })
    assert.is_nil(report)
    assert.equals(koophone.Error, getmetatable(err))
    assert.same({ "journal", "JOURNAL_EXISTS" }, { err.kind, err.code })
    assert.matches("exists: resume it or choose another file", err.message)
    assert.matches("^koophone: JOURNAL_EXISTS: journal .* exists", tostring(err))
    report, err = client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true,
                                                                shard = { index = 0, count = 2 } })
    assert.is_nil(report)
    assert.equals("JOURNAL_SHARD", err.code)
    assert.matches("journal of shard 1/2, this run is shard 0/2", err.message)
    write_file(path, cjson.encode { type = "run", version = 9, time = 0 } .. "\n")
    report, err = client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true })
    assert.is_nil(report)
    assert.equals("JOURNAL_VERSION", err.code)
    assert.matches("journal version 9[.0]*, this is 1", err.message)
    assert.same({}, sim.log())
  end)

  it("never clears a request whose first copy may have been applied; a crash after it resumes as assumed_unassigned", function()
    local list = sim.make_pairs(8, "nc")
    sim.reset(list)
    client:close()
    client = koophone.client(sim.client_opts("http", { retry = { max_attempts = 2, ambiguous_attempts = 1,
                                                                 sleep = function() end } }))
    -- applied, then no answer: the retry (same request id) gets 2210 for the whole batch
    sim.faults({ type = "drop_after_apply", at = 1 })
    -- settle = false: the retry goes out unread (spec/settle_spec.lua reads first)
    local report = assert(client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 8, journal = path,
                                                                        settle = false }))
    assert.equals(8, report.counts.assumed_unassigned)
    local first = sim.log()[1].request_id
    local lines, retry_send = read_lines(path), nil
    for n, l in ipairs(lines) do
      local r = cjson.decode(l)
      assert.is_false(r.type == "clear" and r.request_id == first, "a clear for the ambiguous request")
      if r.type == "send" and r.request_id == first then retry_send = n end
    end
    -- the run dies right after the retry's answer: what it wrote next is its last line
    local kept = table.concat(lines, "\n", 1, retry_send + 1) .. "\n"
    write_file(path, kept)
    sim.reset(list, { unbound = true }) -- the first copy did unassign them
    local again = assert(client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 8, journal = path,
                                                                       resume = true, settle = false }))
    assert.equals(8, again.counts.assumed_unassigned)
    assert.equals(0, again.counts.not_bound)
  end)

  it("reads back the per-pair marks of send records and the outcomes that may have been applied", function()
    local list = sim.make_pairs(4, "tm")
    sim.reset(list, { unbound = true }) -- none of them is bound any more
    local p = {}
    for i, e in ipairs(list) do p[i] = { e.user_id, e.instance_id } end
    -- r1 ended and changed nothing, but its first pair was in an earlier request whose answer was
    -- lost; a success answer did not confirm the third pair with its own job (unconfirmed); the
    -- fourth failed without any doubt
    write_file(path, RUN
      .. line { type = "send", request_id = "r1", pairs = { { p[1][1], p[1][2], true }, p[2] } }
      .. line { type = "done", request_id = "r1", user_id = p[1][1], instance_id = p[1][2], outcome = "failed" }
      .. line { type = "done", request_id = "r1", user_id = p[2][1], instance_id = p[2][2], outcome = "failed" }
      .. line { type = "clear", request_id = "r1" }
      .. line { type = "send", request_id = "r2", pairs = { p[3], p[4] } }
      .. line { type = "done", request_id = "r2", user_id = p[3][1], instance_id = p[3][2], outcome = "unconfirmed" }
      .. line { type = "done", request_id = "r2", user_id = p[4][1], instance_id = p[4][2], outcome = "failed" }
      .. line { type = "clear", request_id = "r2" })
    local report = assert(client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 1, journal = path,
                                                                        resume = true, settle = false }))
    assert.same({ "assumed_unassigned", "not_bound", "assumed_unassigned", "not_bound" }, outcomes(report))
  end)

  it("reports a damaged line in the middle and settles the pairs it may have sent as assumed_unassigned", function()
    local list = sim.make_pairs(4, "dm")
    sim.reset(list)
    local raw = koophone.new(sim.client_opts("http"))
    assert(raw:unassign(TOKEN, { list[1], list[2] })) -- sent by the request whose line is lost
    assert(raw:unassign(TOKEN, { list[3] }))
    raw:close()
    write_file(path, RUN
      .. '{"type":"send","request_id":"r1","pairs":[["' .. list[1].user_id .. '"\0garbage\n'
      .. line { type = "send", request_id = "r2", pairs = { { list[3].user_id, list[3].instance_id } } }
      .. line { type = "done", request_id = "r2", user_id = list[3].user_id, instance_id = list[3].instance_id,
                outcome = "unassigned", job_id = "j3" }
      .. '{"type":"done","request_id":"r9","us') -- torn last line: skipped, not damaged
    local report = assert(client:unassign_all(TOKEN, copy_pairs(list), { batch_size = 1, journal = path,
                                                                        resume = true, settle = false }))
    assert.same({ count = 1, lines = { 2 } }, report.journal_damaged)
    assert.equals(1, report.journal_skipped)
    assert.same({ "assumed_unassigned", "assumed_unassigned", "unassigned", "unassigned" }, outcomes(report))
    assert.matches("journal is damaged", report.results[1].reason)
    assert.is_true(report.results[3].resumed)
    assert.same({}, sim.bindings())
    -- the torn line is cut off: the journal reads cleanly after this run's records
    local f = assert(io.open(path, "rb"))
    local text = f:read("*a")
    f:close()
    assert.equals("\n", text:sub(-1))
    for l in text:gmatch("([^\n]*)\n") do assert.is_not_nil(cjson.decode(l) or l:find("garbage", 1, true), l) end
  end)

  it("refuses a resume with another input, naming both", function()
    local list = sim.make_pairs(3, "in")
    sim.reset(list)
    local a = { name = "a.csv", size = 30, digest = "fnv1a64:00000000000000aa" }
    assert(client:unassign_all(TOKEN, copy_pairs(list), { journal = path, input = a }))
    local before = #sim.log()
    local report, err = client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true,
      input = { name = "b.csv", size = 30, digest = "fnv1a64:00000000000000bb" } })
    assert.is_nil(report)
    assert.equals(('journal %s: input "a.csv" (30 bytes, fnv1a64:00000000000000aa), this run reads '
                   .. '"b.csv" (30 bytes, fnv1a64:00000000000000bb)'):format(path), err.message)
    assert.equals("JOURNAL_INPUT", err.code)
    assert.equals(before, #sim.log())
    -- the same content under another name is the same input; an array of another length is not
    assert(client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true,
      input = { name = "copy-of-a.csv", size = 30, digest = a.digest } }))
    os.remove(path)
    assert(client:unassign_all(TOKEN, copy_pairs(list), { journal = path }))
    before = #sim.log()
    report, err = client:unassign_all(TOKEN, { list[1] }, { journal = path, resume = true })
    assert.is_nil(report)
    assert.matches("input an array of 3 rows, this run reads an array of 1 rows", err.message)
    assert.equals("JOURNAL_INPUT", err.code)
    assert.equals(before, #sim.log())
  end)

  it("takes the journal's lock: a second run on it is refused until the first closes it", function()
    local list = sim.make_pairs(2, "lk")
    sim.reset(list)
    local held = assert(journal.open(path, {}))
    local report, err = client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true })
    assert.is_nil(report)
    assert.equals(("journal %s is in use by another run (it is locked)"):format(path), err.message)
    assert.equals("JOURNAL_LOCKED", err.code)
    assert.same({}, sim.log())
    held:close()
    assert(client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true }))
  end)

  it("locks the journal's name too: moved away during a run, its old name is still refused", function()
    local list = sim.make_pairs(2, "mv")
    sim.reset(list)
    local held = assert(journal.open(path, {}))
    assert(os.rename(path, path .. ".moved"))
    local report, err = client:unassign_all(TOKEN, copy_pairs(list), { journal = path })
    assert.is_nil(report)
    assert.equals("JOURNAL_LOCKED", err.code)
    assert.same({}, sim.log())
    assert.is_nil(io.open(path, "rb")) -- refused before a new journal was made
    held:close()
    assert.is_nil(io.open(path .. ".lock", "rb")) -- removed at the end
    os.remove(path .. ".moved")
    -- a lock file that a crash left behind holds no lock: it blocks nothing; a file that was
    -- there before the run is not the run's to remove: it stays as it was
    write_file(path .. ".lock", "not ours")
    assert(client:unassign_all(TOKEN, copy_pairs(list), { journal = path }))
    assert.equals("not ours", read_file(path .. ".lock"))
    os.remove(path .. ".lock")
  end)

  it("jfile:close() removes only the lock file it made, and only while the name is still that file", function()
    local core = require "koophone.core"
    local j = assert(core.jfile(path))
    assert(os.rename(path .. ".lock", path .. ".lock.moved")) -- someone moved it away
    write_file(path .. ".lock", "another file")
    j:close()
    assert.equals("another file", read_file(path .. ".lock"))
    os.remove(path .. ".lock")
    os.remove(path .. ".lock.moved")
  end)

  it("creates the journal 0600; a journal that exists keeps its mode", function()
    local list = sim.make_pairs(1, "md")
    sim.reset(list)
    assert(client:unassign_all(TOKEN, copy_pairs(list), { journal = path }))
    local function mode() return (io.popen("stat -c %a " .. path):read("*a"):gsub("%s", "")) end
    assert.equals("600", mode())
    os.execute("chmod 640 " .. path)
    assert(client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true }))
    assert.equals("640", mode())
  end)

  it("refuses to resume a file that does not start as a journal, leaving it byte for byte", function()
    local list = sim.make_pairs(3, "nj")
    sim.reset(list)
    local texts = {
      "user_id,instance_id\n" .. list[1].user_id .. "," .. list[1].instance_id .. "\n", -- the input
      '{"user_id":"u1","instance_id":"i1"}\n', -- JSON Lines input: JSON, but no run record
      "some text without a newline",
      line { type = "send", request_id = "r1", pairs = { { "u1", "i1" } } } .. RUN,
    }
    for _, text in ipairs(texts) do
      write_file(path, text)
      local report, err = client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true })
      assert.is_nil(report)
      assert.same({ "journal", "JOURNAL_FORMAT" }, { err.kind, err.code })
      assert.matches("does not start with a koophone journal's run record", err.message, 1, true)
      local f = assert(io.open(path, "rb"))
      assert.equals(text, f:read("*a"))
      f:close()
    end
    assert.same({}, sim.log())
    -- the start of a run record torn by a crash is a journal: cut off, and the run goes on
    write_file(path, '{"type":"run","ver')
    local report = assert(client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true }))
    assert.equals(3, report.counts.unassigned)
  end)

  it("has a round's sends on the disk before it starts, and stops when fsync fails", function()
    local list = sim.make_pairs(100, "fs")
    sim.reset(list)
    -- rounds of 8 requests (concurrency 1); the file's syncs after it is open: 1 the sends of
    -- round 1, 2 its outcomes with the sends of round 2
    local restore = fail_second_sync()
    local ok, report, err = pcall(client.unassign_all, client, TOKEN, copy_pairs(list),
                                  { batch_size = 5, concurrency = 1, journal = path })
    restore() -- before anything may fail
    assert(ok, report)
    assert.is_nil(report)
    assert.same({ "journal", "JOURNAL_IO", "journal: fsync: injected failure" },
                { err.kind, err.code, err.message })
    assert.equals(8, #sim.log()) -- round 2 never left
    -- a real fsync that fails (a character device cannot be synced): nothing is sent
    sim.reset(list)
    report, err = client:unassign_all(TOKEN, copy_pairs(list), { journal = "/dev/null" })
    assert.is_nil(report)
    assert.equals("journal /dev/null: fsync: Invalid argument", err.message)
    assert.is_nil(io.open("/dev/null.lock")) -- no lock file beside a name that is no regular file
    assert.equals("JOURNAL_IO", err.code)
    assert.same({}, sim.log())
  end)

  it("stopped by its journal, still reports the rows it held back for a read (maybe applied)", function()
    local list = sim.make_pairs(100, "held")
    sim.reset(list)
    sim.faults({ type = "drop", at = 1 }) -- batch 1's answer is lost: its rows wait for a read
    local restore = fail_second_sync()
    local seen = {}
    local ok, report, err = pcall(client.unassign_all, client, TOKEN, copy_pairs(list),
      { batch_size = 5, concurrency = 1, journal = path,
        on_result = function(r) seen[r.instance_id] = r end })
    restore() -- before anything may fail
    assert(ok, report)
    assert.is_nil(report)
    assert.equals("JOURNAL_IO", err.code)
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equals(40, n) -- round 1's 8 batches, the lost one's 5 rows included
    assert.equals("failed", seen.held0001.outcome)
    assert.is_true(seen.held0001.err.maybe_applied)
  end)
end)

describe("unassign_all's memory", function()
  it("closes the run's pairsets when it ends: done, refused by the journal, or raising", function()
    local core, made = require "koophone.core", {}
    local new = core.pairset
    local function closed()
      local n = 0
      for _, set in ipairs(made) do
        if not pcall(function() return #set end) then n = n + 1 end
      end
      return n
    end
    local client = koophone.client(sim.client_opts("http", { retry = false }))
    local path = os.tmpname()
    local list = sim.make_pairs(6, "mem")
    sim.reset(list)
    core.pairset = function() made[#made + 1] = new(); return made[#made] end
    local ok, err = pcall(function()
      -- done: the rows' set and the journal's two
      assert(client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true }))
      assert.same({ 3, 3 }, { #made, closed() })
      -- refused: the journal exists
      assert.is_nil(client:unassign_all(TOKEN, copy_pairs(list), { journal = path }))
      assert.same({ 6, 6 }, { #made, closed() })
      -- raising: a callback's error goes through, the sets are closed all the same
      os.remove(path)
      sim.reset(list)
      local raised = select(2, pcall(client.unassign_all, client, TOKEN, copy_pairs(list), {
        journal = path, on_result = function() error("callback failed", 0) end }))
      assert.equals("callback failed", raised)
      assert.same({ 9, 9 }, { #made, closed() })
    end)
    core.pairset = new
    client:close()
    os.remove(path)
    assert(ok, err)
  end)
end)

describe("koophone.journal on resume", function()
  it("keeps no line of a 20,000-pair journal in Lua memory, and still finds every outcome", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(RUN)
    for b = 0, 199 do
      local ps = {}
      for k = 1, 100 do ps[k] = { "u" .. (b * 100 + k), "m" .. (b * 100 + k) } end
      f:write(line { type = "send", request_id = "r" .. b, pairs = ps })
      -- the last request was in flight when the run died
      if b < 199 then
        for k = 1, 100 do
          f:write(line { type = "done", request_id = "r" .. b, user_id = ps[k][1], instance_id = ps[k][2],
                         outcome = "unassigned", task_id = "RM_" .. b, job_id = ("j%05d"):format(b * 100 + k) })
        end
      end
    end
    f:close()
    collectgarbage("collect")
    local before = collectgarbage("count")
    local j = assert(journal.open(path, { resume = true }))
    collectgarbage("collect")
    local kept = collectgarbage("count") - before
    -- the lines alone are ~2.8 MB (the loader kept ~5 MB of them); it keeps a few tables now, the
    -- rest is in C
    assert.is_true(kept < 256, ("the loader keeps %.0f KiB"):format(kept))
    assert.equals("j00001", j:final("u1", "m1").job_id)
    assert.equals("unassigned", j:final("u19900", "m19900").outcome)
    assert.is_nil(j:final("u19901", "m19901"))
    assert.is_true(j:tainted("u19901", "m19901"))
    assert.is_false(j:tainted("u5", "m5"))
    j:close()
    os.remove(path)
  end)
end)
