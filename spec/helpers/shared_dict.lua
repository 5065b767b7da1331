-- Test helper: a table with ngx.shared.DICT's semantics for the methods koophone uses outside
-- nginx: get, set, incr(key, value, init) (creates the key from init when it is missing, fails
-- "not found" without init, "not a number" on another value) and get_keys(0) (every key).
local _M = {}

function _M.new()
  local d = { values = {} }
  function d:get(k) return self.values[k] end
  function d:set(k, v) self.values[k] = v; return true end
  function d:incr(k, v, init)
    local cur = self.values[k]
    if cur == nil then
      if init == nil then return nil, "not found" end
      cur = init
    end
    if type(cur) ~= "number" then return nil, "not a number" end
    self.values[k] = cur + v
    return cur + v
  end
  function d:get_keys(max)
    assert(max == 0, "every key is asked for")
    local keys = {}
    for k in pairs(self.values) do keys[#keys + 1] = k end
    return keys
  end
  return d
end

return _M
