-- koophone.cli.plan: `koophone plan` and `koophone verify`: the bindings of the input's pairs as
-- ListInstances shows them now (unassign_all's plan option); nothing is sent. plan says what a
-- run would send and skip (exit 0); verify, after a run, names the pairs still bound (exit 1
-- when some are, or could not be read).
local koophone = require "koophone"
local connection = require "koophone.cli.connection"
local output = require "koophone.cli.output"
local STATES = require("koophone.bindings").STATES

local emit, esc = output.emit, output.utf8_escaped

local _M = {}

local LISTED = 20 -- pairs still bound named on stderr (--output-format jsonl lists them all)

-- run(o) -> exit status; o: the parsed options (koophone.cli.options), o.command "plan" or "verify".
function _M.run(o)
  local cmd = o.command
  local format = o.format or ((o.input or ""):match("%.jsonl?$") and "jsonl" or "csv")
  local from_stdin = not o.input or o.input == "-"
  local input = require("koophone.cli.unassign").reader(from_stdin and io.stdin or o.input, format,
                                                          o.separator)
  local token = connection.credentials(o)
  local jsonl = o["output-format"] == "jsonl"
  output.check(o)
  output.open(o)
  local client = connection.client(o)
  local p = client:unassign_all(token, input, { plan = true, shard = o.shard, batch_size = o["batch-size"] })
  client:close()
  local still = {}
  for _, r in ipairs(p.results) do
    if jsonl then
      local e = r.err
      emit(output.json_line { row = r.row, user_id = esc(r.user_id), instance_id = esc(r.instance_id),
                              state = r.state, outcome = r.outcome, code = e and esc(e.code),
                              reason = esc(r.reason or (e and e.message)) })
    end
    if r.state == "bound" then still[#still + 1] = r end
  end
  local c = p.counts
  if not jsonl then
    emit(("%-19s %d\n"):format("pairs", p.total))
    for _, k in ipairs { "invalid", "duplicate" } do emit(("%-19s %d\n"):format(k, p[k])) end
    for _, s in ipairs(STATES) do emit(("%-19s %d\n"):format(s, c[s])) end
    emit(("%-19s %d\n"):format("reads", p.requests))
    if cmd == "plan" then
      emit(("%-19s %d\n%-19s %d\n%-19s %d\n"):format("send", p.send, "skip", p.skip,
                                                   "requests", p.run_requests))
    end
  end
  output.flush()
  io.stderr:write(("koophone: %s: %d pairs read with %d ListInstances requests (%s): %d bound, %d unbound, "
                   .. "%d other, %d missing, %d unknown\n"):format(cmd, p.total - p.invalid - p.duplicate,
                   p.requests, p.strategy or "none", c.bound, c.unbound, c.other, c.missing, c.unknown))
  if cmd == "plan" then
    io.stderr:write(("koophone: plan: --skip-unbound would send %d pairs in %d requests of up to %d "
                     .. "(retries and bisection aside) and skip %d; without it, every valid pair is sent\n")
                    :format(p.send, p.run_requests, o["batch-size"], p.skip))
  end
  if c.unknown > 0 then
    local first
    for _, r in ipairs(p.results) do if r.state == "unknown" then first = r break end end
    io.stderr:write(("koophone: %d pairs could not be read: %s\n"):format(c.unknown,
                    first and first.err and tostring(first.err) or "unknown"))
  end
  if cmd == "verify" then
    for i, r in ipairs(still) do
      if i > LISTED then
        io.stderr:write(("koophone: and %d more still bound\n"):format(#still - LISTED))
        break
      end
      io.stderr:write(("koophone: still bound: row %d user_id=%s instance_id=%s\n"):format(
        r.row, esc(tostring(r.user_id)), esc(tostring(r.instance_id))))
    end
  end
  return output.stopped(koophone.interrupted() or p.interrupted)
         or (cmd == "verify" and (c.bound > 0 or c.unknown > 0) and 1 or 0)
end

return _M
