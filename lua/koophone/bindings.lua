-- Reading the current bindings of pairs through ListInstances (client:list_instances), without
-- sending anything that changes them.
--
--   local b = client:bindings(cred, pairs [, opts])   -- = bindings.read(client, cred, pairs, opts)
--   b.states[i]   the state of pairs[i]:
--     "bound"     assign_status 1 and assign_user is the pair's user_id
--     "unbound"   assign_status 0: nobody holds the instance
--     "other"     assign_status 1 for another user
--     "missing"   the tenant has no such instance (a complete read did not list it)
--     "unknown"   it could not be read (b.errors[i] says why)
--   b.counts[state], b.requests (ListInstances requests made), b.strategy ("instance" or "page")
--
-- Two ways to read: one request per distinct instance (the instance_id filter), or the whole
-- tenant page by page (ceil(total_count / page_size) requests). The first page tells total_count,
-- so with several instances to read the first request is always page 1: it answers for the
-- instances on it, and then the cheaper way reads the rest. Every request goes through the
-- client's list_instances: its retry policy (a read: transient failures are retried) and its rate.
local argerror = require "koophone.argerror"
local core = require "koophone.core"

local _M = {}

local function interrupted()
  return require("koophone.errors").new { kind = "interrupted", code = "INTERRUPTED", sent = false,
                                          message = "not read: interrupted" }
end

_M.STATES = { "bound", "unbound", "other", "missing", "unknown" }

local FNAME = "koophone.bindings"
local OPTIONS = { page_size = true, strategy = true, timeout = true, deadline = true }
local STRATEGIES = { auto = true, instance = true, page = true }

-- The text of a user id as ListInstances would show it: 42 and "42" are the same user.
local function user_text(u)
  if type(u) == "number" and u % 1 == 0 then return ("%d"):format(u) end
  return tostring(u)
end

local function state_of(inst, user_id)
  local status = tonumber(inst.assign_status)
  if status == 0 then return "unbound" end
  if status ~= 1 then return "unknown" end
  return inst.assign_user == user_text(user_id) and "bound" or "other"
end

local function check(pairs_, opts)
  if type(pairs_) ~= "table" then
    argerror.raise(FNAME, 2, "pairs", "expected an array of pairs, got %s", type(pairs_))
  end
  for i, p in ipairs(pairs_) do
    local ok, why = core.validate_pair(p)
    if not ok then
      local field, rest = why:match("^(%w+_id): (.*)$")
      argerror.raise(FNAME, 2, ("pairs[%d]%s"):format(i, field and "." .. field or ""), "%s", rest or why)
    end
  end
  if opts == nil then return {} end
  if type(opts) ~= "table" then argerror.raise(FNAME, 3, "opts", "expected a table, got %s", type(opts)) end
  argerror.check_names(opts, OPTIONS, FNAME, 3, "opts")
  if opts.page_size ~= nil then argerror.number(opts.page_size, FNAME, 3, "opts.page_size", 1, 1000, true) end
  if opts.timeout ~= nil then argerror.number(opts.timeout, FNAME, 3, "opts.timeout", 0.001, 86400 * 365) end
  if opts.deadline ~= nil then argerror.number(opts.deadline, FNAME, 3, "opts.deadline", 0.001, 86400 * 365) end
  if opts.strategy ~= nil and not STRATEGIES[opts.strategy] then
    argerror.raise(FNAME, 3, "opts.strategy", "expected \"auto\", \"instance\" or \"page\", got %s",
                   tostring(opts.strategy))
  end
  return opts
end

