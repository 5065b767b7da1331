-- KooPhone simulator: the "redirect target" server. Logs each request and whether it carried
-- X-Auth-Token (never the value), then answers with a JSON error that is not the KooPhone API.
local st = require "sim_state"

local M = {}

function M.handle()
  local h = ngx.req.get_headers(200)
  st.counters.target_requests = st.counters.target_requests + 1
  local log = st.target_log
  log[#log + 1] = {
    seq = st.counters.target_requests,
    method = ngx.req.get_method(),
    path = ngx.var.request_uri,
    has_token = h["x-auth-token"] ~= nil,
    has_authorization = h["authorization"] ~= nil,
  }
  ngx.req.discard_body()
  local body = st.encode({ error_code = "SIM.TARGET", error_msg = "redirect target reached: this is not the KooPhone API" })
  ngx.status = 200
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Content-Length"] = #body
  ngx.print(body)
  return ngx.exit(ngx.HTTP_OK)
end

return M
