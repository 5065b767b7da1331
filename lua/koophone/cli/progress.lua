-- koophone.cli.progress: the progress lines on stderr, of the run and of --wait.
local outcomes = require "koophone.outcomes" -- names: in the order shown

local _M = {}

-- Whether file descriptor fd (2: stderr, by default) is a terminal.
function _M.is_terminal(fd)
  local ok, how, code = os.execute("test -t " .. (fd or 2))
  if type(ok) == "number" then return ok == 0 end -- Lua 5.1
  return ok == true and how == "exit" and code == 0
end

-- The width of the terminal on stderr: stty's answer, else $COLUMNS, else 80.
local function terminal_width()
  local p = io.popen("stty size 0<&2 2>/dev/null")
  local cols = p and tonumber((p:read("*a") or ""):match("^%d+ (%d+)"))
  if p then p:close() end
  cols = cols or tonumber(os.getenv("COLUMNS") or "")
  return cols and cols >= 20 and cols or 80
end

-- A progress line redrawn in place on a terminal: cut to width - 1 columns, so that it never
-- wraps (a wrapped line is not erased by the next redraw, which then adds a line).
local function redraw(width, line, final)
  if #line > width - 1 then line = line:sub(1, width - 1) end
  io.stderr:write("\r\27[K", line, final and "\n" or "")
end

-- A progress line on stderr: redrawn in place on a terminal (at most 5 times a second), else a
-- plain line every 5 seconds. show(make_line, final) asks make_line(tty, width) for the line
-- only when one is due; a final line always is, and stays.
local function line_printer(now)
  local tty, last = _M.is_terminal(), -math.huge
  local width = tty and terminal_width()
  local interval = tty and 0.2 or 5
  return function(make_line, final)
    local t = now()
    if not final and t - last < interval then return end
    last = t
    local line = make_line(tty, width)
    if tty then
      redraw(width, line, final)
    else
      io.stderr:write("progress: ", line, "\n")
    end
  end
end

-- The progress line of --wait (on_poll of koophone.wait): as often as the run's.
function _M.wait_printer(now)
  local show = line_printer(now)
  return function(p)
    show(function()
      return ("waiting for jobs: succeeded=%d failed=%d pending=%d unknown=%d (%d tasks open)")
             :format(p.succeeded, p.failed, p.pending, p.unknown, p.tasks)
    end, p.tasks == 0)
  end
end

local function clock(s)
  s = math.floor(s + 0.5)
  return ("%d:%02d"):format(math.floor(s / 60), s % 60)
end

local function progress_line(p, final, tty, width)
  local rate = p.elapsed > 0 and p.done / p.elapsed or 0
  local parts = {}
  for _, k in ipairs(outcomes.names) do
    if p.counts[k] > 0 or final and k == "not_bound" then -- not_bound: always said at the end
      parts[#parts + 1] = ("%s=%d"):format(k, p.counts[k])
    end
  end
  if not (p.total and p.total > 0) then
    return ("%d/? %.0f pairs/s %s"):format(p.done, rate, table.concat(parts, " "))
  end
  local frac = p.done / p.total
  local eta = rate > 0 and clock((p.total - p.done) / rate) or "?"
  local line = ("%d/%d %5.1f%% %.0f pairs/s ETA %s %s"):format(p.done, p.total, frac * 100, rate, eta,
                                                              table.concat(parts, " "))
  -- the bar takes what the terminal has left, up to 30 columns
  local bar = tty and math.min(30, width - 1 - #line - 3) or 0
  if bar >= 5 then line = ("[%-" .. bar .. "s] "):format(("#"):rep(math.floor(frac * bar))) .. line end
  return line
end

-- The run's progress line (on_progress of unassign_all): show(p, final).
function _M.run_printer(now)
  local show = line_printer(now)
  return function(p, final)
    show(function(tty, width) return progress_line(p, final, tty, width) end, final)
  end
end

return _M
