-- Test helper: talks to the running simulator's control API (sim/README.md) over LuaSocket,
-- and builds clients pointed at it. Ports and paths come from `sim/simctl env`.
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson.safe"

local env = os.getenv
local _M = {}

_M.http_port = tonumber(env("KOOPHONE_SIM_HTTP_PORT") or "18080")
_M.https_port = tonumber(env("KOOPHONE_SIM_HTTPS_PORT") or "18443")
_M.wrongname_port = tonumber(env("KOOPHONE_SIM_WRONGNAME_PORT") or "18444")
_M.target_port = tonumber(env("KOOPHONE_SIM_TARGET_PORT") or "18081")
_M.run_dir = env("KOOPHONE_SIM_DIR") or "sim/run"
_M.http_url = "http://127.0.0.1:" .. _M.http_port
_M.https_url = "https://localhost:" .. _M.https_port
_M.wrongname_url = "https://localhost:" .. _M.wrongname_port
_M.ca = _M.run_dir .. "/ca.pem"
_M.other_ca = _M.run_dir .. "/other-ca.pem"

-- A token of realistic size (IAM tokens are several KB) that is easy to grep for.
_M.token = "SECRET-TOKEN-" .. string.rep("0123456789abcdef", 400) .. "-END"

-- JSON null decodes to cjson.null (truthy); specs want nil for "absent".
local function strip_nulls(v)
  if type(v) == "table" then
    for k, x in pairs(v) do
      if x == cjson.null then v[k] = nil else strip_nulls(x) end
    end
  end
  return v
end

local function control(method, path, body)
  local src = body and assert(cjson.encode(body)) or ""
  local out = {}
  local ok, code = http.request {
    url = _M.http_url .. path, method = method,
    headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#src) },
    source = ltn12.source.string(src), sink = ltn12.sink.table(out),
  }
  assert(ok, "simulator control call failed: " .. tostring(code))
  local decoded = strip_nulls(cjson.decode(table.concat(out)))
  assert(code == 200, "simulator control " .. path .. " answered " .. tostring(code) .. ": " .. table.concat(out))
  return decoded
end
_M.control = control

-- Instance ids of `n` pairs named with `prefix`: prefix0001 .. and users u-prefix-1 ..
function _M.make_pairs(n, prefix)
  prefix = prefix or "inst"
  local list = {}
  for i = 1, n do
    list[i] = { user_id = ("u-%s-%d"):format(prefix, i), instance_id = ("%s%04d"):format(prefix, i) }
  end
  return list
end

-- The instances of `list` and the bindings of its odd-numbered pairs: a tenant half bound.
function _M.half_bound(list)
  local instances, bindings = {}, {}
  for i, p in ipairs(list) do
    instances[i] = p.instance_id
    if i % 2 == 1 then bindings[p.instance_id] = p.user_id end
  end
  return instances, bindings
end

