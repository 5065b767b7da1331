-- koophone.ngx: koophone for OpenResty without blocking the nginx worker.
--
-- A libcurl call made in a request handler stalls every connection of that worker until it
-- returns. This module keeps koophone's unassign, get_task and list_instances contracts (same
-- arguments, same res / nil, err, same raised errors) but runs the call in an nginx thread pool
-- through ngx.run_worker_thread (lua-nginx-module 0.10.21 or later, nginx built with threads):
-- the calling request yields and the worker goes on serving everything else until the thread is
-- done.
--
-- Needs, in the main context of nginx.conf (name = opts.thread_pool, default "koophone"):
--     thread_pool koophone threads=4 max_queue=64;
-- and lua_package_path / lua_package_cpath that reach this file and the LuaJIT build of
-- koophone/core.so: the thread side runs in a separate Lua VM that copies them.
-- The rule (see koophone/ngx/inflight.lua): max_in_flight <= the pool's max_queue, for the sum
-- of the clients that share the pool; and lua_worker_thread_vm_pool_size <= max_queue.
--
-- What crosses the thread boundary: ngx.run_worker_thread copies arguments and results between
-- the request's VM and the thread's VM; only nil, booleans, numbers, strings and tables of those
-- survive (no functions, userdata or metatables). So the options are plain values, the client
-- lives in the thread VM, koophone.aksk credentials cross as their fields and are made again
-- there, and errors get their koophone.Error metatable back on this side.
local argerror = require "koophone.argerror"
local core = require "koophone.core"
local classify = require "koophone.classify"
local errors = require "koophone.errors"
local applied = require "koophone.applied"

local _M = { _VERSION = core._VERSION }

-- The thread side (koophone/ngx/thread.lua): what lua-nginx-module requires in each thread VM.
local THREAD_MODULE = "koophone.ngx.thread"

-- ngx refusals that are about load, not about the caller's code: the call was not sent.
local not_started = {
  ["no available Lua vm"] = true,          -- lua_worker_thread_vm_pool_size reached
  ["ngx_thread_task_post failed"] = true,  -- the pool's max_queue is full (see inflight.lua)
  ["no memory"] = true,
}
local IN_FLIGHT_FULL = "max_in_flight calls of this client in progress"

local function not_started_error(message, call_opts)
  return errors.new {
    kind = "network", code = "WORKER_THREAD_UNAVAILABLE",
    message = "the call was not started: " .. message,
    request_id = type(call_opts) == "table" and call_opts.request_id or nil,
    sent = false, attempts = 0,
  }
end

-- Refusals are logged at most once a second per worker, with their count since the last line
-- (a timer writes the last ones): under overload one line per refusal would fill the disk.
local refused = { count = 0, last = -math.huge }

local function flush_refusals()
  refused.timer = false
  if refused.count == 0 then return end
  ngx.log(ngx.WARN, "koophone.ngx: ", refused.count, " call(s) not started (latest: ", refused.why,
          "); see max_in_flight, queue_timeout and the thread_pool")
  refused.count, refused.last = 0, ngx.now()
end

local function log_refusal(why)
  refused.count, refused.why = refused.count + 1, why
  local wait = refused.last + 1 - ngx.now()
  if wait <= 0 then
    flush_refusals()
  elseif not refused.timer then
    refused.timer = ngx.timer.at(wait, flush_refusals) and true
  end
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

-- Options of this module, not of koophone.new: name -> check(value) -> ok
local OWN = {
  thread_pool = function(v) return type(v) == "string" and v ~= "", "a thread_pool name" end,
  max_in_flight = function(v)
    return type(v) == "number" and v >= 1 and v % 1 == 0 and v ~= math.huge, "an integer >= 1"
  end,
  queue_timeout = function(v)
    return type(v) == "number" and v >= 0 and v < math.huge, "a number of seconds >= 0"
  end,
}

-- The default max_in_flight is lua_worker_thread_vm_pool_size's default: with nginx's and
-- lua-nginx-module's defaults (max_queue=65536, 10 VMs) it changes nothing, and it keeps any
-- pool with max_queue >= 10 safe.
_M.defaults = { thread_pool = "koophone", max_in_flight = 10, queue_timeout = 0 }

