"""koophone benchmark driver (run by `make bench`).

Starts a canned nginx on loopback (bench/nginx.conf.in), runs every client for several
interleaved rounds (A B C A B C ...), and prints one table: client, protocol, median
microseconds per call, ratio to the C floor, peak RSS. Then callgrind instruction counts,
TLS handshakes, bulk runs and memory. Writes the same report to bench/results.md.

Environment: LUA (default lua5.4), BENCH_ROUNDS (default 9), BENCH_QUICK=1 (fewer calls),
BENCH_PARTS (default seq,callgrind,tls,bulk,memory,openresty,resume), BENCH_BUILD (default build/$LUA),
Flags: --write (bench/results.md), --serve (start the server and leave it running), --stop.
KOOPHONE_BENCH_HTTP_PORT / _HTTPS_PORT / _TLS_LOG_PORT / _OPENRESTY_PORT (defaults 22180 / 22143 /
22144 / 22181).
"""
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
RUN = os.path.join(BENCH, "run")
BIN = os.path.join(RUN, "bin")
LUA = os.environ.get("LUA", "lua5.4")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "9"))
# A bulk run lasts tens of milliseconds, and on a shared 2-CPU VM whole stretches of consecutive
# runs take half as long again (every client alike, floor included): three times the rounds, for a
# median that such a stretch does not move.
BULK_ROUNDS = 3 * ROUNDS
QUICK = os.environ.get("BENCH_QUICK") == "1"
PARTS = os.environ.get("BENCH_PARTS", "seq,callgrind,tls,bulk,memory,openresty,resume").split(",")
SIM_PORT = int(os.environ.get("KOOPHONE_BENCH_SIM_PORT", "22280"))  # resume: the simulator, 4 ports
HTTP_PORT = int(os.environ.get("KOOPHONE_BENCH_HTTP_PORT", "22180"))
HTTPS_PORT = int(os.environ.get("KOOPHONE_BENCH_HTTPS_PORT", "22143"))
TLS_LOG_PORT = int(os.environ.get("KOOPHONE_BENCH_TLS_LOG_PORT", "22144"))
OPENRESTY_PORT = int(os.environ.get("KOOPHONE_BENCH_OPENRESTY_PORT", "22181"))
TOKEN = os.path.join(RUN, "token.txt")
TOKEN_1K = os.path.join(RUN, "token1k.txt")
CA = os.path.join(RUN, "ca.pem")
ANSWER_100 = os.path.join(RUN, "answer100.json")  # the 100-job answer, for bench/cjson_cost.lua
LUA_ENV = dict(os.environ,
               LUA_PATH=os.path.join(ROOT, "lua/?.lua") + ";" + os.path.join(ROOT, "lua/?/init.lua") + ";;",
               LUA_CPATH=os.path.join(os.environ.get("BENCH_BUILD", os.path.join(ROOT, "build", LUA)), "?.so") + ";;")

URL = {"http": "http://127.0.0.1:%d/one/v1/instances/unassign" % HTTP_PORT,
       "https": "https://localhost:%d/one/v1/instances/unassign" % HTTPS_PORT}
ENDPOINT = {"http": "http://127.0.0.1:%d/one" % HTTP_PORT,
            "https": "https://localhost:%d/one" % HTTPS_PORT}
BULK_ENDPOINT = "http://127.0.0.1:%d/hundred" % HTTP_PORT
BULK_URL = BULK_ENDPOINT + "/v1/instances/unassign"

report = []  # lines of the results file


def say(line=""):
    print(line, flush=True)
    report.append(line)


def hex32(i):
    return "%032x" % (i * 0x9E3779B97F4A7C15 % (1 << 128))


def answer(n):
    jobs = ",".join('{"instance_id":"bench%04d","job_id":"%s"}' % (k, hex32(k)) for k in range(1, n + 1))
    return '{"data":{"task_id":"RM_%s","cmd_jobs":[%s]},"error_code":"0","error_msg":"ok"}' % (hex32(0), jobs)


