#!/usr/bin/env bash
# scripts/ab.sh BIN [REPS] [CLIENTS]: BIN (a tokenvault build) against tvfloor, interleaved, REPS runs of 1.5 s at
# CLIENTS (default 32); prints both medians and their ratio. MET=p50 compares p50 latencies instead.
# Needs the instruments of `make bench` in .build-bench/loadgen. For A/B runs of two builds, alternate calls.

set -e
BIN=$1; REPS=${2:-6}; CL=${3:-32}
D=${AB_DIR:-/tmp/tokenvault-ab}; rm -rf $D; mkdir -p $D; chmod 755 $D
L=$(cd "$(dirname "$0")/.." && pwd)/.build-bench/loadgen
export TOKENVAULT_HOME=$D/v TOKENVAULT_GRAPH_URL=http://127.0.0.1:9
$BIN init >/dev/null
python3 "$(dirname "$0")/tokens.py" $D
$BIN import --format jsonl $D/tokens.jsonl 2>/dev/null
printf '[[allow]]\nuid = %s\ntokens = ["*"]\n' "$(id -u)" > $D/v/policy.toml
$BIN serve 2>$D/serve.log & DP=$!
$L/tvfloor init $D/floor.db 1000 >/dev/null; $L/tvfloor names $D/floor.db > $D/fn.txt
$L/tvfloor serve --db $D/floor.db --socket $D/floor.sock --audit $D/fa.log 2>/dev/null & FP=$!
sleep 1
for r in $(seq $REPS); do
  a=$($L/tvload --socket $D/v/tokenvault.sock --clients $CL --duration 1.5 --warmup 0.5 --names-file $D/names.txt | python3 -c 'import json,os,sys;r=json.load(sys.stdin);print(r["p50_us"] if os.environ.get("MET")=="p50" else r["rps"])')
  b=$($L/tvload --socket $D/floor.sock --clients $CL --duration 1.5 --warmup 0.5 --names-file $D/fn.txt | python3 -c 'import json,os,sys;r=json.load(sys.stdin);print(r["p50_us"] if os.environ.get("MET")=="p50" else r["rps"])')
  echo "$a $b"
done | python3 -c '
import sys,statistics
rows=[tuple(map(float,l.split())) for l in sys.stdin]
a=statistics.median(r[0] for r in rows); b=statistics.median(r[1] for r in rows)
print("daemon %.0f floor %.0f ratio %.3f  %s"%(a,b,a/b,[round(x/y,2) for x,y in rows]))'
kill $DP $FP; wait 2>/dev/null || true
