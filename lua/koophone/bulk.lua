-- Bulk unassign: every pair of a large input ends with exactly one outcome.
--
--   local report = client:unassign_all(token, pairs, opts)   -- = bulk.unassign_all(client, ...)
--
-- This module checks the options, opens the journal (koophone.journal) and hands the rows
-- (koophone.rows) to a run (koophone.run), which sends them and decides their outcomes
-- (koophone.outcomes).
local rows_new = require("koophone.rows").new
local journal = require "koophone.journal"
local run_new = require("koophone.run").new

local _M = {}

local FNAME = "koophone.unassign_all"
local OPTIONS = {
  batch_size = "number", concurrency = "number", rate = "number", journal = "string",
  resume = "boolean", on_progress = "function", on_result = "function", keep_results = "boolean",
  shard = "table", timeout = "number", max_bisect_requests = "number", input = "table",
}

-- The identity of the input that the journal records (see koophone.journal).
local INPUT_FIELDS = { name = "string", size = "number", digest = "string", rows = "number" }

local function check_integer(opts, name, default, min, max)
  local v = opts[name]
  if v == nil then return default end
  if v % 1 ~= 0 or v < min or v > max then
    error(("%s: option '%s': expected an integer from %d to %s, got %s"):format(
      FNAME, name, min, tostring(max), tostring(v)), 3)
  end
  return v
end

local function check_options(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(FNAME .. ": bad argument #3 (opts): expected a table", 3) end
  for k, v in pairs(opts) do
    if not OPTIONS[k] then error(("%s: unknown option '%s'"):format(FNAME, tostring(k)), 3) end
    if type(v) ~= OPTIONS[k] then
      error(("%s: option '%s': expected a %s, got %s"):format(FNAME, k, OPTIONS[k], type(v)), 3)
    end
  end
  if opts.rate and not (opts.rate > 0) then error(FNAME .. ": option 'rate': expected > 0", 3) end
  if opts.resume and not opts.journal then
    error(FNAME .. ": option 'resume' needs the option 'journal'", 3)
  end
  for k, v in pairs(opts.input or {}) do
    if type(v) ~= INPUT_FIELDS[k] then
      error(("%s: option 'input': field '%s': expected %s, got %s"):format(
        FNAME, tostring(k), INPUT_FIELDS[k] and "a " .. INPUT_FIELDS[k] or "no such field", type(v)), 3)
    end
  end
  local s = opts.shard
  if s and not (type(s.count) == "number" and s.count % 1 == 0 and s.count >= 1
                and type(s.index) == "number" and s.index % 1 == 0
                and s.index >= 0 and s.index < s.count) then
    error(FNAME .. ": option 'shard': expected { index = i, count = n } with 0 <= i < n", 3)
  end
  return opts
end

-- unassign_all(client, token, pairs, opts) -> report, or nil, err when the journal fails (a
-- koophone.Error of kind "journal", see koophone.journal for its codes).
-- client: a koophone.client (fields core, policy, sleep). An interrupted run (core.interrupted())
-- returns early: report.interrupted says why, report.unfinished counts the rows read without an
-- outcome (not reported), report.in_flight those of them abandoned in flight (maybe applied).
function _M.unassign_all(client, token, pairs, opts)
  opts = check_options(opts)
  if type(client) ~= "table" or not client.core or not client.policy then
    error(FNAME .. ": bad argument #1 (client): expected a koophone.client", 2)
  end
  if type(token) ~= "string" or token == "" then
    error(FNAME .. ": bad argument #1 (token): expected a non-empty string", 2)
  end
  if type(pairs) ~= "table" and type(pairs) ~= "function" then
    error(FNAME .. ": bad argument #2 (pairs): expected an array or an iterator, got " .. type(pairs), 2)
  end
  local settings = {
    concurrency = check_integer(opts, "concurrency", 4, 1, 64),
    batch_size = check_integer(opts, "batch_size", 100, 1, 100000),
    max_bisect = check_integer(opts, "max_bisect_requests", nil, 0, math.huge),
    timeout = opts.timeout, rate = opts.rate, keep_results = opts.keep_results,
    on_progress = opts.on_progress, on_result = opts.on_result,
  }
  local run = run_new(client, token, rows_new(pairs, opts), settings)
  if opts.journal then
    local shard = opts.shard and ("%d/%d"):format(opts.shard.index, opts.shard.count)
    local input = opts.input or (type(pairs) == "table" and { rows = #pairs }) or nil
    local j, err = journal.open(opts.journal, { resume = opts.resume, shard = shard, input = input })
    if not j then
      run:close()
      return nil, err
    end
    run.journal = j
  end
  return run:execute()
end

return _M