-- new(opts): the options of koophone.new plus thread_pool, max_in_flight and queue_timeout;
-- on_event is called here, in the request, with the events the thread side collected.
-- Options are checked here, now, by making a client, so mistakes raise at startup; that client
-- stays, to make request ids in this VM.
-- fname: the function the user called, for option errors (koophone.ngx.new or .client).
local function new(opts, fname)
  if opts ~= nil and type(opts) ~= "table" then
    argerror.raise(fname, 1, "opts", "expected a table, got %s", type(opts))
  end
  local self, copts = {}, {}
  for name, default in pairs(_M.defaults) do self[name] = default end
  for name, v in pairs(opts or {}) do
    if name == "on_event" then -- called here, with the events the thread side collected
      if type(v) ~= "function" then
        argerror.raise(fname, 1, "opts.on_event", "expected a function, got %s", type(v))
      end
      self.on_event = v
    elseif OWN[name] then
      local ok, expected = OWN[name](v)
      if not ok then
        argerror.raise(fname, 1, "opts." .. name, "expected %s, got %s", expected,
                       type(v) == "number" and tostring(v) or type(v))
      end
      self[name] = v
    else
      copts[name] = v
    end
  end
  self.ids = core.new_as(fname, copts)
  self.pool, self.opts, self.key = self.thread_pool, copts, options_key(copts)
  return setmetatable(self, Client)
end

function _M.new(opts)
  return new(opts, "koophone.ngx.new")
end

