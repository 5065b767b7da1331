-- The bulk input files, read one line at a time: CSV (RFC 4180) and JSON Lines. Each reader is an
-- iterator unassign_all accepts as its pairs: a call returns the next pair, `false, "line N: ..."`
-- for a row that cannot be parsed, or nil at the end. Exposed as koophone.rows.csv and
-- koophone.rows.jsonl; the CLI reads its input with them.
local core = require "koophone.core"
local argerror = require "koophone.argerror"
local cjson = require("cjson.safe").new()

local _M = {}

-- A quoted field may span lines (RFC 4180); a record longer than this is reported as invalid,
-- so that a stray quote cannot make the reader hold the rest of a huge file in memory.
local MAX_RECORD = 65536

local BOM = "^\239\187\191"

-- A line source over a path (opened here, closed at the end and by the file's own finalizer when
-- the iterator is collected) or a file handle (left open). Returns the source or nil, err.
-- Reading raises on an I/O error: the constructors turn one on the first line into nil, err.
local function open(fname, source)
  local f, name, owned = source, "the input", false
  if type(source) == "string" then
    local err
    f, err = io.open(source, "rb")
    if not f then return nil, "cannot open " .. tostring(err) end
    name, owned = source, true
  elseif io.type(source) ~= "file" then
    argerror.raise(fname, 1, "source", "expected a path or a file, got %s",
                   io.type(source) == "closed file" and "a closed file" or type(source))
  end
  local src = { line_no = 0 }
  -- next raw line without its CR, the byte-order mark dropped from the first; nil at the end.
  -- A read error raises, unless a koophone interruption caused it (the run is stopping anyway).
  function src.read()
    if not f then return nil end
    local line, err = f:read("*l")
    if not line then
      local interrupted = core.interrupted()
      src.close()
      if err and not interrupted then
        error(("%s: cannot read %s: %s"):format(fname, name, tostring(err)), 0)
      end
      return nil
    end
    src.line_no = src.line_no + 1
    line = line:gsub("\r$", "")
    if src.line_no == 1 then line = line:gsub(BOM, "") end
    return line
  end
  -- next line that is not blank
  function src.next()
    local line
    repeat line = src.read() until not line or line:find("%S")
    return line
  end
  function src.close()
    if owned and f then f:close() end
    f = nil
  end
  src.name = name
  return src
end

