-- Every programmer mistake raises in one shape, modelled on luaL_argerror, whether C or Lua checks
-- it: "<function the user called>: bad argument #<n> (<path>): <what is wrong>", arguments
-- counted as the user wrote them (a method's self is not counted). No request is sent.
local koophone = require "koophone"
local argerror = require "koophone.argerror"
local kngx = require "koophone.ngx"

local SHAPE = "^koophone%.[%w_.:]+: bad argument #%d+ %(([^)]+)%): .+"
local TOKEN = "token-argerror-spec"
local good = { { user_id = "u1", instance_id = "i1" } }
local closed_port = { endpoint = "http://127.0.0.1:1" } -- never reached: every call below raises
local unpack = table.unpack or unpack

-- The highest integer key of t (a case's arguments may hold nils).
local function last_index(t)
  local n = 0
  for k in pairs(t) do
    if type(k) == "number" and k > n then n = k end
  end
  return n
end

-- The message of the error fn raises; luassert's and error()'s position prefix is not there.
local function message(fn, ...)
  local ok, msg = pcall(fn, ...)
  assert.is_false(ok, "expected a raise")
  assert.is_string(msg)
  return msg
end

describe("argument errors", function()
  local client, policy_client
  setup(function()
    client = koophone.new(closed_port)
    policy_client = koophone.client(closed_port)
  end)
  teardown(function()
    client:close()
    policy_client:close()
  end)

  -- { prefix the message starts with, function, arguments... }
  local function cases()
    return {
      { "koophone.unassign: bad argument #1 (token): ", koophone.unassign, nil, good },
      { "koophone.unassign: bad argument #2 (pairs[1].user_id): ", koophone.unassign, TOKEN,
        { { instance_id = "i" } } },
      { "koophone.unassign: bad argument #3 (opts): ", koophone.unassign, TOKEN, good, "fast" },
      { "koophone.unassign: bad argument #3 (opts.timeout): expected a number > 0, got string",
        koophone.unassign, TOKEN, good, { timeout = "1" } },
      { "koophone.unassign: bad argument #1 (token): ", client.unassign, client, "", good },
      { "koophone.unassign: bad argument #2 (pairs): ", client.unassign, client, TOKEN, {} },
      { "koophone.unassign: bad argument #3 (opts.request_id): ", client.unassign, client, TOKEN,
        good, { request_id = "a b" } },
      { "koophone.unassign: bad argument #3 (opts): unknown option 'retries'", client.unassign,
        client, TOKEN, good, { retries = 1 } },
      { "koophone.unassign_all: bad argument #3 (opts.concurrency): expected an integer from 1 to 64",
        policy_client.unassign_all, policy_client, TOKEN, good, { concurrency = 100 } },
      { "koophone.unassign_all: bad argument #3 (opts): unknown option 'speed'",
        policy_client.unassign_all, policy_client, TOKEN, good, { speed = 1 } },
      { "koophone.unassign_all: bad argument #1 (token): ", policy_client.unassign_all,
        policy_client, "", good },
      -- the function the user called, not the one that shares its checks
      { "koophone.unassign_many: bad argument #1 (token): ", client.unassign_many, client, 42,
        { good } },
      { "koophone.unassign_many: bad argument #2 (batches): ", client.unassign_many, client, TOKEN,
        "x" },
      { "koophone.unassign_many: bad argument #2 (batches[1][1].instance_id): ",
        client.unassign_many, client, TOKEN, { { { user_id = "u" } } } },
      { "koophone.unassign_many: bad argument #3 (opts.timeout): expected a number > 0, got string",
        client.unassign_many, client, TOKEN, { good }, { timeout = "x" } },
      { "koophone.unassign_many: bad argument #3 (opts.concurrency): ", client.unassign_many,
        client, TOKEN, { good }, { concurrency = 0 } },
      { "koophone.unassign_many: bad argument #3 (opts.request_ids[1]): ", client.unassign_many,
        client, TOKEN, { good }, { request_ids = { 7 } } },
      { "koophone.unassign_many: bad argument #3 (opts.on_start): ", client.unassign_many, client,
        TOKEN, { good }, { on_start = 1 } },
      { "koophone.start_many: bad argument #2 (batches[1][1].instance_id): ", client.start_many,
        client, TOKEN, { { { user_id = "u" } } } },
      { "koophone.start_many: bad argument #3 (opts.timeout): expected a number > 0, got string",
        client.start_many, client, TOKEN, { good }, { timeout = "x" } },
      { "koophone.get_task: bad argument #1 (token): ", koophone.get_task, nil, "RM_1" },
      { "koophone.get_task: bad argument #2 (task_id): expected a non-empty string, got nil",
        koophone.get_task, TOKEN },
      { "koophone.get_task: bad argument #2 (task_id): expected 1 to 128 bytes, got 0",
        client.get_task, client, TOKEN, "" },
      { "koophone.get_task: bad argument #2 (task_id): expected 1 to 128 bytes, got 129",
        client.get_task, client, TOKEN, ("x"):rep(129) },
      { "koophone.get_task: bad argument #2 (task_id): contains a control character",
        client.get_task, client, TOKEN, "RM_1\r\nX-Evil: 1" },
      { "koophone.get_task: bad argument #2 (task_id): contains a control character",
        client.get_task, client, TOKEN, "RM\0" },
      { "koophone.get_task: bad argument #3 (opts): unknown option 'retries'", client.get_task,
        client, TOKEN, "RM_1", { retries = 1 } },
      { "koophone.get_task: bad argument #3 (opts.request_id): ", policy_client.get_task,
        policy_client, TOKEN, "RM_1", { request_id = "a b" } },
      { "koophone.get_task: bad argument #3 (opts): ", policy_client.get_task, policy_client,
        TOKEN, "RM_1", 7 },
      { "koophone.wait_jobs: bad argument #3 (opts.interval): ", policy_client.wait_jobs,
        policy_client, TOKEN, { "RM_1" }, { interval = 0 } },
      { "koophone.wait_jobs: bad argument #3 (opts): unknown option 'every'",
        policy_client.wait_jobs, policy_client, TOKEN, { "RM_1" }, { every = 1 } },
      { "koophone.wait_jobs: bad argument #2 (what): ", policy_client.wait_jobs, policy_client,
        TOKEN, "RM_1" },
      { "koophone.unassign_all: bad argument #3 (opts.wait.timeout): ",
        policy_client.unassign_all, policy_client, TOKEN, good, { wait = { timeout = -1 } } },
      { "koophone.new: bad argument #1 (opts): expected a table, got string", koophone.new, "x" },
      { "koophone.new: bad argument #1 (opts.max_idle): ", koophone.new, { max_idle = 1.5 } },
      { "koophone.new: bad argument #1 (opts.cafile): ", koophone.new, { cafile = 1 } },
      { "koophone.configure: bad argument #1 (opts.low_speed_time): ", koophone.configure,
        { low_speed_time = 0 } },
      { "koophone.sleep: bad argument #1 (seconds): ", koophone.sleep, -1 },
      { "koophone.sleep: bad argument #1 (seconds): ", koophone.sleep, "1" },
      { "koophone.validate_pair: bad argument #1 (pair): ", koophone.validate_pair },
      -- the Lua layer
      { "koophone.client: bad argument #1 (opts): ", koophone.client, 5 },
      { "koophone.client: bad argument #1 (opts.timeout): ", koophone.client, { timeout = 0 } },
      { "koophone.client: bad argument #1 (opts.retry): unknown option 'tries'", koophone.client,
        { retry = { tries = 2 } } },
      { "koophone.client: bad argument #1 (opts.retry.budget.cost): ", koophone.client,
        { retry = { budget = { cost = -1 } } } },
      { "koophone.unassign: bad argument #3 (opts): ", policy_client.unassign, policy_client,
        TOKEN, good, 1 },
      { "koophone.unassign: bad argument #3 (opts.timeout): ", policy_client.unassign,
        policy_client, TOKEN, good, { timeout = -1 } },
      { "koophone.ngx.new: bad argument #1 (opts.max_in_flight): ", kngx.new,
        { max_in_flight = 0 } },
      { "koophone.ngx.new: bad argument #1 (opts.endpoint): ", kngx.new, { endpoint = "ftp://x" } },
      { "koophone.ngx.client: bad argument #1 (opts.retry.max_attempts): ", kngx.client,
        { retry = { max_attempts = 0 } } },
      { "koophone.ngx.client: bad argument #1 (opts.queue_timeout): ", kngx.client,
        { queue_timeout = -1 } },
    }
  end

  it("follow the one shape and name the function, the argument and the path", function()
    for _, case in ipairs(cases()) do
      local msg = message(case[2], unpack(case, 3, last_index(case)))
      assert.matches(SHAPE, msg)
      assert.equals(case[1], msg:sub(1, #case[1]))
    end
  end)

  it("are the same text from the Lua helper as from the C core", function()
    local c_msg = message(koophone.new, { timeout = "1" })
    local lua_msg = message(argerror.raise, "koophone.new", 1, "opts.timeout",
                            "expected a number > 0, got %s", "string")
    assert.equals(c_msg, lua_msg)
    assert.equals("koophone.x: bad argument #2 (opts): unknown option 'y'",
                  message(argerror.check_names, { y = 1 }, {}, "koophone.x", 2, "opts"))
    -- the number check words a range like the C core's max_pairs check
    assert.equals(message(koophone.new, { max_pairs = 0 }),
                  message(argerror.number, 0, "koophone.new", 1, "opts.max_pairs", 1, 100000, true))
  end)

  it("refuse NaN, infinities, out-of-range and fractional numbers and other types", function()
    local function check(v, max, integer) return message(argerror.number, v, "f", 1, "x", 0, max, integer) end
    for _, v in ipairs { 0 / 0, math.huge, -math.huge, -1, 11, "5" } do
      assert.matches("^f: bad argument #1 %(x%): expected a number from 0 to 10, got ", check(v, 10))
    end
    assert.matches("expected an integer >= 0, got 0.5$", check(0.5, math.huge, true))
    assert.matches("expected a number >= 0, got inf$", check(math.huge, math.huge))
    assert.equals(7, argerror.number(7, "f", 1, "x", 0, 10, true))
  end)
end)
