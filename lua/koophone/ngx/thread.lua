-- koophone.ngx.thread: the side of koophone.ngx that runs on nginx's thread pool, in the Lua VMs
-- of ngx.run_worker_thread. It must not touch the `ngx` API.
--
-- lua-nginx-module makes each of those VMs and requires this module in the event loop, stalling
-- the worker meanwhile (the first burst of calls makes lua_worker_thread_vm_pool_size of them at
-- once). So this file requires nothing when loaded: the core is required by the VM's first call,
-- on its thread.
local _M = {}

local core

-- Clients of this VM by options key. A VM serves one call at a time and is reused, so its client
-- keeps its connection (and TLS session) for the next call that VM takes.
local clients = {}

-- The events of the call in progress in this VM, for a client with on_event (request side):
-- functions cannot cross the thread boundary, so the events go back with the result.
local collected

local function collect(ev)
  if collected then collected[#collected + 1] = ev end
end

-- method: "unassign" or a read (READS); arg: its pairs, task id or query
local function call(method, key, opts, token, arg, call_opts, events)
  core = core or require "koophone.core"
  if events then key = key .. "\0\0on_event" end
  local c = clients[key]
  if c == nil then
    local o = opts
    if events then
      o = { on_event = collect }
      for k, v in pairs(opts) do o[k] = v end
    end
    local ok, made = pcall(core.new, o)
    if not ok then return false, made end
    c = made
    clients[key] = c
  end
  collected = events and {} or nil
  local cred = type(token) == "table" and core.aksk(token) -- AK/SK, exported by the request side
  local ok, res, err = pcall(c[method], c, cred or token, arg, call_opts)
  if cred then cred:close() end
  events, collected = collected, nil
  if not ok then return false, res end
  return true, res, err, events
end

-- true, res, err (and the call's events when asked) for an outcome, or false, message when the
-- call raised (a programmer mistake, raised again in the request). Then frees the call's
-- in-flight slot (koophone.ngx.inflight), whatever became of the request.
local function thread_call(method, key, opts, token, arg, call_opts, slots_addr, slot, events)
  local done, res, err
  done, res, err, events = call(method, key, opts, token, arg, call_opts, events)
  if slots_addr then require("koophone.ngx.inflight").clear(slots_addr, slot) end
  return done, res, err, events
end

-- unassign(key, opts, token, pairs, call_opts, slots_addr, slot, events), get_task(...): key
-- names the option set opts (equal options, same client).
function _M.unassign(...) return thread_call("unassign", ...) end

-- The core's reads, exported alike: a later read is one more name here.
local READS = { "get_task", "list_instances" }
for _, method in ipairs(READS) do
  _M[method] = function(...) return thread_call(method, ...) end
end

return _M
