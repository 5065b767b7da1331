-- The calls the torture driver (fuzz/torture.c) runs with one allocation failing in turn.
-- Every outcome is fine except a crash or a leak: the driver checks those.
local core = require "koophone.core"
local https = os.getenv("TORTURE_SCHEME") == "https"
local url = assert(os.getenv(https and "KOOPHONE_SIM_HTTPS_URL" or "KOOPHONE_SIM_URL"),
                   "run with the simulator's environment")
local cafile = https and os.getenv("KOOPHONE_SIM_CA") or nil
local token = "SECRET-TORTURE-TOKEN-0123456789"
local list = { { user_id = "u-t-1", instance_id = "tort0001" }, { user_id = 2, instance_id = "tort0002" } }

assert(core.validate_pair(list[1]))
core.validate_pair({ user_id = "a\nb", instance_id = "x" })
core.configure { endpoint = url, cafile = cafile, timeout = 5, max_pairs = 4 }
local c <close> = core.new { endpoint = url, cafile = cafile, timeout = 5, user_agent = "torture" }
local res, err = c:unassign(token, list, { request_id = "torture-1" })
tostring(err)
res, err = core.unassign(token, list)
tostring(err)
pcall(c.unassign, c, token, { list[1], list[1] })        -- duplicate: raises
pcall(c.unassign, c, token, { { user_id = "u" } })       -- missing field: raises
if c.unassign_many then
  c:unassign_many(token, { { list[1] }, { list[2] } })
end
if c.start_many then -- a set closed with a transfer in flight, then one driven to its end
  local first <close> = c:start_many(token, { { list[1] }, { list[2] } }, { concurrency = 2 })
  first:next()
  first:close()
  local set = c:start_many(token, { { list[1] } })
  while set:next() do end
end
-- a read with a query (built, percent-encoded) and a page mapped in place
res, err = c:list_instances(token, { page_size = 5, instance_name = "a b&c" }, { request_id = "torture-2" })
tostring(err)
pcall(c.list_instances, c, token, { pagesize = 1 })     -- unknown parameter: raises
c:close()
