-- koophone.Error objects made in Lua: the one constructor (the C core makes its own in
-- src/errors.c). Whatever the fields, tostring(err) and "x" .. err print the same one line.
local Error = require("koophone.core").Error

local _M = {}

-- new(fields) -> fields as a koophone.Error: kind and message (strings) at least; code, status,
-- request_id, sent, attempts, retry_after... as the README's koophone.Error table says. The
-- table itself is the error, so fields that crossed from another Lua VM (an nginx worker
-- thread, without their metatable) become one again.
function _M.new(fields)
  assert(type(fields.kind) == "string" and type(fields.message) == "string",
         "koophone.Error: kind and message must be strings")
  return setmetatable(fields, Error)
end

return _M
