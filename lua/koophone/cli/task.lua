-- koophone.cli.task: `koophone task TASK_ID...`: the jobs of each task, one JSON line each; a
-- task that cannot be read gets one line with its error (exit status 1, unless GetTask does not
-- know it).
local koophone = require "koophone"
local connection = require "koophone.cli.connection"
local output = require "koophone.cli.output"
local usage_error = require("koophone.cli.errors").usage_error

local esc = output.utf8_escaped

local _M = {}

-- run(o) -> exit status; o: the parsed options (koophone.cli.options).
function _M.run(o)
  if #o.ids == 0 then usage_error("task: give one or more task ids") end
  local token = connection.credentials(o)
  local client = connection.client(o)
  local rc = 0
  for _, id in ipairs(o.ids) do
    if koophone.interrupted() then break end
    local ok, task, err = pcall(client.get_task, client, token, id)
    if not ok then usage_error((tostring(task):gsub("^koophone%.get_task: bad argument #2 ", ""))) end
    if task then
      for _, j in ipairs(task.jobs) do
        output.emit(output.json_line { task_id = esc(id), job_id = esc(j.job_id),
                                       status = j.status, state = j.state,
                                       error_code = esc(j.error_code), error_msg = esc(j.error_msg),
                                       execute_msg = esc(j.execute_msg) })
      end
    else
      if err.code ~= koophone.codes.TASK_NOT_FOUND and err.status ~= 404 then rc = 1 end
      output.emit(output.json_line { task_id = esc(id), state = "unknown", code = esc(err.code),
                                     reason = esc(err.message) })
    end
    output.flush()
  end
  client:close()
  return output.stopped(koophone.interrupted()) or rc
end

return _M
