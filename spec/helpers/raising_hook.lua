-- Run by spec/events_spec.lua as a separate process (its stderr is what is checked): two calls
-- on a client whose on_event hook raises; prints each call's outcome on stdout.
-- Usage: raising_hook.lua ENDPOINT TOKEN_FILE
local koophone = require "koophone"

local f = assert(io.open(arg[2]))
local token = f:read("*l")
f:close()
local client = koophone.new { endpoint = arg[1], on_event = function() error("hook failed on purpose") end }
for i = 1, 2 do
  local res, err = client:unassign(token, { { user_id = "nobody", instance_id = "hook" .. i } })
  print(res and res.outcome or err.code)
end
