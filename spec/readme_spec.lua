-- README.md and docs/*.md: the README stays a reference that fits in a sitting, its links and
-- anchors resolve, every function of its API index has a `syntax:` line, and every option the
-- code accepts is in one of its options tables. Names come from the sources, not from this file,
-- so an option added to the code without a row in the README fails here.
local shell = require "helpers.shell"
local read = require("helpers.cli").read_file

local function exists(path)
  return os.rename(path, path) == true
end

local function list(cmd)
  local out = {}
  for line in shell.read(cmd):gmatch("[^\n]+") do out[#out + 1] = line end
  return out
end

local DOCS = list("ls docs/*.md")
local README = read("README.md")

-- The lines of a Markdown text outside fenced code blocks, with their inline code spans kept.
local function prose(text)
  local out, fenced = {}, false
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^%s*```") then
      fenced = not fenced
    elseif not fenced then
      out[#out + 1] = line
    end
  end
  return out
end

-- GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens, repeats numbered.
local function anchors(text)
  local set, seen = {}, {}
  for _, line in ipairs(prose(text)) do
    local title = line:match("^#+%s+(.-)%s*$")
    if title then
      local slug = title:lower():gsub("[^%w _%-]", ""):gsub(" ", "-")
      if seen[slug] then
        seen[slug] = seen[slug] + 1
        slug = slug .. "-" .. seen[slug]
      else
        seen[slug] = 0
      end
      set[slug] = true
    end
  end
  return set
end

-- "docs/../README.md" -> "README.md"
local function normalize(path)
  local parts = {}
  for part in path:gmatch("[^/]+") do
    if part == ".." then
      table.remove(parts)
    elseif part ~= "." then
      parts[#parts + 1] = part
    end
  end
  return table.concat(parts, "/")
end

-- The relative links of a Markdown file: { text =, path =, anchor = } (path relative to the
-- repository; anchor nil when there is none).
local function links(file)
  local dir = file:match("^(.*/)") or ""
  local out = {}
  for _, line in ipairs(prose(read(file))) do
    for text, target in line:gmatch("%[([^%]]*)%]%(([^)%s]+)%)") do
      if not target:match("^%a[%w+.-]*:") then -- http:, https:, mailto:
        local path, anchor = target:match("^([^#]*)#?(.*)$")
        out[#out + 1] = {
          text = text:gsub("`", ""),
          path = path == "" and file or normalize(dir .. path),
          anchor = anchor ~= "" and anchor or nil,
        }
      end
    end
  end
  return out
end

