-- koophone, sequential single-pair calls: the loop a user would write.
-- Usage: lua koophone_seq.lua client|events|module|policy|aksk|provider|list URL CALLS WARMUP TOKEN_FILE [CAFILE]
-- client: koophone.new{}:unassign (the C client); events: the same with an empty on_event hook
-- (what building the events costs); module: koophone.unassign (default client);
-- policy: koophone.client{}:unassign (the Lua client with the default retry policy);
-- aksk: koophone.new{}:unassign with koophone.aksk credentials (a signed call); provider: the
-- same with a koophone.iam_token provider (its token cached after the first call); list:
-- koophone.new{}:list_instances of one instance (a read: GET with its query, a page mapped).
-- Prints "us_per_call <microseconds>" (wall) and "cpu_us_per_call <microseconds>" (CPU).
local koophone = require "koophone"

local mode, url, calls, warmup, token_file, cafile = ...
calls, warmup = tonumber(calls), tonumber(warmup)
local f = assert(io.open(token_file, "rb"))
local token = f:read("*a"):gsub("%s+$", "")
f:close()

local pairs_ = { { user_id = "u-1", instance_id = "bench0001" } }

local function check(res, err)
  if not res or res.error_code ~= "0" or res.jobs[1].instance_id ~= "bench0001" then
    error("bad answer: " .. tostring(err))
  end
end

local run
if mode == "aksk" or mode == "provider" then
  -- the C client with credentials instead of the token: aksk signs every call at send time (the
  -- bench server checks no signature); provider is a koophone.iam_token whose IAM (the bench
  -- server's /one/v3/auth/tokens) answers the same 8 KiB token, fetched once, then cached
  local client = koophone.new { endpoint = url, cafile = cafile }
  local cred = mode == "aksk"
    and koophone.aksk { ak = "BENCHAK0000000000001", sk = "bench-secret-key-0123456789abcdefghijklm",
                        project_id = "0123456789abcdef0123456789abcdef" }
    or koophone.iam_token { endpoint = url, cafile = cafile, domain = "bench", user = "bench",
                            password = "bench-password", project = "cn-north-4" }
  run = function(n)
    for _ = 1, n do
      check(client:unassign(cred, pairs_))
    end
  end
elseif mode == "client" or mode == "events" or mode == "policy" then
  -- "policy" is the same loop through koophone.client's retry layer
  local make = mode == "policy" and koophone.client or koophone.new
  local client = make { endpoint = url, cafile = cafile,
                        on_event = mode == "events" and function() end or nil }
  run = function(n)
    for _ = 1, n do
      check(client:unassign(token, pairs_))
    end
  end
elseif mode == "list" then
  local client = koophone.new { endpoint = url, cafile = cafile }
  local query = { instance_id = "bench0001", page_size = 1 }
  run = function(n)
    for _ = 1, n do
      local res, err = client:list_instances(token, query)
      if not res or res.instances[1].assign_user ~= "u-1" then error("bad answer: " .. tostring(err)) end
    end
  end
elseif mode == "module" then
  koophone.configure { endpoint = url, cafile = cafile }
  local unassign = koophone.unassign
  run = function(n)
    for _ = 1, n do
      check(unassign(token, pairs_))
    end
  end
else
  error("mode must be client, events, module, policy, aksk, provider or list")
end

run(warmup)
local t0, c0 = koophone.now(), os.clock()
run(calls)
print(string.format("us_per_call %.3f\ncpu_us_per_call %.3f", (koophone.now() - t0) * 1e6 / math.max(calls, 1),
  (os.clock() - c0) * 1e6 / math.max(calls, 1)))
