#!/usr/bin/env python3
"""scripts/propagation.py TOKENVAULT HOME_A SOCKET_B N: how long a change made through host A takes to be
served by host B's daemon. N times: `tokenvault put` (a new value) then `tokenvault rm` through host A's
CLI; from the moment each command has returned (the change is committed and acknowledged), one client on
B's socket reads until it sees the new value (or not_found). Prints one JSON line: count, p50/p99/max ms."""
import json
import os
import socket
import subprocess
import sys
import time

tokenvault, home_a, sock_b, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
env = dict(os.environ, TOKENVAULT_HOME=home_a)
conn = socket.socket(socket.AF_UNIX)
conn.connect(sock_b)
reader = conn.makefile("rb")
seq = 0


def get(name):
    global seq
    seq += 1
    conn.sendall(json.dumps({"op": "get", "name": name, "id": seq}).encode() + b"\n")
    reply = json.loads(reader.readline())
    return reply.get("token") if reply.get("ok") else None


def until(name, want):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if get(name) == want:
            return
    raise SystemExit("host B never served %r for %s" % (want, name))


samples = []
for i in range(n):
    value = "EAAB-propagation-%d-%d" % (i, time.time_ns())
    subprocess.run([tokenvault, "put", "prop/tok", "--force"], input=value.encode(), env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    until("prop/tok", value)
    samples.append((time.monotonic() - t0) * 1000)
    subprocess.run([tokenvault, "rm", "prop/tok"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    until("prop/tok", None)
    samples.append((time.monotonic() - t0) * 1000)

samples.sort()
pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
print(json.dumps({"changes": len(samples), "p50_ms": round(pick(0.5), 2), "p99_ms": round(pick(0.99), 2),
                  "max_ms": round(samples[-1], 2)}))
