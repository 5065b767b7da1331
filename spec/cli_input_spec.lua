-- bin/koophone against bad input and a bad environment: every usage error is one line and exit
-- 2 before anything is sent or journaled; spreadsheet CSV (a byte-order mark) is read; ids with
-- spaces are never sent; every output line is UTF-8 JSON whatever bytes the input held.
local sim = require "helpers.sim"
local cli = require "helpers.cli"

local ctx = cli.new()
local DIR, ENDPOINT = ctx.dir, ctx.endpoint

-- Whether s is valid UTF-8 (no overlong forms, no surrogates), with patterns that work on 5.1.
local UTF8 = {
  "^[%z\1-\127]", "^[\194-\223][\128-\191]", "^\224[\160-\191][\128-\191]",
  "^[\225-\236\238\239][\128-\191][\128-\191]", "^\237[\128-\159][\128-\191]",
  "^\240[\144-\191][\128-\191][\128-\191]", "^[\241-\243][\128-\191][\128-\191][\128-\191]",
  "^\244[\128-\143][\128-\191][\128-\191]",
}
local function valid_utf8(s)
  local i = 1
  while i <= #s do
    local e
    for _, p in ipairs(UTF8) do
      e = select(2, s:find(p, i))
      if e then break end
    end
    if not e then return false end
    i = e + 1
  end
  return true
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The CLI with KOOPHONE_TOKEN set to `token` (the shared command sets it empty).
local function run_with_env_token(token, args)
  local cmd = cli.CMD:gsub("KOOPHONE_TOKEN= ", function()
    return "KOOPHONE_TOKEN=\"$(printf '" .. token .. "')\" "
  end)
  local rc = cli.exit_code(os.execute(("%s %s >%s/out 2>%s/err"):format(cmd, args, DIR, DIR)))
  local out, err = ctx.output()
  return rc, out, err
end

