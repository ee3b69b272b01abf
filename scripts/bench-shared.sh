#!/usr/bin/env bash
# `make bench`, the shared store: run by scripts/bench.sh inside scripts/with-postgres.sh (a private
# PostgreSQL cluster on a Unix socket). Appends to the same results file:
#   - two daemons (two homes) on one PostgreSQL database, each beside the SQLite-backed daemon, 32 clients,
#     interleaved runs (tvload);
#   - how long a put or an rm through one host takes to be served by the other (scripts/propagation.py);
#   - `tokenvault migrate` of 100,000 tokens and 1,000,000 audit records into PostgreSQL.
# Needs: T (release tokenvault), L (loadgen folder), D (bench folder with names.txt, tokens.jsonl,
# big.jsonl), R (results file), the SQLite daemon's home at $D/v (serving is started here).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
: "${T:?}" "${L:?}" "${D:?}" "${R:?}"
REPS_HI=${REPS_HI:-6}
LDUR_HI=${LOAD_DURATION_HI:-1.5}
rec() { echo "$1" >> "$R"; }
wait_sock() { for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done; echo "no socket $1" >&2; exit 1; }
psql_() { psql -X -q -At -h "$TOKENVAULT_TEST_PG_SOCKET" -U postgres -d postgres -c "$1"; }

psql_ "CREATE DATABASE bench"
URL="postgres:///bench?host=$TOKENVAULT_TEST_PG_SOCKET&user=postgres"
A=$D/shared-a; B=$D/shared-b
mkdir -m 700 "$A" "$B"
for h in a b; do
  printf 'store = "%s"\nhost_id = "bench-%s"\n' "$URL" "$h" > "$D/shared-$h/tokenvault.toml"
  printf '[[allow]]\nuid = %s\ntokens = ["*"]\nproof = true\n' "$(id -u)" > "$D/shared-$h/policy.toml"
done
TOKENVAULT_HOME=$A "$T" init >/dev/null
printf 'bench-app-secret' | TOKENVAULT_HOME=$A "$T" app add bench --app-id 1234567 2>/dev/null
TOKENVAULT_HOME=$A "$T" import --format jsonl "$D/tokens.jsonl" 2>/dev/null
mkdir -m 700 "$B/keys"; for k in "$A"/keys/2*; do cp -p "$k" "$B/keys/"; done

TOKENVAULT_HOME=$D/v "$T" serve 2>>"$D/serve.log" & SPID=$!
TOKENVAULT_HOME=$A "$T" serve 2>"$D/shared-a.log" & APID=$!
TOKENVAULT_HOME=$B "$T" serve 2>"$D/shared-b.log" & BPID=$!
wait_sock "$D/v/tokenvault.sock"; wait_sock "$A/tokenvault.sock"; wait_sock "$B/tokenvault.sock"; sleep 0.3

echo "== two daemons on one PostgreSQL, each beside the SQLite-backed daemon, 32 clients (at ${SECONDS} s)"
for rep in $(seq "$REPS_HI"); do
  for who in sqlite a b; do
    case $who in sqlite) s=$D/v/tokenvault.sock;; a) s=$A/tokenvault.sock;; b) s=$B/tokenvault.sock;; esac
    rec "{\"bench\":\"shared-$who\",\"rep\":$rep,\"result\":$("$L/tvload" --socket "$s" --clients 32 --duration "$LDUR_HI" --warmup 0.5 --names-file "$D/names.txt")}"
    # A PostgreSQL daemon ships its audit records every second: let the last second of this run reach the
    # store before the next daemon is loaded, or the next run pays for it (host B, run after host A, did).
    sleep "${SETTLE:-2}"
  done
done

echo "== a put or rm through host A, served by host B (at ${SECONDS} s)"
rec "{\"bench\":\"shared-propagation\",\"result\":$(python3 "$ROOT/scripts/propagation.py" "$T" "$A" "$B/tokenvault.sock" 100)}"
kill -TERM $SPID $APID $BPID; wait $SPID $APID $BPID || true

echo "== migrate 100,000 tokens and 1,000,000 audit records to PostgreSQL (at ${SECONDS} s)"
M=$D/migrate
export TOKENVAULT_HOME=$M
"$T" init >/dev/null
"$T" import --format jsonl "$D/big.jsonl" 2>/dev/null
"$T" bench audit-fill --count 1000000 2>/dev/null
psql_ "CREATE DATABASE moved"
s=$(date +%s.%N); "$T" migrate --to "postgres:///moved?host=$TOKENVAULT_TEST_PG_SOCKET&user=postgres" > "$D/migrate.txt" 2>&1; e=$(date +%s.%N)
rec "{\"bench\":\"migrate\",\"tokens\":100000,\"audit_records\":1000000,\"seconds\":$(awk -v a="$s" -v b="$e" "BEGIN{print b-a}")}"
unset TOKENVAULT_HOME
