-- koophone.cli.connection: what the CLI connects with (the connection options, shared by
-- `unassign` and `task`): the endpoint, the credentials and a retry client. No secret's text
-- ever appears in a message.
local koophone = require "koophone"
local errors = require "koophone.cli.errors"

local fail, usage_error = errors.fail, errors.usage_error

local _M = {}

-- --endpoint with a scheme: "127.0.0.1:8080" is said back as the URL that was meant.
function _M.check_endpoint(o)
  local e = o.endpoint
  if e and not e:find("^[hH][tT][tT][pP][sS]?://") then
    usage_error(("--endpoint: expected an http:// or https:// URL, e.g. https://%s")
                :format((e:gsub("^%a+://", ""))))
  end
end

-- An IAM token provider from KOOPHONE_IAM_DOMAIN, _USER, _PASSWORD (or --password-file),
-- _PROJECT or _PROJECT_ID, _ENDPOINT; said on stderr without the password.
local function iam_login(o)
  local function env(name)
    local v = os.getenv("KOOPHONE_IAM_" .. name)
    if v ~= "" then return v end
  end
  local password = env("PASSWORD")
  if o["password-file"] then
    local f, err = io.open(o["password-file"], "rb")
    if f then password, err = f:read("*a") end
    if f then f:close() end
    if not password then fail("cannot read the password file: " .. tostring(err)) end
    password = password:gsub("[\r\n]+$", "")
  end
  for _, need in ipairs { { "DOMAIN", env("DOMAIN") }, { "PASSWORD", password },
                          { "PROJECT or KOOPHONE_IAM_PROJECT_ID", env("PROJECT") or env("PROJECT_ID") } } do
    if not need[2] or need[2] == "" then usage_error("IAM login: set KOOPHONE_IAM_" .. need[1]) end
  end
  local ok, tp = pcall(koophone.iam_token, {
    endpoint = env("ENDPOINT"), domain = env("DOMAIN"), user = env("USER"), password = password,
    project = env("PROJECT"), project_id = not env("PROJECT") and env("PROJECT_ID") or nil,
    cafile = o.cafile,
  })
  if not ok then fail(tostring(tp)) end
  io.stderr:write("koophone: credentials: IAM token of ", tostring(tp), "\n")
  return tp
end

-- The token from --token-file or $KOOPHONE_TOKEN, white space around it removed; else AK/SK
-- credentials from HUAWEICLOUD_SDK_AK, _SK (+ _PROJECT_ID, _SECURITY_TOKEN); else an IAM
-- password login (iam_login). Returns the token or credentials and what they are (for the
-- confirmation and the log); the kind is said on stderr.
local function read_token(o)
  local t, from, kind = os.getenv("KOOPHONE_TOKEN"), "KOOPHONE_TOKEN", "token from $KOOPHONE_TOKEN"
  if o["token-file"] then
    from, kind = "the token file " .. o["token-file"], "token file " .. o["token-file"]
    local f, err = io.open(o["token-file"], "rb")
    t = nil -- the file's, never $KOOPHONE_TOKEN's when it cannot be read
    if f then t, err = f:read("*a") end
    if f then f:close() end
    if not t then fail("cannot read the token file: " .. tostring(err)) end
  elseif (not t or t == "") and os.getenv("HUAWEICLOUD_SDK_AK") and os.getenv("HUAWEICLOUD_SDK_SK") then
    local ok, cred = pcall(koophone.aksk) -- raises naming the variable, never its value
    if not ok then fail(tostring(cred)) end
    io.stderr:write("koophone: credentials: AK/SK from HUAWEICLOUD_SDK_* (", tostring(cred), ")\n")
    return cred, "AK/SK from $HUAWEICLOUD_SDK_*"
  elseif (not t or t == "") and os.getenv("KOOPHONE_IAM_USER") then
    return iam_login(o), "IAM password login"
  elseif not t or t == "" then
    usage_error("no credentials: set KOOPHONE_TOKEN, pass --token-file, set "
                .. "HUAWEICLOUD_SDK_AK and HUAWEICLOUD_SDK_SK, or KOOPHONE_IAM_USER (IAM login)")
  end
  t = t:match("^%s*(.-)%s*$")
  if t == "" then fail(from .. " holds no token") end
  if t:find("[\r\n]") or t:find("\0", 1, true) then
    fail(from .. ": the token contains CR, LF or NUL")
  end
  return t, kind
end

-- The credentials (read_token: token or credentials, and their kind), with --cafile checked.
function _M.credentials(o)
  local token, kind = read_token(o)
  if o.cafile then -- else every request would fail its TLS handshake
    local ca, err = io.open(o.cafile, "rb")
    if ca then
      err = select(2, ca:read(0))
      ca:close()
    end
    if err then fail("cannot read --cafile: " .. tostring(err)) end
  end
  return token, kind
end

-- A retry client with the connection options of o (--endpoint, --cafile, --timeout), the retry
-- policy o.retry, room for batches of --batch-size and on_event (the request log's).
function _M.client(o, on_event)
  local ok, client = pcall(require("koophone.client").new,
                           { endpoint = o.endpoint, cafile = o.cafile, timeout = o.timeout, retry = o.retry,
                             max_pairs = math.max(100, o["batch-size"]), on_event = on_event })
  if not ok then errors.option_error(client) end
  return client
end

return _M