-- Resets the simulator and seeds one tenant with `pairs` bound (and `extra_instances` owned).
function _M.reset(pairs_list, opts)
  opts = opts or {}
  control("POST", "/_sim/reset")
  local instances, bindings = {}, {}
  for _, p in ipairs(pairs_list or {}) do
    instances[#instances + 1] = p.instance_id
    if not opts.unbound then bindings[p.instance_id] = p.user_id end
  end
  for _, id in ipairs(opts.extra_instances or {}) do instances[#instances + 1] = id end
  local tenants = { { name = "t1", token = opts.token or _M.token, exists = true,
                      instances = instances, bindings = next(bindings) and bindings or nil } }
  for _, t in ipairs(opts.tenants or {}) do tenants[#tenants + 1] = t end
  control("POST", "/_sim/seed", { tenants = tenants })
end

function _M.faults(...) return control("POST", "/_sim/faults", { faults = { ... } }) end
function _M.log(since) return control("GET", "/_sim/log" .. (since and ("?since=" .. since) or "")).requests end
function _M.target_log() return control("GET", "/_sim/target_log").requests end
function _M.state() return control("GET", "/_sim/state") end

-- instance_id -> user_id of tenant t1's current bindings
function _M.bindings(tenant)
  local out = {}
  for _, b in ipairs(_M.state().tenants[tenant or "t1"].bindings) do out[b.instance_id] = b.user_id end
  return out
end

-- Fresh tables with the same pairs (the bulk layer must not depend on the caller's tables).
function _M.copy_pairs(list)
  local out = {}
  for i, p in ipairs(list) do out[i] = { user_id = p.user_id, instance_id = p.instance_id } end
  return out
end

-- Fails when the simulator applied any pair more than once.
function _M.assert_no_pair_twice()
  for key, n in pairs(_M.applied_counts()) do
    assert(n == 1, ("pair %q applied %d times"):format(key, n))
  end
end

function _M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

-- Options for koophone.new pointing at the simulator over "http" or "https".
function _M.client_opts(scheme, extra)
  local o = scheme == "https" and { endpoint = _M.https_url, cafile = _M.ca } or { endpoint = _M.http_url }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- "user_id\0instance_id" -> how many applied requests of the log (default: the whole log) removed
-- that pair: a value above 1 means a pair was unassigned twice.
function _M.applied_counts(log)
  local out = {}
  for _, e in ipairs(log or _M.log()) do
    if e.applied then
      for _, p in ipairs(e.pair_list) do
        local k = p[1] .. "\0" .. p[2]
        out[k] = (out[k] or 0) + 1
      end
    end
  end
  return out
end

-- Every string reachable from `v` (keys and values, recursively), for "token never leaks" checks.
function _M.strings(v, out, seen)
  out, seen = out or {}, seen or {}
  if type(v) == "string" then out[#out + 1] = v
  elseif type(v) == "table" and not seen[v] then
    seen[v] = true
    for k, x in pairs(v) do _M.strings(k, out, seen); _M.strings(x, out, seen) end
  end
  return out
end

-- ---------------------------------------------------------------- IAM, AK/SK, tasks

-- One request to the simulator's HTTP port: returns status, headers (lower-case names), body.
function _M.request(method, path, headers, body)
  body = body or ""
  local h, out = { ["content-length"] = tostring(#body) }, {}
  for k, v in pairs(headers or {}) do h[k:lower()] = v end
  local ok, code, rh = http.request {
    url = _M.http_url .. path, method = method, headers = h,
    source = ltn12.source.string(body), sink = ltn12.sink.table(out),
  }
  assert(ok, "request to the simulator failed: " .. tostring(code))
  return code, rh, table.concat(out)
end

-- Like request(), with the body decoded as JSON (nulls become nil).
function _M.request_json(method, path, headers, body)
  local code, h, raw = _M.request(method, path, headers, body)
  return code, strip_nulls(cjson.decode(raw)), h, raw
end

-- Hex SHA-256 (or HMAC-SHA256 with `key`) of data, computed by the openssl command line: a
-- hash independent of the simulator's own (sim/sim_crypto.lua).
function _M.openssl_sha256(data, key)
  local path = os.tmpname()
  _M.write_file(path, data)
  local args = key and ("-hmac '" .. key:gsub("'", "'\\''") .. "' ") or ""
  local p = assert(io.popen("openssl dgst -sha256 " .. args .. "< '" .. path .. "'"))
  local out = p:read("*a")
  p:close()
  os.remove(path)
  return (assert(out:match("(%x+)%s*$"), "openssl dgst failed: " .. out))
end

-- Signs a request as "SDK-HMAC-SHA256" with every header given plus host and x-sdk-date (now,
-- real clock, unless given), hashing with openssl: a signer independent of the simulator's
-- verifier. opts: method, path and query ("a=1&b=2": unreserved characters only, no name
-- twice), headers, body, ak, sk, signature (to send a wrong one). Returns the headers to send
-- and the canonical request.
function _M.sign(opts)
  assert(opts.path:match("^[/%w%-_%.~]*$"), "sign: keep paths to unreserved characters")
  assert((opts.query or ""):match("^[%w%-_%.~=&]*$"), "sign: keep queries to unreserved characters")
  local query = {}
  for pair in (opts.query or ""):gmatch("[^&]+") do query[#query + 1] = { pair:match("^([^=]*)=?(.*)$") } end
  table.sort(query, function(a, b) return a[1] < b[1] end)
  for i, p in ipairs(query) do query[i] = p[1] .. "=" .. p[2] end
  local headers, names, lines = {}, {}, {}
  for k, v in pairs(opts.headers or {}) do headers[k:lower()] = v end
  headers["x-sdk-date"] = headers["x-sdk-date"] or os.date("!%Y%m%dT%H%M%SZ")
  headers.host = headers.host or ("127.0.0.1:" .. _M.http_port)
  for k in pairs(headers) do names[#names + 1] = k end
  table.sort(names)
  for i, k in ipairs(names) do lines[i] = k .. ":" .. headers[k] .. "\n" end
  local uri = opts.path:sub(-1) == "/" and opts.path or opts.path .. "/"
  local cr = table.concat({ opts.method, uri, table.concat(query, "&"), table.concat(lines), table.concat(names, ";"),
                            _M.openssl_sha256(opts.body or "") }, "\n")
  local sts = "SDK-HMAC-SHA256\n" .. headers["x-sdk-date"] .. "\n" .. _M.openssl_sha256(cr)
  headers.authorization = ("SDK-HMAC-SHA256 Access=%s, SignedHeaders=%s, Signature=%s"):format(
    opts.ak, table.concat(names, ";"), opts.signature or _M.openssl_sha256(sts, opts.sk))
  return headers, cr
end

-- A signed request (opts as for sign()); returns status, decoded body, the canonical request.
function _M.signed_request(opts)
  local headers, cr = _M.sign(opts)
  local path = opts.query and opts.path .. "?" .. opts.query or opts.path
  local code, doc = _M.request_json(opts.method, path, headers, opts.body)
  return code, doc, cr
end

-- POST /v3/auth/tokens with the password method; scope = { id = .. } or { name = .. }.
-- Returns status, decoded body, the X-Subject-Token header.
function _M.iam_login(domain, user, password, scope)
  local body = assert(cjson.encode({ auth = {
    identity = { methods = { "password" },
                 password = { user = { name = user, password = password, domain = { name = domain } } } },
    scope = { project = scope } } }))
  local code, doc, h = _M.request_json("POST", "/v3/auth/tokens?nocatalog=true",
                                       { ["content-type"] = "application/json;charset=utf8" }, body)
  return code, doc, h["x-subject-token"]
end

-- Moves the simulator's clock forward by `seconds` (token expiry, X-Sdk-Date window, jobs).
function _M.advance(seconds) return control("POST", "/_sim/clock", { advance = seconds }) end

-- Every fault of the simulator, with answers that echo the token: a spec checks that nothing
-- the module hands out carries it. Returns the faults and the echoing success body.
function _M.token_faults()
  local echo_ok = cjson.encode { error_code = "0", error_msg = "ok " .. _M.token,
    data = { task_id = _M.token, cmd_jobs = { { instance_id = "sec0001", job_id = _M.token } } } }
  local echo_err = cjson.encode { error_code = "KOOPHONE.API.1000", error_msg = "bad token " .. _M.token }
  local faults = {
    { type = "delay", seconds = 0.05 },
    { type = "delay_body", seconds = 0.05 },
    { type = "reset" },
    { type = "drop" },
    { type = "drop_after_apply" },
    { type = "error_after_apply" },
    { type = "error" },
    { type = "respond", status = 200, body = echo_ok },
    { type = "respond", status = 400, body = echo_err },
    { type = "respond", status = 502, body = "<html>" .. _M.token .. "</html>", headers = { ["Content-Type"] = "text/html" } },
    { type = "respond", status = 200, body = "not json " .. _M.token },
    { type = "throttle", retry_after = "1" },
    { type = "unavailable" },
    { type = "bad_gateway", status = 504 },
    { type = "truncate", missing = 50 },
    { type = "big_body", bytes = 4096 },
    { type = "trickle", bytes_per_second = 100000, total_bytes = 64 },
    { type = "redirect", status = 302 },
    { type = "stale_connection" },
    { type = "api_error", status = 200, code = _M.token, msg = _M.token },
    { type = "api_error", status = 400, code = "KOOPHONE.API.2210", msg = "x" .. _M.token:sub(1, 100) },
  }
  return faults, echo_ok
end

return _M
