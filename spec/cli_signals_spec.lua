-- bin/koophone stopped in the middle of a run: real SIGINT and SIGTERM, a stdout that cannot be
-- written (/dev/full, a pipe closed by `head -1`), and the same interruption in the library.
-- Each stop must keep the journal true: a resume sends nothing twice.
local sim = require "helpers.sim"
local cli = require "helpers.cli"
local koophone = require "koophone"

local ctx = cli.new()
local DIR, ENDPOINT = ctx.dir, ctx.endpoint

local journal_records, open_sends = cli.journal_records, cli.open_sends

-- Sends signal `sig` to the CLI at pid once `ready()` holds; returns its exit status, stdout and
-- stderr once it ended. The wait for the end is bounded: an interrupted CLI stops at once, so a
-- few seconds are plenty where the faults below would hold it for a minute.
local function interrupt_when(pid, sig, ready)
  cli.wait_for("the run to reach the fault", ready)
  assert(os.execute("kill -" .. sig .. " " .. pid))
  cli.wait_for("the CLI to stop after SIG" .. sig, function() return ctx.status() end, 5)
  local out, err = ctx.output()
  return ctx.status(), out, err
end

-- The arguments of the printed resume command (the program path replaced by CMD).
local function resume_args(err)
  return (assert(err:match("resume with: %S+ (unassign[^\n]*%-%-resume)\n"), err))
end

-- Pairs of the applied requests in `log`, as "user\0instance" -> true.
local function applied_pairs(log)
  local out = {}
  for _, e in ipairs(log) do
    if e.applied then
      for _, p in ipairs(e.pair_list) do out[p[1] .. "\0" .. p[2]] = true end
    end
  end
  return out
end

