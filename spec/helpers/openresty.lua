-- Test helper: examples/openresty (nginx.conf + koophone_admin.lua) in Debian's nginx +
-- lua-nginx-module (LuaJIT), pointed at the simulator; and HTTP calls to its admin endpoint.
local sim = require "helpers.sim"
local shell = require "helpers.shell"
local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson.safe"

local _M = {}

local ROOT = shell.read("pwd")
local NGINX = os.getenv("KOOPHONE_SIM_NGINX") or "/usr/sbin/nginx"
local RUN = sim.run_dir:sub(1, 1) == "/" and sim.run_dir or ROOT .. "/" .. sim.run_dir

_M.root = ROOT

function _M.example_conf()
  local f = assert(io.open(ROOT .. "/examples/openresty/nginx.conf"))
  local conf = f:read("*a")
  f:close()
  return conf
end

local Nginx = {}
Nginx.__index = Nginx

-- new(name, port [, edit]): the example in RUN/name on port; edit(conf) -> conf changes the
-- rendered configuration (a test setup: another thread pool, options passed to init).
function _M.new(name, port, edit)
  return setmetatable({ dir = RUN .. "/" .. name, port = port, base = "http://127.0.0.1:" .. port,
                        edit = edit }, Nginx)
end

function Nginx:render()
  local values = {
    PREFIX = self.dir, PORT = tostring(self.port),
    LUA_PATH = ROOT .. "/lua/?.lua;" .. ROOT .. "/examples/openresty/?.lua",
    LUA_CPATH = ROOT .. "/build/luajit/?.so",
    USER = shell.read("id -u") == "0" and "user root;" or "",
  }
  local conf = _M.example_conf():gsub("@([%u_]+)@", function(name) return assert(values[name], name) end)
  if self.edit then conf = self.edit(conf) end
  local f = assert(io.open(self.dir .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
end

function Nginx:start()
  -- nginx runs LuaJIT: it needs the LuaJIT build whatever runtime runs these specs
  shell.make("build LUA=luajit")
  shell.read("mkdir -p " .. shell.quote(self.dir .. "/tmp"))
  assert(io.open(self.dir .. "/error.log", "w")):close() -- this run's lines only
  self:render()
  shell.read(("env KOOPHONE_TOKEN=%s KOOPHONE_ENDPOINT=%s KOOPHONE_CAFILE=%s %s -p %s -c %s -e %s")
    :format(shell.quote(sim.token), shell.quote(sim.https_url), shell.quote(sim.ca), shell.quote(NGINX),
            shell.quote(self.dir .. "/"), shell.quote(self.dir .. "/nginx.conf"),
            shell.quote(self.dir .. "/error.log")))
  for _ = 1, 100 do
    if http.request(self.base .. "/health") then return end
    socket.sleep(0.05)
  end
  error("the example nginx does not answer on port " .. self.port)
end

-- A worker that ignores QUIT (e.g. stuck in a Lua loop) is killed with its master: alone, it
-- would keep the port and a CPU.
function Nginx:stop()
  shell.run(("p=$(cat %s 2>/dev/null) && w=$(ps -o pid= --ppid $p) && kill -QUIT $p && "
    .. "for i in $(seq 50); do kill -0 $p 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL $p $w")
    :format(shell.quote(self.dir .. "/nginx.pid")))
end

-- The pids of the master's children (the one worker), as a string.
function Nginx:workers()
  return shell.read(("ps -o pid= --ppid $(cat %s) | sort | tr -d ' ' | tr '\\n' ' '")
    :format(shell.quote(self.dir .. "/nginx.pid")))
end

function Nginx:error_log()
  local f = assert(io.open(self.dir .. "/error.log"))
  local s = f:read("*a")
  f:close()
  return s
end

-- POST to the admin endpoint; returns the status and the decoded body.
function Nginx:admin(body)
  local src = type(body) == "string" and body or assert(cjson.encode(body))
  local out = {}
  local _, status = http.request {
    url = self.base .. "/admin/unassign", method = "POST", source = ltn12.source.string(src),
    headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#src) },
    sink = ltn12.sink.table(out),
  }
  return status, cjson.decode(table.concat(out)), table.concat(out)
end

-- The same request on a socket of its own, answer read later (HTTP/1.0: no chunking).
function Nginx:admin_start(body)
  local src = assert(cjson.encode(body))
  local s = assert(socket.tcp())
  s:settimeout(60)
  assert(s:connect("127.0.0.1", self.port))
  assert(s:send(("POST /admin/unassign HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json"
    .. "\r\nContent-Length: %d\r\n\r\n%s"):format(#src, src)))
  return s
end

-- status, decoded body, header block
function _M.admin_finish(s)
  local raw = assert(s:receive("*a"))
  s:close()
  local status = tonumber(raw:match("^HTTP/1%.%d (%d+)"))
  local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
  return status, cjson.decode(body or ""), head
end

-- Whether request number seq has reached the simulator and is still in progress there.
function _M.in_flight(seq)
  for _, e in ipairs(sim.log()) do
    if e.seq == seq then return e.status == 0 end
  end
  return false
end

-- Waits until request number seq is in progress at the simulator.
function _M.wait_in_flight(seq)
  for _ = 1, 200 do
    if _M.in_flight(seq) then return true end
    socket.sleep(0.02)
  end
  return false
end

return _M
