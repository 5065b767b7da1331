-- What lua-cjson alone costs a bulk run: REQUESTS encodes of a 100-pair request body and
-- REQUESTS decodes of the bench server's 100-job answer, the JSON work koophone's bulk run does
-- (and bench/multi_floor.c does with snprintf and strstr).
-- Usage: lua cjson_cost.lua ANSWER_FILE REQUESTS; prints "seconds <s>" for the loop.
local cjson = require "cjson"
local now = require("koophone").now

local answer_file, requests = ...
requests = tonumber(requests)
local f = assert(io.open(answer_file, "rb"))
local answer = f:read("*a")
f:close()

-- 100 distinct bodies, reused: building them is not JSON work, and stays out of the difference
-- between two request counts
local bodies = {}
for b = 1, 100 do
  local list = {}
  for k = 1, 100 do
    list[k] = { user_id = string.format("u%d-%d", b - 1, k), instance_id = string.format("bench%04d", k) }
  end
  bodies[b] = { user_instances = list }
end

local t0 = now()
for b = 1, requests do
  local body = cjson.encode(bodies[(b - 1) % 100 + 1])
  local decoded = cjson.decode(answer)
  if #body < 100 or #decoded.data.cmd_jobs ~= 100 then error("cjson_cost: unexpected JSON") end
end
print(string.format("seconds %.6f", now() - t0))
