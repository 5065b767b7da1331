-- koophone: cancel cloud-phone assignments on Huawei Cloud KooPhone.
-- The C core does the HTTP and the JSON; this module is what users require.
local core = require "koophone.core"
local codes = require "koophone.codes"

local _M = {
  _VERSION = core._VERSION,
  unassign = core.unassign,          -- one request, no retries, default client
  get_task = core.get_task,          -- GetTask, one request, default client
  list_instances = core.list_instances, -- ListInstances (one page), one request, default client
  new = core.new,                    -- a client of one's own
  client = require("koophone.client").new, -- a client with a retry policy
  configure = core.configure,        -- options of the default client
  validate_pair = core.validate_pair,
  sign = core.sign,                  -- the AK/SK Authorization value of a request
  aksk = core.aksk,                  -- AK/SK credentials (from the environment without options)
  rows = require "koophone.readers", -- rows.csv(path_or_file), rows.jsonl(...): unassign_all's input
  iam_token = require("koophone.iam_token").new, -- an IAM token provider (password login, refresh)
  codes = codes.names,
  describe = codes.describe,
  Error = core.Error,
  sleep = core.sleep,                -- blocking sleep(seconds) of the C core
  now = core.now,                    -- monotonic seconds
  -- interruption (SIGINT, SIGTERM or interrupt()): stops sleeps, transfers and bulk runs
  catch_signals = core.catch_signals, -- installs the handlers (the CLI does; a library never)
  interrupt = core.interrupt,
  cancel_handle = core.cancel_handle, -- per call: { cancel = c }; c:cancel() stops that call only
  interrupted = core.interrupted,     -- "SIGINT" | "SIGTERM" | "interrupted" | nil
  clear_interrupt = core.clear_interrupt,
}

return _M