-- The lines of the section under the heading whose anchor is `slug`, up to the next heading of
-- the same or a higher level.
local function section(text, slug)
  local out, level = {}, nil
  for _, line in ipairs(prose(text)) do
    local hashes, title = line:match("^(#+)%s+(.-)%s*$")
    if hashes and level and #hashes <= level then break end
    if level then out[#out + 1] = line end
    if hashes and not level and title:lower():gsub("[^%w _%-]", ""):gsub(" ", "-") == slug then
      level = #hashes
    end
  end
  return out
end

-- The links of the README's "## API" list: the index.
local function api_index()
  local out, inside = {}, false
  for _, line in ipairs(prose(README)) do
    if line:match("^## ") then inside = line:match("^## API%s*$") ~= nil
    elseif inside then
      for text, anchor in line:gmatch("%[([^%]]*)%]%(#([^)]+)%)") do
        out[#out + 1] = { text = text:gsub("`", ""), anchor = anchor }
      end
    end
  end
  return out
end

-- Every name in the first cell of a table row of the README: what its options tables document.
local function documented_options()
  local names = {}
  for _, line in ipairs(prose(README)) do
    local cell = line:gsub("\\|", ""):match("^|([^|]*)|")
    if cell then
      for name in cell:gmatch("`([^`]+)`") do names[name] = true end
    end
  end
  return names
end

-- The keys at the top level of the Lua table constructor that follows `prefix` in `source`.
local function table_keys(source, prefix, file)
  local body = source:match(prefix:gsub("%p", "%%%0") .. "%s*(%b{})")
  assert(body, ("%s: cannot find '%s {' (the spec reads the option names from it)"):format(file, prefix))
  body = body:sub(2, -2):gsub("%b{}", "")
  local keys = {}
  for key in body:gmatch("([%a_][%w_]*)%s*=[^=]") do keys[#keys + 1] = key end
  for key in body:gmatch("%[%s*[\"']([^\"']+)[\"']%s*%]%s*=[^=]") do keys[#keys + 1] = key end
  return keys
end

-- Every option name the code accepts, with where it comes from.
local function accepted_options()
  local names = {}
  local function add(key, from) names[#names + 1] = { name = key, from = from } end
  local found_endpoint = false
  for _, file in ipairs(list("ls src/*.c")) do
    -- every C array of accepted option names: koophone.new, a call's opts, unassign_many
    for body in read(file):gmatch("[%w_]*option[%w_]*%[%]%s*=%s*(%b{})") do
      for key in body:gmatch("\"([^\"]+)\"") do
        add(key, file)
        found_endpoint = found_endpoint or key == "endpoint"
      end
    end
  end
  assert(found_endpoint, "no option_names array in src/*.c holds 'endpoint' (koophone.new's options)")
  local retry = read("lua/koophone/retry.lua")
  for _, key in ipairs(table_keys(retry, "_M.defaults =", "retry.lua")) do add(key, "retry.lua") end
  for _, key in ipairs(table_keys(retry, "local OPTIONS =", "retry.lua")) do add(key, "retry.lua") end
  for _, key in ipairs(table_keys(retry, "_M.default_budget =", "retry.lua")) do
    add("budget." .. key, "retry.lua")
  end
  for _, key in ipairs(table_keys(retry, "local BUDGET_OPTIONS =", "retry.lua")) do
    add("budget." .. key, "retry.lua")
  end
  add("rate", "client.lua")
  for _, key in ipairs(table_keys(read("lua/koophone/client.lua"), "local RATE_OPTIONS =", "client.lua")) do
    add("rate." .. key, "client.lua")
  end
  for _, key in ipairs(table_keys(read("lua/koophone/bulk.lua"), "local OPTIONS =", "bulk.lua")) do
    add(key, "bulk.lua")
  end
  for _, key in ipairs(table_keys(read("lua/koophone/ngx.lua"), "_M.defaults =", "ngx.lua")) do
    add(key, "ngx.lua")
  end
  for _, key in ipairs(table_keys(read("lua/koophone/iam_token.lua"), "local OWN =", "iam_token.lua")) do
    add(key, "iam_token.lua")
  end
  return names
end

describe("the README", function()
  it("has between 300 and 450 lines", function()
    local _, n = README:gsub("\n", "")
    assert.is_true(n >= 300 and n <= 450, ("README.md has %d lines"):format(n))
  end)

  it("links to existing files and headings only, in README.md and every docs/*.md", function()
    local broken, files = {}, { "README.md" }
    for _, doc in ipairs(DOCS) do files[#files + 1] = doc end
    for _, file in ipairs(files) do
      for _, link in ipairs(links(file)) do
        local target = link.path .. (link.anchor and "#" .. link.anchor or "")
        if not exists(link.path) then
          broken[#broken + 1] = file .. ": " .. target
        elseif link.anchor and not anchors(read(link.path))[link.anchor] then
          broken[#broken + 1] = file .. ": " .. target .. " (no such heading)"
        end
      end
    end
    assert.same({}, broken)
  end)

  it("links to every docs/*.md file", function()
    local linked = {}
    for _, link in ipairs(links("README.md")) do linked[link.path] = true end
    local missing = {}
    for _, doc in ipairs(DOCS) do
      if not linked[doc] then missing[#missing + 1] = doc end
    end
    assert.same({}, missing)
  end)

  it("has a syntax: line for every function of its API index", function()
    local index, missing = api_index(), {}
    assert.is_true(#index >= 10, "the README has no '## API' index of links")
    for _, entry in ipairs(index) do
      -- functions are lower-case members: koophone.unassign, client:close, koophone.rows.csv
      local member = entry.text:match("^[%w_]+[.:]([%l_][%w_.]*)$")
      if member then
        local ok = false
        for _, line in ipairs(section(README, entry.anchor)) do
          local syntax = line:match("^`?syntax: (.*)")
          if syntax and syntax:find(entry.text, 1, true) then ok = true end
        end
        if not ok then missing[#missing + 1] = entry.text .. " (#" .. entry.anchor .. ")" end
      end
    end
    assert.same({}, missing)
  end)

  it("lists every function of koophone and every method of its clients in the API index", function()
    local koophone = require "koophone"
    local indexed, missing = {}, {}
    for _, entry in ipairs(api_index()) do indexed[entry.text] = true end
    local function check(name)
      if not indexed[name] then missing[#missing + 1] = name end
    end
    for name, v in pairs(koophone) do
      if type(v) == "function" then check("koophone." .. name) end
      if type(v) == "table" then -- a group of functions (koophone.rows), not a metatable's methods
        for member, f in pairs(v) do
          if type(f) == "function" and not member:match("^__") then
            check("koophone." .. name .. "." .. member)
          end
        end
      end
    end
    local core_client = koophone.new {}
    local retry_client = koophone.client {}
    for _, client in ipairs({ core_client, retry_client }) do
      local methods = getmetatable(client).__index
      for name, v in pairs(type(methods) == "table" and methods or {}) do
        if type(v) == "function" and not name:match("^__") then check("client:" .. name) end
      end
    end
    core_client:close()
    retry_client:close()
    table.sort(missing)
    assert.same({}, missing)
  end)

  it("has every option the code accepts in an options table", function()
    local documented, missing = documented_options(), {}
    for _, option in ipairs(accepted_options()) do
      if not documented[option.name] then
        missing[#missing + 1] = option.name .. " (" .. option.from .. ")"
      end
    end
    assert.same({}, missing)
  end)

  it("has the outcome table of koophone.outcomes, in its order, and the CLI's help its exit codes", function()
    local outcomes, rows = require "koophone.outcomes", {}
    for name, final, exit in README:gmatch("\n| `([%w_]+)` | ([%w*]+) | [^\n]* | (%d) |") do
      rows[#rows + 1] = { name, final:gsub("%*", "") == "yes", tonumber(exit) }
    end
    local want = {}
    for i, name in ipairs(outcomes.names) do
      want[i] = { name, outcomes.final[name] == true, outcomes.failure[name] and 1 or 0 }
    end
    assert.same(want, rows)
    local help = read("lua/koophone/cli/options.lua"):match("Exit status: 0 every pair (.-); 2 ")
    for _, name in ipairs(outcomes.names) do
      local at = assert(help:find("%f[%w_]" .. name .. "%f[^%w_]"), name)
      local exit = at < help:find("1 some pair", 1, true) and 0 or 1
      assert.equals(outcomes.failure[name] and 1 or 0, exit, name)
    end
  end)

  it("states the minimum libcurl version, in the README and the rockspec", function()
    assert.truthy(README:find("libcurl 7.85.0 or later", 1, true))
    assert.truthy(read("koophone-scm-1.rockspec"):find("libcurl >= 7.85.0", 1, true))
  end)
end)
