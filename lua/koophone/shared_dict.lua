-- State that the workers of one nginx share: a lua_shared_dict (ngx.shared.NAME) passed as an
-- option. The retry budget (koophone.budget) and the rate bucket (koophone.bucket) keep their
-- numbers there instead of in the worker's Lua VM, so N workers respect one quota, not N.
-- Any object with the methods of ngx.shared.DICT that they use (get, set, incr) will do.
local argerror = require "koophone.argerror"

local _M = {}

local METHODS = { "get", "set", "incr" }

local function has_method(dict, name)
  local ok, f = pcall(function() return dict[name] end) -- a userdata without __index raises
  return ok and type(f) == "function"
end

-- check(opts, fname, path, default_key) -> dict, key: opts.dict and opts.key checked (path names
-- opts in errors, e.g. "opts.retry.budget"); nil when opts.dict is.
function _M.check(opts, fname, path, default_key)
  local dict, key = opts.dict, opts.key
  if dict == nil then
    if key ~= nil then argerror.raise(fname, 1, path .. ".key", "given without %s.dict", path) end
    return nil
  end
  if type(dict) ~= "table" and type(dict) ~= "userdata" then
    argerror.raise(fname, 1, path .. ".dict", "expected a lua_shared_dict (ngx.shared.NAME), got %s",
                   type(dict))
  end
  for _, name in ipairs(METHODS) do
    if not has_method(dict, name) then
      argerror.raise(fname, 1, path .. ".dict",
                     "expected a lua_shared_dict (ngx.shared.NAME), got one without the method %s", name)
    end
  end
  if key == nil then return dict, default_key end
  if type(key) ~= "string" or key == "" then
    argerror.raise(fname, 1, path .. ".key", "expected a non-empty string, got %s", type(key))
  end
  return dict, key
end

return _M