-- read(client, cred, pairs [, opts]) -> the table above. opts: page_size (1..1000, default 100),
-- strategy ("auto": the fewer requests; "instance"; "page"), timeout (per request), deadline
-- (seconds for every read together: no request starts or ends after it; the pairs not read by
-- then are "unknown").
-- A client without list_instances reads nothing: every state "unknown".
function _M.read(client, cred, pairs_, opts)
  opts = check(pairs_, opts)
  local size = opts.page_size or 100
  local deadline_at = opts.deadline and core.now() + opts.deadline
  local out = { states = {}, counts = {}, errors = {}, requests = 0 }
  for _, s in ipairs(_M.STATES) do out.counts[s] = 0 end

  -- the pairs of each distinct instance, in the order first met
  local by_instance, order = {}, {}
  for i, p in ipairs(pairs_) do
    local id = p.instance_id
    if not by_instance[id] then
      by_instance[id] = {}
      order[#order + 1] = id
    end
    local list = by_instance[id]
    list[#list + 1] = i
  end
  local seen = {} -- instance_id -> its ListInstances item
  local failed = {} -- instance_id -> the error that left it unread

  local function list(query)
    if not client.list_instances then
      return nil, require("koophone.errors").new {
        kind = "unsupported", code = "NO_LIST_INSTANCES", sent = false,
        message = "this client cannot read bindings (no list_instances)" }
    end
    local left = deadline_at and deadline_at - core.now()
    if left and left <= 0 then
      return nil, require("koophone.errors").new {
        kind = "timeout", code = "DEADLINE_EXCEEDED", sent = false,
        message = "the deadline passed before this read" }
    end
    out.requests = out.requests + 1
    return client:list_instances(cred, query, (opts.timeout or left)
                                              and { timeout = opts.timeout, deadline = left } or nil)
  end

  local function take(res)
    for _, inst in ipairs(res.instances or {}) do
      if type(inst) == "table" and inst.instance_id ~= nil then
        seen[tostring(inst.instance_id)] = inst
      end
    end
  end

  -- one request per instance: an empty answer (or none with this exact id) is "missing"
  local function by_id(ids)
    out.strategy = out.strategy or "instance"
    for _, id in ipairs(ids) do
      if core.interrupted() then failed[id] = failed[id] or interrupted() else
        local res, err = list { page_no = 1, page_size = 1, instance_id = id }
        if res then take(res) else failed[id] = err end
      end
    end
  end

  -- pages from `from` on, until total_count instances were listed or a page is empty; complete
  -- reports whether every instance was listed (then an instance not seen is "missing")
  local complete = false
  local function by_page(from, total, listed)
    out.strategy = "page"
    local page = from
    while listed < total do
      if core.interrupted() then
        for _, id in ipairs(order) do if not seen[id] then failed[id] = interrupted() end end
        return
      end
      local res, err = list { page_no = page, page_size = size }
      if not res then
        for _, id in ipairs(order) do if not seen[id] then failed[id] = err end end
        return
      end
      local n = #(res.instances or {})
      if n == 0 then break end
      take(res)
      listed, page = listed + n, page + 1
    end
    complete = listed >= total
    if not complete then
      for _, id in ipairs(order) do
        if not seen[id] and not failed[id] then
          failed[id] = require("koophone.errors").new { kind = "incomplete", code = "LIST_INCOMPLETE",
            message = ("the pages listed %d of the %d instances the first one counted"):format(listed, total) }
        end
      end
    end
  end

  local strategy = opts.strategy or "auto"
  if strategy == "instance" or (strategy == "auto" and #order <= 1) then
    by_id(order)
  elseif #order > 0 then
    local res, err = list { page_no = 1, page_size = size }
    if not res then
      if strategy == "page" then
        for _, id in ipairs(order) do failed[id] = err end
      else -- the pages cannot be read: perhaps single instances can
        by_id(order)
      end
    else
      take(res)
      local total, listed = tonumber(res.total_count) or 0, #(res.instances or {})
      local rest = {}
      for _, id in ipairs(order) do if not seen[id] then rest[#rest + 1] = id end end
      local pages_left = math.max(0, math.ceil(total / size) - 1)
      if listed == 0 then -- an empty first page: nothing more to page through
        out.strategy, complete = "page", total == 0
      elseif strategy == "page" or pages_left <= #rest then
        by_page(2, total, listed)
      else
        out.strategy = "instance"
        by_id(rest)
      end
    end
  end

  for _, id in ipairs(order) do
    local inst = seen[id]
    for _, i in ipairs(by_instance[id]) do
      local state
      if inst then
        state = state_of(inst, pairs_[i].user_id)
      elseif failed[id] then
        state = "unknown"
        out.errors[i] = failed[id]
      elseif out.strategy == "instance" or complete then
        state = "missing"
      else
        state = "unknown"
      end
      out.states[i] = state
      out.counts[state] = out.counts[state] + 1
    end
  end
  return out
end

return _M
