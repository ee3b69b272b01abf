#!/usr/bin/env bash
# `make soak`: the daemon under 64 closed-loop clients (../shared/loadgen's tvload) for SOAK_SECONDS
# (default 600) in windows of SOAK_WINDOW seconds (default 60), with a `put --force` every second from the
# CLI; the daemon's resident memory and open descriptors sampled after each window. Passes when memory and
# descriptors stay flat (the last window within 10% / 8 descriptors of the second, after warm-up) and p99
# does not drift (the last window's p99 within 2x the median of the windows). Appends the figures to
# Docs/BENCHMARKS.md. Bounded: every process it starts is stopped when it ends, also on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=$ROOT/.build/release/tokenvault
L=$ROOT/.build-bench/loadgen
D=${SOAK_DIR:-/tmp/tokenvault-soak}
TOTAL=${SOAK_SECONDS:-600}
WINDOW=${SOAK_WINDOW:-60}
CLIENTS=${SOAK_CLIENTS:-64}
rm -rf "$D"; mkdir -p "$D"; chmod 755 "$D"
export TOKENVAULT_HOME=$D/v TOKENVAULT_GRAPH_URL=http://127.0.0.1:9
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$T" init >/dev/null
python3 "$ROOT/scripts/tokens.py" "$D"
"$T" import --format jsonl "$D/tokens.jsonl" 2>/dev/null
printf '[[allow]]\nuid = %s\ntokens = ["*"]\n' "$(id -u)" > "$D/v/policy.toml"
"$T" serve 2>"$D/serve.log" & DPID=$!; pids+=($DPID)
for _ in $(seq 200); do [ -S "$D/v/tokenvault.sock" ] && break; sleep 0.05; done

# A put every second, for as long as the soak runs.
( end=$((SECONDS + TOTAL + 5)); i=0
  while [ $SECONDS -lt $end ]; do
    printf 'EAAB-soak-%s-%s' "$i" "$(date +%s%N)" | "$T" put "tok-$(printf %06d $((i % 1000)))" --force 2>/dev/null || echo "put $i failed" >> "$D/puts.err"
    i=$((i + 1)); sleep 1
  done ) & pids+=($!)

: > "$D/windows.jsonl"
windows=$((TOTAL / WINDOW))
for w in $(seq "$windows"); do
  r=$("$L/tvload" --socket "$D/v/tokenvault.sock" --clients "$CLIENTS" --duration "$WINDOW" --warmup 0 --names-file "$D/names.txt")
  rss=$(awk '/VmRSS/ {print $2}' /proc/$DPID/status)
  fds=$(ls /proc/$DPID/fd | wc -l)
  echo "{\"window\":$w,\"rss_kb\":$rss,\"fds\":$fds,\"load\":$r}" >> "$D/windows.jsonl"
  echo "window $w/$windows: rss ${rss} kB, ${fds} fds, $(echo "$r" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("%d req/s, p50 %d us, p99 %d us, errors %s" % (r["rps"], r["p50_us"], r["p99_us"], r["errors"]))')"
done
puts_failed=$( [ -f "$D/puts.err" ] && wc -l < "$D/puts.err" || echo 0)
cleanup; trap - EXIT
"$T" audit verify > "$D/verify.txt" || { cat "$D/verify.txt"; echo "soak: audit verify failed" >&2; exit 1; }

python3 - "$D" "$ROOT/Docs/BENCHMARKS.md" "$CLIENTS" "$WINDOW" "$puts_failed" <<'PY'
import json, statistics, sys, platform, subprocess, datetime
d, doc, clients, window, puts_failed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
w = [json.loads(l) for l in open(d + "/windows.jsonl")]
base = w[1] if len(w) > 1 else w[0]
last = w[-1]
p99s = [x["load"]["p99_us"] for x in w]
errors = sum(sum(x["load"]["errors"].values()) for x in w)
checks = {
    "memory flat (last within 10% of window 2)": last["rss_kb"] <= base["rss_kb"] * 1.10,
    "descriptors flat (last within 8 of window 2)": abs(last["fds"] - base["fds"]) <= 8,
    "p99 does not drift (last within 2x the median)": last["load"]["p99_us"] <= 2 * statistics.median(p99s),
    "no request errors": errors == 0,
    "every put landed": puts_failed == 0,
}
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
rows = ["| window | req/s | p50 µs | p99 µs | p99.9 µs | RSS MB | fds |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for x in w:
    l = x["load"]
    rows.append("| %d | %d | %d | %d | %d | %.1f | %d |" % (x["window"], l["rps"], l["p50_us"], l["p99_us"], l["p999_us"], x["rss_kb"] / 1024, x["fds"]))
text = "\n".join([
    "", "## Soak (`make soak`, %s)" % datetime.date.today().isoformat(), "",
    "%d clients (tvload, closed loop) for %d windows of %d s, with `tokenvault put --force` every second; "
    "%s, %d cores, %s. Daemon RSS and open descriptors after each window." % (clients, len(w), window, cpu, __import__("os").cpu_count(), platform.platform()),
    "", *rows, "",
    *["- %s: %s" % (k, "yes" if v else "**no**") for k, v in checks.items()],
    "- puts: %d failed; `audit verify` after the run: %s" % (puts_failed, open(d + "/verify.txt").read().strip().splitlines()[0]),
    ""])
# One soak section: a new run replaces the last one's.
old = open(doc).read()
start = old.find("\n## Soak")
if start >= 0:
    end = old.find("\n## ", start + 1)
    old = old[:start] + (old[end:] if end >= 0 else "\n")
with open(doc, "w") as f:
    f.write(old.rstrip("\n") + "\n" + text)
print(text)
sys.exit(0 if all(checks.values()) else 1)
PY