describe("bin/koophone input", function()
  teardown(ctx.cleanup)

  it("usage and environment errors: one line, exit 2, no journal, no request", function()
    sim.reset(sim.make_pairs(3, "use"))
    local input = ctx.csv(sim.make_pairs(3, "use"))
    assert(os.execute("mkdir -p " .. DIR .. "/adir"))
    sim.write_file(DIR .. "/empty", "")
    sim.write_file(DIR .. "/blank", " \n\t\n")
    sim.write_file(DIR .. "/cr", "s3cr3t\rpart\n")
    sim.write_file(DIR .. "/lf", "s3cr3t\npart\n")
    sim.write_file(DIR .. "/nul", "s3cr3t\0part")
    local tok = " --endpoint " .. sim.http_url .. " --input " .. input .. " --token-file "
    local cases = {
      "--token-file " .. DIR .. "/adir --endpoint " .. sim.http_url .. " --input " .. input,
      tok .. DIR .. "/empty", tok .. DIR .. "/blank", tok .. DIR .. "/cr", tok .. DIR .. "/lf",
      tok .. DIR .. "/nul", tok .. DIR .. "/missing",
      "--concurrency 100" .. ENDPOINT .. " --input " .. input,
      "--concurrency 0" .. ENDPOINT .. " --input " .. input,
      "--rate 1e-9" .. ENDPOINT .. " --input " .. input,
      "--rate inf" .. ENDPOINT .. " --input " .. input,
      "--batch-size 100001" .. ENDPOINT .. " --input " .. input,
      "--timeout 0" .. ENDPOINT .. " --input " .. input,
      "--input " .. DIR .. "/adir" .. ENDPOINT,
      "--input " .. DIR .. "/adir --format jsonl" .. ENDPOINT,
      "--input " .. DIR .. "/missing.csv" .. ENDPOINT,
      "--bogus" .. ENDPOINT .. " --input " .. input,
      "--cafile " .. DIR .. "/nosuch.pem" .. ENDPOINT .. " --input " .. input,
      "--cafile " .. DIR .. "/adir" .. ENDPOINT .. " --input " .. input,
      "--endpoint ftp://x --token-file " .. DIR .. "/token --input " .. input,
    }
    for i, args in ipairs(cases) do
      local journal = ("%s/j%d.jsonl"):format(DIR, i)
      local rc, out, err = ctx.run("unassign --journal " .. journal .. " " .. args)
      assert.equals(2, rc, args .. ": " .. err)
      assert.equals("", out, args)
      assert.matches("^koophone: [^\n]+\n$", err, args) -- one line
      assert.not_matches("traceback", err, args)
      assert.not_matches("%.lua:%d", err, args)
      assert.is_nil(err:find("s3cr3t", 1, true), args) -- no piece of a token
      assert.is_false(exists(journal), args)
    end
    -- the library's own option checks, said with the CLI's option names
    local _, _, said = ctx.run("unassign --concurrency 100" .. ENDPOINT .. " --input " .. input)
    assert.equals("koophone: --concurrency: expected an integer from 1 to 64, got 100 (see 'koophone help')\n", said)
    _, _, said = ctx.run("unassign --timeout 0" .. ENDPOINT .. " --input " .. input)
    assert.equals("koophone: --timeout: expected a number from 0.001 to 86400, got 0 (see 'koophone help')\n", said)
    local rc, _, err = run_with_env_token("s3cr3t\\npart", "unassign --endpoint " .. sim.http_url
                                          .. " --input " .. input .. " --journal " .. DIR .. "/je.jsonl")
    assert.equals(2, rc)
    assert.equals("koophone: KOOPHONE_TOKEN: the token contains CR, LF or NUL\n", err)
    assert.is_false(exists(DIR .. "/je.jsonl"))
    assert.same({}, sim.log())
  end)

  it("an environment token is trimmed like a token file", function()
    local list = sim.make_pairs(3, "envtok")
    sim.reset(list)
    local rc, out, err = run_with_env_token("  " .. sim.token .. "\\n", "unassign --endpoint "
                                            .. sim.http_url .. " --input " .. ctx.csv(list))
    assert.equals(0, rc, err)
    assert.matches("unassigned%s+3\n", out)
    assert.same({}, sim.bindings())
  end)

  it("reads CSV and JSON Lines that start with a UTF-8 byte-order mark", function()
    local list = sim.make_pairs(4, "bom")
    sim.reset(list)
    local path = DIR .. "/bom.csv"
    sim.write_file(path, "\239\187\191user_id,instance_id\r\nu-bom-1,bom0001\r\nu-bom-2,bom0002\r\n")
    local rc, out, err = ctx.run("unassign --input " .. path .. ENDPOINT)
    assert.equals(0, rc, err)
    assert.matches("unassigned%s+2\n", out)
    path = DIR .. "/bom.jsonl"
    sim.write_file(path, '\239\187\191{"user_id":"u-bom-3","instance_id":"bom0003"}\n'
                   .. '{"user_id":"u-bom-4","instance_id":"bom0004"}\n')
    rc, out, err = ctx.run("unassign --input " .. path .. ENDPOINT)
    assert.equals(0, rc, err)
    assert.matches("unassigned%s+2\n", out)
    assert.same({}, sim.bindings())
  end)

  it("ids with leading or trailing spaces are invalid, with a reason, and never sent", function()
    local list = sim.make_pairs(3, "sp")
    sim.reset(list)
    local input = ctx.csv({ list[1] }, { "u-sp-2, sp0002", "u-sp-3 ,sp0003" })
    local rc, out = ctx.run("unassign --output jsonl --input " .. input .. ENDPOINT)
    assert.equals(1, rc)
    local by_row = {}
    for _, r in ipairs(cli.json_lines(out)) do by_row[r.row] = r end
    assert.equals("unassigned", by_row[1].outcome)
    assert.equals("invalid", by_row[2].outcome)
    assert.equals("instance_id: leading or trailing space", by_row[2].reason)
    assert.equals(" sp0002", by_row[2].instance_id)
    assert.equals("user_id: leading or trailing space", by_row[3].reason)
    for _, e in ipairs(sim.log()) do
      for _, p in ipairs(e.pair_list) do assert.is_nil((p[1] .. p[2]):find(" ", 1, true)) end
    end
    assert.same({ sp0002 = "u-sp-2", sp0003 = "u-sp-3" }, sim.bindings())
  end)

  it("every output line is UTF-8 JSON whatever bytes the input held, --dry-run too", function()
    local list = sim.make_pairs(1, "utf")
    sim.reset(list)
    local input = ctx.csv(list, { "\255\254,utf0002", "u-utf-3,\192\175", "u-\237\160\128,x",
                                  "\244\144\128\128,y", "\"a\226\130\",z", "ü-ok,nosuch" })
    for _, mode in ipairs { "--output jsonl", "--dry-run" } do
      local _, out = ctx.run("unassign " .. mode .. " --input " .. input .. ENDPOINT)
      local n, invalid = 0, {}
      for line in out:gmatch("[^\n]+") do
        n = n + 1
        assert.is_true(valid_utf8(line), line)
      end
      for _, r in ipairs(cli.json_lines(out)) do
        if r.outcome == "invalid" then invalid[r.row] = r end
      end
      assert.is_true(n >= 6, mode)
      assert.equals("\\xFF\\xFE", invalid[2].user_id)
      assert.equals("\\xC0\\xAF", invalid[3].instance_id)
      assert.equals("u-\\xED\\xA0\\x80", invalid[4].user_id)
      assert.equals("\\xF4\\x90\\x80\\x80", invalid[5].user_id)
      assert.equals("a\\xE2\\x82", invalid[6].user_id)
      assert.is_nil(invalid[7]) -- valid UTF-8 is kept as it is
    end
  end)
end)
