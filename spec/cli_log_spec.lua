-- bin/koophone --log FILE and --verbose: every request on disk as it ends (koophone.eventlog),
-- still there, line by line, after the CLI was killed with SIGKILL.
local sim = require "helpers.sim"
local cli = require "helpers.cli"

local ctx = cli.new()
local DIR, ENDPOINT = ctx.dir, ctx.endpoint

-- The lines of a --log file, decoded (each must be a whole JSON line), by event kind.
local function log_lines(path)
  local text = cli.read_file(path)
  assert.equals("\n", text:sub(-1))
  local by = { start = {}, request = {}, ["end"] = {} }
  for _, l in ipairs(cli.json_lines(text)) do table.insert(by[l.event], l) end
  return by
end

describe("bin/koophone --log", function()
  teardown(ctx.cleanup)

  it("writes a start line, one line per request with its task id, and an end line", function()
    local path, list = DIR .. "/run.log", sim.make_pairs(25, "log")
    sim.reset(list)
    sim.faults({ type = "api_error", status = 400, code = "KOOPHONE.API.1012", msg = "x", at = 2 })
    local rc, _, err = ctx.run(("unassign --input %s --batch-size 10 --log %s --verbose%s")
                               :format(ctx.csv(list), path, ENDPOINT))
    assert.equals(0, rc, err) -- the failed batch is split and its halves go through
    local by, sent = log_lines(path), sim.log()
    assert.equals(1, #by.start)
    assert.equals(sim.http_url, by.start[1].endpoint)
    assert.matches("^token file ", by.start[1].credential)
    assert.equals(#sent, #by.request)
    local task_of = {}
    for _, e in ipairs(by.request) do task_of[e.request_id] = e.task_id or e.code end
    for _, s in ipairs(sent) do assert.is_not_nil(task_of[s.request_id], s.request_id) end
    assert.equals(1, #by["end"])
    assert.equals(25, by["end"][1].total)
    local text = cli.read_file(path)
    assert.is_nil(text:find(sim.token:sub(1, 32), 1, true))
    for _, p in ipairs(list) do assert.is_nil(text:find(p.instance_id, 1, true)) end
    local _, verbose = err:gsub("koophone: unassign ", "")
    assert.equals(#sent, verbose)
  end)

  it("holds a whole line for every request answered before a SIGKILL", function()
    local path, list = DIR .. "/kill.log", sim.make_pairs(40, "kill")
    sim.reset(list)
    sim.faults({ type = "delay", seconds = 3, at = 3 })
    local pid = ctx.start(("unassign --input %s --batch-size 10 --log %s%s")
                          :format(ctx.csv(list), path, ENDPOINT))
    cli.wait_for("the delayed request", function()
      for _, e in ipairs(sim.log()) do if e.fault == "delay" then return true end end
    end)
    assert(os.execute("kill -KILL " .. pid))
    cli.wait_for("the CLI to end", function() return ctx.status() end, 5)
    local answered = {}
    for _, e in ipairs(sim.log()) do
      if e.fault ~= "delay" and e.status ~= 0 then answered[#answered + 1] = e.request_id end
    end
    assert.is_true(#answered >= 2)
    local by = log_lines(path)
    assert.equals(0, #by["end"])
    local logged = {}
    for _, e in ipairs(by.request) do logged[e.request_id] = e end
    for _, id in ipairs(answered) do
      assert.is_not_nil(logged[id], id)
      assert.equals(200, logged[id].status)
      assert.is_string(logged[id].task_id)
    end
  end)
end)
