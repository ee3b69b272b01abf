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
  "the interleaved tvload runs: 0.5 s warm-up, then 2 s measured, 3 runs each at 1 and 8 clients; at 32 and 128, 6 runs of 1.5 s; "
  "the other load runs: 0.5 s warm-up, then 2 s).\n")
p(f"Machine: {os.cpu_count()} cores ({cpu}), {mem} GiB, Linux {platform.release()}, /tmp on {fs}; "
  f"SQLite {sqlite}, libsodium {sodium}. Client and server share the same 2 cores, so every figure is for this pair "
  "on this machine; compare ratios, which survive a noisy neighbour better than absolute numbers.\n")

fsync = one("fsync").get("us")
def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return (xs[n // 2] + xs[(n - 1) // 2]) / 2 if xs else 0


def runs(name):
    """Per client count: the median run's figures (rps and latencies each the median over the runs)."""
    grouped = {}
    for r in by(name):
        grouped.setdefault(r["result"]["clients"], []).append(r["result"])
    out = {}
    for c, rs in grouped.items():
        m = {k: median([r[k] for r in rs]) for k in ("rps", "p50_us", "p99_us")}
        m["runs"] = len(rs)
        m["rps_min"], m["rps_max"] = min(r["rps"] for r in rs), max(r["rps"] for r in rs)
        m["errors"] = {"all": sum(sum(r["errors"].values()) for r in rs)}
        out[c] = m
    return out


p("## Audited `get` over the socket: daemon vs. tvfloor (the project's shared load generator `tvload`, same run)\n")
p("Both servers run side by side; at each client count `tvload` alternates between them (daemon, tvfloor, "
  "daemon, …), and the 32- and 128-client runs alternate with each other too, so a noisy neighbour hits "
  "what is compared alike. Each figure is the median of the runs (range of req/s in brackets); the ratios "
  "are of those medians.\n")
p("| clients | daemon req/s | floor req/s | ratio | daemon p50 µs | floor p50 µs | daemon p99 µs | floor p99 µs | p99 ratio | errors |")
p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
daemon = runs("tvload-daemon")
floor = runs("tvload-floor")
for c in sorted(daemon):
    d, f = daemon[c], floor.get(c, {})
    errs = sum(d["errors"].values())
    ratio = d["rps"] / f["rps"] if f else 0
    p(f"| {c} | {d['rps']:,.0f} [{d['rps_min']:,.0f}–{d['rps_max']:,.0f}] | {f.get('rps', 0):,.0f} [{f.get('rps_min', 0):,.0f}–{f.get('rps_max', 0):,.0f}] "
      f"| {ratio:.2f}× | {d['p50_us']:,.0f} | {f.get('p50_us', 0):,.0f} | "
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

nogc = {r["result"]["clients"]: r["result"] for r in by("tvload-daemon-nogc")}
if nogc:
    p("### Group commit on and off (the daemon, tvload)\n")
    p("| clients | with group commit req/s | one fdatasync per read req/s | p50 µs with / without |")
    p("| ---: | ---: | ---: | ---: |")
    for c in sorted(nogc):
        d = daemon.get(c, {})
        p(f"| {c} | {d.get('rps', 0):,.0f} | {nogc[c]['rps']:,.0f} | {d.get('p50_us', 0):,.0f} / {nogc[c]['p50_us']:,.0f} |")
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
vs = by("audit-verify")
if vs:
    mid = median([v["seconds"] for v in vs])
    each = " / ".join("%.2f" % v["seconds"] for v in vs)
    p(f"| `audit verify`, 1,000,000 records ({len(vs)} runs: {each} s) | "
      f"median {mid:.2f} s = {vs[0]['records'] / mid:,.0f} records/s | ≥ 1,000,000 records/s |")
p("")
million = {w: [r["result"]["rps"] for r in by("million-" + w)] for w in ("daemon", "floor")}
if million["daemon"]:
    ratios = sorted(d / f for d, f in zip(million["daemon"], million["floor"]))
    p("## A million tokens, read in random order (same run)\n")
    p("A vault of 1,000,000 tokens (`import` of JSON Lines) and `tvfloor init DB 1000000`, each served at 32 clients "
      "with the same names shuffled once (`shuf`), so nearly every read misses what the daemon remembers and goes to "
      f"SQLite; runs alternate ({len(million['daemon'])} each).\n")
    p("| server | req/s (median) | range |")
    p("| --- | ---: | ---: |")
    for w, label in (("daemon", "tokenvault serve"), ("floor", "tvfloor")):
        xs = million[w]
        p(f"| {label} | {median(xs):,.0f} | {min(xs):,.0f}–{max(xs):,.0f} |")
    p(f"\nDaemon / tvfloor, run by run: median **{median(ratios):.2f}×** (range {ratios[0]:.2f}–{ratios[-1]:.2f}; target ≥ 0.75×).\n")
    p("""**What a miss costs, and what was taken out of it.** A read that misses pays what tvfloor pays (the SQLite
lookup, on a file of 400 MB against tvfloor's 280 MB, since a row carries its metadata) plus the row's metadata MAC
check and the audit `token_hmac` of the token; the kernel's share (socket wake-ups, `fdatasync`) is the same for
both servers. The ratio went from 0.58× (2026-12-02) to 0.67× (2026-12-03: the MAC check built in one buffer and
compared in place, a row remembered from its second read on, not its first) to the figure above. The last step
(2026-12-04), measured by hand with alternating 2 s pairs of `tvload --clients 32 --names-file` (the shuffled
million) against both servers, 6–8 pairs a build:

| build | daemon / tvfloor, mean of the pairs | the event loop's CPU per read (user + system) |
| --- | ---: | ---: |
| before (2026-12-03) | 0.70×, 0.71× | 16–18 + 13–15 µs |
| vault.db's checkpoint every 10 s while busy (the keyring's anchor keeps the second) | 0.78×, 0.84× | 15–17 + 12–14 µs |
| and a name's first read leaves `token_hmac` to the flusher; the name bound without a copy | 0.76×, 0.79× | 16–17 + 12–14 µs |

Each checkpoint was a commit, and after any commit SQLite's WAL reader unmaps its whole map of the file (`munmap`
≈ 3 ms on the loop, `strace -f -e munmap`) and faults it back in (0.39 minor faults per read, `perf stat -e
page-faults`; 0.13 after, with one commit in the window); a first read's HMAC (≈ 1 µs of HMAC-SHA256) moved from
the event loop, the busiest thread, to the flusher. Single pairs on this machine range over ±20 % (0.56–0.97× in
one series), so the table gives means.

**2026-12-07, on a 2-core Intel Xeon machine** (tvfloor does 48–53k reads a second here with the shuffled million,
against 37–46k on the AMD machine above, while the daemon's own rate barely moved). Here the daemon's runs ranged
from 20k to 37k reads a second while tvfloor's held steady. Taking the CPU of every thread on the machine over
each 1.5 s run (`/proc/*/task/*/stat`) showed why: the slow runs were the ones where the daemon's audit writer was
indexing a finished 64 MB segment (one every 4–5 s at this rate), on an ordinary-priority thread that took
0.3–0.5 s of CPU out of the reads. Two changes: the index is now built on a thread of its own at the kernel's
idle priority (`SCHED_IDLE`), and the build takes less than half the CPU it did (0.32 s → 0.14 s for a segment of
144,628 records, `tokenvault audit index --force`; the index file is byte for byte the same): whole byte strings
hashed in one call instead of byte by byte, the few uids, actions and outcomes found without an allocation per
record, `memcmp` for the sort, and only the segment's last whole record parsed in full. Pairs by hand
(`tvload --clients 32 --duration 1.5 --names-file` the shuffled million, 8 alternating pairs a build):

| build (2026-12-07, Intel) | daemon / tvfloor, median of each side's runs | mean of the pairs |
| --- | ---: | ---: |
| before | 0.63×, 0.66× | 0.65×, 0.64× |
| the index at the idle priority | 0.70×, 0.69× | 0.76×, 0.66× |
| and built in less than half the CPU | 0.74× | 0.74× |

The runs still ranged widely (20–35k reads a second in one series of 1 s runs), and the rest of the spread was
where the kernel put two threads. A read goes from the event loop to the audit flusher and back, and each wakes
the other often enough that the kernel would put both on one CPU: kept there by `taskset`, the daemon served
18–19k reads a second; kept on CPUs of their own, 31–34k in every run. `pin_threads = true` now does that
(Docs/OPERATIONS.md). By hand (8 pairs with the shuffled million, as above) pinned gave medians 0.72× and
the daemon's runs 33–38k instead of 20–35k. A whole `make bench` with pinning on: the same medians as
without (32 clients 0.74×, the shuffled million 0.69×, range 0.65–0.72), the 32-client p99 1.15× tvfloor's
instead of 1.39×, and one client **0.78×** instead of 0.90× (3,584 against 4,432 reads a second: each read
is then a wake-up across cores). So pinning is there to ask for, not the default; the median is held by the
CPU each read costs, not by where the threads run.

**2026-12-08, on a 2-core AMD EPYC machine** (slower than the Intel one: tvfloor 20–44k reads a second with the
shuffled million, a `fdatasync` 187 µs against 141). Per read, the daemon's system time was tvfloor's (27–31
µs both, `/proc/<pid>/stat` over 2 s runs), its user time 25–30 µs against 7–9. Of the user time, the
crypto the format asks for is ≈ 5 µs (by a C loop over libsodium here: secretbox open 1.2 µs, a keyed
BLAKE2b of a short input 0.47 µs, twice, for the subkeys, the metadata MAC 0.9 µs, `token_hmac` 0.84 µs, the
chain hash 0.82 µs and its MAC), against tvfloor's one secretbox open. But the largest single cost found was
none of those: with a segment finished every 5–6 s at this rate, its index was built during the runs, and at
the idle priority it still cost the reads. 8 alternating pairs each, `tvload --clients 32 --duration 1.5
--names-file` the shuffled million: `audit.index = false` 0.81× and 0.80× against 0.76× and 0.74× with the
index. Now a finished segment's index waits for a quiet second (no audit record for one second), or at most
60 s (`Docs/OPERATIONS.md`):

| build (2026-12-08, AMD) | daemon / tvfloor, mean of 8 pairs, two series |
| --- | ---: |
| before | 0.73×, 0.76× |
| the index waits for a quiet second | 0.85×, 0.81× |

The build's cost is the same; it is paid when the daemon is not serving (in this benchmark, during tvfloor's
runs, at the idle priority). A log busy without a pause for a minute gets its index a minute late, built
while the reads go on, as before.
""")

shared = {w: [r["result"]["rps"] for r in by("shared-" + w)] for w in ("sqlite", "a", "b")}
if shared["sqlite"]:
    base = median(shared["sqlite"])
    p("## Shared store: two daemons on one PostgreSQL (`scripts/bench-shared.sh`, same run)\n")
    p("Two homes (host A, host B) on one PostgreSQL 15 database on a Unix socket of this machine, and the "
      "SQLite-backed daemon beside them; `tvload` at 32 clients alternates between the three (medians of "
      f"{len(shared['sqlite'])} runs each; all three daemons are up throughout, one is loaded at a time, and each "
      "run starts 2 s after the last, so that what a PostgreSQL daemon ships of its run's last second reaches the "
      "store before the next daemon is loaded).\n")
    p("| daemon | req/s (median) | range | vs. SQLite daemon | target |")
    p("| --- | ---: | ---: | ---: | --- |")
    for w, label in (("sqlite", "SQLite (`vault.db`)"), ("a", "PostgreSQL, host A"), ("b", "PostgreSQL, host B")):
        xs = shared[w]
        p(f"| {label} | {median(xs):,.0f} | {min(xs):,.0f}–{max(xs):,.0f} | {median(xs) / base:.2f}× | {'–' if w == 'sqlite' else '≥ 0.9×'} |")
    prop = one("shared-propagation").get("result", {})
    mig = one("migrate")
    p("")
    p(f"A change through host A (`tokenvault put --force`, then `rm`, {prop.get('changes', 0)} changes), "
      "timed from the command's return to the first read on host B's socket that serves it: "
      f"**p50 {prop.get('p50_ms', 0):.1f} ms, p99 {prop.get('p99_ms', 0):.1f} ms, max {prop.get('max_ms', 0):.1f} ms** (target p99 ≤ 100 ms).\n")
    p("**Against the 0.9× target.** The PostgreSQL daemons serve remembered rows (the 1,000 tokens fit, and nothing "
      "changes them during the runs); what they add is shipping: the daemon copies its durable audit records (≈ 450 "
      "bytes each, ≈ 14 MB a second at 30k reads/s) to the store every second, and on this 2-core machine the "
      "PostgreSQL server that stores them runs on the same two cores. Measured once with a throwaway build that did "
      "not ship (32 clients, 3 s): 33–39k req/s without shipping against 20–25k with one row per record; shipping "
      "now goes in chunks (one row per shipped second, lz4 where the server has it). Per read, by `/proc/<pid>/stat` "
      "over a 3 s load on host A (2026-12-04): the PostgreSQL backend that stores the chunks 1.7–2.1 µs, the "
      "daemon's shipping ≈ 1 µs, beside ≈ 30 µs of the daemon's own loop and flusher. Runs by hand the same day "
      "(6 alternating rounds of 2 s): medians 0.96× and 0.91×; this run: the table. The machine's phases move single "
      "runs by a third, so the target is not shown to hold. Until 2026-12-07 the runs followed each other without a "
      "pause, in the order SQLite, A, B: host B's runs then paid for host A's last second of shipping and the SQLite "
      "daemon's for host B's, and the tables showed A 0.95–0.98× and B 0.83–0.92×. With the pause (same day, by "
      "`scripts/bench-shared.sh` alone) the SQLite daemon's median rose to 40k and A and B came to 0.82× and 0.86×: "
      "those are the figures to believe, and the target was not met on that machine. On 2026-12-08 (AMD EPYC, the "
      "segment's index now waiting for a quiet second) three runs of the script alone gave A and B 0.94× and 0.92×, "
      "1.05× and 0.88×, and 0.63× and 0.66×; in the last, single runs of every daemon, the SQLite one too, fell to "
      "5–8k reads a second, as tvfloor's did in the million's runs the same hour. So host B sits at the target: met "
      "in this table and in the first run, just under it in the second. With the database on its own machine, as a deployment "
      "has it, the daemon's side of shipping is its PostgreSQL event loop (≈ 0.1 core at this rate).\n")
    p(f"`tokenvault migrate` of a SQLite vault with {mig.get('tokens', 0):,} tokens and {mig.get('audit_records', 0):,} audit "
      f"records into PostgreSQL, copy and verification (every sealed value opened from the target): "
      f"**{mig.get('seconds', 0):.1f} s** (target < 60 s).\n")


def delivery_section():
    """The delivery benchmarks (scripts/bench-delivery.sh), or [] when they did not run."""
    lines = []
    q = lines.append
    run = one("run-overhead")
    fan = [r["result"] for r in by("watch-fanout")]
    cred = [r["result"] for r in by("credential-socket")]
    if not (run or fan or cred):
        return lines
    q("## Delivery: `tokenvault run`, `watch`, the systemd credential socket (`scripts/bench-delivery.sh`, same run)\n")
    q(f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu}), release build, by `make bench` "
      "(or `make bench-delivery`, which re-measures only this section).\n")
    q("| what | measured | target | met |")
    q("| --- | ---: | --- | --- |")
    if run:
        added = run["run_env_ms"] - run["true_ms"]
        q(f"| `tokenvault run --env META_TOKEN=acme/ads -- /bin/true`, added to `/bin/true` (medians of {run['runs']} alternating runs: "
          f"{run['run_env_ms']:.1f} ms against {run['true_ms']:.1f} ms) | {added:.1f} ms | ≤ 30 ms | {'yes' if added <= 30 else 'no'} |")
        q(f"| the same with `--file META_TOKEN_FILE=acme/ads` (a memfd) | {run['run_file_ms'] - run['true_ms']:.1f} ms | – | |")
        q(f"| for comparison, `tokenvault get acme/ads --socket …` (the CLI's start and one read) | {run['get_ms']:.1f} ms | – | |")
    if fan:
        p99 = max(r["p99_us"] for r in fan) / 1000
        events = sum(r["events"] for r in fan)
        q(f"| a change seen by each of {fan[0]['watchers']:,} watching connections, from the commit's return: p99 of the "
          f"worst of {len(fan)} runs of {fan[0]['changes']} changes ({events:,} events in all; p50 "
          f"{median([r['p50_us'] for r in fan]) / 1000:.1f} ms, max {max(r['max_us'] for r in fan) / 1000:.1f} ms) "
          f"| {p99:.1f} ms | ≤ 50 ms | {'yes' if p99 <= 50 else 'no'} |")
    if cred:
        rate = min(r["per_second"] for r in cred)
        rates = " / ".join(format(r["per_second"], ",.0f") for r in cred)
        q(f"| the credential socket, {cred[0]['connections']:,} connections one after another as systemd makes them "
          f"({len(cred)} runs: {rates} /s; p50 {median([r['p50_us'] for r in cred]):,.0f} µs, "
          f"p99 {max(r['p99_us'] for r in cred):,.0f} µs) | {rate:,.0f}/s (slowest run) | ≥ 2,000/s | {'yes' if rate >= 2000 else 'no'} |")
    q("")
    q("How each is measured: `run` and `/bin/true` alternate, started by the same Python loop, so the difference is "
      "what `run` adds (its own start, one `get` through the daemon with its durable audit record, the fork and exec). "
      "`tokenvault bench watch` opens the watching connections, then replaces the token in its own process (an audited "
      "`put --force` through the library) and starts the clock when the commit has returned; every watcher's event is "
      "timed with `poll(2)`. `tokenvault bench credential` plays systemd: as root it binds "
      "`\\0RANDOM/unit/adsync.service/meta_token`, connects and reads to EOF, 1,000 times in a row; each answer waits "
      "for its audit record to be durable (one `fdatasync` each, since the connections do not overlap).\n")
    return lines


out.extend(delivery_section())


def audit_scale_section():
    """The auditor's benchmarks (scripts/bench-audit.sh), or [] when they did not run."""
    lines = []
    q = lines.append
    fill, idx, qs, cost = one("audit-fill"), one("audit-index"), by("audit-query"), by("audit-index-cost")
    if not (fill or qs):
        return lines
    q("## The auditor's side at scale (`scripts/bench-audit.sh`, same run, beside `grep`)\n")
    q(f"Measured {datetime.date.today().isoformat()} on {os.cpu_count()} cores ({cpu}), release build, by `make bench` "
      "(or `make bench-audit`, which re-measures only this section). The log: "
      f"{fill.get('records', 0):,} records over 90 days (`tokenvault bench audit-fill --days 90`: 1,000 tokens, seven "
      f"callers, about 2% refused), {fill.get('bytes', 0) / 2**30:.1f} GiB in {fill.get('segments', 0)} segments (the fill hands the writer batches far "
      "larger than 64 MiB, and a segment ends only after the batch that fills it), in the page cache. Each time is the best of three runs of the whole command (its start included); `grep -c -F` "
      "of the same literal over the same files beside it.\n")
    q("| what | matches | tokenvault | grep | target | met |")
    q("| --- | ---: | ---: | ---: | --- | --- |")
    def row(name, label, target=None, ok=None):
        r = next((x for x in qs if x["query"] == name), None)
        if not r:
            return
        q(f"| {label} | {r['matches']:,} | {r['seconds'] * 1000:,.0f} ms | {r['grep_seconds'] * 1000:,.0f} ms | "
          f"{target or '–'} | {'' if ok is None else ('yes' if ok(r) else 'no')} |")
    row("token+since30d index count", "`audit query --token tok-7 --since 30d --count`, with the index", "< 200 ms",
        lambda r: r["seconds"] < 0.2)
    row("token+since30d index json", "the same, `--json` (the records printed)", "< 200 ms", lambda r: r["seconds"] < 0.2)
    row("token+since30d scan count", "the same without the index (`--no-index`): every segment scanned")
    row("token_hmac scan count", "`--token-hmac H --count`: a filter the index cannot answer, a full scan", "≥ 0.5× grep's speed",
        lambda r: r["seconds"] <= 2 * r["grep_seconds"])
    row("outcome denied scan count", "`--outcome denied --count --no-index`: a full scan", "≥ 0.5× grep's speed",
        lambda r: r["seconds"] <= 2 * r["grep_seconds"])
    row("outcome denied index count", "`--outcome denied --count`, with the index")
    rep = one("audit-report")
    if rep:
        q(f"| `audit report --html` of the last 30 days (verification of all {fill.get('records', 0):,} records included) | "
          f"{rep.get('records', 0):,} | {rep['seconds']:.1f} s | – | < 30 s | {'yes' if rep['seconds'] < 30 else 'no'} |")
    if idx:
        q(f"| `audit index` of the whole log ({idx.get('index_bytes', 0) / 2**20:.0f} MiB of index, "
          f"{100 * idx.get('index_bytes', 0) / max(1, fill.get('bytes', 1)):.1f}% of the log) | – | {idx['seconds']:.1f} s | – | – | |")
    q("")
    if cost:
        on = [r["result"]["rps"] for r in cost if r["index"] is True]
        off = [r["result"]["rps"] for r in cost if r["index"] is False]
        if on and off:
            ratio = median(on) / median(off)
            q(f"The index's cost on the daemon: audited `get` at 32 clients (tvload, 3 s runs) with `audit.index` on and off, "
              f"alternating, with 4 MiB segments so that several finish, and are indexed, in every run: "
              f"{median(on):,.0f} against {median(off):,.0f} req/s, medians of {len(on)} runs each: **{ratio:.3f}×** "
              f"(target: no more than 5% lost, i.e. ≥ 0.95×: {'met' if ratio >= 0.95 else 'not met'}; single runs ranged "
              f"{min(on + off):,.0f}–{max(on + off):,.0f} req/s, so this is a bound of a few per cent, not a precise figure).\n")
    return lines


out.extend(audit_scale_section())

p("""## What holds the daemon back (profile)

Instruments: `perf record -F 1999 --call-graph dwarf -p <daemon>` during `tvload --clients 32`; CPU per request
per thread from `/proc/<pid>/task/*/stat` over a 3 s run; `strace -c -f -p <daemon>` for system calls per
request; `tokenvault bench read-path` for each stage of a read in-process. (This section is kept in
`scripts/bench_report.py`; the tables above are regenerated by `make bench`.)

CPU per request at 32 clients (µs, user + system):

| | event loop(s) | audit flusher | total | tvfloor (same run) |
| --- | ---: | ---: | ---: | ---: |
| before the tuning below (2 loops) | 29 + 8 | 7.6 + 5.6 | ≈ 50 | ≈ 18 |
| 1 loop, before the loops remembered rows (four runs; the machine's speed varies) | 12–16 + 5–6.5 | 3–5 + 3.6–4.1 | ≈ 24–31 | ≈ 15–16 |
| now (three runs, each beside a tvfloor run) | 9.8–10.4 + 4.8–5.5 | 3.9–5.1 + 3.9–4.6 | ≈ 22.5–25 | ≈ 15–17 |

What changed, and what each bought (stage costs from `bench read-path`; syscalls from `strace`):

| change | measured effect |
| --- | --- |
| request scanner on raw bytes: keys compared in place, no `Set`/`Dictionary` per line | parse 2.3 → 0.36 µs |
| reply encoding straight into the `ByteBuffer`, the token copied whole when nothing needs escaping; one buffer per batch of ready replies; `TokenReply` by reference | encode 4.3 → 0.83 µs |
| sealed bytes opened in place, subkey on the stack | open ≈ 2.3 → 1.5 µs (libsodium alone: 1.37 µs, as for tvfloor) |
| SQLite `MEMSTATUS` off (a process-wide mutex per allocation; C shim in the store) | two reader threads: 8.1 → 3.1 µs a lookup |
| one SQLite read transaction per event-loop tick (`LoopReads`) | `fcntl` per request 2.0 → 0.07 |
| each loop remembers the sealed rows it read; every tick reads SQLite's `data_version` first and forgets them all when any commit moved it | lookup 2.9 → 0.32 µs; the lookup fell from ≈ 17 % to ≈ 4 % of the loop's samples |
| `token_hmac` cached per sealed value (nonce + tag + data key), from a name's second read; a first read's hashed on the flusher | one HMAC-SHA256 of the token per value, not per read, and none on the loop for a vault read in no order |
| `vault.db`'s audit checkpoint every 10 s while busy (the keyring's anchor keeps the second) | no `munmap` of the reader's map and re-faulting every second; a million tokens in random order: mean of the pairs 0.70× → 0.78–0.84× of tvfloor |
| policy verdict without copying the matching rule out; patterns compared byte-wise | 94 → 53 ns |
| audit chain v2: BLAKE2b hash, keyed BLAKE2b MAC (was SHA-256 + HMAC-SHA256) | ≈ 2.7 → 1.1 µs a record on the flusher |
| record time by integer arithmetic, one `fstat` per flush for the other-writer check | two allocations and a `gmtime_r`, an `access` + `String(format:)` fewer |
| one channel handler frames lines (memchr, in place) and runs the idle timer, instead of `ByteToMessageHandler` + `IdleStateHandler` + ours (≈ 5 % of the loop's samples) | 32 clients +3–8 % req/s, p99 −6–10 % (interleaved A/B, 5–6 runs) |
| audit records formatted on the flusher thread, straight into the batch (the single loop is the busiest thread; the other core had ≈ 10 % idle) | 32 clients +12 % req/s, p99 −22–26 % (interleaved A/B, 5–6 runs) |
| one event loop per core but one (the flusher keeps a core busy) | 5 interleaved runs each at 32 clients: 1 loop 0.78×, 2 loops 0.74×, 3 loops 0.74× of tvfloor; p99 1.20× / 1.39× / 1.43× |
| `audit verify`: one parallel pass over the mapped segment, digests inline; each worker borrows the MAC key's bytes once (a retain of the shared keys per record bounced its reference count between the cores: 14 % of the pass) | 1M records 2.2 s → 0.6 s |

Tried and dropped, measured: handing each event-loop tick's audit records to the flusher as one batch (one
lock, one wake-up, one hop back per tick) cut the flusher's CPU per request from 11 to 6 µs, but every read
of a tick then waited for the same flush and the loop idled meanwhile (vmstat: 20–30 % idle): req/s equal
or lower at 8 and 32 clients. Encoding replies on the flusher's thread as well (the loop only writing
bytes) showed no gain in two 5-run comparisons. A commit delay before each flush (30–80 µs) changed nothing. Coalescing
completions into one `execute` per loop per flush changed nothing; also draining them at the start of every
`channelRead` (durable replies out before new requests) gave no gain in two 6-run comparisons. Two and three
event loops (table above) lost to one, and tied with it in a slow spell (6 runs each: 0.72× and 0.72×). One
object per connection to carry replies back (so the flusher retains one object, not the loop, handler and
context) changed nothing. Opening tokens on the flusher instead of the loop was bounded first with a throwaway
build (the loop skipped the open, the flusher burned the same CPU per record): +5 % req/s in 6 runs, inside
the noise, so it was not built. Pinning the loop and the flusher to different cores was slower.

What is left (`perf record -a` of the whole machine during a 32-client run): the event loop is ≈ 91 % busy,
the flusher ≈ 40 % of a core, tvload ≈ 40 %, and ≈ 10 % of both cores idle; against tvfloor, tvfloor's
threads take 1.33 cores, tvload 0.5 and 4 % is idle. Kernel time per request is the same for both servers
(≈ 14–15 µs in that run: socket reads and writes, wake-ups, `fdatasync`); the difference is user time,
≈ 22 µs a request against tvfloor's ≈ 7.5 µs in the same (slow) phase. The daemon's extra user time is Swift
and NIO: the Swift runtime (retain/release, allocation, exclusivity checks) ≈ 13 % of all the machine's
samples, NIO's channel machinery ≈ 25 % of the loop's (≈ 3.5 µs a request), our code ≈ 40 % of the loop's,
of which the secretbox open (1.4 µs, the same as tvfloor's) is the largest part. The single loop is also
preempted by the client thread each reply wakes (≈ 1 involuntary switch per request), which stalls every
connection at once where tvfloor's two epoll workers share one set; more loops did not help (table above).

Why one run differs from the next: one daemon, ten consecutive 2 s runs at 32 clients, with per-thread CPU
and the machine's busy/idle/iowait for each. The runs fall into two modes. Fast (36–38k req/s): the loop
spends 21 µs of CPU a request, the machine is 81–87 % busy with 4–10 % idle and 9–11 % iowait. Slow
(24–28k req/s, same process, minutes later): the loop's CPU per request barely moves (23–26 µs) but the
machine is only 58–69 % busy, with 14–20 % idle and 17–22 % iowait: every thread spends more time waiting —
the flusher on a slower `fdatasync` (the storage is shared too), the loop on the flusher, the clients on
the loop — and each hand-off to an idle core then pays a full cross-core wake-up. tvfloor, with less CPU per
request and two workers, rides the same slow spells with a smaller loss, so the ratio drops in them. In
this session's `make bench` runs the 32-client ratio was 0.69–0.95× (median ≈ 0.77×); the target client
counts therefore get six shorter interleaved runs each.

Pipelined group commit (formatting the next batch while the last is in `fdatasync`) was bounded first
with a throwaway build whose flusher wrote a fixed line and hashed nothing, i.e. with none of its CPU per
batch: 40.2k against 41.7k req/s, medians of 6 interleaved runs. The flusher's serial work is not what the
slow mode waits on, so it was not built. What is left is NIO's and the Swift runtime's share of the loop
(above) and the host's phases; a lean hot-read row instead of a 15-column `TokenRecord` would be worth a
few per cent.
""")
p("Reproduce: `make bench` (about 2–3 minutes after the release build). Raw results: "
  "`$BENCH_DIR/results.jsonl` (default `/tmp/tokenvault-bench`).")
if len(sys.argv) > 2 and sys.argv[2] == "--delivery-only":
    print("\n".join(delivery_section()))
elif len(sys.argv) > 2 and sys.argv[2] == "--audit-only":
    print("\n".join(audit_scale_section()))
else:
    print("\n".join(out))
