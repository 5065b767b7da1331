-- koophone.cli.unassign: `koophone unassign`: the options checked, the input counted, the
-- confirmation, the run with its progress and results, and what stderr says at the end.
local koophone = require "koophone"
local errors = require "koophone.cli.errors"
local options = require "koophone.cli.options"
local connection = require "koophone.cli.connection"
local output = require "koophone.cli.output"
local progress = require "koophone.cli.progress"
local reasons = require "koophone.cli.reasons"
local files = require "koophone.cli.files"
local outcomes = require "koophone.outcomes"
local summary = require "koophone.cli.summary"
local FINAL_JOB = require("koophone.wait").FINAL

local fail, usage_error = errors.fail, errors.usage_error
local emit, word = output.emit, summary.word

local _M = {}

-- The input's rows (koophone.rows.csv with --separator, or .jsonl). A read error in the middle of
-- the input ends the CLI as an unreadable file does.
function _M.reader(source, format, separator)
  local ok, rows, err = pcall(koophone.rows[format], source,
                              format == "csv" and { separator = separator } or nil)
  if not ok then errors.option_error(rows) end -- the separator, as the library checks it
  if not rows then fail(err) end
  return function()
    local ok, v, reason = pcall(rows)
    if not ok then error({ usage = v }, 0) end
    return v, reason
  end
end

-- The counting pass over a file input: its rows in this shard (the progress line's total from
-- the start) and the pairs among them that would be sent (after invalid and duplicate rows).
local function count_input(path, format, separator, shard)
  local rows = require("koophone.rows").new(_M.reader(path, format, separator), { shard = shard })
  local n = 0
  for e in function() return rows:next() end do
    if not e.outcome then n = n + 1 end
  end
  rows:close()
  return rows.total, n
end

