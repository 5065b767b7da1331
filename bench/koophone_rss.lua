-- Resident memory of a long run of sequential calls on one client: it must stay flat.
-- Usage: lua koophone_rss.lua URL CALLS TOKEN_FILE
-- Prints "rss_kb <calls done> <VmRSS in KiB>" after 10,000 calls and at the end.
local koophone = require "koophone"

local url, calls, token_file = ...
calls = tonumber(calls)
local f = assert(io.open(token_file, "rb"))
local token = f:read("*a"):gsub("%s+$", "")
f:close()

local function rss_kb()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmRSS:%s+(%d+)")
    if kb then return tonumber(kb) end
  end
end

local client = koophone.new { endpoint = url }
local pairs_ = { { user_id = "u-1", instance_id = "bench0001" } }
local checkpoint = math.min(10000, calls)
for i = 1, calls do
  local res, err = client:unassign(token, pairs_)
  if not res or res.jobs[1].instance_id ~= "bench0001" then
    error("bad answer: " .. tostring(err))
  end
  if i == checkpoint or i == calls then
    collectgarbage() -- what is left is what the calls keep, not garbage not yet collected
    print(string.format("rss_kb %d %d", i, rss_kb()))
  end
end