def gen_certs():
    cnf = os.path.join(RUN, "openssl.cnf")
    with open(cnf, "w") as f:
        f.write("[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
                "[ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign\n"
                "[leaf]\nbasicConstraints = critical, CA:FALSE\nextendedKeyUsage = serverAuth\n"
                "subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1\n")

    def ossl(*args):
        subprocess.run(("openssl",) + args, cwd=RUN, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key")
    ossl("req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "2", "-subj", "/CN=koophone bench CA",
         "-config", cnf, "-extensions", "ca", "-out", "ca.pem")
    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "server.key")
    ossl("req", "-new", "-key", "server.key", "-subj", "/CN=localhost", "-config", cnf, "-out", "server.csr")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "1",
         "-days", "2", "-sha256", "-extfile", cnf, "-extensions", "leaf", "-out", "server.pem")


def start_nginx():
    os.makedirs(os.path.join(RUN, "tmp"), exist_ok=True)
    gen_certs()
    for path, size in ((TOKEN, 8192), (TOKEN_1K, 1024)):  # IAM tokens are several KB
        with open(path, "w") as f:
            f.write(("BENCH-TOKEN-" + "0123456789abcdef" * 512)[:size] + "\n")
    with open(TOKEN) as f:
        bench_token = f.read().strip()
    with open(os.path.join(BENCH, "nginx.conf.in")) as f:
        conf = f.read()
    subst = {"USER_LINE": "user root;" if os.getuid() == 0 else "", "RUN_DIR": RUN,
             "HTTP_PORT": str(HTTP_PORT), "HTTPS_PORT": str(HTTPS_PORT), "TLS_LOG_PORT": str(TLS_LOG_PORT),
             "ANSWER_1": answer(1)}
    # nginx caps one parameter at 4 KiB: long strings are joined from map variables
    tchunks = [bench_token[i:i + 3000] for i in range(0, len(bench_token), 3000)]
    subst["TOKEN_MAPS"] = "\n".join("    map $host $token_%d { default '%s'; }" % (i, c)
                                     for i, c in enumerate(tchunks))
    subst["TOKEN_VARS"] = "".join("${token_%d}" % i for i in range(len(tchunks)))
    big = answer(100)
    with open(ANSWER_100, "w") as f:
        f.write(big)
    chunks = [big[i:i + 3000] for i in range(0, len(big), 3000)]
    subst["ANSWER_100_MAPS"] = "\n".join("    map $host $answer100_%d { default '%s'; }" % (i, c)
                                          for i, c in enumerate(chunks))
    subst["ANSWER_100_VARS"] = "".join("${answer100_%d}" % i for i in range(len(chunks)))
    for k, v in subst.items():
        conf = conf.replace("@%s@" % k, v)
    with open(os.path.join(RUN, "nginx.conf"), "w") as f:
        f.write(conf)
    stop_nginx()
    subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-p", RUN + "/", "-c",
                    os.path.join(RUN, "nginx.conf"), "-e", os.path.join(RUN, "error.log")], check=True)
    for _ in range(50):
        if subprocess.run(["curl", "-fs", "-o", "/dev/null", "-X", "POST", "-d", "{}", URL["http"]]).returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit("bench nginx did not answer on port %d" % HTTP_PORT)


def stop_nginx():
    stop_pidfile(os.path.join(RUN, "nginx.pid"))


def stop_pidfile(pidfile):
    """SIGQUIT (graceful stop) to the nginx whose master pid is in pidfile, and wait for it to go."""
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"nginx" not in f.read():
                return
        os.kill(pid, 3)
        for _ in range(50):
            if not os.path.exists("/proc/%d" % pid):
                break
            time.sleep(0.1)
    except (OSError, ValueError):
        pass


def run(cmd, env=None):
    """Runs cmd under bench/run/bin/peak_rss; returns (stdout, peak RSS in KiB, CPU seconds)."""
    rss_file = os.path.join(RUN, "peak_rss.txt")
    p = subprocess.Popen([os.path.join(BIN, "peak_rss"), rss_file] + cmd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    out, err = p.stdout.read(), p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)  # includes the command, which peak_rss waited for
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s%s" % (" ".join(cmd[:3]), p.returncode, out.decode(),
                                                     err.decode()[-2000:]))
    with open(rss_file) as f:
        return out.decode(), int(f.read()), usage.ru_utime + usage.ru_stime


def per_call(out):
    """(wall µs, CPU µs) per call as printed by a client."""
    wall = float(re.search(r"^us_per_call ([0-9.]+)", out, re.M).group(1))
    return wall, float(re.search(r"^cpu_us_per_call ([0-9.]+)", out, re.M).group(1))


