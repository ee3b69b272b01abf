#!/usr/bin/env bash
# The auditor's benchmarks (part of `make bench`; alone: `make bench-audit`), appended to $R as JSON lines,
# each beside `grep` on the same files in the same run:
#   - a log of AUDIT_RECORDS (default 10,000,000) records over 90 days (`tokenvault bench audit-fill --days 90`);
#   - `tokenvault audit index` over all of it;
#   - `audit query --token tok-7 --since 30d` through the index (--count and --json), and without it;
#   - full scans with a filter the index cannot answer (`--token-hmac`) and `--outcome denied --no-index`,
#     beside `grep -c` of the same literal;
#   - `audit report --html --since 30d` (verification of the whole log included);
#   - the daemon's 32-client audited throughput with `audit.index` on and off, alternating (tvload).
#   env: T (the release tokenvault), L (the loadgen instruments), D (a scratch directory), R (the results file)
set -euo pipefail
: "${T:?}" "${L:?}" "${D:?}" "${R:?}"
N=${AUDIT_RECORDS:-10000000}
H=$D/auditscale
rm -rf "$H"; mkdir -p "$H"
export TOKENVAULT_HOME=$H TOKENVAULT_GRAPH_URL=${TOKENVAULT_GRAPH_URL:-http://127.0.0.1:9}
rec() { echo "$1" >> "$R"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.4f", b-a}'; }
# Best of three runs of a command (stdout to $H/out), in seconds.
best() {
  local best=""
  for _ in 1 2 3; do
    local s e t
    s=$(date +%s.%N); "$@" > "$H/out"; e=$(date +%s.%N)
    t=$(secs "$s" "$e")
    if [ -z "$best" ] || awk -v a="$t" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$t; fi
  done
  echo "$best"
}

"$T" init >/dev/null
echo "== audit log of $N records over 90 days (at ${SECONDS} s)"
s=$(date +%s.%N); "$T" bench audit-fill --count "$N" --days 90 2>/dev/null; e=$(date +%s.%N)
bytes=$(cat "$H"/audit/audit-*.jsonl | wc -c)
segments=$(ls "$H"/audit/audit-*.jsonl | wc -l)
rec "{\"bench\":\"audit-fill\",\"records\":$N,\"bytes\":$bytes,\"segments\":$segments,\"seconds\":$(secs "$s" "$e")}"

s=$(date +%s.%N); "$T" audit index > "$H/index.txt"; e=$(date +%s.%N)
idx=$(cat "$H"/audit/audit-*.idx | wc -c)
rec "{\"bench\":\"audit-index\",\"records\":$N,\"index_bytes\":$idx,\"seconds\":$(secs "$s" "$e")}"

cd "$H/audit"
echo "== queries beside grep (at ${SECONDS} s)"
q() { # name, expected-literal-for-grep, tokenvault args...
  local name=$1 literal=$2; shift 2
  local tv g matches
  tv=$(best "$T" audit query "$@")
  if [ "${*: -1}" = "--count" ]; then matches=$(cat "$H/out"); else matches=$(wc -l < "$H/out"); fi
  g=$(best grep -c -F -e "$literal" audit-*.jsonl)
  rec "{\"bench\":\"audit-query\",\"query\":\"$name\",\"records\":$N,\"matches\":$matches,\"seconds\":$tv,\"grep_seconds\":$g}"
}
q "token+since30d index count" '"token":"tok-7"' --token tok-7 --since 30d --count
q "token+since30d index json" '"token":"tok-7"' --token tok-7 --since 30d --json
q "token+since30d scan count" '"token":"tok-7"' --token tok-7 --since 30d --no-index --count
hmac=$(printf 'tok-7' | "$T" audit hash)
q "token_hmac scan count" "\"token_hmac\":\"$hmac\"" --token-hmac "$hmac" --count
q "outcome denied scan count" '"outcome":"denied"' --outcome denied --no-index --count
q "outcome denied index count" '"outcome":"denied"' --outcome denied --count
cd - >/dev/null
echo "== audit report --html of the last 30 days (at ${SECONDS} s)"
s=$(date +%s.%N); "$T" audit report --html "$H/report.html" --since 30d 2>"$H/report.txt"; e=$(date +%s.%N)
rec "{\"bench\":\"audit-report\",\"records\":$(grep -o 'wrote [^:]*: [0-9]*' "$H/report.txt" | grep -o '[0-9]*$'),\"seconds\":$(secs "$s" "$e")}"
rm -rf "$H"

echo "== the index's cost on the daemon's audited throughput (at ${SECONDS} s)"
H=$D/auditindex
mkdir -p "$H"
export TOKENVAULT_HOME=$H
"$T" init >/dev/null
for n in $(seq 0 99); do printf 'EAAB-index-bench-%s' "$n" | "$T" put "bench/t$n" 2>/dev/null; done
printf '[[allow]]\nuid = %s\ntokens = ["*"]\n' "$(id -u)" > "$H/policy.toml"
for n in $(seq 0 99); do echo "bench/t$n"; done > "$H/names.txt"
# Small segments (4 MiB) so that several are finished, and indexed, inside every run.
for rep in 1 2 3; do
  for mode in true false; do
    printf '[audit]\nsegment_size = 4194304\nindex = %s\n' "$mode" > "$H/tokenvault.toml"
    "$T" serve 2>"$H/serve.log" & DPID=$!
    for _ in $(seq 200); do [ -S "$H/tokenvault.sock" ] && break; sleep 0.05; done
    sleep 0.3
    rec "{\"bench\":\"audit-index-cost\",\"index\":$mode,\"rep\":$rep,\"result\":$("$L/tvload" --socket "$H/tokenvault.sock" --clients 32 --duration 3 --warmup 0.5 --names-file "$H/names.txt")}"
    kill -TERM $DPID; wait $DPID || true
  done
done
rm -rf "$H"
