-- Resuming 4 lost batches of 100 pairs: the requests and the wall time, sending them again
-- (settle = false: each batch answers 2210 and is bisected down to single pairs) and reading
-- them first (koophone.settle: ListInstances, nothing sent again).
-- Usage (against a running simulator, its ports from the KOOPHONE_SIM_* variables):
--   LUA_PATH='lua/?.lua;spec/?.lua;;' LUA_CPATH='build/lua5.4/?.so;;' lua5.4 bench/resume_lost.lua [TENANT]
-- TENANT (default 1000): instances in the tenant, the 400 lost pairs among them; the reads page
-- through it or read each instance, whichever takes fewer requests.
-- The crash is made as spec/journal_spec.lua makes one: the pairs are unassigned by a request of
-- their own, and the journal holds 4 `send` records that never ended.
local koophone = require "koophone"
local sim = require "helpers.sim"
local cjson = require "cjson"

local tenant = tonumber(... or 1000)
local path = os.tmpname()

local function run(settle)
  local list = sim.make_pairs(tenant, "lost")
  sim.reset(list)
  local raw = koophone.new(sim.client_opts("http"))
  local lines = { cjson.encode { type = "run", version = 1, time = 0 } }
  for b = 0, 3 do
    local batch, pairs_ = {}, {}
    for k = 1, 100 do
      local p = list[b * 100 + k]
      batch[k], pairs_[k] = p, { p.user_id, p.instance_id }
    end
    assert(raw:unassign(sim.token, batch)) -- applied; its answer "lost" with the crash
    lines[#lines + 1] = cjson.encode { type = "send", request_id = "lost-" .. b, pairs = pairs_ }
  end
  raw:close()
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(lines, "\n") .. "\n")
  f:close()
  sim.control("DELETE", "/_sim/log")
  local client = koophone.client(sim.client_opts("http", { retry = { sleep = function() end } }))
  local input = {}
  for k = 1, 400 do input[k] = list[k] end
  local t0 = koophone.now()
  local report = assert(client:unassign_all(sim.token, input, { journal = path, resume = true,
                                                                settle = settle }))
  local seconds = koophone.now() - t0
  client:close()
  os.remove(path)
  local unassign, list_reqs = #sim.log(), #sim.control("GET", "/_sim/list_log").requests
  print(("%-24s unassign requests %4d  ListInstances requests %3d  wall %.3f s  outcomes: %d unassigned, %d assumed_unassigned, %d verified")
        :format(settle and "read first (settle)" or "send again (settle=false)", unassign, list_reqs,
                seconds, report.counts.unassigned, report.counts.assumed_unassigned, report.verified or 0))
end

print(("tenant of %d instances, 4 lost batches of 100 pairs, concurrency 4"):format(tenant))
run(false)
run(true)
