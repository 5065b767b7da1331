-- Admin command script run by admin_console (examples/embed/admin_console.c):
--
--   admin_console [-t N] admin.lua unassign USER_ID:INSTANCE_ID ...
--
-- Thread i of N unassigns every Nth pair starting at the ith, with a client of its own: a client
-- is never shared between OS threads. The token comes from KOOPHONE_TOKEN, the endpoint from
-- KOOPHONE_ENDPOINT, a CA file from KOOPHONE_CAFILE. The call takes the host's bounds, the global
-- `admin` (admin_console's -d deadline and the cancel handle its main thread raises with -c), so
-- it blocks the thread no longer than the host allows, retries included. Prints one line per
-- pair; returns true when every pair was unassigned.
local koophone = require "koophone"

local index, count, command = ...
local words = { select(4, ...) }

if command ~= "unassign" or #words == 0 then
  return false, "usage: admin.lua unassign USER_ID:INSTANCE_ID ..."
end
local token = os.getenv("KOOPHONE_TOKEN")
if not token then return false, "KOOPHONE_TOKEN is not set" end

local list = {}
for k = index, #words, count do
  local user_id, instance_id = words[k]:match("^([^:]+):(.+)$")
  if not user_id then return false, "not USER_ID:INSTANCE_ID: " .. words[k] end
  list[#list + 1] = { user_id = user_id, instance_id = instance_id }
end
if #list == 0 then return true end

local bounds = admin or {} -- the host's global (admin_console sets it), absent in other hosts
local client = koophone.client { cafile = os.getenv("KOOPHONE_CAFILE") }
local res, err = client:unassign(token, list, { deadline = bounds.deadline, cancel = bounds.cancel })
client:close()
-- one write per line: lines of different threads do not interleave
if not res then
  io.write(("thread %d: failed: %s\n"):format(index, tostring(err)))
  return false, err.code
end
for _, job in ipairs(res.jobs) do
  io.write(("thread %d: unassigned %s job %s\n"):format(index, job.instance_id, job.job_id))
end
return true
