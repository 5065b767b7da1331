-- unassign_all against the KooPhone simulator (real unassign work on the server, unlike the canned
-- bench server): 10,000 pairs in batches of 100 at concurrency 1, 4 and 8, median of 5 runs, next
-- to the bare core:unassign_many over the same 100 batches (the C part alone).
-- Usage, with the simulator running (sim/simctl start):
--   eval "$(sim/simctl env)"; LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;;' \
--   LUA_CPATH='build/lua5.4/?.so;;' lua5.4 bench/bulk_sim.lua
local koophone = require "koophone"
local sim = require "helpers.sim"

local N, RUNS = 10000, 5
local list = sim.make_pairs(N, "b")
local batches = {}
for b = 1, N / 100 do
  local t = {}
  for j = 1, 100 do t[j] = list[(b - 1) * 100 + j] end
  batches[b] = t
end

local function median(f)
  local times = {}
  for i = 1, RUNS do
    sim.reset(list)
    local t0 = koophone.now()
    f()
    times[i] = koophone.now() - t0
  end
  table.sort(times)
  return times[(RUNS + 1) / 2] * 1000
end

print("| concurrency | unassign_all (ms) | core unassign_many (ms) | pairs/s (unassign_all) |")
print("|---:|---:|---:|---:|")
for _, conc in ipairs { 1, 4, 8 } do
  local client = koophone.client(sim.client_opts("http"))
  local all = median(function()
    local r = client:unassign_all(sim.token, list, { batch_size = 100, concurrency = conc })
    assert(r.counts.unassigned == N)
  end)
  local many = median(function()
    local res = client.core:unassign_many(sim.token, batches, { concurrency = conc })
    assert(res[#batches].outcome == "unassigned")
  end)
  client:close()
  print(("| %d | %.1f | %.1f | %.0f |"):format(conc, all, many, N / all * 1000))
end
