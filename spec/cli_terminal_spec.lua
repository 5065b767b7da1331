-- bin/koophone's progress line in a pseudo-terminal of 80 columns (util-linux script): redraws
-- fit the width and add no lines; a file input's total shows from the first progress line.
local sim = require "helpers.sim"
local cli = require "helpers.cli"

local ctx = cli.new()
local run, csv = ctx.run, ctx.csv

describe("bin/koophone on a terminal", function()
  teardown(ctx.cleanup)

  it("redraws the progress line within 80 columns and adds no lines", function()
    local list = sim.make_pairs(6, "tty")
    sim.reset(list)
    -- every outcome shown on the line: a long one
    local input = csv(list, { "stranger,tty0001", "x,", "u-tty-1,tty0001" })
    local rc, screen = ctx.pty("unassign --yes --batch-size 1 --concurrency 1 --input " .. input
                               .. ctx.endpoint)
    assert.equals(1, rc) -- the invalid row
    -- at least the first and the final redraw (those in between depend on time: not counted)
    local redraws = select(2, screen:gsub("\r\27%[K", ""))
    assert.is_true(redraws >= 2, screen)
    for piece in (screen:gsub("\27%[K", "")):gmatch("[^\r\n]+") do
      assert.is_true(#piece <= 80, piece)
    end
    -- what a finished run prints: the last progress line, the summary (7 lines about the run,
    -- 8 outcomes, the total, the tasks: their count and 6 ids) and the reason of the invalid row on
    -- stderr and in the summary; the redraws added none
    assert.equals(26, select(2, screen:gsub("\n", "")), screen)
    assert.matches("9/9 100.0%% [^\n]*unassigned=6 not_bound=1 invalid=1 duplicate=1", screen)
    -- the total from the first redraw on
    assert.matches("^\r\27%[K%[[# ]*%] %d/9 ", screen)
  end)

  it("without a terminal: plain lines, the file's total from the first one", function()
    local list = sim.make_pairs(3, "plain")
    sim.reset(list)
    local rc, _, err = run("unassign --input " .. csv(list) .. ctx.endpoint)
    assert.equals(0, rc)
    assert.matches("^progress: %d/3 ", err)
    assert.is_nil(err:find("\r", 1, true))
  end)
end)
