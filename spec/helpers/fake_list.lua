-- A fake client for the pure specs of koophone.bindings and koophone.settle: list_instances over
-- an in-memory tenant, following the contract of client:list_instances (pages from 1, sorted by
-- instance id, an exact instance_id filter), counting the requests. `fail`: a function(query)
-- returning an error to answer instead.
local _M = {}

-- new{ bindings = { [instance_id] = user_id or false }, fail = fn } -> client
function _M.new(t)
  local ids = {}
  for id in pairs(t.bindings) do ids[#ids + 1] = id end
  table.sort(ids)
  local c = { bindings = t.bindings, requests = 0, queries = {}, fail = t.fail }
  function c.list_instances(self, _, q)
    self.requests = self.requests + 1
    self.queries[#self.queries + 1] = q
    if self.fail then
      local err = self.fail(q)
      if err then return nil, err end
    end
    local list = ids
    if q.instance_id then list = self.bindings[q.instance_id] ~= nil and { q.instance_id } or {} end
    local out, first = {}, (q.page_no - 1) * q.page_size + 1
    for i = first, math.min(first + q.page_size - 1, #list) do
      local user = self.bindings[list[i]]
      out[#out + 1] = { instance_id = list[i], assign_status = user and 1 or 0, assign_user = user or "" }
    end
    return { instances = out, total_count = #list, page_no = q.page_no, page_size = q.page_size }
  end
  return c
end

-- A tenant of n instances i0001.. bound to u1.. (every `free`-th one free).
function _M.tenant(n, free)
  local b = {}
  for k = 1, n do
    local id = ("i%04d"):format(k)
    if free and k % free == 0 then b[id] = false else b[id] = "u" .. k end
  end
  return b
end

return _M
