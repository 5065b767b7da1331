#!/usr/bin/env lua5.4
-- Unassign cloud phones from their users and print the jobs KooPhone started.
--
--   KOOPHONE_TOKEN=... lua5.4 examples/unassign.lua USER_ID:INSTANCE_ID ...
--   KOOPHONE_TOKEN=... lua5.4 examples/unassign.lua --file pairs.txt   (one "user_id instance_id" per line)
--   lua5.4 examples/unassign.lua --demo     (against the local simulator; what `make demo` runs)
--
-- Options: --endpoint URL (default $KOOPHONE_ENDPOINT or the public endpoint), --cafile FILE.
local koophone = require "koophone"
local cjson = require "cjson.safe"

local function die(msg) io.stderr:write("unassign: ", msg, "\n"); os.exit(2) end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then die(err) end
  local data = f:read("*a")
  f:close()
  return data
end

local function parse_args(argv)
  local o = { pairs = {} }
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--demo" then o.demo = true
    elseif a == "--endpoint" or a == "--cafile" or a == "--file" then
      i = i + 1
      o[a:sub(3)] = argv[i] or die(a .. " needs a value")
    else
      local user_id, instance_id = a:match("^([^:]+):(.+)$")
      if not user_id then die("expected USER_ID:INSTANCE_ID, got " .. a) end
      o.pairs[#o.pairs + 1] = { user_id = user_id, instance_id = instance_id }
    end
    i = i + 1
  end
  if o.file then
    for line in read_file(o.file):gmatch("[^\n]+") do
      local user_id, instance_id = line:match("^%s*(%S+)%s+(%S+)%s*$")
      if user_id then o.pairs[#o.pairs + 1] = { user_id = user_id, instance_id = instance_id } end
    end
  end
  return o
end

-- The demo talks HTTPS to the simulator started by `make demo`, with the demo tenant's token.
local function demo_setup(o)
  local seed = cjson.decode(read_file("sim/seed-demo.json")) or die("bad sim/seed-demo.json")
  o.token = seed.tenants[1].token
  o.endpoint = os.getenv("KOOPHONE_SIM_HTTPS_URL") or "https://localhost:18443"
  o.cafile = os.getenv("KOOPHONE_SIM_CA") or "sim/run/ca.pem"
  if #o.pairs == 0 then
    o.pairs = { { user_id = "u-1001", instance_id = "demo0001" },
                { user_id = "u-1002", instance_id = "demo0002" },
                { user_id = "u-1003", instance_id = "demo0003" } }
  end
end

local function report(res, err)
  if not res then
    -- tostring(err) is one line with the code, HTTP status, message and request id.
    print("failed: " .. tostring(err))
    print("  " .. (koophone.describe(err.code) or "see the error table in the README"))
    return false
  end
  print(("unassigned %d phone(s), task %s, request %s"):format(#res.jobs, tostring(res.task_id), res.request_id))
  for _, job in ipairs(res.jobs) do
    print(("  instance %-12s job %s"):format(job.instance_id, job.job_id))
  end
  return true
end

local o = parse_args(arg)
if o.demo then demo_setup(o) end
o.token = o.token or os.getenv("KOOPHONE_TOKEN") or die("set KOOPHONE_TOKEN (an IAM token)")
if #o.pairs == 0 then die("no pairs given") end

local client = koophone.new { endpoint = o.endpoint, cafile = o.cafile }
local ok = report(client:unassign(o.token, o.pairs))
if o.demo then
  print("\nthe same request again (the bindings are gone now):")
  report(client:unassign(o.token, o.pairs))
end
client:close()
os.exit(ok and 0 or 1, true)
