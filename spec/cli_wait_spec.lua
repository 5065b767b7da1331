-- bin/koophone unassign --wait and bin/koophone task, as a separate process against the simulator.
local sim = require "helpers.sim"
local cli = require "helpers.cli"
local jobs = require "helpers.jobs"

local TOKEN = sim.token
local seed, pairs_of = jobs.seed, jobs.pairs_of

local function by_instance(out)
  local rows = {}
  for _, r in ipairs(cli.json_lines(out)) do rows[r.instance_id] = r end
  return rows
end

describe("the command line and jobs", function()
  local ctx
  before_each(function() ctx = cli.new() end)
  after_each(function() ctx.cleanup() end)

  describe("koophone unassign --wait", function()

    it("adds job_state to every row with a job and exits 1 when a job failed", function()
      seed(0)
      local input = ctx.csv(pairs_of(1, 2), { "nobody,i3" })
      local rc, out, err = ctx.run(("unassign --input %s --output jsonl --wait%s"):format(input, ctx.endpoint))
      assert.equal(1, rc, err)
      local rows = by_instance(out)
      assert.same({ "unassigned", "succeeded" }, { rows.i1.outcome, rows.i1.job_state })
      assert.same({ "unassigned", "failed", "WIPE.1", "no" },
                  { rows.i2.outcome, rows.i2.job_state, rows.i2.job_code, rows.i2.job_message })
      assert.same({ "not_bound" }, { rows.i3.outcome, rows.i3.job_state })
      assert.truthy(err:find("waiting for jobs: succeeded=1 failed=1 pending=0 unknown=0", 1, true), err)
    end)

    it("exits 0 when every job succeeded, with the job counts in the summary", function()
      seed(0)
      local rc, out, err = ctx.run(("unassign --input %s --wait=30%s"):format(ctx.csv(pairs_of(1, 4)), ctx.endpoint))
      assert.equal(0, rc, err)
      assert.truthy(out:find("jobs succeeded%s+2\n"), out)
      assert.truthy(out:find("jobs failed%s+0\n"), out)
    end)

    it("reports jobs left pending at the deadline or unknown on stderr, without changing the exit status", function()
      seed(1000)
      sim.control("POST", "/_sim/tasks", { not_found = true })
      local rc, out, err = ctx.run(("unassign --input %s --output jsonl --wait=0.2%s"):format(ctx.csv(pairs_of(1)), ctx.endpoint))
      assert.equal(0, rc, err)
      assert.equal("unknown", by_instance(out).i1.job_state)
      assert.truthy(err:find("0 pending, 1 unknown", 1, true), err)
      sim.control("POST", "/_sim/tasks", { not_found = false })
      sim.control("POST", "/_sim/seed", { tenants = { { name = "t1", token = TOKEN, instances = { "i3" }, bindings = { i3 = "u3" },
                                                        jobs = { seconds = 1000 } } } })
      rc, out, err = ctx.run(("unassign --input %s --output jsonl --wait=0.2%s"):format(ctx.csv(pairs_of(3)), ctx.endpoint))
      assert.equal(0, rc, err)
      assert.equal("running", by_instance(out).i3.job_state) -- counted pending
      assert.truthy(err:find("1 pending (the wait timed out), 0 unknown", 1, true), err)
    end)

    it("names each failed job (instance, task, job, code) on stderr and in the summary", function()
      seed(0)
      local rc, out, err = ctx.run(("unassign --input %s --wait%s"):format(ctx.csv(pairs_of(1, 2)), ctx.endpoint))
      assert.equal(1, rc, err)
      local task = sim.control("GET", "/_sim/tasks").tasks[1]
      local job = task.jobs[1].instance_id == "i2" and task.jobs[1] or task.jobs[2]
      local line = ("failed job instance=i2 task=%s job=%s code=WIPE.1\n"):format(task.task_id, job.job_id)
      assert.truthy(err:find("koophone: " .. line, 1, true), err)
      assert.truthy(out:find("\n" .. line, 1, true), out)
      assert.is_nil(out:find("instance=i1", 1, true)) -- its job succeeded
    end)

    it("on a timeout, names the open tasks and the koophone task command that follows them up", function()
      seed(1000)
      local rc, out, err = ctx.run(("unassign --input %s --wait=0.2 --timeout 5%s"):format(ctx.csv(pairs_of(1, 4)), ctx.endpoint))
      assert.equal(0, rc, err)
      local task_id = sim.control("GET", "/_sim/tasks").tasks[1].task_id
      assert.truthy(err:find("koophone: open task " .. task_id .. "\n", 1, true), err)
      assert.truthy(out:find("\nopen task " .. task_id .. "\n", 1, true), out)
      local command = err:match("koophone: follow the open tasks up with: ([^\n]+)")
      assert.equal(("bin/koophone task --endpoint %s --timeout 5 --token-file %s/token %s")
                   :format(sim.http_url, ctx.dir, task_id), command)
      -- the command works: the jobs of the task, still running
      sim.advance(1000)
      local p = io.popen((cli.CMD:gsub("bin/koophone </dev/null$", function() return command .. " </dev/null" end)))
      local lines = cli.json_lines(p:read("*a"))
      p:close()
      assert.same({ task_id, "succeeded", task_id, "succeeded" },
                  { lines[1].task_id, lines[1].state, lines[2].task_id, lines[2].state })
    end)

    for _, signal in ipairs { "KILL", "TERM" } do
      it("killed (SIG" .. signal .. ") while waiting, resumes by waiting, without a second unassign", function()
        seed(1000)
        local input, journal = ctx.csv(pairs_of(1, 2, 4)), ctx.dir .. "/journal"
        local args = ("unassign --input %s --journal %s --output jsonl --wait%s"):format(input, journal, ctx.endpoint)
        local pid = ctx.start(args)
        cli.wait_for("the first GetTask", function() return #sim.control("GET", "/_sim/task_log").requests > 0 end)
        os.execute("kill -" .. signal .. " " .. pid)
        cli.wait_for("the CLI to end", function() return not cli.alive(pid) end, 10)
        if signal == "TERM" then
          cli.wait_for("the exit status", function() return ctx.status() end, 5)
          assert.equal(143, ctx.status())
          assert.truthy(select(2, ctx.output()):find("resume with:", 1, true))
        end
        assert.equal(1, #sim.log())
        sim.advance(1000) -- the jobs end meanwhile
        local rc, out, err = ctx.run(args .. " --resume")
        assert.equal(1, rc, err) -- i2's job failed
        local rows = by_instance(out)
        assert.same({ true, "succeeded", "failed", "succeeded" },
                    { rows.i1.resumed, rows.i1.job_state, rows.i2.job_state, rows.i4.job_state })
        assert.equal(1, #sim.log()) -- no second unassign
        -- a second resume takes the job states from the journal: no GetTask at all
        local polls = #sim.control("GET", "/_sim/task_log").requests
        rc = ctx.run(args .. " --resume")
        assert.equal(1, rc)
        assert.equal(polls, #sim.control("GET", "/_sim/task_log").requests)
      end)
    end
  end)

  describe("koophone task", function()

    it("prints the jobs of the given tasks as JSON Lines; an unknown task gets a line of its own", function()
      seed(0)
      local rc, out, err = ctx.run(("unassign --input %s --output jsonl%s"):format(ctx.csv(pairs_of(1, 2)), ctx.endpoint))
      assert.equal(0, rc, err)
      local task_id = cli.json_lines(out)[1].task_id
      rc, out, err = ctx.run(("task%s %s RM_nope"):format(ctx.endpoint, task_id))
      assert.equal(0, rc, err)
      local lines = cli.json_lines(out)
      assert.equal(3, #lines)
      assert.same({ task_id, "succeeded", 2 }, { lines[1].task_id, lines[1].state, lines[1].status })
      assert.same({ "failed", 3, "WIPE.1", "no" }, { lines[2].state, lines[2].status, lines[2].error_code, lines[2].error_msg })
      assert.same({ "RM_nope", "unknown", "KOOPHONE.API.1323" }, { lines[3].task_id, lines[3].state, lines[3].code })
    end)

    it("exits 1 when a task cannot be read, 2 without a task id or with a bad one", function()
      seed(0)
      sim.faults({ type = "error", api = "task", count = -1 })
      local rc = ctx.run(("task%s --timeout 2 RM_1"):format(ctx.endpoint))
      assert.equal(1, rc)
      local err
      rc, _, err = ctx.run("task" .. ctx.endpoint)
      assert.equal(2, rc)
      assert.truthy(err:find("give one or more task ids", 1, true))
      rc = ctx.run(("task%s --wait RM_1"):format(ctx.endpoint))
      assert.equal(2, rc)
    end)
  end)
end)