describe("bin/koophone interrupted", function()
  teardown(ctx.cleanup)

  it("SIGINT during a 60 s Retry-After sleep: stops at once, exit 130, summary and resume command; the resume sends no answered pair again", function()
    local list = sim.make_pairs(30, "sint")
    sim.reset(list)
    sim.faults({ type = "throttle", retry_after = "60", at = 3 }) -- the last batch
    local input, journal = ctx.csv(list), DIR .. "/sint.jsonl"
    local pid = ctx.start(("unassign --input %s --journal %s --batch-size 10 --concurrency 1%s")
                          :format(input, journal, ENDPOINT))
    -- the 429 is journaled (`clear`): the CLI now sleeps 60 s before the retry
    local rc, out, err = interrupt_when(pid, "INT", function()
      return cli.read_file(journal):find('"clear"', 1, true)
    end)
    assert.equals(130, rc)
    assert.matches("unassigned%s+20\n", out) -- the summary of what was done
    assert.matches("unfinished%s+10\n", out)
    assert.matches("failed%s+0\n", out) -- the throttled batch is not done, not failed
    assert.matches("progress: 20/", err)
    assert.matches("stopped by SIGINT", err)
    assert.not_matches("traceback", err)
    local before = sim.log()
    local args = resume_args(err)
    assert.matches("%-%-journal " .. journal:gsub("%p", "%%%0"), args)
    assert.same({}, open_sends(journal)) -- the 429 applied nothing: nothing is in doubt
    local rc2, _, err2 = ctx.run(args)
    assert.equals(0, rc2, err2)
    local answered = applied_pairs(before)
    for _, e in ipairs(sim.log(before[#before].seq)) do
      for _, p in ipairs(e.pair_list) do assert.is_nil(answered[p[1] .. "\0" .. p[2]], "sent again") end
    end
    sim.assert_no_pair_twice()
    assert.same({}, sim.bindings())
  end)

  it("SIGTERM with a request in flight: exit 143, its send stays open in the journal, the resume settles it as maybe applied", function()
    local list = sim.make_pairs(40, "sterm")
    sim.reset(list)
    sim.faults({ type = "delay", seconds = 3, at = 2 })
    local input, journal = ctx.csv(list), DIR .. "/sterm.jsonl"
    local pid = ctx.start(("unassign --input %s --journal %s --batch-size 10 --concurrency 2%s")
                          :format(input, journal, ENDPOINT))
    local delayed
    local rc, _, err = interrupt_when(pid, "TERM", function()
      for _, e in ipairs(sim.log()) do if e.fault == "delay" then delayed = e return true end end
    end)
    assert.equals(143, rc)
    assert.matches("stopped by SIGTERM", err)
    assert.matches("in flight %(they may have been applied%)", err)
    assert.is_true(open_sends(journal)[delayed.request_id])
    -- the server applies the delayed request after its client left
    cli.wait_for("the delayed request to end", function()
      for _, e in ipairs(sim.log()) do if e.seq == delayed.seq and e.status ~= 0 then return true end end
    end)
    local rc2, out2, err2 = ctx.run(resume_args(err) .. " --output jsonl")
    assert.equals(0, rc2, err2)
    local outcome = {}
    for _, r in ipairs(cli.json_lines(out2)) do outcome[r.instance_id] = r.outcome end
    -- read unassigned (koophone.settle): not sent again
    for _, p in ipairs(delayed.pair_list) do assert.equals("assumed_unassigned", outcome[p[2]]) end
    local in_doubt = {}
    for _, p in ipairs(delayed.pair_list) do in_doubt[p[2]] = true end
    for _, e in ipairs(sim.log(delayed.seq)) do
      for _, p in ipairs(e.pair_list) do assert.is_nil(in_doubt[p[2]], "sent again: " .. p[2]) end
    end
    sim.assert_no_pair_twice()
    assert.same({}, sim.bindings())
  end)

  it("stdout on /dev/full: exit 74 with a message, nothing sent after the failed write", function()
    local list = sim.make_pairs(50, "full")
    sim.reset(list)
    local rc, _, err = ctx.run(("unassign --input %s --output jsonl --batch-size 10 --concurrency 1%s")
                               :format(ctx.csv(list), ENDPOINT), ">/dev/full")
    assert.equals(74, rc)
    assert.matches("cannot write the output: No space left on device", err)
    assert.matches("cannot be resumed %(no %-%-journal%)", err)
    assert.equals(1, #sim.log()) -- the first answer could not be written: nothing more went out
  end)

  it("--dry-run on /dev/full: exit 74", function()
    local rc, _, err = ctx.run("unassign --dry-run --input " .. ctx.csv(sim.make_pairs(5, "dfull")),
                               ">/dev/full")
    assert.equals(74, rc)
    assert.matches("cannot write the output", err)
  end)

  it("stdout closed by `| head -1`: exit 74, no request after the failed write, the journal resumes", function()
    local list = sim.make_pairs(50, "pipe")
    sim.reset(list)
    -- the second answer comes late: by then head has read its line and closed the pipe
    sim.faults({ type = "delay", seconds = 1, at = 2 })
    local journal = DIR .. "/pipe.jsonl"
    local args = ("unassign --input %s --journal %s --output jsonl --batch-size 10 --concurrency 1%s")
                 :format(ctx.csv(list), journal, ENDPOINT)
    os.execute(("(%s %s 2>%s/err; echo $? >%s/rc) | head -1 >%s/out"):format(cli.CMD, args, DIR, DIR, DIR))
    local out, err = ctx.output()
    assert.equals(74, ctx.status())
    assert.matches("cannot write the output: Broken pipe", err)
    assert.equals(1, #cli.json_lines(out))
    assert.equals(2, #sim.log()) -- the second batch's lines failed: the third never went out
    local rc2, _, err2 = ctx.run(resume_args(err))
    assert.equals(0, rc2, err2)
    sim.assert_no_pair_twice()
    assert.same({}, sim.bindings())
  end)
end)

describe("interruption in the library", function()
  local lib = cli.new()
  after_each(koophone.clear_interrupt)
  teardown(lib.cleanup)

  it("catch_signals: the first SIGINT raises the flag and ends a sleep, a second one kills", function()
    local script = lib.dir .. "/sig.lua"
    sim.write_file(script, [[
      local koophone = require "koophone"
      koophone.catch_signals()
      io.stdout:write("ready\n")
      io.stdout:flush()
      io.stdout:write(tostring(koophone.sleep(60)), " ", koophone.interrupted(), "\n")
      io.stdout:flush()
      koophone.clear_interrupt()
      koophone.sleep(60)
      os.exit(0)
    ]])
    local pid = lib.start("", script)
    cli.wait_for("the script to sleep", function() return lib.output():find("ready") end)
    assert(os.execute("kill -INT " .. pid))
    cli.wait_for("the sleep to end", function() return lib.output():find("false SIGINT") end, 5)
    assert(os.execute("kill -INT " .. pid))
    cli.wait_for("the script to die", function() return lib.status() end, 5)
    assert.equals(130, lib.status()) -- killed by SIGINT: 128 + 2
  end)

  it("core.sleep returns false at once when the flag is up", function()
    koophone.interrupt()
    assert.equals("interrupted", koophone.interrupted())
    assert.is_false(koophone.sleep(60))
    koophone.clear_interrupt()
    assert.is_nil(koophone.interrupted())
    assert.is_true(koophone.sleep(0))
  end)

  it("a call made while the flag is up is not sent: nil, err of kind 'interrupted'", function()
    local list = sim.make_pairs(1, "lib1")
    sim.reset(list)
    local client = koophone.client(sim.client_opts("http"))
    koophone.interrupt()
    local res, err = client:unassign(sim.token, list)
    client:close()
    assert.is_nil(res)
    assert.equals("interrupted", err.kind)
    assert.is_false(err.sent)
    assert.equals("final", err.class) -- not retried: a retry would stop the same way
    assert.same({}, sim.log())
  end)

  it("unassign_all stops sending and reports interrupted; the rest is not reported, and cleared in the journal", function()
    local list = sim.make_pairs(50, "lib2")
    sim.reset(list)
    local journal = lib.dir .. "/lib.jsonl"
    local client = koophone.client(sim.client_opts("http"))
    local seen = 0
    local report = assert(client:unassign_all(sim.token, sim.copy_pairs(list), {
      batch_size = 10, concurrency = 1, journal = journal,
      on_result = function() seen = seen + 1; if seen == 10 then koophone.interrupt() end end,
    }))
    client:close()
    assert.equals("interrupted", report.interrupted)
    assert.equals(10, report.counts.unassigned)
    assert.equals(1, #sim.log())
    assert.equals(0, report.in_flight)
    -- the round's other requests were journaled before it started, and cleared: never sent
    local state = {}
    for _, r in ipairs(journal_records(journal)) do
      if r.type == "send" then state[r.request_id] = "open"
      elseif r.type == "done" then state[r.request_id] = "done"
      elseif r.type == "clear" and state[r.request_id] == "open" then state[r.request_id] = "cleared" end
    end
    local count = { open = 0, done = 0, cleared = 0 }
    for _, v in pairs(state) do count[v] = count[v] + 1 end
    assert.same({ open = 0, done = 1, cleared = 4 }, count)
  end)
end)