def ca_args(proto):
    return [CA] if proto == "https" else []


# ---- sequential single-pair calls -------------------------------------------------------

def curl_cli(proto, calls):
    """One curl process per call, as a shell script would; timed from the driver."""
    hdr = os.path.join(RUN, "curl-headers.txt")
    with open(TOKEN) as t, open(hdr, "w") as h:
        h.write("X-Auth-Token: %s\nContent-Type: application/json\nAccept: application/json\nExpect:\n"
                % t.read().strip())
    body = json.dumps({"user_instances": [{"user_id": "u-1", "instance_id": "bench0001"}]})
    peak, cpu = 0, 0.0
    t0 = time.monotonic()
    for _ in range(calls):
        out, rss, secs = run(["curl", "-sS", "--fail-with-body", "-H", "@" + hdr, "-H", "x-request-id: %s" % uuid.uuid4(),
                              "--data-binary", body] + (["--cacert", CA] if proto == "https" else []) + [URL[proto]])
        res = json.loads(out)
        if res["error_code"] != "0" or res["data"]["cmd_jobs"][0]["instance_id"] != "bench0001":
            raise RuntimeError("curl: bad answer")
        peak, cpu = max(peak, rss), cpu + secs
    return (time.monotonic() - t0) * 1e6 / calls, cpu * 1e6 / calls, peak


