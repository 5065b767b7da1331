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
local argerror = require "koophone.argerror"
local core = require "koophone.core"
local raise, check_names = argerror.raise, argerror.check_names

local _M = {}

local FNAME = "koophone.unassign_all"
local OPTIONS = {
  batch_size = "number", concurrency = "number", rate = "number", journal = "string",
  resume = "boolean", on_progress = "function", on_result = "function", keep_results = "boolean",
  shard = "table", timeout = "number", max_bisect_requests = "number", input = "table",
  wait = "boolean or table", -- koophone.bulk_wait
}

-- min, max, integer. A rate under 0.001 would mean sleeps of more than a quarter of an hour
-- between requests: a mistake, not a plan. timeout: the core's bound (a year), checked here so
-- that the error names unassign_all, not the unassign_many it is passed to; the core counts in
-- milliseconds.
local RANGES = {
  batch_size = { 1, 100000, true }, concurrency = { 1, 64, true }, rate = { 0.001, 100000 },
  max_bisect_requests = { 0, math.huge, true }, timeout = { 0.001, 86400 * 365 },
}

-- The identity of the input that the journal records (see koophone.journal).
local INPUT_FIELDS = { name = "string", size = "number", digest = "string", rows = "number" }

-- check_options(opts) -> opts (a table): raises in the one argument-error shape, as argument #3
-- of koophone.unassign_all. The CLI checks its options with it before anything is sent.
function _M.check_options(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then raise(FNAME, 3, "opts", "expected a table, got %s", type(opts)) end
  check_names(opts, OPTIONS, FNAME, 3, "opts")
  for k, v in pairs(opts) do
    if not OPTIONS[k]:find(type(v), 1, true) then
      raise(FNAME, 3, "opts." .. k, "expected a %s, got %s", OPTIONS[k], type(v))
    end
    local range = RANGES[k]
    if range then argerror.number(v, FNAME, 3, "opts." .. k, range[1], range[2], range[3]) end
  end
  if opts.resume and not opts.journal then raise(FNAME, 3, "opts.resume", "needs opts.journal") end
  if opts.wait then require("koophone.wait").check(opts.wait, FNAME, 3, "opts.wait") end
  for k, v in pairs(opts.input or {}) do
    if type(v) ~= INPUT_FIELDS[k] then
      raise(FNAME, 3, "opts.input." .. tostring(k), "expected %s, got %s",
            INPUT_FIELDS[k] and "a " .. INPUT_FIELDS[k] or "no such field", type(v))
    end
  end
  local s = opts.shard
  if s and not (type(s.count) == "number" and s.count % 1 == 0 and s.count >= 1
                and type(s.index) == "number" and s.index % 1 == 0
                and s.index >= 0 and s.index < s.count) then
    raise(FNAME, 3, "opts.shard", "expected { index = i, count = n } with 0 <= i < n")
  end
  return opts
end

-- unassign_all(client, token, pairs, opts) -> report, or nil, err when the journal fails (a
-- koophone.Error of kind "journal", see koophone.journal for its codes).
-- client: a koophone.client (fields core, policy, sleep). An interrupted run (core.interrupted())
-- returns early: report.interrupted says why, report.unfinished counts the rows read without an
-- outcome (not reported), report.in_flight those of them abandoned in flight (maybe applied).
function _M.unassign_all(client, token, pairs, opts)
  opts = _M.check_options(opts)
  if type(client) ~= "table" or not client.core or not client.policy then
    error(FNAME .. ": calling on bad self (expected a koophone.client)", 0)
  end
  local provider = type(token) == "table" and getmetatable(token)
  if (type(token) ~= "string" or token == "") and not core.is_aksk(token)
     and not (provider and provider.__name == "koophone.iam_token") then
    raise(FNAME, 1, "token", "expected a non-empty string, got %s",
          token == "" and "an empty string" or type(token))
  end
  if type(pairs) ~= "table" and type(pairs) ~= "function" then
    raise(FNAME, 2, "pairs", "expected an array or an iterator, got %s", type(pairs))
  end
  local waiter = opts.wait and require("koophone.bulk_wait").new(client, token, opts.wait,
                                                                  opts.on_result)
  local settings = {
    concurrency = opts.concurrency or 4,
    batch_size = opts.batch_size or 100,
    max_bisect = opts.max_bisect_requests,
    timeout = opts.timeout, rate = opts.rate, keep_results = opts.keep_results,
    on_progress = opts.on_progress, on_result = waiter and waiter.on_result or opts.on_result,
    waiter = waiter,
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
