#!/usr/bin/env python3
"""Turns scripts/bench.sh's results (JSON lines) into Docs/BENCHMARKS.md."""
import datetime
import json
import os
import platform
import subprocess
import sys


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
by = lambda name: [r for r in rows if r["bench"] == name]
one = lambda name: (by(name) or [{}])[0]

cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
mem = sh("free -g | awk '/Mem:/ {print $2}'")
fs = sh("df -T /tmp | awk 'NR==2 {print $2}'")
sqlite = sh("sqlite3 --version 2>/dev/null | cut -d' ' -f1") or "3.40 (system libsqlite3)"
sodium = sh("dpkg -s libsodium23 2>/dev/null | awk '/Version/ {print $2}'")

out = []
p = out.append
p("# Benchmarks\n")
p(f"Measured {datetime.date.today().isoformat()} by `make bench` (`scripts/bench.sh`; release build; "
  f"{rows and 'each load run: 1 s warm-up, then the measured seconds'}).\n")
p(f"Machine: {os.cpu_count()} cores ({cpu}), {mem} GiB, Linux {platform.release()}, /tmp on {fs}; "
  f"SQLite {sqlite}, libsodium {sodium}. Client and server share the same 2 cores, so every figure is for this pair "
  "on this machine; compare ratios, which survive a noisy neighbour better than absolute numbers.\n")

fsync = one("fsync").get("us")
p("## Audited `get` over the socket: daemon vs. tvfloor (`../shared/loadgen/tvload`, same run)\n")
p("| clients | daemon req/s | floor req/s | ratio | daemon p50 µs | floor p50 µs | daemon p99 µs | floor p99 µs | p99 ratio | errors |")
p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
daemon = {r["result"]["clients"]: r["result"] for r in by("tvload-daemon")}
floor = {r["result"]["clients"]: r["result"] for r in by("tvload-floor")}
for c in sorted(daemon):
    d, f = daemon[c], floor.get(c, {})
    errs = sum(d["errors"].values())
    ratio = d["rps"] / f["rps"] if f else 0
    p(f"| {c} | {d['rps']:,.0f} | {f.get('rps', 0):,.0f} | {ratio:.2f}× | {d['p50_us']:,.0f} | {f.get('p50_us', 0):,.0f} | "
      f"{d['p99_us']:,.0f} | {f.get('p99_us', 0):,.0f} | {d['p99_us'] / max(f.get('p99_us', 1), 1):.2f}× | {errs} |")
p("")
if 32 in daemon and 128 in daemon and 1 in daemon and 32 in floor and 1 in floor:
    t = [
        ("32 clients: throughput ≥ 0.7× tvfloor", daemon[32]["rps"] / floor[32]["rps"], 0.7, True),
        ("32 clients: p99 ≤ 1.5× tvfloor", daemon[32]["p99_us"] / floor[32]["p99_us"], 1.5, False),
        ("1 client: p50 ≤ 1.5× tvfloor", daemon[1]["p50_us"] / floor[1]["p50_us"], 1.5, False),
        ("128 clients: throughput ≥ 0.9× the daemon's 32-client figure", daemon[128]["rps"] / daemon[32]["rps"], 0.9, True),
    ]
    p("| target | measured | met |")
    p("| --- | ---: | --- |")
    for name, value, bound, higher in t:
        ok = value >= bound if higher else value <= bound
        p(f"| {name} | {value:.2f}× | {'yes' if ok else 'no'} |")
    p(f"| 128 clients: no errors | {sum(daemon[128]['errors'].values())} errors | {'yes' if not sum(daemon[128]['errors'].values()) else 'no'} |")
    p("")

p("## The project's load generator (`tokenvault bench load`), with the raw-echo floor beside it\n")
p(f"`fdatasync` of a small write on the audit filesystem: **{fsync} µs** (median of 200). The echo floor is a "
  "thread-per-connection server on a Unix socket in the same directory that answers each line at once: the "
  "cost of the socket round trips alone.\n")
p("| op | clients | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | errors | echo req/s | vault / echo |")
p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for r in by("load-get") + by("load-proof") + by("load-list"):
    x = r["result"]
    e = x.get("echo_floor")
    p(f"| {x['operation']} | {x['clients']} | {x['rps']:,.0f} | {x['p50_us']:,.0f} | {x['p90_us']:,.0f} | {x['p99_us']:,.0f} | "
      f"{x['p999_us']:,.0f} | {x['max']:,.0f} | {sum(x['errors'].values())} | {e['rps']:,.0f} | {x['rps'] / e['rps']:.2f}× |"
      if e else
      f"| {x['operation']} | {x['clients']} | {x['rps']:,.0f} | {x['p50_us']:,.0f} | {x['p90_us']:,.0f} | {x['p99_us']:,.0f} | "
      f"{x['p999_us']:,.0f} | {x['max']:,.0f} | {sum(x['errors'].values())} | – | – |")
p("")
p("## Everything else\n")
p("| what | figure | target |")
p("| --- | ---: | --- |")
cli = one("cli-get")
p(f"| CLI `tokenvault get` cold start (process start, open, unwrap, audit, print) | {cli.get('median_ms', 0):.1f} ms median, {cli.get('min_ms', 0):.1f} ms min | – (`pass show` ≈ 23 ms) |")
p(f"| `key rotate` (re-wrap only), 100,000 tokens | {one('key-rotate').get('seconds', 0):.2f} s | – |")
rs = [r["seconds"] for r in by("reseal-100k")]
if rs:
    p(f"| `key rotate --reseal`, 100,000 tokens (3 runs) | {' / '.join(f'{x:.2f}' for x in rs)} s | < 1.5 s (C: 0.4 s) |")
rss = one("idle-rss").get("kb", 0)
p(f"| idle daemon with 100,000 tokens, resident memory | {rss / 1024:.1f} MB | < 50 MB |")
v = one("audit-verify")
if v:
    p(f"| `audit verify`, 1,000,000 records | {v['seconds']:.2f} s = {v['records'] / v['seconds']:,.0f} records/s | ≥ 1,000,000 records/s |")
p("")
p("Reproduce: `make bench` (about 2–3 minutes after the release build). Raw results: "
  "`$BENCH_DIR/results.jsonl` (default `/tmp/tokenvault-bench`).")
print("\n".join(out))
