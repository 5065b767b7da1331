-- koophone.ngx: koophone for OpenResty without blocking the nginx worker.
--
-- A libcurl call made in a request handler stalls every connection of that worker until it
-- returns. This module keeps koophone's unassign contract (same arguments, same res / nil, err,
-- same raised errors) but runs the call in an nginx thread pool through ngx.run_worker_thread
-- (lua-nginx-module 0.10.21 or later, nginx built with threads): the calling request yields and
-- the worker goes on serving everything else until the thread is done.
--
-- Needs, in the main context of nginx.conf (name = opts.thread_pool, default "koophone"):
--     thread_pool koophone threads=4 max_queue=256;
-- and lua_package_path / lua_package_cpath that reach this file and the LuaJIT build of
-- koophone/core.so: the thread side runs in a separate Lua VM that copies them.
--
-- What crosses the thread boundary: ngx.run_worker_thread copies arguments and results between
-- the request's VM and the thread's VM; only nil, booleans, numbers, strings and tables of those
-- survive (no functions, userdata or metatables). So the options are plain values, the client
-- lives in the thread VM, and errors get their koophone.Error metatable back on this side.
-- The thread side must not touch the `ngx` API: this file reads `ngx` only in request code.
local core = require "koophone.core"

local _M = { _VERSION = core._VERSION }

local THREAD_MODULE = "koophone.ngx"

-- ---------------------------------------------------------------- thread side

-- Clients of this thread VM by options key. A VM serves one call at a time and is reused, so
-- its client keeps its connection (and TLS session) for the next call that VM takes.
local clients = {}

-- Runs in the thread VM: true, res, err for an outcome, or false, message when the call raised
-- (a programmer mistake, re-raised in the request).
function _M.thread_unassign(key, opts, token, list, call_opts)
  local c = clients[key]
  if c == nil then
    local ok, made = pcall(core.new, opts)
    if not ok then return false, made end
    c = made
    clients[key] = c
  end
  local ok, res, err = pcall(c.unassign, c, token, list, call_opts)
  if not ok then return false, res end
  return true, res, err
end

-- ---------------------------------------------------------------- request side

-- ngx refusals that are about load, not about the caller's code: the call was not sent.
local not_started = {
  ["no available Lua vm"] = true,          -- lua_worker_thread_vm_pool_size reached
  ["ngx_thread_task_post failed"] = true,  -- the thread pool's max_queue is full
  ["no memory"] = true,
}

local function not_started_error(message, call_opts)
  return setmetatable({
    kind = "network", code = "WORKER_THREAD_UNAVAILABLE",
    message = "the call was not started: " .. message,
    request_id = type(call_opts) == "table" and call_opts.request_id or nil,
    sent = false, attempts = 0,
  }, core.Error)
end

-- A string that names the option set: equal options give the same thread-side client.
-- Values are scalars without NUL (every string option is checked for control characters).
local function options_key(opts)
  local names = {}
  for name in pairs(opts) do names[#names + 1] = name end
  table.sort(names)
  local parts = {}
  for i, name in ipairs(names) do
    local v = opts[name]
    parts[i] = name .. "\0" .. (type(v) == "number" and ("%.17g"):format(v) or tostring(v))
  end
  return table.concat(parts, "\0\0")
end

local Client = {}
Client.__index = Client

-- new(opts): the options of koophone.new plus thread_pool (the nginx thread_pool name).
-- Options are checked here, now, by making and closing a client, so mistakes raise at startup.
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("koophone.ngx.new: expected a table of options, got " .. type(opts), 2)
  end
  local pool, copts = "koophone", {}
  for name, v in pairs(opts or {}) do
    if name == "thread_pool" then
      if type(v) ~= "string" or v == "" then
        error("koophone.ngx.new: option 'thread_pool': expected a thread_pool name", 2)
      end
      pool = v
    else
      copts[name] = v
    end
  end
  core.new(copts):close()
  return setmetatable({ pool = pool, opts = copts, key = options_key(copts) }, Client)
end

-- client:unassign(token, pairs [, opts]): like koophone's, from rewrite/access/content
-- handlers. The request waits (yields); the worker does not.
function Client:unassign(token, list, call_opts)
  if self.closed then error("koophone: client is closed", 2) end
  local ok, done, res, err = ngx.run_worker_thread(self.pool, THREAD_MODULE, "thread_unassign",
                                                   self.key, self.opts, token, list, call_opts)
  if not ok then
    if not_started[done] then return nil, not_started_error(done, call_opts) end
    error("koophone.ngx: " .. tostring(done), 2)
  end
  if not done then error(res, 2) end
  if res == nil then return nil, setmetatable(err, core.Error) end
  if type(res.err) == "table" then setmetatable(res.err, core.Error) end
  return res
end

-- close(): later calls raise, as with koophone's clients. The thread side's clients stay in
-- their VMs (no request can reach a given VM) and serve the next client with the same options.
function Client:close()
  self.closed = true
end

function Client:__tostring()
  return ("koophone.ngx client (thread_pool %s)%s"):format(self.pool, self.closed and " (closed)" or "")
end

-- client(opts): like koophone.client (a retry policy around the call, option `retry`), with
-- the call in the thread pool and the retry delays in ngx.sleep, so neither blocks the worker.
function _M.client(opts)
  local wrapper = require "koophone.client"
  local transport_opts, retry_opts = wrapper.split_options(opts, "koophone.ngx.client")
  return wrapper.wrap(_M.new(transport_opts), retry_opts, _M.sleep)
end

-- Retry delays in OpenResty: ngx.sleep yields, the core's sleep would block the worker.
function _M.sleep(seconds)
  return ngx.sleep(seconds)
end

return _M
