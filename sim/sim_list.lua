-- KooPhone simulator: ListInstances, GET <prefix>/v1/instances/batch-query (the tenant's
-- instances, a page at a time, with assign_status / assign_user from the bindings), and its
-- settings for what the public API reference leaves open (page base, page size limit, when an
-- unassigned instance shows as free). Served through the request object of koophone_sim.
local st = require "sim_state"

local M = {}

local BAD_PARAM = { "KOOPHONE.API.1000", "The request parameter is incorrect." }
local BAD_TIME = { "KOOPHONE.API.5002", "The time format is incorrect." }
local BAD_RANGE = { "KOOPHONE.API.5004", "The query end date is earlier than the start date." }

-- The instance details the reference lists but the simulator does not model: fixed, plausible.
local SKU = "专业版 | 8 核 | 16GB | 10GB 存储 | 最高分辨率 720p"
local REGION_NAMES = { ["cn-north-4"] = { "华北-北京四", "CN North-Beijing4" } }

-- ---------------------------------------------------------------- settings

M.DEFAULTS = { page_base = 1, max_page_size = 100, oversize = "error", flip = "immediate",
               unassigned_user = "empty" }

local CHOICES = {
  page_base = { [0] = true, [1] = true },
  oversize = { error = true, clamp = true },
  flip = { immediate = true, after_job = true },
  unassigned_user = { empty = true, null = true, absent = true },
}

-- Settings `spec` merged over `base`; returns a new table, or nil, err.
function M.conf_from(spec, base)
  if type(spec) ~= "table" then return nil, "list settings must be an object" end
  local out = {}
  for k, v in pairs(base) do out[k] = v end
  for k, v in pairs(spec) do
    if M.DEFAULTS[k] == nil then return nil, "unknown list setting: " .. tostring(k) end
    if k == "max_page_size" then
      if type(v) ~= "number" or v < 1 or v % 1 ~= 0 then return nil, "max_page_size must be an integer >= 1" end
    elseif not CHOICES[k][v] then
      local names = st.keys_of(CHOICES[k])
      for i, n in ipairs(names) do names[i] = type(n) == "string" and '"' .. n .. '"' or tostring(n) end
      return nil, k .. " must be one of " .. table.concat(names, ", ")
    end
    out[k] = v
  end
  return out
end

-- ---------------------------------------------------------------- the call

-- The request's x-request-id: a query parameter on this call (the first when repeated).
function M.request_id()
  local v = ngx.req.get_uri_args(100)["x-request-id"]
  if type(v) == "table" then v = v[1] end
  if type(v) ~= "string" or v == "" then return nil end
  return v
end

-- Query parameter `name`: its text, nil when absent or empty, false when repeated or bare.
local function arg(args, name)
  local v = args[name]
  if v == nil or v == "" then return nil end
  if type(v) ~= "string" then return false end
  return v
end

local function integer(args, name)
  local v = arg(args, name)
  return v and v:match("^%d+$") and #v <= 9 and tonumber(v) or nil
end

local TIME = "^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d$"

local function bad(e) return 400, { error_code = e[1], error_msg = e[2] } end

-- Who instance `iid` shows as assigned to, or nil: its binding; with flip "after_job", also the
-- user of an unassign whose job has not ended yet.
local function assigned_user(tenant, iid, conf, now)
  local uid = tenant.bindings[iid]
  if uid or conf.flip ~= "after_job" then return uid end
  local job = (tenant.unassigning or {})[iid]
  if job and now < job.finish then return job.user_id end
  return nil
end

local function item(tenant, iid, conf, now)
  local uid = assigned_user(tenant, iid, conf, now)
  local region = tenant.project_name
  local names = REGION_NAMES[region] or { region, region }
  local free = conf.unassigned_user
  local user = uid or (free == "empty" and "" or free == "null" and st.null or nil)
  return {
    instance_id = iid, instance_name = "phone-" .. iid, phone_id = iid,
    region = region, region_name = names[1], region_name_en = names[2],
    instance_sku = SKU, billing_mode = "PRE_PAID",
    frozen_status = 0, running_status = 2, login_status = 0,
    assign_status = uid and 1 or 0, assign_user = user,
    member_name = uid and "member " .. uid or "", account_name = tenant.domain,
    project_id = tenant.project_id or "", project_name = region,
    backup_status = 4, backup_time = "", restore_status = 4, restore_time = "",
  }
end

-- Normal processing of ListInstances (the request object's `process`). Returns status, answer.
function M.process(r)
  local tenant, status, t = r:check("GET")
  if not tenant then
    -- A business error answered with 200 sits inside `data`, where this call's reference puts
    -- error_code and error_msg; gateway errors (401, 404) keep the gateway's shape.
    if status == 200 then t = { data = t } end
    return status, t
  end
  local conf, args = st.list_conf, ngx.req.get_uri_args(100)
  local page_no, size = integer(args, "page_no"), integer(args, "page_size")
  if not page_no or not size or page_no < conf.page_base or size < 1 then return bad(BAD_PARAM) end
  if size > conf.max_page_size then
    if conf.oversize == "error" then return bad(BAD_PARAM) end
    size = conf.max_page_size
  end
  local from, to = arg(args, "query_start_time"), arg(args, "query_end_time")
  for _, v in ipairs({ from, to }) do
    if v == false or v and not v:match(TIME) then return bad(BAD_TIME) end
  end
  if from and to and to < from then return bad(BAD_RANGE) end
  local id = arg(args, "instance_id")
  if id == false then return bad(BAD_PARAM) end

  local ids
  if id then
    ids = tenant.instances[id] and { id } or {}
  else
    ids = st.keys_of(tenant.instances)
  end
  local now, result = st.now(), {}
  local first = (page_no - conf.page_base) * size + 1
  for i = first, math.min(first + size - 1, #ids) do
    result[#result + 1] = item(tenant, ids[i], conf, now)
  end
  r.entry.results = #result
  return 200, { data = { result = st.array(result), page_no = page_no, page_size = size,
                         total_count = #ids, error_code = "0", error_msg = "success" } }
end

-- ---------------------------------------------------------------- control endpoints

local function view() return st.reply(200, st.list_conf) end

local function configure()
  local doc = st.body_json()
  local conf, err = M.conf_from(doc, st.list_conf)
  if not conf then return st.bad(err) end
  st.list_conf = conf
  return view()
end

M.routes = {
  ["GET /_sim/list"] = view,
  ["POST /_sim/list"] = configure,
  ["GET /_sim/list_log"] = function() return st.log_view(st.list_log) end,
}

return M
