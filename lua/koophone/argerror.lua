-- Raising a programmer mistake in the one shape the C core uses (src/check.c), modelled on
-- luaL_argerror:
--   <function>: bad argument #<n> (<path>): <what is wrong>
-- <function> is what the user called, <n> counts the arguments as the user wrote them (a
-- method's self is not counted) and <path> names the value inside the argument (opts.retry.sleep).
-- Raised at level 0, like the C core's: the message is the same wherever the check runs.
local _M = {}

-- raise(fname, argn, path, fmt, ...): fmt and ... as string.format's.
function _M.raise(fname, argn, path, fmt, ...)
  error(("%s: bad argument #%d (%s): "):format(fname, argn, path) .. fmt:format(...), 0)
end

-- number_problem(v, min, max [, integer]) -> nil when v is a finite number from min to max (an
-- integer when asked), else "expected a number from <min> to <max>, got <v>" (">= <min>" when
-- max is math.huge), the wording of the C core's checks. The CLI says it of its options too.
function _M.number_problem(v, min, max, integer)
  if type(v) ~= "number" or v ~= v or v < min or v > max or v == math.huge
     or (integer and v % 1 ~= 0) then
    local range = max == math.huge and (">= " .. tostring(min))
                  or ("from %s to %s"):format(tostring(min), tostring(max))
    return ("expected %s %s, got %s"):format(integer and "an integer" or "a number", range,
                                             type(v) == "number" and tostring(v) or type(v))
  end
end

-- number(v, fname, argn, path, min, max [, integer]) -> v when number_problem finds none, else
-- raises it.
function _M.number(v, fname, argn, path, min, max, integer)
  local problem = _M.number_problem(v, min, max, integer)
  if problem then _M.raise(fname, argn, path, "%s", problem) end
  return v
end

-- check_names(t, known, fname, argn, path): every key of t is a key of known.
function _M.check_names(t, known, fname, argn, path)
  for k in pairs(t) do
    if not known[k] then _M.raise(fname, argn, path, "unknown option '%s'", tostring(k)) end
  end
end

return _M
