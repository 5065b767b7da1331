-- koophone bulk: koophone.client{...}:unassign_all over PAIRS pairs in batches of 100.
-- Usage: lua bulk.lua ENDPOINT TOKEN_FILE CONCURRENCY PAIRS [--runs N] [--counts-only]
--                     [--csv FILE] [--alloc] [--journal FILE [--resume]]
-- The pairs are a Lua array made up front; with --csv they are streamed from FILE
-- ("user_id,instance_id" lines) by an iterator and no per-pair results are kept, as with
-- --counts-only (keep_results = false). --runs N runs the same input N times on one client (the
-- first run in a fresh process, the next ones with a heap grown by the first). --alloc stops the
-- garbage collector during one run and prints what it allocated and what stays live.
-- --journal FILE writes the run's journal there (--resume: resumes it; a finished journal then
-- sends nothing and reads every outcome back).
-- Batch b holds users u<b>-1 .. u<b>-100 on instances bench0001 .. bench0100, which is what the
-- bench server's canned 100-job answer lists (and what bench/multi_floor.c sends).
-- Prints "seconds <s>" for each unassign_all call.
local koophone = require "koophone"

local endpoint, token_file, concurrency, total = ...
concurrency, total = tonumber(concurrency), tonumber(total)
local runs, counts_only, file, alloc, journal, resume = 1, false, nil, false, nil, nil
local argv = { select(5, ...) }
local i = 1
while argv[i] do
  local a = argv[i]
  if a == "--runs" then i = i + 1; runs = tonumber(argv[i])
  elseif a == "--counts-only" then counts_only = true
  elseif a == "--csv" then i = i + 1; file = argv[i]
  elseif a == "--alloc" then alloc = true
  elseif a == "--journal" then i = i + 1; journal = argv[i]
  elseif a == "--resume" then resume = true
  else error("bulk.lua: unknown argument " .. a) end
  i = i + 1
end
local f = assert(io.open(token_file, "rb"))
local token = f:read("*a"):gsub("%s+$", "")
f:close()

local function input()
  if not file then return nil end
  local next_line = io.lines(file)
  return function()
    local line = next_line()
    if not line then return nil end
    local user_id, instance_id = line:match("^([^,]+),(.+)$")
    return { user_id = user_id, instance_id = instance_id }
  end
end

local array = {}
if not file then
  for r = 0, total - 1 do
    array[r + 1] = { user_id = string.format("u%d-%d", math.floor(r / 100), r % 100 + 1),
                     instance_id = string.format("bench%04d", r % 100 + 1) }
  end
end

local client = koophone.client { endpoint = endpoint }
for _ = 1, runs do
  if alloc then collectgarbage("collect"); collectgarbage("stop") end
  local kib = collectgarbage("count")
  local t0 = koophone.now()
  local report = assert(client:unassign_all(token, input() or array, {
    batch_size = 100, concurrency = concurrency, keep_results = not (file or counts_only),
    journal = journal, resume = resume,
  }))
  local seconds = koophone.now() - t0
  if report.counts.unassigned ~= total then
    error(string.format("expected %d unassigned pairs, got %s", total, tostring(report.counts.unassigned)))
  end
  print(string.format("seconds %.6f", seconds))
  if alloc then
    local allocated = collectgarbage("count") - kib
    collectgarbage("restart")
    collectgarbage("collect")
    print(string.format("allocated_kib %.0f live_kib %.0f", allocated, collectgarbage("count") - kib))
  end
end