def seq_clients():
    """(name, calls per run by protocol, function(proto, calls) -> (wall µs, CPU µs, peak KiB))."""
    scale = 5 if QUICK else 1

    def prog(cmd_of, env=None):
        def f(proto, calls):
            out, rss, _ = run(cmd_of(proto, calls), env)
            return per_call(out) + (rss,)
        return f

    def lua(script, *args):
        return [LUA, "bench/" + script] + list(args)

    n = 3000 // scale
    return [
        ("C floor (libcurl easy)", {"http": n, "https": n},
         prog(lambda p, c: [os.path.join(BIN, "floor"), URL[p], str(c), "20", TOKEN] + ca_args(p))),
        ("koophone client:unassign", {"http": n, "https": n},
         prog(lambda p, c: lua("koophone_seq.lua", "client", ENDPOINT[p], str(c), "20", TOKEN) + ca_args(p), LUA_ENV)),
        ("koophone.unassign", {"http": n, "https": n},
         prog(lambda p, c: lua("koophone_seq.lua", "module", ENDPOINT[p], str(c), "20", TOKEN) + ca_args(p), LUA_ENV)),
        ("koophone.client{}:unassign (retry policy)", {"http": n, "https": n},
         prog(lambda p, c: lua("koophone_seq.lua", "policy", ENDPOINT[p], str(c), "20", TOKEN) + ca_args(p), LUA_ENV)),
        ("LuaSocket + cjson (new connection per call)", {"http": 1000 // scale, "https": 30 // scale},
         prog(lambda p, c: lua("luasocket_seq.lua", URL[p], str(c), "5", TOKEN) + ca_args(p), LUA_ENV)),
        ("Python http.client + json", {"http": 1500 // scale, "https": 1500 // scale},
         prog(lambda p, c: ["python3", "bench/python_seq.py", URL[p], str(c), "20", TOKEN] + ca_args(p))),
        ("curl CLI, one process per call", {"http": 30 // scale, "https": 30 // scale}, curl_cli),
    ]


def sequential():
    clients = seq_clients()
    wall, cpu, rss = {}, {}, {}
    for r in range(ROUNDS):
        for proto in ("http", "https"):
            for name, calls, f in clients:  # interleaved: every client once per round
                w, c, kb = f(proto, calls[proto])
                wall.setdefault((name, proto), []).append(w)
                cpu.setdefault((name, proto), []).append(c)
                rss[(name, proto)] = max(rss.get((name, proto), 0), kb)
        print("  round %d/%d done" % (r + 1, ROUNDS), flush=True)
    say("## Sequential single-pair calls (%d interleaved rounds, median)" % ROUNDS)
    say()
    say("Wall time is what a caller waits; CPU time (user + system, of the client process only) is "
        "what the client itself spends, and is steadier on a busy machine.")
    say()
    say("| client | protocol | µs per call | × C floor | CPU µs per call | × C floor | peak RSS |")
    say("|---|---|---:|---:|---:|---:|---:|")
    medians = {}
    for proto in ("http", "https"):
        floor_w = statistics.median(wall[(clients[0][0], proto)])
        floor_c = statistics.median(cpu[(clients[0][0], proto)])
        for name, _, _ in clients:
            w, c = statistics.median(wall[(name, proto)]), statistics.median(cpu[(name, proto)])
            medians[(name, proto)] = (w, c)
            say("| %s | %s | %.1f | %.2f | %.1f | %.2f | %.1f MiB |"
                % (name, proto.upper(), w, w / floor_w, c, c / floor_c, rss[(name, proto)] / 1024))
    say()
    return medians


# ---- callgrind: user-space instructions per call ----------------------------------------

def callgrind_total(cmd, env, name):
    out_file = os.path.join(RUN, "callgrind", name + ".out")
    os.makedirs(os.path.dirname(out_file), exist_ok=True)
    run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out_file] + cmd, env)
    with open(out_file) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise RuntimeError("no totals in " + out_file)


def callgrind():
    say("## User-space instructions per call (callgrind, (I(1100 calls) − I(100 calls)) / 1000)")
    say()
    say("| client | protocol, token | instructions per call | × C floor | koophone − floor |")
    say("|---|---|---:|---:|---:|")
    per_call = {}
    # The 1 KiB row shows the fixed cost: libcurl 7.88 copies every custom header through its own
    # printf one byte at a time, which makes the floor grow with the token.
    for proto, token, label in (("http", TOKEN, "HTTP, 8 KiB"), ("https", TOKEN, "HTTPS, 8 KiB"),
                                ("http", TOKEN_1K, "HTTP, 1 KiB")):
        progs = [("C floor", [os.path.join(BIN, "floor"), URL[proto]], None),
                 ("koophone client:unassign", [LUA, "bench/koophone_seq.lua", "client", ENDPOINT[proto]], LUA_ENV),
                 ("koophone with on_event", [LUA, "bench/koophone_seq.lua", "events", ENDPOINT[proto]], LUA_ENV)]
        if token == TOKEN:  # the credentials rows: next to the token call with its 8 KiB token
            progs += [("koophone.client (retry policy)", [LUA, "bench/koophone_seq.lua", "policy", ENDPOINT[proto]], LUA_ENV),
                      ("koophone, AK/SK signed", [LUA, "bench/koophone_seq.lua", "aksk", ENDPOINT[proto]], LUA_ENV),
                      ("koophone, IAM token provider", [LUA, "bench/koophone_seq.lua", "provider", ENDPOINT[proto]], LUA_ENV),
                      ("koophone client:list_instances", [LUA, "bench/koophone_seq.lua", "list", ENDPOINT[proto]], LUA_ENV)]
        for name, cmd, env in progs:
            counts = [callgrind_total(cmd + [str(calls), "0", token] + ca_args(proto), env, "%s-%s-%s-%d" % (
                "".join(ch if ch.isalnum() else "-" for ch in name.lower()), proto,
                os.path.basename(token)[:-4], calls)) for calls in (100, 1100)]
            per_call[(name, label)] = (counts[1] - counts[0]) / 1000
        floor = per_call[("C floor", label)]
        for name, _, _ in progs:
            v = per_call[(name, label)]
            say("| %s | %s | %.0f | %.2f | %s |" % (name, label, v, v / floor,
                                                    "%.0f" % (v - floor) if v != floor else ""))
    say()
    say("Profiles: bench/run/callgrind/*.out (`callgrind_annotate --inclusive=yes FILE`).")
    say()
    return per_call


# ---- TLS handshakes ---------------------------------------------------------------------

def tls_handshakes():
    log = os.path.join(RUN, "tls.log")
    endpoint = "https://localhost:%d/one" % TLS_LOG_PORT
    open(log, "w").close()  # nginx appends; the truncated file counts this run only
    run([LUA, "bench/koophone_seq.lua", "client", endpoint, "1000", "0", TOKEN, CA], LUA_ENV)
    time.sleep(0.2)
    with open(log) as f:
        lines = [line.split() for line in f if line.strip()]
    connections = len({fields[0] for fields in lines})
    full = len({fields[0] for fields in lines if fields[2] != "r"})
    say("## TLS")
    say()
    say("1,000 HTTPS calls on one koophone client: %d requests seen by nginx on %d connection(s), "
        "%d full TLS handshake(s) (from nginx's `$connection` / `$ssl_session_reused` log)." % (len(lines), connections, full))
    say()


# ---- bulk -------------------------------------------------------------------------------

def has_bulk():
    probe = ("local k = require 'koophone'; local ok = k.client and k.new{endpoint='http://127.0.0.1:1'}"
             ".unassign_many and k.client{endpoint='http://127.0.0.1:1'}.unassign_all; os.exit(ok and 0 or 3)")
    return subprocess.run([LUA, "-e", probe], env=LUA_ENV, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def seconds_ms(out):
    """Every "seconds <s>" line of a bench program's output, in milliseconds."""
    return [float(v) * 1000 for v in re.findall(r"seconds ([0-9.]+)", out)]


def bulk_cmd(conc, *flags):
    return [LUA, "bench/bulk.lua", BULK_ENDPOINT, TOKEN, str(conc), "10000"] + list(flags)


def floor_cmd(conc, requests=100):
    return [os.path.join(BIN, "multi_floor"), BULK_URL, str(requests), "100", str(conc), TOKEN]


def bulk():
    say("## Bulk: 10,000 pairs in 100 requests of 100 pairs (median of %d interleaved rounds)" % BULK_ROUNDS)
    say()
    if not has_bulk():
        say("Not measured: this build has no `koophone.client{}:unassign_all` / core `unassign_many` "
            "yet (the bulk issue). The C curl_multi floor alone:")
        say()
    bulk_ok = has_bulk()
    say("Each koophone process calls `unassign_all` twice on one client: the first call is what a "
        "script started for the job sees (its heap grows page by page), the second what a "
        "long-running process sees. *Counts only* is a fresh process with `keep_results = false` "
        "(no per-pair result tables; `on_result` would stream them).")
    say()
    say("| concurrency | curl_multi floor (ms) | koophone, fresh process (ms) | × floor "
        "| second call (ms) | × floor | counts only (ms) | × floor |")
    say("|---:|---:|---:|---:|---:|---:|---:|---:|")
    floor8 = None
    for conc in (1, 4, 8):
        floors, fresh, warm, counts = [], [], [], []
        for _ in range(BULK_ROUNDS):
            floors += seconds_ms(run(floor_cmd(conc))[0])
            if bulk_ok:
                first, second = seconds_ms(run(bulk_cmd(conc, "--runs", "2"), LUA_ENV)[0])
                fresh.append(first)
                warm.append(second)
                counts += seconds_ms(run(bulk_cmd(conc, "--counts-only"), LUA_ENV)[0])
        f = floor8 = statistics.median(floors)
        if bulk_ok:
            cells = []
            for values in (fresh, warm, counts):
                o = statistics.median(values)
                cells += ["%.1f" % o, "%.2f" % (o / f)]
            say("| %d | %.1f | %s |" % (conc, f, " | ".join(cells)))
        else:
            say("| %d | %.1f | — | — | — | — | — | — |" % (conc, f))
    say()
    if bulk_ok:
        bulk_bounds(floor8)
        bulk_instructions()
    return bulk_ok


def bulk_bounds(floor_ms):
    """What any run must spend beyond the floor's work, measured here: lua-cjson, and memory."""
    cjson = statistics.median(seconds_ms(run([LUA, "bench/cjson_cost.lua", ANSWER_100, "100"], LUA_ENV)[0])[0]
                              for _ in range(ROUNDS))
    page_us = float(re.search(r"us_per_page ([0-9.]+)", run([os.path.join(BIN, "page_touch")])[0]).group(1))
    kept = [float(v) for v in re.search(r"allocated_kib (\d+) live_kib (\d+)",
                                         run(bulk_cmd(8, "--alloc"), LUA_ENV)[0]).groups()]
    counted = float(re.search(r"allocated_kib (\d+)", run(bulk_cmd(8, "--alloc", "--counts-only"),
                                                          LUA_ENV)[0]).group(1))
    results_ms = kept[1] * 1024 / 4096 * page_us / 1000
    say("What a run must spend beyond the floor's work, measured on this machine in this run "
        "(concurrency 8, floor %.1f ms):" % floor_ms)
    say()
    say("- lua-cjson encoding the 100 request bodies and decoding the 100 answers, nothing else "
        "(bench/cjson_cost.lua, fresh process): %.1f ms, %.0f%% of the floor. The floor writes its "
        "bodies with snprintf and checks its answers with strstr." % (cjson, 100 * cjson / floor_ms))
    say("- Memory: one `unassign_all` of 10,000 pairs allocates %.1f MiB (Lua's count, collector "
        "stopped), of which %.1f MiB are the per-pair results that stay live; counts only, %.1f MiB. "
        "A fresh page costs this machine %.1f µs (bench/page_touch.c), so a fresh process spends "
        "about %.1f ms only on first touching the results' pages (%.0f%% of the floor)."
        % (kept[0] / 1024, kept[1] / 1024, counted / 1024, page_us, results_ms, 100 * results_ms / floor_ms))
    say("- Together, these two alone come to about %.2f× the floor with results kept and %.2f× for "
        "counts only (cjson alone): the sum of the separate measurements above."
        % (1 + (cjson + results_ms) / floor_ms, 1 + cjson / floor_ms))
    say()


def inclusive(out_file, function):
    """Inclusive instruction count of a function in a callgrind profile (0 when absent)."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", out_file],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode()
    counts = [int(m.group(1).replace(",", "")) for m in
              re.finditer(r"^\s*([\d,]+) \([^)]*\)\s+\S*:%s(?: \[.*)?$" % re.escape(function), text, re.M)]
    return max(counts, default=0)


def per_unit(cmd_of, env, name, small, large, functions=()):
    """Instructions of one unit of work: (I(large) - I(small)) / (large - small) under callgrind,
    so process start and set-up cancel out; also each function's inclusive count, per unit."""
    totals = [callgrind_total(cmd_of(n), env, "%s-%d" % (name, n)) for n in (small, large)]
    files = [os.path.join(RUN, "callgrind", "%s-%d.out" % (name, n)) for n in (small, large)]
    units = large - small
    return (totals[1] - totals[0]) / units, {
        f: (inclusive(files[1], f) - inclusive(files[0], f)) / units for f in functions}


def bulk_instructions():
    """Where the instructions of a concurrency-8 run go, under callgrind."""
    floor, _ = per_unit(lambda n: floor_cmd(8, 100 * n), None, "bulk-floor", 1, 3)
    parts = ("curl_multi_perform", "kp_map_unassign", "kp_push_request_body", "kp_row_entry",
             "kp_start_many", "kp_many_next")
    ours, part = per_unit(lambda n: bulk_cmd(8, "--runs", str(n)), LUA_ENV, "bulk-koophone", 1, 3, parts)
    cjson, _ = per_unit(lambda n: [LUA, "bench/cjson_cost.lua", ANSWER_100, str(100 * n)], LUA_ENV,
                        "bulk-cjson", 1, 3)
    lua_layer = ours - part["kp_start_many"] - part["kp_many_next"] - part["kp_row_entry"]
    say("Instructions per 10,000 pairs at concurrency 8 (callgrind, (I(3 calls) − I(1 call)) / 2 in "
        "one process, so neither process start nor building the input counts): curl_multi floor "
        "%.0fM, koophone %.0fM (%.2f×). Of koophone's: libcurl (`curl_multi_perform`) %.0fM; answers "
        "decoded by cjson and checked (`kp_map_unassign`) %.0fM; pairs checked again and bodies "
        "encoded by cjson (`kp_push_request_body`) %.0fM; row entries checked, deduplicated and made "
        "(`kp_row_entry`, with the collector work their allocation drives) %.0fM; the Lua bulk layer "
        "(`koophone.bulk`, `koophone.run`, `koophone.rows`) %.0fM. lua-cjson alone, encoding 100 "
        "bodies and decoding 100 answers (bench/cjson_cost.lua, same method): %.0fM, %.0f%% of the "
        "floor's instructions."
        % (floor / 1e6, ours / 1e6, ours / floor, part["curl_multi_perform"] / 1e6,
           part["kp_map_unassign"] / 1e6, part["kp_push_request_body"] / 1e6, part["kp_row_entry"] / 1e6,
           lua_layer / 1e6, cjson / 1e6, 100 * cjson / floor))
    say()


# ---- memory -----------------------------------------------------------------------------

def memory(bulk_ok):
    calls = 20000 if QUICK else 100000
    out, peak, _ = run([LUA, "bench/koophone_rss.lua", ENDPOINT["http"], str(calls), TOKEN], LUA_ENV)
    points = [tuple(int(x) for x in line.split()[1:]) for line in out.splitlines() if line.startswith("rss_kb")]
    say("## Memory")
    say()
    (n1, kb1), (n2, kb2) = points[0], points[-1]
    say("- %d sequential calls on one client: RSS %.2f MiB after %d calls, %.2f MiB after %d "
        "(growth %d KiB); peak RSS %.2f MiB." % (calls, kb1 / 1024, n1, kb2 / 1024, n2, kb2 - kb1, peak / 1024))
    if bulk_ok:
        rows = 100000 if QUICK else 1000000
        path = os.path.join(RUN, "pairs.csv")
        with open(path, "w") as f:
            f.write("".join("u%d-%d,bench%04d\n" % (i // 100, i % 100 + 1, i % 100 + 1) for i in range(rows)))
        out, peak, _ = run([LUA, "bench/bulk.lua", BULK_ENDPOINT, TOKEN, "8", str(rows), "--csv", path], LUA_ENV)
        secs = float(re.search(r"seconds ([0-9.]+)", out).group(1))
        say("- `unassign_all` streaming %d pairs from a file (concurrency 8): peak RSS %.1f MiB, %.1f s."
            % (rows, peak / 1024, secs))
    else:
        say("- `unassign_all` streaming 1,000,000 pairs: not measured (no `unassign_all` in this build).")
    say()


# ---- OpenResty: the example admin endpoint under concurrent load ----------------------------

def start_example():
    """examples/openresty in Debian's nginx, calling the canned server; returns its run directory."""
    d = os.path.join(RUN, "openresty")
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    with open(os.path.join(ROOT, "examples", "openresty", "nginx.conf")) as f:
        conf = f.read()
    subst = {"PREFIX": d, "PORT": str(OPENRESTY_PORT), "USER": "user root;" if os.getuid() == 0 else "",
             "LUA_PATH": os.path.join(ROOT, "lua/?.lua") + ";" + os.path.join(ROOT, "examples/openresty/?.lua"),
             "LUA_CPATH": os.path.join(ROOT, "build", "luajit", "?.so")}
    for k, v in subst.items():
        conf = conf.replace("@%s@" % k, v)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)
    stop_pidfile(os.path.join(d, "nginx.pid"))
    with open(TOKEN) as t:
        env = dict(os.environ, KOOPHONE_TOKEN=t.read().strip(), KOOPHONE_ENDPOINT=ENDPOINT["http"])
    subprocess.run([shutil.which("nginx") or "/usr/sbin/nginx", "-p", d + "/", "-c", os.path.join(d, "nginx.conf"),
                    "-e", os.path.join(d, "error.log")], check=True, env=env)
    for _ in range(50):
        if subprocess.run(["curl", "-fs", "-o", "/dev/null", "http://127.0.0.1:%d/health" % OPENRESTY_PORT]).returncode == 0:
            return d
        time.sleep(0.1)
    raise SystemExit("the example nginx did not answer on port %d" % OPENRESTY_PORT)


def openresty_load():
    d = start_example()
    body = os.path.join(RUN, "admin_body.json")
    with open(body, "w") as f:
        f.write(json.dumps({"pairs": [{"user_id": "u-1", "instance_id": "bench0001"}]}))
    targets = [("example `POST /admin/unassign` (koophone.ngx, threads=4, max_in_flight=16)",
                "http://127.0.0.1:%d/admin/unassign" % OPENRESTY_PORT),
               ("plain nginx location (`return 200`, the canned KooPhone answer)", URL["http"])]
    requests = 400 if QUICK else 2000
    rps, p99 = {}, {}
    try:
        for _ in range(ROUNDS):
            for conc in (8, 32):
                for name, url in targets:  # interleaved: both targets once per round
                    out = run([os.path.join(BIN, "load"), url, body, str(conc), str(requests)])[0]
                    fields = dict(line.split() for line in out.splitlines())
                    if fields["non200"] != "0":
                        raise RuntimeError("load: %s answers that were not 200 from %s" % (fields["non200"], url))
                    rps.setdefault((name, conc), []).append(float(fields["rps"]))
                    p99.setdefault((name, conc), []).append(float(fields["p99_ms"]))
    finally:
        stop_pidfile(os.path.join(d, "nginx.pid"))
    say("## OpenResty: the example admin endpoint under concurrent load (median of %d rounds)" % ROUNDS)
    say()
    say("bench/load.c (curl_multi, closed loop: each client sends its next request when its answer "
        "is in), %d requests per run over kept-alive loopback connections, one nginx worker each; "
        "the example calls the canned server over HTTP. Every answer must be 200." % requests)
    say()
    say("| target | clients | requests/s | p99 (ms) |")
    say("|---|---:|---:|---:|")
    for conc in (8, 32):
        for name, _ in targets:
            say("| %s | %d | %.0f | %.2f |" % (name, conc, statistics.median(rps[(name, conc)]),
                                              statistics.median(p99[(name, conc)])))
    say()


def resume_lost():
    """Resuming 4 lost 100-pair batches against the simulator: sending them again vs reading first."""
    env = dict(LUA_ENV, KOOPHONE_SIM_DIR=os.path.join(RUN, "sim"),
               KOOPHONE_SIM_HTTP_PORT=str(SIM_PORT), KOOPHONE_SIM_HTTPS_PORT=str(SIM_PORT + 1),
               KOOPHONE_SIM_WRONGNAME_PORT=str(SIM_PORT + 2), KOOPHONE_SIM_TARGET_PORT=str(SIM_PORT + 3))
    env["LUA_PATH"] = os.path.join(ROOT, "spec/?.lua") + ";" + env["LUA_PATH"]
    simctl = os.path.join(ROOT, "sim", "simctl")
    subprocess.run([simctl, "start"], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    try:
        say("## Resuming 4 lost batches of 100 pairs (bench/resume_lost.lua, the simulator)")
        say()
        say("A journal with 4 `send` records that never ended, their pairs unassigned by the server: "
            "`settle = false` sends them again (each batch 2210, bisected to single pairs); the default "
            "reads the bindings (ListInstances) first. Concurrency 4, loopback.")
        say()
        say("```")
        for tenant in ("1000", "10000"):
            out = subprocess.run([LUA, "bench/resume_lost.lua", tenant], env=env, cwd=ROOT, check=True,
                                 stdout=subprocess.PIPE).stdout.decode()
            for line in out.splitlines():
                say(line)
        say("```")
        say()
    finally:
        subprocess.run([simctl, "stop"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        pass
    curl = subprocess.run(["curl", "--version"], stdout=subprocess.PIPE).stdout.decode().split("\n")[0]
    lua = subprocess.run([LUA, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT).stdout.decode().strip()
    return "%s, %d CPUs, %s %s; %s; %s; Python %s" % (
        cpu, os.cpu_count(), platform.system(), platform.release(), lua, curl, platform.python_version())


def main():
    os.makedirs(BIN, exist_ok=True)
    if "--stop" in sys.argv:
        return stop_nginx()
    start_nginx()
    if "--serve" in sys.argv:  # leave the server running for experiments by hand
        return print("bench server: %s %s %s" % (URL["http"], URL["https"], BULK_URL))
    try:
        say("# koophone benchmark results")
        say()
        say("Run by `make bench` on %s UTC." % datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M"))
        say("Machine: %s." % machine())
        say("Server: nginx on loopback answering from memory (bench/nginx.conf.in), 8 KiB token, "
            "x-request-id UUIDv4, JSON body of one pair; every answer parsed and checked.")
        say()
        if "seq" in PARTS:
            sequential()
        if "callgrind" in PARTS:
            callgrind()
        if "tls" in PARTS:
            tls_handshakes()
        bulk_ok = bulk() if "bulk" in PARTS else has_bulk()
        if "memory" in PARTS:
            memory(bulk_ok)
        if "openresty" in PARTS:
            openresty_load()
        if "resume" in PARTS:
            resume_lost()
    finally:
        stop_nginx()
    if "--write" in sys.argv:
        with open(os.path.join(BENCH, "results.md"), "w") as f:
            f.write("\n".join(report) + "\n")
        print("wrote bench/results.md")


main()
