-- koophone bulk: koophone.client{...}:unassign_all over PAIRS pairs in batches of 100.
-- Usage: lua bulk.lua ENDPOINT TOKEN_FILE CONCURRENCY PAIRS [CSV_FILE]
-- Without CSV_FILE the pairs are a Lua array made up front; with it they are streamed from the
-- file ("user_id,instance_id" lines) by an iterator and no per-pair results are kept.
-- Batch b holds users u<b>-1 .. u<b>-100 on instances bench0001 .. bench0100, which is what the
-- bench server's canned 100-job answer lists (and what bench/multi_floor.c sends).
-- Prints "seconds <s>" for the unassign_all call.
local koophone = require "koophone"

local endpoint, token_file, concurrency, total, file = ...
concurrency, total = tonumber(concurrency), tonumber(total)
local f = assert(io.open(token_file, "rb"))
local token = f:read("*a"):gsub("%s+$", "")
f:close()

local input
if file then
  local next_line = io.lines(file)
  input = function()
    local line = next_line()
    if not line then return nil end
    local user_id, instance_id = line:match("^([^,]+),(.+)$")
    return { user_id = user_id, instance_id = instance_id }
  end
else
  input = {}
  for r = 0, total - 1 do
    input[r + 1] = { user_id = string.format("u%d-%d", math.floor(r / 100), r % 100 + 1),
                     instance_id = string.format("bench%04d", r % 100 + 1) }
  end
end

local client = koophone.client { endpoint = endpoint }
local t0 = koophone.now()
local report = assert(client:unassign_all(token, input, {
  batch_size = 100, concurrency = concurrency, keep_results = not file,
}))
local seconds = koophone.now() - t0
if report.counts.unassigned ~= total then
  error(string.format("expected %d unassigned pairs, got %s", total, tostring(report.counts.unassigned)))
end
print(string.format("seconds %.6f", seconds))
