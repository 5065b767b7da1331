-- The command line's option table (koophone.cli.options) is the one statement of each option:
-- the README's CLI table and `koophone help` say what it says, and each range is checked once,
-- by the CLI, with the option's name (issue #22), within what the library accepts.
local sim = require "helpers.sim"
local cli = require "helpers.cli"
local koophone = require "koophone"
local options = require "koophone.cli.options"

local ctx = cli.new()

-- The rows of the README's CLI options table ("## Command line"): { names = {...}, synopses =
-- {...}, default = text, range = text }, with code spans and \| unwrapped.
local function readme_rows()
  local text = cli.read_file("README.md"):match("\n## Command line\n(.-)\n## ")
  assert(text, "README.md has no '## Command line' section")
  local rows = {}
  for line in text:gmatch("[^\n]+") do
    local cells = {}
    for cell in (line:gsub("\\|", "\1")):gmatch("|([^|]*)") do
      cells[#cells + 1] = cell:gsub("\1", "|"):match("^%s*(.-)%s*$")
    end
    if cells[1] and cells[1]:find("^`%-%-") then
      local row = { names = {}, synopses = {}, default = cells[2]:gsub("`", ""), range = cells[3]:gsub("`", "") }
      for synopsis in cells[1]:gmatch("`([^`]+)`") do
        row.synopses[#row.synopses + 1] = synopsis
        row.names[#row.names + 1] = synopsis:match("^%-%-([%w-]+)")
      end
      rows[#rows + 1] = row
    end
  end
  return rows
end

describe("the CLI's option table", function()
  teardown(ctx.cleanup)

  it("agrees with the README's CLI table: every option in both, same synopsis, default and range", function()
    local seen, problems = {}, {}
    for _, row in ipairs(readme_rows()) do
      for i, name in ipairs(row.names) do
        local opt = options.by_name[name]
        seen[name] = true
        if not opt or opt.name ~= name then
          problems[#problems + 1] = "README has --" .. name .. ", the table has not"
        else
          local want = { options.synopsis(opt), opt.default ~= nil and tostring(opt.default) or "",
                         opt.range and options.range_text(opt.range) or "" }
          local got = { row.synopses[i], row.default, row.range }
          if want[1] ~= got[1] or want[2] ~= got[2] or want[3] ~= got[3] then
            problems[#problems + 1] = ("--%s: README says %s | %s | %s, the table %s | %s | %s")
                                      :format(name, got[1], got[2], got[3], want[1], want[2], want[3])
          end
        end
      end
    end
    for _, opt in ipairs(options.list) do
      if not seen[opt.name] then problems[#problems + 1] = "--" .. opt.name .. " is not in the README" end
    end
    assert.same({}, problems)
  end)

  it("makes the usage: koophone help lists every option with its range and default", function()
    local rc, usage = ctx.run("help")
    assert.equals(0, rc)
    assert.equals(options.usage(), usage)
    local lines = {}
    for line in usage:gmatch("[^\n]+") do lines[#lines + 1] = line end
    for _, opt in ipairs(options.list) do
      -- the option's entry: its line and the indented lines that go on with it
      local entry
      for i, line in ipairs(lines) do
        if line:sub(1, #options.synopsis(opt) + 3) == "  " .. options.synopsis(opt) .. " " then
          entry = line
          for k = i + 1, #lines do
            if not lines[k]:find("^           ") then break end
            entry = entry .. lines[k]
          end
        end
      end
      assert.truthy(entry, opt.name)
      entry = entry:gsub("%s+", " ")
      if opt.range then
        assert.truthy(entry:find(", " .. options.range_text(opt.range), 1, true), entry)
      end
      if opt.default ~= nil then
        assert.truthy(entry:find("[" .. tostring(opt.default) .. "]", 1, true), entry)
      end
    end
  end)

  -- the library check that takes each ranged option's value
  local LIBRARY = {
    ["batch-size"] = function(v) require("koophone.bulk").check_options { batch_size = v } end,
    concurrency = function(v) require("koophone.bulk").check_options { concurrency = v } end,
    rate = function(v) require("koophone.bulk").check_options { rate = v } end,
    ["max-bisect-requests"] = function(v) require("koophone.bulk").check_options { max_bisect_requests = v } end,
    wait = function(v) require("koophone.bulk").check_options { wait = { timeout = v } } end,
    ["max-attempts"] = function(v) require("koophone.retry").new { max_attempts = v } end,
    ["ambiguous-attempts"] = function(v) require("koophone.retry").new { ambiguous_attempts = v } end,
    timeout = function(v)
      koophone.client({ timeout = v }):close()
      require("koophone.bulk").check_options { timeout = v }
    end,
  }

  it("states ranges the library accepts, at both ends", function()
    for _, opt in ipairs(options.list) do
      if opt.range then
        local check = assert(LIBRARY[opt.name], "no library check for --" .. opt.name)
        local min, max = opt.range[1], opt.range[2]
        for _, v in ipairs { min, max == math.huge and min + 1000 or max } do
          local ok, err = pcall(check, v)
          assert(ok, ("--%s %s: %s"):format(opt.name, tostring(v), tostring(err)))
        end
        if type(opt.default) == "number" then assert(pcall(check, opt.default), opt.name) end
      end
    end
  end)

  describe("checks each range once, naming the option, before anything is sent", function()
    local list = sim.make_pairs(2, "rng")
    local input
    before_each(function()
      sim.reset(list)
      input = ctx.csv(list)
    end)

    for _, case in ipairs {
      { "unassign --wait=-1 --input IN", "--wait: expected a number from 0.001 to 86400, got -1" },
      { "unassign --timeout 1e-9 --input IN", "--timeout: expected a number from 0.001 to 86400, got 1e-09" },
      { "unassign --timeout 100000 --input IN", "--timeout: expected a number from 0.001 to 86400, got 100000" },
      { "unassign --max-bisect-requests -1 --input IN", "--max-bisect-requests: expected an integer >= 0, got -1" },
      { "task RM_1 --timeout 100000", "--timeout: expected a number from 0.001 to 86400, got 100000" },
    } do
      it(case[1], function()
        local rc, out, err = ctx.run(case[1]:gsub("IN", input) .. ctx.endpoint)
        assert.equals(2, rc, err)
        assert.equals("", out)
        assert.equals("koophone: " .. case[2] .. " (see 'koophone help')\n", err)
        assert.same({}, sim.log())
        assert.equals(0, #sim.control("GET", "/_sim/task_log").requests)
      end)
    end
  end)

  it("unassign_all{timeout=0} names unassign_all and opts.timeout", function()
    local client = koophone.client { endpoint = "http://127.0.0.1:1" }
    local ok, err = pcall(client.unassign_all, client, "token", { { user_id = "u", instance_id = "i" } },
                          { timeout = 0 })
    client:close()
    assert.is_false(ok)
    assert.equals("koophone.unassign_all: bad argument #3 (opts.timeout): expected a number from 0.001 "
                  .. "to 31536000, got 0", err)
  end)
end)
