-- The write-ahead journal of unassign_all (lua/koophone/journal.lua) and resuming from it, against
-- the running simulator.
local koophone = require "koophone"
local sim = require "helpers.sim"
local cjson = require "cjson.safe"

local TOKEN = sim.token

local copy_pairs = sim.copy_pairs

local function records(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = cjson.decode(line) or line end
  return out
end

local write_file = sim.write_file

local assert_no_pair_twice = sim.assert_no_pair_twice

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
    local report = assert(client:unassign_all(TOKEN, input, { journal = path, resume = true }))
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

  it("refuses an existing journal without resume, and a journal of another shard", function()
    write_file(path, cjson.encode { type = "run", version = 1, time = 0, shard = "1/2" } .. "\n")
    local list = sim.make_pairs(2, "ref")
    sim.reset(list)
    local report, err = client:unassign_all(TOKEN, copy_pairs(list), { journal = path })
    assert.is_nil(report)
    assert.matches("exists: resume it or choose another file", err)
    report, err = client:unassign_all(TOKEN, copy_pairs(list), { journal = path, resume = true,
                                                                shard = { index = 0, count = 2 } })
    assert.is_nil(report)
    assert.matches("journal of shard 1/2, this run is shard 0/2", err)
    assert.same({}, sim.log())
  end)
end)
