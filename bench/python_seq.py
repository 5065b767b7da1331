"""Python 3 http.client with one persistent connection + json: same headers and body.

Usage: python3 python_seq.py URL CALLS WARMUP TOKEN_FILE [CAFILE]
Prints "us_per_call <microseconds>" (wall) and "cpu_us_per_call <microseconds>" (CPU).
"""
import http.client
import json
import ssl
import sys
import time
import urllib.parse
import uuid


def main():
    url, calls, warmup, token_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    cafile = sys.argv[5] if len(sys.argv) > 5 else None
    with open(token_file, encoding="ascii") as f:
        token = f.read().strip()
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, u.port,
                                           context=ssl.create_default_context(cafile=cafile))
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port)

    def call():
        body = json.dumps({"user_instances": [{"user_id": "u-1", "instance_id": "bench0001"}]})
        conn.request("POST", u.path, body, {
            "x-request-id": str(uuid.uuid4()), "X-Auth-Token": token,
            "Content-Type": "application/json", "Accept": "application/json",
        })
        resp = conn.getresponse()
        res = json.loads(resp.read())
        if resp.status != 200 or res["error_code"] != "0" or \
                res["data"]["cmd_jobs"][0]["instance_id"] != "bench0001":
            raise SystemExit("bad answer: %d" % resp.status)

    for _ in range(warmup):
        call()
    t0, c0 = time.monotonic(), time.process_time()
    for _ in range(calls):
        call()
    print("us_per_call %.3f" % ((time.monotonic() - t0) * 1e6 / max(calls, 1)))
    print("cpu_us_per_call %.3f" % ((time.process_time() - c0) * 1e6 / max(calls, 1)))


main()
