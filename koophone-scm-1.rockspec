-- koophone: `luarocks --lua-version=5.X make --deps-mode=none` in this directory builds and installs
-- it for Lua 5.1 .. 5.4 (Debian: install lua-cjson, libcurl4-openssl-dev and libssl-dev with
-- apt-get first).
-- spec/rockspec_spec.lua checks that every src/*.c and every lua/**/*.lua is listed here.
rockspec_format = "3.0"
package = "koophone"
version = "scm-1"

source = {
  url = "git+file://.",
}

description = {
  summary = "Huawei Cloud KooPhone unassign for Lua, in C with libcurl",
  detailed = [[
Cancels cloud-phone assignments (POST /v1/instances/unassign) from Lua 5.1 - 5.4, LuaJIT,
OpenResty (koophone.ngx, through ngx.run_worker_thread) and C hosts that embed Lua.
Needs libcurl >= 7.85.0 (CURLOPT_PROTOCOLS_STR) and lua-cjson.
]],
  license = "MIT",
}

dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}

-- libcurl >= 7.85.0: the core sets CURLOPT_PROTOCOLS_STR (7.85.0) and CURLOPT_PREREQFUNCTION
-- (7.80.0); LuaRocks has no version check for an external library, so this says it.
-- Found by its library: LuaRocks 3.8 looks for headers only in <dir>/include, and Debian keeps
-- curl/curl.h in the multiarch include directory, which the compiler searches by itself.
external_dependencies = {
  CURL = { library = "curl" },
  OPENSSL = { library = "crypto" }, -- libcrypto: SHA-256 and HMAC of AK/SK signing
}

build = {
  type = "builtin",
  modules = {
    ["koophone.core"] = {
      sources = {
        "src/aksk.c", "src/buf.c", "src/call.c", "src/check.c",
        "src/client.c", "src/clock.c", "src/errors.c", "src/event.c", "src/interrupt.c",
        "src/jfile.c",
        "src/koophone.c", "src/multi.c", "src/pairset.c", "src/redact.c", "src/request.c",
        "src/response.c", "src/rng.c", "src/rows.c", "src/sign.c",
        "src/transport.c",
      },
      defines = { "_DEFAULT_SOURCE" },
      libraries = { "curl", "crypto", "pthread", "m" },
      incdirs = { "$(CURL_INCDIR)", "$(OPENSSL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(OPENSSL_LIBDIR)" },
    },
    ["koophone"] = "lua/koophone.lua",
    ["koophone.applied"] = "lua/koophone/applied.lua",
    ["koophone.argerror"] = "lua/koophone/argerror.lua",
    ["koophone.bindings"] = "lua/koophone/bindings.lua",
    ["koophone.bucket"] = "lua/koophone/bucket.lua",
    ["koophone.budget"] = "lua/koophone/budget.lua",
    ["koophone.bulk"] = "lua/koophone/bulk.lua",
    ["koophone.bulk_wait"] = "lua/koophone/bulk_wait.lua",
    ["koophone.classify"] = "lua/koophone/classify.lua",
    ["koophone.cli.connection"] = "lua/koophone/cli/connection.lua",
    ["koophone.cli.errors"] = "lua/koophone/cli/errors.lua",
    ["koophone.cli.files"] = "lua/koophone/cli/files.lua",
    ["koophone.cli.main"] = "lua/koophone/cli/main.lua",
    ["koophone.cli.options"] = "lua/koophone/cli/options.lua",
    ["koophone.cli.output"] = "lua/koophone/cli/output.lua",
    ["koophone.cli.plan"] = "lua/koophone/cli/plan.lua",
    ["koophone.cli.progress"] = "lua/koophone/cli/progress.lua",
    ["koophone.cli.reasons"] = "lua/koophone/cli/reasons.lua",
    ["koophone.cli.summary"] = "lua/koophone/cli/summary.lua",
    ["koophone.cli.task"] = "lua/koophone/cli/task.lua",
    ["koophone.cli.unassign"] = "lua/koophone/cli/unassign.lua",
    ["koophone.errors"] = "lua/koophone/errors.lua",
    ["koophone.eventlog"] = "lua/koophone/eventlog.lua",
    ["koophone.client"] = "lua/koophone/client.lua",
    ["koophone.codes"] = "lua/koophone/codes.lua",
    ["koophone.iam_token"] = "lua/koophone/iam_token.lua",
    ["koophone.jobs"] = "lua/koophone/jobs.lua",
    ["koophone.journal"] = "lua/koophone/journal.lua",
    ["koophone.ngx"] = "lua/koophone/ngx.lua",
    ["koophone.ngx.iam_token"] = "lua/koophone/ngx/iam_token.lua",
    ["koophone.ngx.inflight"] = "lua/koophone/ngx/inflight.lua",
    ["koophone.ngx.metrics"] = "lua/koophone/ngx/metrics.lua",
    ["koophone.ngx.thread"] = "lua/koophone/ngx/thread.lua",
    ["koophone.outcomes"] = "lua/koophone/outcomes.lua",
    ["koophone.readers"] = "lua/koophone/readers.lua",
    ["koophone.retry"] = "lua/koophone/retry.lua",
    ["koophone.rows"] = "lua/koophone/rows.lua",
    ["koophone.run"] = "lua/koophone/run.lua",
    ["koophone.settle"] = "lua/koophone/settle.lua",
    ["koophone.shared_dict"] = "lua/koophone/shared_dict.lua",
    ["koophone.wait"] = "lua/koophone/wait.lua",
  },
  install = {
    bin = { koophone = "bin/koophone" },
  },
  -- include/koophone.h, for hosts that link the core in: <luarocks show --rock-dir koophone>/include
  copy_directories = { "include" },
}
