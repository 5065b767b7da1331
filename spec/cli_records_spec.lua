-- bin/koophone and the files of a run (issue #22): the input, --output-file, --log and --journal
-- are never one file; an input that is a pipe or a FIFO is read once; a resume never takes a file
-- that is not a journal; a journal or log that cannot be written stops the run with a status that
-- says so (74), the outcomes known in the output and the resume command on stderr; new files are
-- 0600; a journal moved away during a run keeps its name locked.
local sim = require "helpers.sim"
local cli = require "helpers.cli"

local ctx = cli.new()
local DIR, ENDPOINT = ctx.dir, ctx.endpoint
local CMD = cli.CMD:gsub(" </dev/null$", "") -- stdin given by each command below

local function sh(cmd)
  return cli.exit_code(os.execute(cmd))
end

-- The CLI with `args` -> its exit status, stdout (DIR/out, or opts.out), stderr (not the files
-- of ctx.start's run: one may run beside it). opts.redirect: its stdin ("<file"); opts.stdin:
-- what comes first ("cat x |"; else stdin is /dev/null), opts.prefix: runs it (prlimit, timeout:
-- through env), opts.pipe: stdout through a pipe (to cat), which no file size limit stops.
local function run(args, opts)
  opts = opts or {}
  local out = DIR .. "/" .. (opts.out or "out")
  local body = ("{ %s%s %s %s 2>%s/r.err%s; echo $? >%s/r.rc; }%s"):format(
    opts.prefix or "", CMD, args, opts.redirect or "", DIR, opts.pipe and "" or (" >" .. out), DIR,
    opts.pipe and (" | cat >" .. out) or "")
  sh(("(%s %s) </dev/null"):format(opts.stdin or "", body))
  return tonumber(cli.read_file(DIR .. "/r.rc"):match("%d+")), cli.read_file(out),
         cli.read_file(DIR .. "/r.err")
end

local function summary(out)
  local t = {}
  for k, n in out:gmatch("([%w_ ]-)%s+(%d+)\n") do t[k] = tonumber(n) end
  return t
end

local function jsonl(list)
  local lines = {}
  for _, p in ipairs(list) do
    lines[#lines + 1] = ('{"user_id":"%s","instance_id":"%s"}'):format(p.user_id, p.instance_id)
  end
  local path = DIR .. "/in.jsonl"
  sim.write_file(path, table.concat(lines, "\n") .. "\n")
  return path
end

local function mode(path)
  local p = io.popen("stat -c %a " .. path)
  local m = p:read("*l")
  p:close()
  return m
end

describe("bin/koophone records", function()
  teardown(ctx.cleanup)

  it("refuses an output, log or journal that is the input's or another's file, before anything changes", function()
    local list = sim.make_pairs(4, "same")
    sim.reset(list)
    local input = ctx.csv(list)
    local journal = DIR .. "/same.journal"
    -- unavailable (certainly not applied): the resume below sends the pairs again
    sim.faults({ type = "api_error", status = 503, code = "APIGW.0613", msg = "x", at = 1 })
    local rc = run(("unassign --input %s --journal %s --max-attempts 1%s"):format(input, journal, ENDPOINT))
    assert.equals(1, rc)
    local journal_text, input_text = cli.read_file(journal), cli.read_file(input)
    sim.reset(list)
    assert(os.execute(("ln -sf %s %s/link.csv && ln -f %s %s/hard.journal"):format(input, DIR, journal, DIR)))
    for _, case in ipairs {
      { "--output-file " .. journal .. " --journal " .. journal .. " --resume", "--output-file", "--journal" },
      { "--output-file " .. input, "--input", "--output-file" },
      { "--output-file " .. DIR .. "/link.csv", "--input", "--output-file" }, -- a symlink
      { "--log " .. DIR .. "/hard.journal --journal " .. journal .. " --resume", "--journal", "--log" }, -- a hard link
      { "--journal " .. input .. " --resume", "--input", "--journal" },
      { "--log " .. input, "--input", "--log" },
      { "--output-file " .. DIR .. "/token", "--token-file", "--output-file" },
    } do
      local code, _, err = run(("unassign --input %s %s%s"):format(input, case[1], ENDPOINT))
      assert.equals(2, code, case[1] .. ": " .. err)
      assert.matches(case[2], err, 1, true)
      assert.matches(case[3], err, 1, true)
      assert.matches("are the same file", err, 1, true)
      assert.equals(journal_text, cli.read_file(journal))
      assert.equals(input_text, cli.read_file(input))
    end
    -- stdin redirected from the output file; one new name for two options
    for _, case in ipairs {
      { "--input - --output-file " .. input, "<" .. input, "--input", "--output-file" },
      { "--input " .. input .. " --output-file " .. DIR .. "/new1 --log " .. DIR .. "/new1", "",
        "--output-file", "--log" },
    } do
      local code, _, err = run(("unassign %s%s"):format(case[1], ENDPOINT), { redirect = case[2] })
      assert.equals(2, code, case[1] .. ": " .. err)
      assert.matches(case[3] .. " and " .. case[4] .. " are the same file", err, 1, true)
      assert.equals(input_text, cli.read_file(input))
    end
    assert.is_nil(io.open(DIR .. "/new1", "rb"))
    assert.same({}, sim.log())
    -- names that do not exist yet, and files that are not regular (/dev/null), never collide
    local code, _, err = run(("unassign --input %s --output-file %s/new.out --log /dev/null "
                              .. "--journal %s --resume%s"):format(input, DIR, journal, ENDPOINT))
    assert.equals(0, code, err)
    assert.same({}, sim.bindings())
  end)

  for _, format in ipairs { "csv", "jsonl" } do
    it(("reads a pipe or a FIFO once (%s): every pair sent, the right total"):format(format), function()
      local list = sim.make_pairs(250, "pipe" .. format)
      local input = format == "csv" and ctx.csv(list) or jsonl(list)
      local fifo = DIR .. "/fifo"
      os.remove(fifo)
      assert(os.execute("mkfifo " .. fifo))
      for _, how in ipairs {
        { "--input -", "cat " .. input .. " |" },
        { "--input /dev/stdin", "cat " .. input .. " |" },
        { "--input " .. fifo, "(cat " .. input .. " >" .. fifo .. " &);" },
      } do
        sim.reset(list)
        os.remove(DIR .. "/j")
        -- timeout: a second open of a FIFO waits for a writer that is gone
        local rc, out, err = run(("unassign %s --format %s --batch-size 20 --journal %s/j%s")
                                 :format(how[1], format, DIR, ENDPOINT),
                                 { stdin = how[2], prefix = "timeout 60 env " })
        assert.equals(0, rc, how[1] .. ": " .. err)
        local s = summary(out)
        assert.equals(250, s.total, how[1] .. ": " .. out)
        assert.equals(250, s.unassigned, how[1] .. ": " .. out)
        assert.same({}, sim.bindings())
        sim.assert_no_pair_twice()
      end
    end)
  end

  it("from a terminal, asks before reading a FIFO input, naming it instead of a count", function()
    local list = sim.make_pairs(3, "ask")
    sim.reset(list)
    local input, fifo = ctx.csv(list), DIR .. "/ask.fifo"
    os.remove(fifo)
    assert(os.execute("mkfifo " .. fifo))
    -- a writer for every reader (a counting pass then a second read would find one): the CLI
    -- must fail, not hang, when it reads the FIFO twice
    assert(os.execute(("(timeout 30 sh -c 'while :; do cat %s >%s; done' 2>/dev/null &)")
                      :format(input, fifo)))
    local rc, screen = ctx.pty(("unassign --input %s%s"):format(fifo, ENDPOINT), "no\n")
    assert.equals(1, rc, screen)
    assert.matches(("about to unassign the pairs of %s (not counted: it can be read only once)")
                   :format(fifo), screen, 1, true)
    assert.matches("nothing was sent", screen, 1, true)
    assert.same({}, sim.log())
  end)

  it("refuses to resume a file that is not a journal, leaving it as it was", function()
    local list = sim.make_pairs(2, "notj")
    sim.reset(list)
    local notes = DIR .. "/notes.txt"
    sim.write_file(notes, "user_id,instance_id\nsomething else\n")
    local rc, _, err = run(("unassign --input %s --journal %s --resume%s"):format(ctx.csv(list), notes, ENDPOINT))
    assert.equals(2, rc)
    assert.matches("does not start with a koophone journal's run record", err, 1, true)
    assert.equals("user_id,instance_id\nsomething else\n", cli.read_file(notes))
    assert.same({}, sim.log())
  end)

  it("a journal that cannot be written before anything is sent: exit 2, nothing sent", function()
    local list = sim.make_pairs(3, "nowrite")
    local input, journal = ctx.csv(list), DIR .. "/nowrite.journal"
    local args = ("unassign --input %s --journal %s%s"):format(input, journal, ENDPOINT)
    sim.reset(list)
    os.remove(journal)
    assert.equals(0, (run(args)))
    local header = #cli.read_file(journal):match("^[^\n]*\n")
    -- RLIMIT_FSIZE: the run record itself (1 byte), or the first `send` after it, fails with
    -- EFBIG (stdout and stderr through a pipe, which no file size limit stops)
    for _, limit in ipairs { 1, header } do
      sim.reset(list)
      os.remove(journal)
      sh(("{ prlimit --fsize=%d env %s %s 2>&1 >/dev/null; echo $? >%s/r.rc; } | cat >%s/r.err")
         :format(limit, CMD, args, DIR, DIR))
      local rc, err = tonumber(cli.read_file(DIR .. "/r.rc"):match("%d+")), cli.read_file(DIR .. "/r.err")
      assert.equals(2, rc, err)
      assert.matches("^koophone: journal [^\n]*: File too large %(nothing sent%)\n$", err)
      assert.same({}, sim.log())
    end
  end)

  it("a journal write failing mid-run: exit 74, every known outcome in the output, the resume command", function()
    local list = sim.make_pairs(400, "efbig")
    local input, journal = ctx.csv(list), DIR .. "/efbig.journal"
    local args = ("unassign --input %s --batch-size 10 --concurrency 1 --output-format jsonl --journal %s%s")
                 :format(input, journal, ENDPOINT)
    sim.reset(list)
    os.remove(journal)
    assert.equals(0, (run(args, { pipe = true }))) -- the whole journal's size
    local size = #cli.read_file(journal)
    sim.reset(list)
    os.remove(journal)
    -- RLIMIT_FSIZE: a write beyond half the journal's size fails with EFBIG (stdout is a pipe)
    local rc, out, err = run(args, { prefix = ("prlimit --fsize=%d env "):format(math.floor(size / 2)),
                                     pipe = true })
    assert.equals(74, rc, err)
    assert.matches("File too large", err, 1, true)
    assert.matches("resume with: ", err, 1, true)
    assert.is_nil(err:find("nothing sent", 1, true))
    local unbound, reported = {}, {}
    local bindings = sim.bindings()
    for _, p in ipairs(list) do
      if not bindings[p.instance_id] then unbound[p.instance_id] = true end
    end
    for _, r in ipairs(cli.json_lines(out)) do
      assert.equals("unassigned", r.outcome)
      reported[r.instance_id] = true
    end
    assert.is_true(next(unbound) ~= nil and next(bindings) ~= nil) -- it stopped mid-run
    assert.same(unbound, reported) -- one request at a time: none was in flight
    -- the printed command settles the run: the 40 pairs whose requests the journal saw leave
    -- but not end are read still bound, so they are not sent again (they may have been applied
    -- with the binding shown until the wipe ends) unless --ambiguous-attempts allows it
    local resume = err:match("resume with: ([^\n]+)")
    rc = run((resume:gsub("^%S+%s*", "")), { out = "out2" })
    assert.equals(1, rc, cli.read_file(DIR .. "/r.err"))
    assert.matches("unconfirmed 40", cli.read_file(DIR .. "/r.err"), 1, true)
    local left = 0
    for id in pairs(sim.bindings()) do
      assert.is_truthy(bindings[id]) -- bound before the resume too
      left = left + 1
    end
    assert.equals(40, left) -- every other row was sent and unassigned
    rc = run((resume:gsub("^%S+%s*", "")) .. " --ambiguous-attempts 1", { out = "out3" })
    assert.equals(0, rc, cli.read_file(DIR .. "/r.err"))
    assert.same({}, sim.bindings())
  end)

  it("a log that cannot be written is said once on stderr and stops the run with exit 74", function()
    local list = sim.make_pairs(200, "logfull")
    sim.reset(list)
    local input = ctx.csv(list)
    local rc, out, err = run(("unassign --input %s --batch-size 1 --log /dev/full%s"):format(input, ENDPOINT))
    assert.equals(74, rc, err)
    assert.matches("\nunassigned +0\n", "\n" .. out) -- the summary is still written
    local _, n = err:gsub("cannot write %-%-log /dev/full: No space left on device", "")
    assert.equals(1, n, err)
    -- the log fills in the middle of the run (file size limit; stdout is a pipe)
    local log = DIR .. "/mid.log"
    rc, _, err = run(("unassign --input %s --batch-size 1 --concurrency 1 --log %s%s"):format(input, log, ENDPOINT),
                     { prefix = "prlimit --fsize=12000 env ", pipe = true })
    assert.equals(74, rc, err)
    _, n = err:gsub("cannot write %-%-log " .. log:gsub("%p", "%%%0") .. ": File too large", "")
    assert.equals(1, n, err)
    assert.is_true(#sim.log() < 200)
  end)

  it("creates the journal, the output and the log 0600 whatever the umask", function()
    local list = sim.make_pairs(3, "mode")
    sim.reset(list)
    local rc, _, err = run(("unassign --input %s --journal %s/m.journal --output-file %s/m.out --log %s/m.log%s")
                           :format(ctx.csv(list), DIR, DIR, DIR, ENDPOINT), { prefix = "umask 000; " })
    assert.equals(0, rc, err)
    for _, name in ipairs { "m.journal", "m.out", "m.log" } do
      assert.equals("600", mode(DIR .. "/" .. name), name)
    end
  end)

  it("refuses an output or a log that is a symlink to nothing: its target would not be created 0600", function()
    local list = sim.make_pairs(1, "dang")
    sim.reset(list)
    for _, opt in ipairs { "--output-file", "--log" } do
      local link, target = DIR .. "/dangling", DIR .. "/dangling.target"
      os.remove(link)
      os.remove(target)
      assert.equals(0, sh(("ln -s %s %s"):format(target, link)))
      local rc, _, err = run(("unassign --input %s %s %s%s"):format(ctx.csv(list), opt, link, ENDPOINT),
                             { prefix = "umask 000; " })
      assert.not_equals(0, rc, err)
      assert.truthy(err:find(link .. ": a symbolic link to a file that does not exist: refused", 1, true), err)
      assert.is_nil(io.open(target, "rb"), opt) -- nothing created through the link
      assert.same({}, sim.log(), opt)
      os.remove(link)
    end
  end)

  it("a journal moved away during a run: a second run on its old name is refused (JOURNAL_LOCKED)", function()
    local list = sim.make_pairs(30, "mvj")
    sim.reset(list)
    local input, journal = ctx.csv(list), DIR .. "/mv.journal"
    sim.faults({ type = "delay", seconds = 3, at = 2 })
    local pid = ctx.start(("unassign --input %s --batch-size 10 --concurrency 1 --journal %s%s")
                          :format(input, journal, ENDPOINT))
    cli.wait_for("the delayed request", function()
      for _, e in ipairs(sim.log()) do if e.fault == "delay" then return true end end
    end)
    assert(os.rename(journal, journal .. ".moved"))
    local rc, _, err = run(("unassign --input %s --journal %s --resume%s"):format(input, journal, ENDPOINT))
    assert.equals(2, rc)
    assert.matches("is in use by another run", err, 1, true)
    cli.wait_for("the first run to end", function() return ctx.status() end)
    assert.equals(0, ctx.status())
    assert.is_false(cli.alive(pid))
    assert.equals(3, #sim.log()) -- the second run sent nothing
    assert.same({}, sim.bindings())
  end)
end)
