-- Test helper for the credentials specs (aksk_spec, iam_token_spec): a project-scoped tenant,
-- "no secret slice" checks, a JSON POST to a test nginx, the CLI with extra environment.
local sim = require "helpers.sim"
local cli = require "helpers.cli"
local cjson = require "cjson.safe"
local assert = require "luassert"

local _M = { PROJECT = "0123456789abcdef0123456789abcdef" }

-- Resets the simulator and seeds tenant t1 (project PROJECT, domain "acct") with `list` bound;
-- extra: more seed fields (access_keys, iam_users).
function _M.seed(list, extra)
  sim.control("POST", "/_sim/reset")
  local instances, bindings = {}, {}
  for _, p in ipairs(list) do
    instances[#instances + 1] = p.instance_id
    bindings[p.instance_id] = p.user_id
  end
  local seed = { tenants = { { name = "t1", project_id = _M.PROJECT, domain = "acct", exists = true,
                               instances = instances, bindings = next(bindings) and bindings or nil } } }
  for k, v in pairs(extra) do seed[k] = v end
  sim.control("POST", "/_sim/seed", seed)
end

-- The IAM user admin of domain "acct" with `password`, for _M.seed's extra.
function _M.iam_user(password)
  return { iam_users = { { domain = "acct", name = "admin", password = password } } }
end

-- A koophone.iam_token provider logging in as that user to the simulator; extra: other options.
function _M.provider(password, extra)
  local o = { endpoint = sim.http_url, domain = "acct", user = "admin", password = password,
              project_id = _M.PROJECT }
  for k, v in pairs(extra or {}) do o[k] = v end
  return require("koophone").iam_token(o)
end

-- Fails when text holds secret or any 16-byte slice of it.
function _M.assert_no_slice(secret, text)
  for i = 1, #secret - 15 do
    assert.is_nil(text:find(secret:sub(i, i + 15), 1, true), "a secret leaked: " .. text)
  end
end

-- The same for each of a list of secrets.
function _M.assert_no_slices(secrets, text)
  for _, secret in ipairs(secrets) do _M.assert_no_slice(secret, text) end
end

-- POSTs body as JSON to path of a helpers.openresty nginx: the decoded answer and its text.
function _M.post(nginx, path, body)
  local http, ltn12 = require "socket.http", require "ltn12"
  local src, out = assert(cjson.encode(body)), {}
  local _, status = http.request {
    url = nginx.base .. path, method = "POST", source = ltn12.source.string(src),
    headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#src),
                connection = "close" },
    sink = ltn12.sink.table(out),
  }
  assert.equals(200, status)
  return cjson.decode(table.concat(out)), table.concat(out)
end

-- Runs `env bin/koophone args` in ctx's directory (a helpers.cli context): rc, stdout, stderr.
function _M.cli(ctx, env, args)
  local rc = cli.exit_code(os.execute(("%s %s %s >%s/out 2>%s/err"):format(
    env, cli.CMD, args, ctx.dir, ctx.dir)))
  local out, err = ctx.output()
  return rc, out, err
end

return _M
