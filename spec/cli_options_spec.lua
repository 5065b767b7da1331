-- bin/koophone's options people expect: --version, --help per command, the usage, the output
-- to a file, the format option's name, the retry policy, and the confirmation before a run from
-- a terminal (in a pseudo-terminal made by util-linux script).
local sim = require "helpers.sim"
local cli = require "helpers.cli"
local koophone = require "koophone"

local ctx = cli.new()
local run, csv, DIR = ctx.run, ctx.csv, ctx.dir

describe("bin/koophone options", function()
  teardown(ctx.cleanup)

  it("--version prints the module's and libcurl's versions", function()
    local rc, out = run("--version")
    assert.equals(0, rc)
    assert.equals(("koophone %s (libcurl %s)\n"):format(koophone._VERSION,
                  require("koophone.core").curl_version), out)
  end)

  it("unassign --help and task --help print the usage with defaults; alone, it is on stderr", function()
    for _, args in ipairs({ "unassign --help", "task --help", "task 12 -h", "help" }) do
      local rc, out, err = run(args)
      assert.equals(0, rc)
      assert.equals("", err)
      assert.matches("^usage: koophone unassign", out)
      assert.matches("%-%-batch%-size N%s+pairs per request, 1%.%.100000 %[100%]", out)
      assert.matches("%-%-timeout S%s+seconds per request, 0%.001%.%.86400 %[30%]", out)
    end
    local rc, out, err = run("")
    assert.equals(2, rc)
    assert.equals("", out)
    assert.matches("^usage: koophone unassign", err)
  end)

  it("--output-file writes the results to a file; --output-format names the format", function()
    local list = sim.make_pairs(3, "of")
    sim.reset(list)
    local rc, out = run("unassign --yes --output-format jsonl --output-file " .. DIR .. "/res.jsonl"
                        .. " --input " .. csv(list) .. ctx.endpoint)
    assert.equals(0, rc)
    assert.equals("", out)
    local recs = cli.json_lines(cli.read_file(DIR .. "/res.jsonl"))
    assert.equals(3, #recs)
    assert.equals("unassigned", recs[1].outcome)
    -- --output is the old name, still accepted; both at once is a usage error
    sim.reset(list)
    rc, out = run("unassign --output jsonl --input " .. csv(list) .. ctx.endpoint)
    assert.equals(0, rc)
    assert.equals(3, #cli.json_lines(out))
    local err
    rc, _, err = run("unassign --output jsonl --output-format summary --input " .. csv(list))
    assert.equals(2, rc)
    assert.matches("%-%-output is the old name of %-%-output%-format", err)
    rc, _, err = run("unassign --output-file " .. DIR .. "/no/such/dir/x --input " .. csv(list)
                     .. ctx.endpoint)
    assert.equals(2, rc)
    assert.matches("^koophone: cannot write %-%-output%-file: ", err)
  end)

  it("--max-attempts and --ambiguous-attempts set the retry policy", function()
    local list = sim.make_pairs(1, "ma")
    sim.reset(list)
    sim.faults({ type = "unavailable", at = 1, count = 1 })
    local rc, _, err = run("unassign --max-attempts 1 --input " .. csv(list) .. ctx.endpoint)
    assert.equals(1, rc) -- one try: the 503 is final
    assert.matches("failed 1: ", err)
    -- a lost answer is resent with --ambiguous-attempts 1: applied already, 2210 settles it
    sim.reset(list)
    sim.faults({ type = "drop_after_apply", at = 1, count = 1 })
    local out
    rc, out = run("unassign --ambiguous-attempts 1 --input " .. csv(list) .. ctx.endpoint)
    assert.equals(0, rc)
    assert.matches("assumed_unassigned%s+1\n", out)
    rc, _, err = run("unassign --max-attempts 0 --input " .. csv(list) .. ctx.endpoint)
    assert.equals(2, rc)
    assert.equals("koophone: --max-attempts: expected an integer >= 1, got 0 (see 'koophone help')\n", err)
  end)

  it("--max-bisect-requests caps the requests that bisect refused batches", function()
    local list = sim.make_pairs(4, "mb")
    sim.reset(list, { extra_instances = { "mb0099" } }) -- the fifth pair is not bound: 2210
    local input = csv(list, { "u-mb-99,mb0099" }, "mb.csv")
    -- one batch of 5, refused; one split (2 requests) is allowed: the 2 good pairs of the first
    -- half are unassigned, the second half (3 pairs with the bad one) fails
    local rc, out = run("unassign --batch-size 5 --max-bisect-requests 2 --output-format jsonl --input "
                        .. input .. ctx.endpoint)
    assert.equals(1, rc)
    assert.equals(3, #sim.log())
    local outcomes = {}
    for _, r in ipairs(cli.json_lines(out)) do
      outcomes[r.outcome] = (outcomes[r.outcome] or 0) + 1
      if r.outcome == "failed" then assert.equals("max_bisect_requests reached", r.reason) end
    end
    assert.same({ unassigned = 2, failed = 3 }, outcomes)
    -- without the cap the bad pair is found alone
    sim.reset(list, { extra_instances = { "mb0099" } })
    rc, out = run("unassign --batch-size 5 --input " .. input .. ctx.endpoint)
    assert.equals(0, rc)
    assert.matches("unassigned%s+4\n", out)
    assert.matches("not_bound%s+1\n", out)
  end)

  describe("the confirmation from a terminal", function()
    local list = sim.make_pairs(3, "cf")
    local function input() return csv(list, { "u-cf-1,cf0001" }, "cf.csv") end -- a duplicate

    it("says what it is about to do and goes on when yes is typed", function()
      sim.reset(list)
      local rc, screen = ctx.pty("unassign --shard 0/1 --input " .. input() .. ctx.endpoint, "yes\n")
      assert.equals(0, rc)
      assert.matches("about to unassign 3 pairs %(after invalid and duplicate rows%) at "
                     .. sim.http_url:gsub("%p", "%%%0") .. " with the token file [^\n]*token, "
                     .. "shard 0/1%.", screen)
      assert.matches("unassigned%s+3", screen)
      assert.same({}, sim.bindings())
    end)

    it("says how many requests the run sends, and at most how many more bisection adds", function()
      local five = sim.make_pairs(5, "est")
      sim.reset(five)
      local rc, screen = ctx.pty("unassign --batch-size 2 --input " .. csv(five, nil, "est.csv") .. ctx.endpoint, "no\n")
      assert.equals(1, rc)
      -- 3 batches (2 + 2 + 1 pairs); split down to single pairs: 2 + 2 + 0 more requests
      assert.matches("3 requests of up to 2 pairs; at most 4 more if batches are refused for some of "
                     .. "their pairs and bisected %(%-%-max%-bisect%-requests N caps it%), retries aside%.", screen)
      rc, screen = ctx.pty("unassign --batch-size 2 --max-bisect-requests 1 --input " .. csv(five, nil, "est.csv")
                           .. ctx.endpoint, "no\n")
      assert.equals(1, rc)
      assert.matches("3 requests of up to 2 pairs; at most 1 more [^\n]*%(%-%-max%-bisect%-requests 1%)", screen)
      assert.equals(0, #sim.log())
    end)

    it("sends nothing, leaves --output-file as it was and exits 1 when anything else is typed", function()
      sim.reset(list)
      local log = #sim.log()
      local kept = DIR .. "/earlier-results.jsonl"
      sim.write_file(kept, "an earlier run's results\n")
      local rc, screen = ctx.pty("unassign --output-file " .. kept .. " --input " .. input() .. ctx.endpoint,
                                 "no\n")
      assert.equals(1, rc)
      assert.matches("not confirmed; nothing was sent", screen)
      assert.equals(log, #sim.log())
      assert.same({ cf0001 = "u-cf-1", cf0002 = "u-cf-2", cf0003 = "u-cf-3" }, sim.bindings())
      assert.equals("an earlier run's results\n", cli.read_file(kept))
    end)

    it("is not asked when --output-file cannot be written: exit 2, nothing sent", function()
      sim.reset(list)
      local rc, screen = ctx.pty("unassign --output-file " .. DIR .. "/no/such/dir/x --input " .. input()
                                 .. ctx.endpoint, "yes\n")
      assert.equals(2, rc)
      assert.matches("cannot write %-%-output%-file", screen)
      assert.is_nil(screen:find("about to", 1, true))
      assert.equals(0, #sim.log())
    end)

    it("is not asked when the credentials cannot be read: exit 2, nothing written or sent", function()
      sim.reset(list)
      local out = DIR .. "/kept.txt"
      sim.write_file(out, "kept\n")
      local rc, screen = ctx.pty("unassign --output-file " .. out .. " --input " .. input() .. " --endpoint "
                                 .. sim.http_url .. " --token-file " .. DIR .. "/no-such-token", "yes\n")
      assert.equals(2, rc)
      assert.matches("cannot read the token file", screen)
      assert.is_nil(screen:find("about to", 1, true))
      assert.equals("kept\n", cli.read_file(out))
      assert.equals(0, #sim.log())
    end)

    it("never falls back to $KOOPHONE_TOKEN when --token-file cannot be read", function()
      sim.reset(list)
      local cmd = cli.CMD:gsub("KOOPHONE_TOKEN= ", function() return "KOOPHONE_TOKEN=" .. sim.token .. " " end)
      local rc = cli.exit_code(os.execute(("%s unassign --yes --input %s --endpoint %s --token-file %s "
        .. ">%s/out 2>%s/err"):format(cmd, input(), sim.http_url, DIR .. "/no-such-token", DIR, DIR)))
      assert.equals(2, rc)
      assert.matches("cannot read the token file", cli.read_file(DIR .. "/err"))
      assert.equals(0, #sim.log())
    end)

    it("is skipped with --yes, and without a terminal on stdin", function()
      sim.reset(list)
      local rc, screen = ctx.pty("unassign --yes --input " .. input() .. ctx.endpoint)
      assert.equals(0, rc)
      assert.is_nil(screen:find("about to", 1, true))
      assert.matches("unassigned%s+3", screen)
      sim.reset(list)
      local out, err
      rc, out, err = run("unassign --input " .. input() .. ctx.endpoint, ">" .. DIR .. "/out </dev/null")
      assert.equals(0, rc)
      assert.matches("unassigned%s+3", out)
      assert.is_nil(err:find("about to", 1, true))
    end)
  end)
end)