-- --dry-run: the batches this input makes, without a token or a request.
local function dry_run(rows, batch_size)
  local batch, n, bad = {}, 0, false
  local function flush()
    if #batch == 0 then return end
    n = n + 1
    emit(output.json_line { batch = n, pairs = batch })
    batch = {}
  end
  for e in function() return not koophone.interrupted() and rows:next() or nil end do
    if e.outcome then
      bad = bad or e.outcome == "invalid"
      emit(output.result_json(e))
    else
      batch[#batch + 1] = { e.user_id, e.instance_id }
      if #batch == batch_size then flush() end
    end
  end
  flush()
  output.flush()
  return bad and 1 or 0
end

-- The requests a run of n pairs in batches of batch_size sends (retries aside), and at most how
-- many more bisection adds: a refused batch of k pairs is split down to single pairs, 2k - 2
-- requests at worst (docs/bulk.md), capped by max_bisect for the whole run.
local function estimate(n, batch_size, max_bisect)
  local requests = math.ceil(n / batch_size)
  local bisect = 2 * n - 2 * requests
  return requests, max_bisect and math.min(bisect, max_bisect) or bisect
end

-- Before a destructive run from a terminal: what it is about to do, and a "yes" to type.
-- pairs_to_send: nil for an input read once (not counted: no estimate either).
local function confirm(o, pairs_to_send, batch_size, endpoint, credential)
  local cap = o["max-bisect-requests"]
  local what = ("the pairs of %s (not counted: it can be read only once)"):format(o.input)
  local plan = ""
  if pairs_to_send then
    local requests, bisect = estimate(pairs_to_send, batch_size, cap)
    what = ("%d pairs (after invalid and duplicate rows)"):format(pairs_to_send)
    plan = ("koophone: %d requests of up to %d pairs; at most %d more if batches are refused "
            .. "for some of their pairs and bisected (%s), retries aside.\n")
           :format(requests, batch_size, bisect,
                   cap and "--max-bisect-requests " .. cap or "--max-bisect-requests N caps it")
  end
  io.stderr:write(("koophone: about to unassign %s at %s with the %s%s%s.\n"):format(
                   what, endpoint or "the default endpoint", credential,
                   o.shard and (", shard " .. options.shard_text(o.shard)) or "",
                   o.resume and " (fewer: the journal's done pairs are not sent again)" or ""),
                  plan, "Type yes to go on: ")
  local answer = io.stdin:read("*l")
  if answer and answer:match("^%s*(.-)%s*$") == "yes" then return end
  io.stderr:write("koophone: not confirmed; nothing was sent\n")
  os.exit(1)
end

-- a as one word of a POSIX shell.
local function shell_word(a)
  return a:find("^[%w%-%./_=:,@+]+$") and a or "'" .. a:gsub("'", "'\\''") .. "'"
end

-- The command that resumes this run: the same arguments with --resume (and the same stdin).
local function resume_command(argv, o)
  local words = { argv[0] or "koophone" }
  local has_resume = false
  for _, a in ipairs(argv) do
    has_resume = has_resume or a == "--resume"
    words[#words + 1] = shell_word(a)
  end
  if not has_resume then words[#words + 1] = "--resume" end
  return table.concat(words, " ") .. ((o.input and o.input ~= "-") and "" or " < the same input")
end

-- After SIGINT, SIGTERM or a failed output, log or journal: what was done and how to go on, on
-- stderr. A run the journal stopped does not know what was in flight (report.unfinished nil).
local function explain_interruption(report, o, argv)
  local say = ("%d rows have their outcome; %d were read without one"):format(
    report.total_done, report.unfinished or 0)
  if not report.unfinished then
    say = ("%d rows have their outcome (%d requests sent); those of the requests in flight when "
           .. "the journal failed may have been applied (a resume treats them so)")
          :format(report.total_done, report.requests)
  elseif report.in_flight > 0 then
    say = say .. (", of which %d in flight (they may have been applied)"):format(report.in_flight)
  end
  if o.journal then
    io.stderr:write("koophone: ", say, "; the rest of the input was not sent\n",
                    "koophone: resume with: ", resume_command(argv, o), "\n")
  else
    io.stderr:write("koophone: ", say, "; the rest of the input was not sent\n",
                    "koophone: this run cannot be resumed (no --journal); the counts above say ",
                    "what was done\n")
  end
end

-- The `koophone task` command that follows up these task ids, with this run's connection options.
local function task_command(argv, o, ids)
  local words = { argv[0] or "koophone", "task" }
  for _, opt in ipairs(options.list) do
    if opt.commands.task and o.texts[opt.name] then
      words[#words + 1] = "--" .. opt.name
      words[#words + 1] = shell_word(o.texts[opt.name])
    end
  end
  for _, id in ipairs(ids) do words[#words + 1] = shell_word(id) end
  return table.concat(words, " ")
end

local LISTED = 20 -- failed jobs and open tasks named on stderr (the summary names all)

-- What --wait leaves to look at, from the rows as they are reported: the failed jobs
-- ({ instance_id, task_id, job_id, code }) and the tasks with jobs still open, in the order met.
local function job_watch()
  local w = { failed = {}, open = {}, seen = {} }
  local esc = output.utf8_escaped
  function w.add(r)
    if r.job_state == "failed" then
      w.failed[#w.failed + 1] = { instance_id = esc(r.instance_id), task_id = esc(r.task_id),
                                  job_id = esc(r.job_id), code = r.job_error and esc(r.job_error.code) }
    elseif r.job_state and not FINAL_JOB[r.job_state] and not w.seen[r.task_id] then
      w.seen[r.task_id] = true
      w.open[#w.open + 1] = r.task_id
    end
  end
  -- report(listed, command): the first LISTED failed jobs and open tasks on stderr (listed: where
  -- the others are), then the command that follows the open tasks up.
  function w.report(listed, command)
    local function list(what, items)
      for i = 1, math.min(LISTED, #items) do io.stderr:write("koophone: ", what, " ", items[i], "\n") end
      if #items > LISTED then
        io.stderr:write(("koophone: and %d more %ss (%s)\n"):format(#items - LISTED, what, listed))
      end
    end
    local failed = {}
    for i, j in ipairs(w.failed) do failed[i] = summary.failed_job_text(j) end
    list("failed job", failed)
    local open = {}
    for i, id in ipairs(w.open) do open[i] = word(output.utf8_escaped(id)) end
    list("open task", open)
    if #w.open > 0 then
      io.stderr:write("koophone: follow the open tasks up with: ", command(w.open), "\n")
    end
  end
  return w
end

-- run(o, argv) -> exit status; o: the parsed options (koophone.cli.options), argv: the
-- command line (for the resume command).
function _M.run(o, argv)
  local shard = o.shard
  local output_format = o["output-format"] or options.by_name["output-format"].default
  local format = o.format or ((o.input or ""):match("%.jsonl?$") and "jsonl" or "csv")
  if o.resume and not o.journal then usage_error("--resume needs --journal") end
  if o.separator and format ~= "csv" then usage_error("--separator: only for CSV input") end
  local batch_size = o["batch-size"]
  local concurrency, rate = o.concurrency, o.rate
  local wait_seconds = o.wait ~= true and o.wait or nil
  o.retry = { max_attempts = o["max-attempts"], ambiguous_attempts = o["ambiguous-attempts"] }
  files.check_distinct(o)

  local from_stdin = not o.input or o.input == "-"
  local once, stdin = files.read_once(o)
  local total, to_send
  if not once and not o["dry-run"] then
    total, to_send = count_input(o.input, format, o.separator, shard)
  end
  local input = _M.reader(from_stdin and io.stdin or o.input, format, o.separator)

  if o["dry-run"] then
    output.open(o)
    local rc = dry_run(require("koophone.rows").new(input, { shard = shard }), batch_size)
    return output.stopped(koophone.interrupted()) or rc
  end

  local identity -- what a journal records of the input (koophone.journal)
  if o.journal then
    local err
    identity = { name = from_stdin and "stdin" or o.input }
    if not once then identity, err = require("koophone.journal").input_identity(o.input) end
    if not identity then fail(err) end
  end

  -- everything that can be refused is, before the confirmation; nothing is written before it
  local token, credential = connection.credentials(o)
  local env_endpoint = os.getenv("KOOPHONE_ENDPOINT")
  local endpoint = o.endpoint or (env_endpoint ~= "" and env_endpoint or nil)
  output.check(o)
  if not (stdin or o.yes) and progress.is_terminal(0) then
    confirm(o, to_send, batch_size, endpoint, credential)
  end
  output.open(o) -- after the confirmation: a run not confirmed leaves an existing file as it was
  local log, log_err = require("koophone.eventlog").open(o.log, o.verbose and io.stderr or nil,
                                                         function(problem)
                                                           output.failed("cannot write --log " .. problem)
                                                         end)
  if not log then fail("cannot open --log: " .. tostring(log_err)) end
  local client = connection.client(o, log.on_event)
  log:start { endpoint = endpoint, input = o.input or "-",
              format = format, batch_size = batch_size, concurrency = concurrency, rate = rate,
              shard = options.shard_text(shard), journal = o.journal, credential = credential }
  local show = progress.run_printer(koophone.now)
  local tally = reasons.tally(o.strict)
  local watch = job_watch()
  local known, requests, started = {}, 0, koophone.now() -- for a run the journal stops
  for _, k in ipairs(outcomes.names) do known[k] = 0 end
  local record = summary.recorder()
  local endpoint_url = tostring(client.core):match("^koophone%.client %((.*)%)$") -- the one used
  if output_format == "csv" then emit(output.csv_header()) end
  local report, err = client:unassign_all(token, input, {
    batch_size = batch_size, concurrency = concurrency, rate = rate, shard = shard,
    max_bisect_requests = o["max-bisect-requests"], journal = o.journal, resume = o.resume or nil, input = identity, keep_results = false,
    skip_unbound = o["skip-unbound"] or nil, verify = o.verify or nil,
    on_progress = function(p)
      p.total = p.total or total
      requests = p.requests
      output.flush()
      show(p)
    end,
    on_result = function(r)
      tally.add(r)
      watch.add(r)
      known[r.outcome] = known[r.outcome] + 1
      record.add(r)
      if output_format == "jsonl" then emit(output.result_json(r)) end
      if output_format == "csv" then emit(output.result_csv(r)) end
    end,
    wait = o.wait and { timeout = wait_seconds, on_poll = progress.wait_printer(koophone.now) } or nil,
  })
  client:close()
  log:finish { counts = report and report.counts, total = report and report.total,
               elapsed = report and report.elapsed, interrupted = report and report.interrupted,
               error = err and err.message }
  -- a journal (kind "journal") that could not be used or written before the first request: a
  -- usage error's status, as nothing was sent
  if not report and requests == 0 then fail(err.message .. " (nothing sent)") end
  if not report then -- the journal failed in the middle: what is known, and how to go on
    output.failed(err.message)
    report = { counts = known, total = total, requests = requests, bisect_requests = 0,
               interrupted = "journal", elapsed = koophone.now() - started }
  end
  output.flush()
  local damaged = report.journal_damaged
  if damaged then
    io.stderr:write(("koophone: journal %s: %d damaged lines (line %s): a 2210 for a pair not final "
                     .. "in it counts as assumed_unassigned\n"):format(
                     o.journal, damaged.count, table.concat(damaged.lines, ", ")))
  end
  local done = 0
  for _, n in pairs(report.counts) do done = done + n end
  report.total_done = done
  show({ done = done, total = report.total, counts = report.counts, elapsed = report.elapsed },
       true)
  local sum = record.finish(report, { endpoint = endpoint_url, input = o.input or "-", tally = tally,
                                     failed_jobs = watch.failed, open_tasks = watch.open, strict = o.strict })
  local json_summary = o["summary-format"] == "json" and summary.json(sum)
  if output_format == "summary" then emit(json_summary or summary.text(sum)) end
  for _, line in ipairs(sum.reason_lines) do io.stderr:write("koophone: ", line, "\n") end
  output.flush()
  if report.aborted then io.stderr:write("koophone: stopped: ", tostring(report.aborted), "\n") end
  local stop = output.stopped(report.interrupted)
  if report.interrupted then
    explain_interruption(report, o, argv)
  elseif tally.maybe_applied > 0 and o.journal then
    io.stderr:write(("koophone: %d pairs may have been applied although they failed; settle them "
                     .. "with: %s\n"):format(tally.maybe_applied, resume_command(argv, o)))
  elseif tally.maybe_applied > 0 then
    io.stderr:write(("koophone: %d pairs may have been applied although they failed: check them "
                     .. "(--output-format jsonl or csv lists them); run with --journal next time, so that "
                     .. "--resume can settle them\n"):format(tally.maybe_applied))
  end
  local jobs = report.jobs
  if jobs and (jobs.pending > 0 or jobs.unknown > 0) then
    io.stderr:write(("koophone: jobs not known to be done: %d pending%s, %d unknown (GetTask did "
                     .. "not answer for their task)\n"):format(jobs.pending,
                     jobs.timed_out and " (the wait timed out)" or "", jobs.unknown))
  end
  watch.report(output_format == "summary" and "the summary lists them"
               or json_summary and "the JSON summary lists them" or "the rows have their job_state",
               function(ids) return task_command(argv, o, ids) end)
  local verify = report.verify
  if verify then
    io.stderr:write(("koophone: verify: %d pairs read still bound after the run, %d could not be read%s\n")
                    :format(#verify.still_bound, #verify.unread, (#verify.still_bound + #verify.unread > 0)
                            and " (koophone verify with the same --input lists them)" or ""))
  end
  -- with rows as the output, the JSON summary is the last line of stderr
  if json_summary and output_format ~= "summary" then io.stderr:write(json_summary) end
  output.flush()
  return stop or sum.exit_status
end

return _M
