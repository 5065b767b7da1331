-- bin/koophone plan / verify, and unassign --skip-unbound / --verify, against the simulator: the
-- bindings read through ListInstances decide what is sent; the request logs say what went out.
local sim = require "helpers.sim"
local cli = require "helpers.cli"

local ctx = cli.new()
local run, csv = ctx.run, ctx.csv

local tenant = require "helpers.tenant"
local list_log = tenant.list_log

-- 120 pairs: 100 bound, 15 whose instance is free, 5 bound to someone else
local function seed() return tenant.seed(100, 15, 5) end

describe("bin/koophone reading the bindings", function()
  teardown(ctx.cleanup)

  it("plan prints the counts per state and what a run would send, sends nothing, exits 0", function()
    local input = csv(seed(), { "u-x,b0001" }) -- b0001 bound to another user than u-x
    local rc, out, err = run("plan --input " .. input .. ctx.endpoint)
    assert.equals(0, rc, err)
    assert.matches("\nbound%s+100\n", out)
    assert.matches("\nunbound%s+15\n", out)
    assert.matches("\nother%s+6\n", out)
    assert.matches("\nsend%s+100\nskip%s+21\nrequests%s+1\n", out)
    assert.matches("reads%s+" .. #list_log() .. "\n", out)
    assert.matches("plan: %-%-skip%-unbound would send 100 pairs in 1 requests", err)
    assert.same({}, sim.log())
    -- one JSON line per row with its state
    rc, out = run("plan --output-format jsonl --input " .. input .. ctx.endpoint)
    assert.equals(0, rc)
    local rows = cli.json_lines(out)
    assert.equals(121, #rows)
    assert.same({ "bound", "unbound", "other" }, { rows[1].state, rows[101].state, rows[116].state })
    assert.same({}, sim.log())
  end)

  it("plan refuses what only a run takes", function()
    local rc, _, err = run("plan --journal x.jsonl --input " .. csv(seed()) .. ctx.endpoint)
    assert.equals(2, rc)
    assert.matches("%-%-journal is no option of plan", err)
  end)

  it("plan and verify refuse every option they would ignore, naming it; they read --separator", function()
    local list = seed()
    local input = csv(list)
    local log = ctx.dir .. "/ignored.log"
    for _, cmd in ipairs { "plan", "verify" } do
      for _, given in ipairs { "--log " .. log, "--rate 0.5", "--max-attempts 9", "--ambiguous-attempts 3",
                               "--verbose", "--summary-format json", "--concurrency 2" } do
        local rc, _, err = run(cmd .. " " .. given .. " --input " .. input .. ctx.endpoint)
        assert.equals(2, rc, given)
        assert.equals(("koophone: %s is no option of %s (see 'koophone help')\n")
                      :format(given:match("^%S+"), cmd), err)
      end
    end
    assert.is_nil(io.open(log))
    local rc, _, err = run("task --journal j.jsonl RM_1" .. ctx.endpoint)
    assert.equals(2, rc)
    assert.matches("%-%-journal is no option of task", err)
    -- a ;-separated input, read as such
    local path = ctx.dir .. "/semi.csv"
    local f = assert(io.open(path, "w"))
    f:write("user_id;instance_id\n")
    for _, p in ipairs(list) do f:write(p.user_id, ";", p.instance_id, "\n") end
    f:close()
    local out
    rc, out, err = run("plan --separator ';' --input " .. path .. ctx.endpoint)
    assert.equals(0, rc, err)
    assert.matches("\nbound%s+100\n", out)
  end)

  it("unassign --skip-unbound sends only the pairs read bound: no 2210, no bisection", function()
    local list = seed()
    local rc, out, err = run("unassign --skip-unbound --output-format jsonl --input " .. csv(list) .. ctx.endpoint)
    assert.equals(0, rc, err)
    local log = sim.log()
    assert.equals(1, #log) -- 100 bound pairs, one batch
    assert.equals(100, #log[1].pair_list)
    assert.equals(200, log[1].status)
    local by = {}
    for _, r in ipairs(cli.json_lines(out)) do by[r.instance_id] = r end
    assert.same({ "not_bound", true, "read unbound: not sent" },
                { by.f0001.outcome, by.f0001.verified, by.f0001.reason })
    assert.equals("unassigned", by.b0100.outcome)
  end)

  it("verify names the pairs still bound after a run and exits 1; 0 once none is", function()
    local list = sim.make_pairs(20, "v")
    sim.reset(list)
    sim.faults({ type = "error", at = 2 }) -- the second batch fails (a 500: not retried), unapplied
    local input = csv(list)
    local rc = run("unassign --batch-size 10 --concurrency 1 --input " .. input .. ctx.endpoint)
    assert.equals(1, rc)
    local out, err
    rc, out, err = run("verify --input " .. input .. ctx.endpoint)
    assert.equals(1, rc)
    assert.matches("\nbound%s+10\n", out)
    assert.matches("still bound: row 11 user_id=u%-v%-11 instance_id=v0011", err)
    rc = run("unassign --input " .. input .. ctx.endpoint) -- the 10 left, and 2210s for the rest
    rc, out, err = run("verify --input " .. input .. ctx.endpoint)
    assert.equals(0, rc, err)
    assert.matches("\nbound%s+0\n", out)
  end)

  it("unassign --verify: still bound while the wipe jobs run (flip after_job), not after --wait", function()
    local list = sim.make_pairs(10, "w")
    sim.reset(list)
    sim.control("POST", "/_sim/list", { flip = "after_job" })
    sim.control("POST", "/_sim/jobs", { tenant = "t1", delay = 0, seconds = 3600 })
    local rc, out, err = run("unassign --verify --input " .. csv(list) .. ctx.endpoint)
    assert.equals(1, rc)
    assert.matches("\nstill bound%s+10\n", out)
    assert.matches("verify: 10 pairs read still bound after the run", err)
    sim.reset(list)
    sim.control("POST", "/_sim/list", { flip = "after_job" })
    sim.control("POST", "/_sim/jobs", { tenant = "t1", delay = 0, seconds = 0.2 })
    rc, out, err = run("unassign --wait=30 --verify --input " .. csv(list) .. ctx.endpoint)
    assert.equals(0, rc, err)
    assert.matches("\nstill bound%s+0\n", out)
    sim.control("POST", "/_sim/list", { flip = "immediate" })
  end)

  it("unassign --verify whose reads fail verifies nothing: exit 1, said on stderr", function()
    local list = sim.make_pairs(4, "vr")
    sim.reset(list)
    sim.faults({ type = "api_error", api = "list", status = 400, code = "KOOPHONE.API.1000",
                 msg = "bad", count = -1 })
    local rc, out, err = run("unassign --verify --input " .. csv(list) .. ctx.endpoint)
    assert.equals(1, rc, err)
    assert.matches("verify: 0 pairs read still bound after the run, 4 could not be read", err, 1, true)
    assert.matches("pairs that could not be read (--verify): 4", out, 1, true)
    assert.same({}, sim.bindings()) -- the unassigns themselves went through
    sim.control("DELETE", "/_sim/faults")
  end)
end)