-- Adds the fields of one line to rec.fields; rec.open holds the pieces of a quoted field a line
-- break interrupted. Returns "more" when the record goes on on the next line, "done", or nil and
-- the problem.
local function parse(rec, line, sep)
  local fields, buf, pos, n = rec.fields, rec.open, 1, #line
  rec.open = nil
  while true do
    if not buf and line:sub(pos, pos) == '"' then
      buf, pos = {}, pos + 1
    end
    if buf then
      local q = line:find('"', pos, true)
      if not q then
        buf[#buf + 1] = line:sub(pos) .. "\n"
        rec.open = buf
        return "more"
      end
      buf[#buf + 1] = line:sub(pos, q - 1)
      if line:sub(q + 1, q + 1) == '"' then -- a doubled quote
        buf[#buf + 1] = '"'
        pos = q + 2
      else
        fields[#fields + 1] = table.concat(buf)
        buf, pos = nil, q + 1
        if pos > n then return "done" end
        if line:sub(pos, pos) ~= sep then return nil, "text after a closing quote" end
        pos = pos + 1
      end
    else
      local s = line:find(sep, pos, true) or n + 1
      fields[#fields + 1] = line:sub(pos, s - 1)
      if s > n then return "done" end
      pos = s + 1
    end
  end
end

-- The next CSV record of src: its fields and the number of its first line, nil at the end, or
-- nil, the first line's number and the problem.
local function record(src, sep)
  local line = src.next()
  if not line then return nil end
  local first, rec, size = src.line_no, { fields = {} }, 0
  while true do
    size = size + #line + 1
    local state, problem = parse(rec, line, sep)
    if state == "done" then return rec.fields, first end
    if not state then return nil, first, problem end
    if size > MAX_RECORD then
      return nil, first, ("a quoted field runs over %d bytes (an unclosed quote?)"):format(MAX_RECORD)
    end
    line = src.read()
    if not line then return nil, first, "unterminated quote" end
  end
end

local KNOWN = { user_id = true, instance_id = true }

-- A header's column name as compared with KNOWN: spreadsheets and people write "User ID",
-- "INSTANCE_ID" or "instance-id" for the same column. Case and white space around are ignored,
-- and a run of spaces, hyphens and underscores inside is one underscore.
local function column_name(name)
  return (name:match("^%s*(.-)%s*$"):lower():gsub("[%s_%-]+", "_"))
end

-- csv(source [, opts]) -> iterator, or nil, err when the source cannot be opened or its header
-- has no user_id or instance_id column. source: a path or a file handle. opts.separator: the
-- field separator, one byte (default ","; ";" for some spreadsheet exports).
-- The header names the columns in any order (column_name: "User ID" is user_id), once each;
-- other columns are ignored; blank lines are skipped.
function _M.csv(source, opts)
  local fname = "koophone.rows.csv"
  if opts ~= nil and type(opts) ~= "table" then
    argerror.raise(fname, 2, "opts", "expected a table, got %s", type(opts))
  end
  opts = opts or {}
  argerror.check_names(opts, { separator = true }, fname, 2, "opts")
  local sep = opts.separator or ","
  if type(sep) ~= "string" or #sep ~= 1 or sep == '"' or sep:find("[\r\n]") then
    argerror.raise(fname, 2, "opts.separator", "expected one byte other than a quote, CR or LF")
  end
  local src, err = open(fname, source)
  if not src then return nil, err end
  local ok, cols, at, problem = pcall(record, src, sep) -- a read error here: nil, err
  if not ok then return nil, cols end
  local at_col, twice = {}, nil -- column of each known name; a name that two columns have
  for k, name in ipairs(cols or {}) do
    name = column_name(name)
    if KNOWN[name] then -- a name twice: which of the columns holds the ids is anyone's guess
      twice = twice or at_col[name] and ("line %d: the header names %s twice, in columns %d and %d")
                                        :format(at, name, at_col[name], k)
      at_col[name] = k
    end
  end
  local u, inst = at_col.user_id, at_col.instance_id
  if twice then
    src.close()
    return nil, ("%s: %s"):format(src.name, twice)
  end
  if not (u and inst) then
    src.close()
    if not cols and not problem and core.interrupted() then -- stopped while waiting for input
      return function() return nil end
    end
    return nil, ("%s: the CSV input needs a header line naming the columns user_id and instance_id%s")
      :format(src.name, problem and (" (line %d: %s)"):format(at, problem) or "")
  end
  return function()
    local fields, line_no, why = record(src, sep)
    if not fields then
      if not line_no then return nil end
      return false, ("line %d: %s"):format(line_no, why)
    end
    if #fields ~= #cols then
      return false, ("line %d: %d fields, the header has %d"):format(line_no, #fields, #cols)
    end
    return { user_id = fields[u], instance_id = fields[inst] }
  end
end

-- jsonl(source) -> iterator, or nil, err when the source cannot be opened. One JSON object per
-- line; blank lines are skipped. The first line is read at once, so that an unreadable source
-- fails here rather than in the middle of a run.
function _M.jsonl(source)
  local src, err = open("koophone.rows.jsonl", source)
  if not src then return nil, err end
  local ok, first_line = pcall(src.next)
  if not ok then return nil, first_line end
  local first = { first_line }
  return function()
    local line = first and first[1] or src.next()
    first = nil
    if not line then return nil end
    local v = cjson.decode(line)
    if type(v) ~= "table" then return false, ("line %d: not a JSON object"):format(src.line_no) end
    return v
  end
end

return _M
