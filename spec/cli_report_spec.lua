-- bin/koophone's reports (issue #24), run as a separate process against the simulator: the
-- summary (start, end, duration, endpoint, requests, exit status, task ids) as a table or one
-- JSON object (--summary-format), the per-row CSV output (--output-format csv: RFC 4180, formula
-- injection defused), and the CSV input's --separator and header names ("User ID").
local sim = require "helpers.sim"
local cli = require "helpers.cli"
local cjson = require "cjson.safe"
local koophone = require "koophone"

local ctx = cli.new()
local run, DIR = ctx.run, ctx.dir
local write_file = sim.write_file

-- A strict RFC 4180 reader for the CLI's CSV output: records end with CRLF, a quote opens a
-- field only at its start and closes it before a comma or CRLF, a doubled quote is a quote, and
-- CR or LF outside quotes is an error. Returns the records as lists of fields.
local function parse_csv(text)
  local records, fields, field, quoted, i = {}, {}, {}, false, 1
  local function close_field()
    fields[#fields + 1] = table.concat(field)
    field = {}
  end
  while i <= #text do
    local c = text:sub(i, i)
    if quoted then
      if c == '"' and text:sub(i + 1, i + 1) == '"' then
        field[#field + 1] = '"'
        i = i + 1
      elseif c == '"' then
        quoted = false
        local after = text:sub(i + 1, i + 2)
        assert(after:sub(1, 1) == "," or after == "\r\n", "text after a closing quote at byte " .. i)
      else
        field[#field + 1] = c
      end
    elseif c == '"' then
      assert(#field == 0, "a quote inside an unquoted field at byte " .. i)
      quoted = true
    elseif c == "," then
      close_field()
    elseif c == "\r" and text:sub(i + 1, i + 1) == "\n" then
      close_field()
      records[#records + 1] = fields
      fields = {}
      i = i + 1
    else
      assert(c ~= "\r" and c ~= "\n", "a bare CR or LF outside quotes at byte " .. i)
      field[#field + 1] = c
    end
    i = i + 1
  end
  assert(not quoted and #field == 0 and #fields == 0, "the last record does not end with CRLF")
  return records
end

local HEADER = { "row", "user_id", "instance_id", "outcome", "task_id", "job_id", "request_id", "code",
                 "reason", "resumed", "maybe_applied", "job_state", "job_code", "job_message" }

-- The CSV output as one table per row (header names as keys), checked against HEADER.
local function csv_rows(text)
  local records = parse_csv(text)
  assert.same(HEADER, records[1])
  local rows = {}
  for k = 2, #records do
    assert.equals(#HEADER, #records[k])
    local r = {}
    for i, name in ipairs(HEADER) do r[name] = records[k][i] end
    rows[#rows + 1] = r
  end
  return rows
end

local function iso_now() return os.date("!%Y-%m-%dT%H:%M:%SZ") end

-- The value of the summary table's line `name` (the first such line).
local function field(out, name)
  return out:match("\n" .. name:gsub("%p", "%%%0") .. " +([^\n]*)\n") or
         out:match("^" .. name:gsub("%p", "%%%0") .. " +([^\n]*)\n")
end

-- The sim's task ids, in the order it created them.
local function sim_task_ids()
  local ids = {}
  for i, t in ipairs(sim.control("GET", "/_sim/tasks").tasks) do ids[i] = t.task_id end
  return ids
end

local function lines_of(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- A file in the scratch directory with these bytes.
local function file(name, text)
  write_file(DIR .. "/" .. name, text)
  return DIR .. "/" .. name
end

describe("koophone unassign's reports", function()
  teardown(ctx.cleanup)

  describe("the summary", function()
    it("gives start and end (UTC, ISO 8601), duration, endpoint, requests, exit status and the task ids, "
       .. "20 of them and how many more", function()
      local list = sim.make_pairs(23, "sum")
      sim.reset(list)
      local before = iso_now()
      local rc, out, err = run("unassign --batch-size 1 --concurrency 1 --input " .. ctx.csv(list) .. ctx.endpoint)
      local after = iso_now()
      assert.equals(0, rc, err)
      local start, finish = field(out, "start"), field(out, "end")
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", start)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", finish)
      assert.is_true(before <= start and start <= finish and finish <= after, start .. " " .. finish)
      assert.matches("^%d+%.%d s$", field(out, "duration"))
      assert.equals(sim.http_url .. "/v1/instances/unassign", field(out, "endpoint"))
      assert.equals(DIR .. "/in.csv", field(out, "input"))
      assert.equals(#sim.log(), 23)
      assert.equals("23", field(out, "requests"))
      assert.equals("0: every pair unassigned, assumed_unassigned, not_bound or duplicate",
                    field(out, "exit status"))
      assert.equals("23", field(out, "unassigned"))
      assert.equals("23", field(out, "tasks"))
      local ids, listed = sim_task_ids(), {}
      assert.equals(23, #ids)
      for _, l in ipairs(lines_of(out)) do listed[#listed + 1] = l:match("^task +(RM_%S+)$") end
      for i = 21, #ids do ids[i] = nil end
      assert.same(ids, listed)
      assert.truthy(out:find("\ntask                and 3 more (--summary-format json lists them all)\n", 1, true), out)
      assert.is_nil(out:find(sim.token, 1, true))
      assert.is_nil(err:find(sim.token, 1, true))
    end)

    it("--summary-format json: one object on stdout with every field, counts per outcome, "
       .. "failures grouped by code and the exit status's meaning", function()
      local list = sim.make_pairs(3, "js")
      sim.reset(list)
      local input = ctx.csv(list, { "u-x,notmine01", "stranger,js0001", " u-sp,js0002" }) -- denied, not_bound, invalid
      local before = iso_now()
      local rc, out, err = run("unassign --summary-format json --input " .. input .. ctx.endpoint)
      local after = iso_now()
      assert.equals(1, rc, err)
      assert.equals(1, #lines_of(out))
      local s = assert(cjson.decode(out))
      local keys = {}
      for k in pairs(s) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.same({ "bisect_requests", "counts", "duration", "end", "endpoint", "exit_meaning",
                    "exit_status", "failed_jobs", "input", "jobs", "maybe_applied", "open_tasks", "reasons",
                    "requests", "start", "still_bound", "task_count", "task_ids", "total", "unfinished" }, keys)
      assert.equals(cjson.null, s.jobs) -- no --wait
      assert.is_true(before <= s.start and s.start <= s["end"] and s["end"] <= after)
      assert.equals("number", type(s.duration))
      assert.equals(sim.http_url .. "/v1/instances/unassign", s.endpoint)
      assert.equals(#sim.log(), s.requests)
      assert.same({ unassigned = 3, assumed_unassigned = 0, not_bound = 1, denied = 1, invalid = 1,
                    duplicate = 0, unconfirmed = 0, failed = 0 }, s.counts)
      assert.same({ 6, 0, 1 }, { s.total, s.unfinished, s.exit_status })
      assert.equals("pairs that fail the run: denied 1, invalid 1", s.exit_meaning)
      assert.same(sim_task_ids(), s.task_ids)
      assert.equals(#s.task_ids, s.task_count)
      assert.same({
        { outcome = "denied", count = 1, codes = { { code = "KOOPHONE.API.1001", count = 1,
                                                      message = s.reasons[1].codes[1].message } } },
        { outcome = "invalid", count = 1, codes = { { code = "invalid", count = 1,
                                                       message = "user_id: leading or trailing space" } } },
      }, s.reasons)
      assert.matches("Insufficient instance permissions", s.reasons[1].codes[1].message)
      assert.same({ {}, {} }, { s.failed_jobs, s.open_tasks })
      assert.truthy(out:find('"failed_jobs":[],', 1, true)) -- lists, also when empty
      assert.matches("koophone: denied 1: KOOPHONE.API.1001 x1", err) -- stderr as before
      -- the batch was refused for two of its pairs and bisected: the table says how many requests did
      assert.is_true(s.bisect_requests > 0 and s.bisect_requests < s.requests)
      sim.reset(list)
      rc, out = run("unassign --input " .. input .. ctx.endpoint)
      assert.equals(1, rc)
      assert.equals(("%d (%d of them bisecting refused batches)"):format(s.requests, s.bisect_requests),
                    field(out, "requests"))
      assert.equals(s.requests, #sim.log())
    end)

    it("the exit status's meaning says when a refused token stopped the run", function()
      local list = sim.make_pairs(3, "tok")
      sim.reset(list)
      write_file(DIR .. "/bad-token", "not-the-token\n")
      local rc, out, err = run("unassign --summary-format json --batch-size 1 --concurrency 1 --input "
                               .. ctx.csv(list) .. " --endpoint " .. sim.http_url .. " --token-file " .. DIR .. "/bad-token")
      assert.equals(1, rc, err)
      local s = assert(cjson.decode(out), out)
      assert.same({ 1, "pairs that fail the run: failed 3; the run stopped early on APIGW.0301", 3 },
                  { s.exit_status, s.exit_meaning, s.counts.failed })
      assert.equals("APIGW.0301", s.reasons[1].codes[1].code)
    end)

    it("--summary-format json with rows as the output: the JSON summary is the last line of stderr", function()
      local list = sim.make_pairs(4, "jl")
      sim.reset(list)
      local rc, out, err = run("unassign --output-format jsonl --summary-format json --input "
                               .. ctx.csv(list) .. ctx.endpoint)
      assert.equals(0, rc, err)
      for _, r in ipairs(cli.json_lines(out)) do assert.equals("unassigned", r.outcome) end
      assert.equals(4, #lines_of(out))
      local errs = lines_of(err)
      local s = assert(cjson.decode(errs[#errs]), errs[#errs])
      assert.same({ 4, 0, "every pair unassigned, assumed_unassigned, not_bound or duplicate" },
                  { s.counts.unassigned, s.exit_status, s.exit_meaning })
      assert.same(sim_task_ids(), s.task_ids)
      -- without the option, stderr has no JSON
      sim.reset(list)
      rc, _, err = run("unassign --output-format jsonl --input " .. ctx.csv(list) .. ctx.endpoint)
      assert.equals(0, rc)
      assert.is_nil(err:find("\n{", 1, true))
    end)
  end)

  it("a run stopped by SIGTERM has its summary, with exit status 143 and the unfinished rows", function()
    local list = sim.make_pairs(30, "sterm")
    sim.reset(list)
    sim.faults({ type = "throttle", retry_after = "60", at = 3 }) -- the last batch: a 60 s sleep
    local pid = ctx.start("unassign --summary-format json --batch-size 10 --concurrency 1 --input "
                          .. ctx.csv(list) .. ctx.endpoint)
    cli.wait_for("the throttled batch", function()
      for _, e in ipairs(sim.log()) do if e.fault == "throttle" then return true end end
    end)
    assert(os.execute("kill -TERM " .. pid))
    cli.wait_for("the CLI to stop", function() return ctx.status() end, 5)
    local out, err = ctx.output()
    assert.equals(143, ctx.status(), err)
    local s = assert(cjson.decode(out), out)
    assert.same({ 143, "stopped by SIGTERM", 20, 10, 30, 3 },
                { s.exit_status, s.exit_meaning, s.counts.unassigned, s.unfinished, s.total, s.requests })
  end)

  describe("--output-format csv", function()
    it("writes a header and one RFC 4180 row per input row; fields from the input that a spreadsheet "
       .. "would compute (or that start with a quote) start with a quote", function()
      local list = { { user_id = "=1+2", instance_id = "cv0001" }, { user_id = "@SUM(A1)", instance_id = "cv0002" },
                     { user_id = "+1", instance_id = "cv0003" }, { user_id = "-1", instance_id = "cv0004" },
                     { user_id = 'q"u,o', instance_id = "cv0005" }, { user_id = "'x", instance_id = "cv0006" } }
      sim.reset(list)
      local input = file("cv.csv", table.concat({
        "user_id,instance_id", "=1+2,cv0001", "@SUM(A1),cv0002", "+1,cv0003", "-1,cv0004",
        '"q""u,o",cv0005', "'x,cv0006",
        '"a\nb",cv0007',  -- a line break in an id: invalid, and a field to quote
        '"\rx",cv0008',   -- a leading CR: invalid
        '"\tx",cv0009',   -- a leading tab: invalid (a control character)
      }, "\n") .. "\n")
      local rc, out, err = run("unassign --output-format csv --input " .. input .. ctx.endpoint)
      assert.equals(1, rc, err) -- the invalid rows
      assert.equals(table.concat(HEADER, ",") .. "\r\n", out:sub(1, #table.concat(HEADER, ",") + 2))
      local by_row = {}
      for _, r in ipairs(csv_rows(out)) do by_row[tonumber(r.row)] = r end
      local want_user = { "'=1+2", "'@SUM(A1)", "'+1", "'-1", 'q"u,o', "''x", "a\nb", "'\rx", "'\tx" }
      for i = 1, 9 do
        assert.equals(want_user[i], by_row[i].user_id, i)
        assert.equals(("cv%04d"):format(i), by_row[i].instance_id)
      end
      for i = 1, 6 do
        assert.equals("unassigned", by_row[i].outcome)
        assert.matches("^RM_", by_row[i].task_id)
        assert.matches("^%x", by_row[i].request_id)
      end
      assert.same({ "invalid", "user_id: contains a control character" }, { by_row[7].outcome, by_row[7].reason })
      assert.same({ "invalid", "user_id: contains a control character" }, { by_row[9].outcome, by_row[9].reason })
      assert.same({}, sim.bindings())
      -- the quoting as written: doubled quotes, and quotes only where needed
      assert.truthy(out:find('\r\n5,"q""u,o",cv0005,unassigned,', 1, true))
      assert.truthy(out:find("\r\n1,'=1+2,cv0001,unassigned,", 1, true))
    end)

    it("defuses the server's fields too: a job's error code and message (--wait)", function()
      sim.control("POST", "/_sim/reset")
      sim.control("POST", "/_sim/seed", { tenants = { {
        name = "t1", token = sim.token, instances = { "w1", "w2" }, bindings = { w1 = "u1", w2 = "u2" },
        jobs = { delay = 0, seconds = 0, instances = {
          w2 = { fail = 3, error_code = '=HYPERLINK("http://x")', error_msg = '-1, "no"' } } } } } })
      local input = ctx.csv({ { user_id = "u1", instance_id = "w1" }, { user_id = "u2", instance_id = "w2" } })
      local rc, out, err = run("unassign --output-format csv --summary-format json --wait=30 --input "
                               .. input .. ctx.endpoint)
      assert.equals(1, rc, err) -- a job failed
      local by_instance = {}
      for _, r in ipairs(csv_rows(out)) do by_instance[r.instance_id] = r end
      assert.same({ "succeeded", "", "" }, { by_instance.w1.job_state, by_instance.w1.job_code,
                                             by_instance.w1.job_message })
      assert.same({ "failed", '\'=HYPERLINK("http://x")', "'-1, \"no\"" },
                  { by_instance.w2.job_state, by_instance.w2.job_code, by_instance.w2.job_message })
      assert.truthy(out:find([[,"'=HYPERLINK(""http://x"")","'-1, ""no"""]] .. "\r\n", 1, true), out)
      -- the JSON summary (last line of stderr) has the values as the server sent them
      local errs = lines_of(err)
      local s = assert(cjson.decode(errs[#errs]), errs[#errs])
      assert.same({ 1, "failed jobs: 1" }, { s.exit_status, s.exit_meaning })
      assert.same({ succeeded = 1, failed = 1, pending = 0, unknown = 0 }, s.jobs)
      assert.same({ { instance_id = "w2", task_id = by_instance.w2.task_id, job_id = by_instance.w2.job_id,
                      code = '=HYPERLINK("http://x")' } }, s.failed_jobs)
    end)
  end)

  describe("the CSV input", function()
    it("--separator takes one byte, or tab as 'tab' or \\t (also from stdin); header names in any case "
       .. "and spacing", function()
      local list = sim.make_pairs(2, "sep")
      local function two(sep, header)
        return header .. "\n" .. list[1].user_id .. sep .. list[1].instance_id .. "\n"
               .. list[2].user_id .. sep .. list[2].instance_id .. "\n"
      end
      for _, case in ipairs {
        { "--separator ';'", two(";", "User ID;INSTANCE_ID") },
        { "--separator tab", two("\t", " user id \tInstance-Id ") },
        { "--separator '\\t'", two("\t", "USER_ID\tinstance id") },
        { "--separator ,", two(",", "user  id,Instance_ID") },
      } do
        sim.reset(list)
        local rc, out, err = run("unassign " .. case[1] .. " --input " .. file("sep.csv", case[2]) .. ctx.endpoint)
        assert.equals(0, rc, case[1] .. ": " .. err)
        assert.equals("2", field(out, "unassigned"), case[1])
        assert.same({}, sim.bindings())
      end
      sim.reset(list)
      local rc, out, err = run("unassign --separator tab --input -" .. ctx.endpoint,
                               "<" .. file("tsv", two("\t", "User ID\tInstance ID")) .. " >" .. DIR .. "/out")
      assert.equals(0, rc, err)
      assert.equals("2", field(out, "unassigned"))
    end)

    it("refuses a separator the reader cannot use, --separator for JSON Lines and a header naming a "
       .. "column twice, with exit status 2 and nothing sent", function()
      local list = sim.make_pairs(1, "bad")
      sim.reset(list)
      local input = ctx.csv(list)
      for _, case in ipairs {
        { "--separator '::' --input " .. input,
          "koophone: --separator: expected one byte other than a quote, CR or LF (see 'koophone help')\n" },
        { "--separator '\"' --input " .. input,
          "koophone: --separator: expected one byte other than a quote, CR or LF (see 'koophone help')\n" },
        { "--separator ';' --format jsonl --input " .. input,
          "koophone: --separator: only for CSV input (see 'koophone help')\n" },
        { "--input " .. file("twice.csv", "user_id,User ID,instance_id\nu,u,i\n"),
          "koophone: " .. DIR .. "/twice.csv: line 1: the header names user_id twice, in columns 1 and 2\n" },
      } do
        local rc, _, err = run("unassign " .. case[1] .. ctx.endpoint)
        assert.equals(2, rc, case[1])
        assert.equals(case[2], err)
      end
      assert.same({}, sim.log())
    end)

    it("koophone.rows.csv reads the header names the CLI reads", function()
      local rows = assert(koophone.rows.csv(file("lib.csv", " User-ID ;INSTANCE_ID\nu1;i1\n"), { separator = ";" }))
      assert.same({ user_id = "u1", instance_id = "i1" }, rows())
      local none, err = koophone.rows.csv(file("lib2.csv", "instance_id,user_id,Instance Id\ni,u,j\n"))
      assert.is_nil(none)
      assert.matches("line 1: the header names instance_id twice, in columns 1 and 3$", err)
    end)
  end)
end)
