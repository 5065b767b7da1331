-- bin/koophone run as a separate process against the running simulator: output, exit status,
-- usage errors, and a run killed with SIGKILL in the middle, then resumed from its journal.
local sim = require "helpers.sim"
local cli = require "helpers.cli"
local cjson = require "cjson.safe"

local ctx = cli.new()
local DIR, CMD, run, csv = ctx.dir, cli.CMD, ctx.run, ctx.csv
local TOKEN_FILE = DIR .. "/token"
local read_file = cli.read_file
local write_file, json_lines, wait_for, exit_code = sim.write_file, cli.json_lines, cli.wait_for,
                                                     cli.exit_code

-- Starts the CLI in the background; its pid.
local function spawn(args)
  local p = io.popen(("%s %s >/dev/null 2>&1 & echo $!"):format(CMD, args))
  local pid = tonumber(p:read("*l"))
  p:close()
  return pid
end

local function kill9(pid)
  assert(os.execute("kill -9 " .. pid))
  wait_for("the process to die", function()
    return exit_code(os.execute("kill -0 " .. pid .. " 2>/dev/null")) ~= 0
  end)
end

describe("bin/koophone unassign", function()
  setup(function() write_file(TOKEN_FILE, sim.token .. "\n") end)
  teardown(ctx.cleanup)
  local endpoint = " --endpoint " .. sim.http_url .. " --token-file " .. TOKEN_FILE

  it("prints a summary on stdout, progress on stderr, and exits 0 when all went well", function()
    local list = sim.make_pairs(120, "cs")
    sim.reset(list)
    local input = csv(list, { "stranger,cs0001", '"q""uoted",cs0002' }) -- both not bound
    local rc, out, err = run("unassign --input " .. input .. " --batch-size 50" .. endpoint)
    assert.equals(0, rc)
    assert.matches("unassigned%s+120\n", out)
    assert.matches("not_bound%s+2\n", out)
    assert.matches("total%s+122\n", out)
    assert.matches("progress: 122/122 100.0%%", err)
    assert.same({}, sim.bindings())
    assert.is_nil(err:find(sim.token, 1, true))
  end)

  it("reads JSON Lines, prints one object per pair, and exits 1 for an invalid row", function()
    local list = sim.make_pairs(5, "js")
    sim.reset(list)
    local lines = {}
    for _, p in ipairs(list) do lines[#lines + 1] = cjson.encode(p) end
    lines[#lines + 1] = '{"user_id":1123422,"instance_id":"nosuch01"}' -- a number: sent as "1123422"
    lines[#lines + 1] = "not json"
    write_file(DIR .. "/in.jsonl", table.concat(lines, "\n"))
    local rc, out = run("unassign --input " .. DIR .. "/in.jsonl --output jsonl" .. endpoint)
    assert.equals(1, rc)
    local by_row = {}
    for _, r in ipairs(json_lines(out)) do
      assert.is_nil(by_row[r.row])
      by_row[r.row] = r
    end
    for i = 1, 5 do assert.equals("unassigned", by_row[i].outcome) end
    assert.equals("denied", by_row[6].outcome) -- not an instance of this tenant
    assert.equals("1123422", by_row[6].user_id)
    assert.equals("invalid", by_row[7].outcome)
    assert.equals("line 7: not a JSON object", by_row[7].reason)
  end)

  it("--dry-run prints the batches and sends nothing", function()
    local list = sim.make_pairs(7, "dry")
    sim.reset(list)
    local rc, out = run("unassign --dry-run --batch-size 3 --input " .. csv(list, { "x," }))
    assert.equals(1, rc) -- an invalid row
    local recs = json_lines(out)
    assert.equals(3, #recs[1].pairs)
    assert.same({ "u-dry-1", "dry0001" }, recs[1].pairs[1])
    assert.equals(2, recs[2].batch)
    local invalid = 0
    for _, r in ipairs(recs) do if r.outcome == "invalid" then invalid = invalid + 1 end end
    assert.equals(1, invalid)
    assert.same({}, sim.log())
  end)

  it("exits 2 on usage errors and unreadable input, before any request", function()
    sim.reset(sim.make_pairs(1, "use"))
    write_file(DIR .. "/nohdr.csv", "a,b\n")
    for _, args in ipairs {
      "unassign --token abc",
      "unassign --input " .. DIR .. "/missing.csv" .. endpoint,
      "unassign --input " .. DIR .. "/nohdr.csv" .. endpoint,
      "unassign --shard 2/2" .. endpoint,
      "unassign --concurrency x" .. endpoint,
      "unassign --input " .. DIR .. "/nohdr.csv", -- no token
      "frobnicate",
    } do
      local rc, out, err = run(args)
      assert.equals(2, rc, args)
      assert.equals("", out)
      assert.matches("^koophone: ", err)
    end
    write_file(DIR .. "/old.jsonl", '{"type":"run","version":1}\n')
    local rc, _, err = run("unassign --journal " .. DIR .. "/old.jsonl --input " .. csv({}) .. endpoint)
    assert.equals(2, rc)
    assert.matches("exists: resume it", err)
    assert.same({}, sim.log())
  end)

  it("refuses a second run on a journal in use (exit 2, nothing sent); the lock dies with its process", function()
    local list = sim.make_pairs(40, "lock")
    sim.reset(list)
    local input, journal = csv(list), DIR .. "/lock.jsonl"
    sim.faults({ type = "delay", seconds = 3, at = 1 }) -- the first run waits in its first request
    local pid = spawn(("unassign --input %s --journal %s --concurrency 1 --batch-size 10%s")
                      :format(input, journal, endpoint))
    wait_for("the first request", function() return #sim.log() > 0 end)
    local rc, out, err = run(("unassign --input %s --journal %s --resume%s"):format(input, journal, endpoint))
    assert.equals(2, rc)
    assert.equals("", out)
    assert.equals(("koophone: journal %s is in use by another run (it is locked) (nothing sent)\n"):format(journal), err)
    assert.equals(1, #sim.log()) -- the first run's request only
    kill9(pid)
    -- the journaled batches read bound (the first one still waits in the server): sent again
    -- only with --ambiguous-attempts 1 (koophone.settle)
    rc, out, err = run(("unassign --input %s --journal %s --resume --ambiguous-attempts 1%s")
                       :format(input, journal, endpoint))
    assert.equals(0, rc, err)
    assert.same({}, sim.bindings())
  end)

  it("refuses --resume with another input or stdin (exit 2, both named), and reports damaged journal lines", function()
    local list = sim.make_pairs(4, "inp")
    sim.reset(list)
    local a, journal = csv(list), DIR .. "/inp.jsonl"
    local rc, _, err = run(("unassign --input %s --journal %s%s"):format(a, journal, endpoint))
    assert.equals(0, rc, err)
    local b = DIR .. "/other.csv"
    write_file(b, "user_id,instance_id\n" .. list[1].user_id .. "," .. list[1].instance_id .. "\n")
    local before = #sim.log()
    rc, _, err = run(("unassign --input %s --journal %s --resume%s"):format(b, journal, endpoint))
    assert.equals(2, rc)
    assert.matches('input "' .. a:gsub("%p", "%%%0") .. '" %(%d+ bytes, fnv1a64:%x+%), '
                   .. 'this run reads "' .. b:gsub("%p", "%%%0") .. '"', err)
    rc, _, err = run(("unassign --journal %s --resume%s < %s"):format(journal, endpoint, a))
    assert.equals(2, rc)
    assert.matches('this run reads "stdin"', err)
    assert.equals(before, #sim.log())
    -- a journal of stdin resumes from stdin
    local piped = DIR .. "/piped.jsonl"
    rc, _, err = run(("unassign --journal %s%s < %s"):format(piped, endpoint, a))
    assert.equals(0, rc, err)
    rc, _, err = run(("unassign --journal %s --resume%s < %s"):format(piped, endpoint, a))
    assert.equals(0, rc, err)
    -- a line damaged in the middle: on stderr, with its number
    local text = read_file(journal)
    write_file(journal, text:gsub("\n", "\n#damaged#\n", 1))
    rc, _, err = run(("unassign --input %s --journal %s --resume%s"):format(a, journal, endpoint))
    assert.equals(0, rc, err)
    assert.matches("koophone: journal " .. journal:gsub("%p", "%%%0") .. ": 1 damaged lines %(line 2%)", err)
  end)

  it("resumes a 5,000-pair run killed with SIGKILL: every pair ends once, none unassigned twice", function()
    local list = sim.make_pairs(5000, "kill")
    sim.reset(list)
    local input, journal = csv(list), DIR .. "/kill.jsonl"
    -- request 20 sleeps 3 s in the server: the run is surely in the middle when it is killed
    sim.faults({ type = "delay", seconds = 3, at = 20 })
    local pid = spawn(("unassign --input %s --journal %s --concurrency 4%s"):format(input, journal, endpoint))
    local delayed = wait_for("request 20", function()
      for _, e in ipairs(sim.log()) do if e.fault == "delay" then return e end end
    end)
    kill9(pid)
    -- the server still applies the delayed request after its client is gone
    wait_for("request 20 to finish", function()
      for _, e in ipairs(sim.log()) do
        if e.seq == delayed.seq and e.status ~= 0 then return true end
      end
    end)
    -- the round's batches that had not left when it died read bound: sent again only with
    -- --ambiguous-attempts 1; the delayed request's pairs read unbound: not sent again
    local rc, out, err = run(("unassign --input %s --journal %s --resume --output jsonl --concurrency 4"
                              .. " --ambiguous-attempts 1%s"):format(input, journal, endpoint))
    assert.equals(0, rc, err)
    local by_instance, resumed, read = {}, 0, {}
    for _, r in ipairs(json_lines(out)) do
      assert.is_nil(by_instance[r.instance_id]) -- one outcome per pair
      by_instance[r.instance_id] = r
      if r.resumed then resumed = resumed + 1 end
      if r.verified then read[r.instance_id] = true end
      assert.is_true(r.outcome == "unassigned" or r.outcome == "assumed_unassigned", r.outcome)
    end
    for _, pr in ipairs(list) do assert.is_not_nil(by_instance[pr.instance_id]) end
    assert.is_true(resumed > 0 and resumed < 5000) -- killed in the middle
    for _, pr in ipairs(delayed.pair_list) do assert.is_true(read[pr[2]]) end
    assert.same({}, sim.bindings())
    local counts, n = sim.applied_counts(), 0
    for key, c in pairs(counts) do
      assert(c == 1, key .. " unassigned twice")
      n = n + 1
    end
    assert.equals(5000, n)
    assert.equals(5000, sim.state().counters.removed_bindings)
  end)
end)
