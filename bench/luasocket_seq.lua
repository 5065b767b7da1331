-- LuaSocket socket.http (LuaSec ssl.https for HTTPS, verify = "peer") + cjson:
-- what a Lua script writer uses today. Same headers and body as koophone.
-- socket.http opens a new connection for every request (it sends Connection: close).
-- Usage: lua luasocket_seq.lua URL CALLS WARMUP TOKEN_FILE [CAFILE]
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"

local url, calls, warmup, token_file, cafile = ...
calls, warmup = tonumber(calls), tonumber(warmup)
local f = assert(io.open(token_file, "rb"))
local token = f:read("*a"):gsub("%s+$", "")
f:close()

local request = http.request
if url:match("^https:") then
  request = require("ssl.https").request
end

math.randomseed(os.time())
local random, format = math.random, string.format
local function uuid4()
  return format("%08x-%04x-4%03x-%04x-%04x%08x", random(0, 0xffffffff), random(0, 0xffff),
    random(0, 0xfff), random(0x8000, 0xbfff), random(0, 0xffff), random(0, 0xffffffff))
end

local function call()
  local body = cjson.encode { user_instances = { { user_id = "u-1", instance_id = "bench0001" } } }
  local out = {}
  local ok, status = request {
    url = url, method = "POST",
    headers = {
      ["x-request-id"] = uuid4(), ["X-Auth-Token"] = token,
      ["Content-Type"] = "application/json", ["Accept"] = "application/json",
      ["Content-Length"] = tostring(#body),
    },
    source = ltn12.source.string(body), sink = ltn12.sink.table(out),
    verify = "peer", cafile = cafile, protocol = "any", options = { "all" },
  }
  local res = ok and status == 200 and cjson.decode(table.concat(out))
  if not res or res.error_code ~= "0" or res.data.cmd_jobs[1].instance_id ~= "bench0001" then
    error("bad answer: " .. tostring(status))
  end
end

for _ = 1, warmup do call() end
local t0, c0 = socket.gettime(), os.clock()
for _ = 1, calls do call() end
print(string.format("us_per_call %.3f\ncpu_us_per_call %.3f", (socket.gettime() - t0) * 1e6 / math.max(calls, 1),
  (os.clock() - c0) * 1e6 / math.max(calls, 1)))
