-- koophone.ngx.iam_token{...}: an IAM token provider for OpenResty whose token every nginx
-- worker shares through a lua_shared_dict: one worker fetches it (in the thread pool, so the
-- event loop never waits for IAM), the others reuse it. In nginx.conf's http block:
--     lua_shared_dict koophone_tokens 1m;    # opts.dict; a token is a few KB
-- Options: those of koophone.iam_token, plus dict (required), thread_pool (default "koophone")
-- and wait (seconds a worker waits for another's fetch, default 10).
--   local tp = require("koophone.ngx.iam_token").new{ dict = "koophone_tokens", domain = …, … }
--   client:unassign(tp, pairs)   -- a koophone.ngx client (kngx.new / kngx.client)
-- The dict holds "<expires_at> <fetched_at> <token>" under a key made of endpoint, domain, user
-- and project (a token is refreshed as koophone.iam_token.fresh says),
-- and "<key>:lock", added with a ttl: the worker that adds it fetches; a worker that dies while
-- fetching frees it when the ttl ends. The token and the password never reach a log line.
local errors = require "koophone.errors"
local iam_token = require "koophone.iam_token"
local argerror = require "koophone.argerror"

local _M = {}

local FNAME = "koophone.ngx.iam_token"
local THREAD_MODULE = "koophone.ngx.iam_token"
local OWN = { dict = true, thread_pool = true, wait = true }

local Provider = { __name = FNAME }
Provider.__index = Provider

-- Thread side: one fetch with a provider made from the plain options (no ngx API here); with
-- want_events, the events of its IAM exchange go back too (a function cannot cross the thread
-- boundary, tables of strings and numbers can).
function _M.thread_fetch(opts, want_events)
  local events = want_events and {} or nil
  local tp = iam_token.new(opts, events and function(ev) events[#events + 1] = ev end)
  local token, expires_at = tp:token()
  tp.client:close()
  if not token then
    local err = expires_at
    return nil, { kind = err.kind, code = err.code, status = err.status, message = err.message,
                  sent = false, attempts = 0 }, events
  end
  return token, expires_at, events
end

function _M.new(opts)
  if type(opts) ~= "table" then argerror.raise(FNAME, 1, "opts", "expected a table, got %s", type(opts)) end
  local iam_opts = {}
  for k, v in pairs(opts) do
    if not OWN[k] then iam_opts[k] = v end
  end
  -- a provider made now checks the options, so mistakes raise at startup; the fetches make
  -- their own in the thread
  local checked = iam_token.new(iam_opts)
  checked.client:close()
  if type(opts.dict) ~= "string" or not ngx.shared[opts.dict] then
    argerror.raise(FNAME, 1, "opts.dict", "expected the name of a lua_shared_dict, got %s",
                   tostring(opts.dict))
  end
  local pool = opts.thread_pool or "koophone"
  if type(pool) ~= "string" or pool == "" then
    argerror.raise(FNAME, 1, "opts.thread_pool", "expected a thread_pool name, got %s", type(pool))
  end
  return setmetatable({
    dict = ngx.shared[opts.dict], opts = iam_opts, pool = pool,
    wait = argerror.number(opts.wait or 10, FNAME, 1, "opts.wait", 0, 3600),
    refresh_before = checked.refresh_before,
    key = ("iam %s %s %s %s"):format(opts.endpoint or "", opts.domain, opts.user,
                                      opts.project_id or opts.project),
  }, Provider)
end

-- the shared token while it is fresh (koophone.iam_token.fresh)
local function shared(self)
  local v = self.dict:get(self.key)
  local expires_at, fetched_at, token = (v or ""):match("^(%d+) (%d+) (.+)$")
  expires_at = tonumber(expires_at)
  if token and iam_token.fresh(ngx.time(), tonumber(fetched_at), expires_at, self.refresh_before) then
    return token, expires_at
  end
end

-- fetch(want_events) -> token, expires_at or nil, err; then the IAM exchange's events (or nil)
local function fetch(self, want_events)
  local fetched_at = ngx.time()
  local ok, done, token, expires_at, events = pcall(ngx.run_worker_thread, self.pool, THREAD_MODULE,
                                                    "thread_fetch", self.opts, want_events)
  if not (ok and done) then
    return nil, iam_token.auth_error("cannot run the IAM token request: " .. tostring(ok and token or done))
  end
  if not token then return nil, errors.new(expires_at), events end
  -- kept while it may be fresh: a clock ahead of IAM's sees it expire at once
  self.dict:set(self.key, ("%d %d %s"):format(expires_at, fetched_at, token),
                math.max(expires_at - ngx.time(), iam_token.MIN_REUSE))
  return token, expires_at, events
end

-- token([on_events]) -> token, expires_at, or nil, err (kind "auth"); yields while a fetch runs.
-- When this worker fetches, on_events(events) gets the events of the IAM exchange (koophone.ngx
-- passes them to its client's on_event), once the token is shared and the lock freed: a slow
-- hook does not keep the other workers waiting.
function Provider:token(on_events)
  local token, expires_at = shared(self)
  if token then return token, expires_at end
  local lock, deadline = self.key .. ":lock", ngx.now() + self.wait
  repeat
    if self.dict:add(lock, true, self.wait) then
      local events
      token, expires_at, events = fetch(self, on_events ~= nil)
      self.dict:delete(lock)
      if events then on_events(events) end
      return token, expires_at
    end
    ngx.sleep(0.01) -- another worker fetches
    token, expires_at = shared(self)
    if token then return token, expires_at end
  until ngx.now() > deadline
  return nil, iam_token.auth_error("no IAM token: another worker's request did not end within opts.wait")
end

-- invalidate([token]): drops the shared token (only if it is still `token`, when given: another
-- worker may have replaced it already)
function Provider:invalidate(token)
  local v = self.dict:get(self.key)
  if v and (token == nil or v:sub(-#token) == token) then self.dict:delete(self.key) end
end

function Provider:__tostring()
  return ("%s (%s, user %s in %s)"):format(FNAME, self.opts.endpoint or "IAM", self.opts.user,
                                           self.opts.domain)
end

return _M