-- A fresh x-request-id, made in this VM (koophone.client fixes a call's id with it).
function Client:request_id()
  return self.ids:request_id()
end

-- Waits for a call of this client to end, until deadline (core.now()) at the latest; false when
-- the time is up. The clock is read, not ngx.now(): that one moves only between events, and a
-- request that loops without yielding never sees it move.
local function wait_for_slot(self, deadline)
  local left = deadline - core.now()
  if left <= 0 then return false end
  if not self.freed then self.freed = require("ngx.semaphore").new() end
  -- woken when a call of this client ends; the cap also catches slots that ended unseen (a call
  -- whose request is gone) and VMs that nginx frees just after. At least 1 ms: the semaphore
  -- counts whole milliseconds and returns at once, without yielding, for 0.
  self.freed:wait(math.max(math.min(left, 0.05), 0.001))
  return true
end

-- The events of a call, to the client's on_event; an error it raises is logged once per client.
-- Each try may run in another thread VM, so ev.attempt is counted here, per call_opts table
-- (koophone.client passes the same one to every attempt of a call).
local function deliver(self, events, call_opts)
  if not self.sent then self.sent = setmetatable({}, { __mode = "k" }) end
  for _, ev in ipairs(events) do
    if type(call_opts) == "table" then
      self.sent[call_opts] = (self.sent[call_opts] or 0) + ev.resends + 1
      ev.attempt = self.sent[call_opts]
    end
    local ok, why = pcall(self.on_event, ev)
    if not ok and not self.hook_failed then
      self.hook_failed = true
      ngx.log(ngx.ERR, "koophone.ngx: on_event raised (logged once per client): ", tostring(why))
    end
  end
end

-- One try: true, done, res, err when the thread ran the call; false, why when it did not start.
local function post(self, method, token, arg, call_opts)
  local slots = self.slots
  local slot = slots:take()
  if not slot then return false, IN_FLIGHT_FULL end
  -- protected: a raise (e.g. called from a phase that cannot yield) must not keep the slot
  -- AK/SK credentials cross as their fields: a userdata does not survive the copy
  if core.is_aksk(token) then token = core.aksk_export(token) end
  local called, ok, done, res, err, events = pcall(ngx.run_worker_thread, self.pool, THREAD_MODULE,
    method, self.key, self.opts, token, arg, call_opts, slots.addr, slot,
    self.on_event ~= nil)
  if called and ok then
    if self.freed and self.freed:count() < 0 then self.freed:post(1) end
    if events then deliver(self, events, call_opts) end
    return true, done, res, err
  end
  slots:release(slot)
  if not called then done = ok end
  if not (called and not_started[done]) then error("koophone.ngx: " .. tostring(done), 3) end
  return false, done
end

local call_with_token

-- A token provider (koophone.ngx.iam_token; koophone.iam_token works too but fetches in the
-- worker) is asked for its token here; a 401 APIGW.0301/0307 invalidates it and sends the same
-- request (same x-request-id) once more with a new token, as the C core does.
local function call_with_provider(self, method, tp, arg, call_opts)
  -- the IAM exchange's events, when this worker fetched (koophone.ngx.iam_token): attempts of
  -- their own, not of the call
  local on_events = self.on_event and function(events) deliver(self, events) end
  local token, err = tp:token(on_events)
  if not token then return nil, err end
  local opts = require("koophone.client").with_request_id(self, call_opts) -- the resend's id too
  local res, cerr = call_with_token(self, method, token, arg, opts)
  if res or not classify.token_refused(cerr) then
    return res, cerr
  end
  tp:invalidate(token)
  token, err = tp:token(on_events)
  if not token then return nil, err end
  local refused = cerr
  res, cerr = call_with_token(self, method, token, arg, opts)
  applied.renewed(refused, res or cerr)
  return res, cerr
end

-- One call of method ("unassign" or a read) with its argument (pairs, task id, query).
local function call(self, method, token, arg, call_opts)
  if type(token) == "table" and type(token.token) == "function" then
    if self.closed then error("koophone: client is closed", 2) end
    return call_with_provider(self, method, token, arg, call_opts)
  end
  return call_with_token(self, method, token, arg, call_opts)
end

-- client:unassign(token, pairs [, opts]), client:get_task(token, task_id [, opts]): like
-- koophone's, from rewrite/access/content handlers. The request waits (yields); the worker does
-- not.
function Client:unassign(token, list, call_opts)
  return call(self, "unassign", token, list, call_opts)
end

function Client:get_task(token, task_id, call_opts)
  return call(self, "get_task", token, task_id, call_opts)
end

-- client:list_instances(token, query [, opts]): a read like get_task, one page of ListInstances.
function Client:list_instances(token, query, call_opts)
  return call(self, "list_instances", token, query, call_opts)
end

function call_with_token(self, method, token, arg, call_opts)
  if self.closed then error("koophone: client is closed", 2) end
  if not self.slots then self.slots = require("koophone.ngx.inflight").new(self.max_in_flight) end
  local deadline = core.now() + self.queue_timeout
  local started, done, res, err
  repeat
    started, done, res, err = post(self, method, token, arg, call_opts)
  until started or not wait_for_slot(self, deadline)
  if not started then
    log_refusal(done)
    return nil, not_started_error(done, call_opts)
  end
  if not done then error(res, 2) end
  if res == nil then return nil, errors.new(err) end
  if type(res.err) == "table" then errors.new(res.err) end
  return res
end

-- Bulk is not offered in nginx: unassign_many would hold a pool thread and a thread VM for all
-- its batches, and unassign_all (rounds of unassign_many) would also write and fsync its journal
-- in the worker and keep a request open for the whole run. They raise, naming what to do instead,
-- rather than fail with "attempt to call a nil value".
local function not_in_nginx(name)
  return function()
    error("koophone.ngx: " .. name .. " is not available in nginx (it would block the worker); run "
          .. "bulk jobs with bin/koophone or koophone.client outside nginx, or call client:unassign "
          .. "per batch", 0)
  end
end

-- koophone.client's unassign_many and start_many call these
Client.unassign_many = not_in_nginx("unassign_many")
Client.start_many = not_in_nginx("start_many")

-- close(): later calls raise, as with koophone's clients. The thread side's clients stay in
-- their VMs (no request can reach a given VM) and serve the next client with the same options.
function Client:close()
  self.closed = true
  self.ids:close()
end

function Client:__tostring()
  return ("koophone.ngx client (thread_pool %s, max_in_flight %d)%s"):format(
    self.pool, self.max_in_flight, self.closed and " (closed)" or "")
end

-- client(opts): like koophone.client (a retry policy and a rate around the call, options `retry`
-- and `rate`), with the call in the thread pool and the retry delays and the waits for the rate in
-- ngx.sleep, so none of them blocks the worker.
function _M.client(opts)
  local wrapper = require "koophone.client"
  local transport_opts, own = wrapper.split_options(opts, "koophone.ngx.client")
  local c = wrapper.wrap(new(transport_opts, "koophone.ngx.client"), own, _M.sleep,
                         "koophone.ngx.client")
  -- before koophone.bulk opens a journal or checks anything
  c.unassign_all = not_in_nginx("unassign_all")
  return c
end

-- Retry delays in OpenResty: ngx.sleep yields, the core's sleep would block the worker. At least
-- 1 ms: a shorter sleep is ngx.sleep(0), which nginx without the delayed-events patch (Debian's)
-- logs every time.
function _M.sleep(seconds)
  return ngx.sleep(math.max(seconds, 0.001))
end

return _M
