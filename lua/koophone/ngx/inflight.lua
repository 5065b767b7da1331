-- koophone.ngx.inflight: the calls of one koophone.ngx client that are in nginx's thread pool in
-- this worker, counted so that a call beyond a limit is refused before anything is posted.
--
-- Why: lua-nginx-module (0.10.21 to 0.10.31 at least; Debian 12 ships 0.10.23) frees a wrong
-- pointer when ngx.run_worker_thread cannot post its task because the pool's max_queue is full,
-- and the worker aborts (signal 6) with the calls it held. A task can wait in that queue only
-- while it is in flight, so with at most max_queue calls in flight on the pool, per worker, the
-- queue is never full when a call is posted.
--
-- The count must survive a request that ends while its call runs (lua_check_client_abort, an
-- ngx.exit in another light thread): its coroutine is never resumed, yet the task runs to its
-- end and keeps its place meanwhile. So a call holds a slot, one byte of a C array, that the
-- thread side clears when the call ends, whatever became of the request; the request side
-- clears it only when the call never reached a thread. LuaJIT's FFI on both sides (nginx and
-- its thread VMs run LuaJIT); only this file uses it.
local ffi = require "ffi"

local _M = {}

local Slots = {}
Slots.__index = Slots

-- Arrays are never freed: a thread may still clear a slot after the worker dropped the client.
local keep = {}

function _M.new(n)
  local bytes = ffi.new("uint8_t[?]", n)
  keep[#keep + 1] = bytes
  return setmetatable({ bytes = bytes, n = n, cursor = 0,
                        addr = tonumber(ffi.cast("uintptr_t", bytes)) }, Slots)
end

-- A free slot, marked busy, or nil when all n are busy.
function Slots:take()
  local bytes, n = self.bytes, self.n
  for k = 0, n - 1 do
    local i = (self.cursor + k) % n
    if bytes[i] == 0 then
      bytes[i] = 1
      self.cursor = (i + 1) % n
      return i
    end
  end
end

-- Request side: the call holding slot i never reached a thread.
function Slots:release(i)
  self.bytes[i] = 0
end

-- Thread side: the call holding slot i of the array at addr has ended.
function _M.clear(addr, i)
  ffi.cast("uint8_t *", addr)[i] = 0
end

return _M
