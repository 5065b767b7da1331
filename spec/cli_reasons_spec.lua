-- bin/koophone says why pairs failed: the error codes grouped with a count and an example, the
-- resume command that settles pairs that may have been applied, --strict for not_bound, and
-- messages without Lua locations.
local sim = require "helpers.sim"
local cli = require "helpers.cli"

local ctx = cli.new()
local run, csv, DIR = ctx.run, ctx.csv, ctx.dir

-- a ListInstances fault: every read refused (koophone.settle then changes nothing)
local NO_READ = { type = "api_error", api = "list", status = 400, code = "KOOPHONE.API.1001", msg = "no permission", count = -1 }

describe("bin/koophone says why", function()
  teardown(ctx.cleanup)

  it("groups an unreachable endpoint's failures by code with a count and an example", function()
    local input = csv(sim.make_pairs(3, "unr"))
    local rc, out, err = run("unassign --input " .. input .. " --endpoint http://127.0.0.1:1"
                             .. " --timeout 1 --token-file " .. DIR .. "/token")
    assert.equals(1, rc)
    assert.matches('koophone: failed 3: CURLE_COULDNT_CONNECT x3 "[^"\n]*127%.0%.0%.1 port 1', err)
    assert.matches('reason failed 3: CURLE_COULDNT_CONNECT x3 "', out)
    assert.is_nil(err:find("may have been applied", 1, true)) -- nothing was sent
  end)

  it("says the CA file is missing, and groups a CA that does not sign the server", function()
    local input = csv(sim.make_pairs(2, "ca"))
    local args = "unassign --input " .. input .. " --endpoint " .. sim.https_url .. " --token-file "
                 .. DIR .. "/token --cafile "
    local rc, _, err = run(args .. DIR .. "/no-such-ca.pem")
    assert.equals(2, rc)
    assert.matches("^koophone: cannot read %-%-cafile: [^\n]*no%-such%-ca%.pem: No such file", err)
    rc, _, err = run(args .. sim.other_ca)
    assert.equals(1, rc)
    assert.matches('failed 2: CURLE_PEER_FAILED_VERIFICATION x2 "SSL certificate problem', err)
  end)

  it("prints the resume command when a failure may have been applied (a lost answer)", function()
    local list = sim.make_pairs(2, "lost")
    sim.reset(list)
    -- the token may not list the instances: the lost answer cannot be settled by reading
    sim.faults({ type = "drop_after_apply", at = 1, count = 1 }, NO_READ)
    local journal = DIR .. "/lost.jsonl"
    local input = csv(list, nil, "lost.csv")
    local rc, _, err = run("unassign --input " .. input .. " --journal " .. journal .. ctx.endpoint)
    assert.equals(1, rc)
    assert.matches("failed 2: CURLE_GOT_NOTHING x2", err)
    local cmd = err:match("koophone: 2 pairs may have been applied although they failed; settle "
                          .. "them with: ([^\n]+)\n")
    assert.truthy(cmd)
    assert.matches("%-%-journal " .. journal:gsub("%p", "%%%0") .. " .* %-%-resume$", cmd)
    -- the command works as printed: the pairs were unassigned, the resume reads them so
    sim.control("DELETE", "/_sim/faults")
    local out
    rc, out = run((cmd:gsub("^%S+", "")))
    assert.equals(0, rc)
    assert.matches("\nassumed_unassigned%s+2\n", "\n" .. out)

    -- without a journal: the pairs need checking, and a journal next time
    sim.reset(list)
    sim.faults({ type = "drop_after_apply", at = 1, count = 1 }, NO_READ)
    rc, _, err = run("unassign --input " .. input .. ctx.endpoint)
    assert.equals(1, rc)
    assert.matches("2 pairs may have been applied although they failed: check them", err)
    assert.matches("run with %-%-journal next time", err)
  end)

  it("a journaled maybe-applied pair that fails again when resent stays maybe applied in the output",
     function()
    local list = sim.make_pairs(1, "again")
    sim.reset(list)
    sim.faults({ type = "drop", at = 1, count = 1 }, NO_READ)
    local journal = DIR .. "/again.jsonl"
    local args = "unassign --input " .. csv(list, nil, "again.csv") .. " --journal " .. journal
                 .. " --output-format jsonl" .. ctx.endpoint
    local rc, out = run(args)
    assert.equals(1, rc)
    assert.is_true(cli.json_lines(out)[1].maybe_applied)
    -- resent (--ambiguous-attempts 1) and refused: the refusal says nothing of the lost copy
    sim.control("DELETE", "/_sim/faults")
    sim.faults({ type = "api_error", status = 400, code = "KOOPHONE.API.0005", msg = "bad", at = 1,
                 count = 1 }, NO_READ)
    local err
    rc, out, err = run(args .. " --resume --ambiguous-attempts 1")
    assert.equals(1, rc)
    local row = cli.json_lines(out)[1]
    assert.same({ "failed", "KOOPHONE.API.0005", true }, { row.outcome, row.code, row.maybe_applied })
    local records = cli.journal_records(journal)
    local last = records[#records]
    assert.same({ "done", "failed", true }, { last.type, last.outcome, last.maybe_applied })
    assert.matches("koophone: 1 pairs may have been applied although they failed; settle them with: ",
                   err, 1, true)
    sim.control("DELETE", "/_sim/faults")
  end)

  it("--strict counts not_bound as a failure; the summary always shows not_bound", function()
    local list = sim.make_pairs(2, "strict")
    sim.reset(list)
    local input = csv(list, { "stranger,strict0001" })
    local rc, out, err = run("unassign --input " .. input .. ctx.endpoint)
    assert.equals(0, rc)
    assert.matches("not_bound%s+1\n", out)
    assert.matches("not_bound=1", err)
    sim.reset(list)
    rc, out, err = run("unassign --strict --input " .. input .. ctx.endpoint)
    assert.equals(1, rc)
    assert.matches("reason not_bound 1: ", out)
    assert.matches("koophone: not_bound 1: ", err)
    sim.reset(list)
    rc, _, err = run("unassign --strict --input " .. csv(list) .. ctx.endpoint)
    assert.equals(0, rc)
    assert.matches("not_bound=0", err) -- shown even when there were none
  end)

  it("says what to type for an endpoint without a scheme, without a Lua location", function()
    for _, command in ipairs({ "unassign --input " .. csv({}), "task 1" }) do
      local rc, _, err = run(command .. " --endpoint 127.0.0.1:38080 --token-file " .. DIR .. "/token")
      assert.equals(2, rc)
      assert.equals("koophone: --endpoint: expected an http:// or https:// URL, e.g. "
                    .. "https://127.0.0.1:38080 (see 'koophone help')\n", err)
    end
    local rc, _, err = run("unassign --input " .. csv({}) .. " --endpoint 'http://a b' --token-file "
                           .. DIR .. "/token")
    assert.equals(2, rc)
    assert.is_nil(err:find(".lua:", 1, true))
    assert.matches("^koophone: %-%-endpoint: ", err)
  end)
end)
