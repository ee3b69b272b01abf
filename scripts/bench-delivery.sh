#!/usr/bin/env bash
# The delivery benchmarks (part of `make bench`; alone: `make bench-delivery`), appended to $R as JSON lines:
#   - `tokenvault run -- /bin/true` beside `/bin/true` (and with --file), alternating, medians;
#   - a change delivered to 1,000 watching connections, from the commit's return (`tokenvault bench watch`);
#   - the systemd credential socket answering 1,000 connections one after another (`tokenvault bench credential`).
# Needs root for the credential socket (systemd's side is uid 0); without it that part is skipped.
#   env: T (the release tokenvault), D (a scratch directory), R (the results file)
set -euo pipefail
: "${T:?}" "${D:?}" "${R:?}"
H=$D/delivery
rm -rf "$H"; mkdir -p "$H"
export TOKENVAULT_HOME=$H TOKENVAULT_GRAPH_URL=${TOKENVAULT_GRAPH_URL:-http://127.0.0.1:9}
rec() { echo "$1" >> "$R"; }
"$T" init >/dev/null
printf 'EAAB-delivery-bench-token' | "$T" put acme/ads 2>/dev/null
printf 'first' | "$T" put bench/watched 2>/dev/null
printf '[[allow]]\nuid = %s\ntokens = ["*"]\n\n[[credential]]\nunit = "adsync.service"\nid = "meta_token"\ntoken = "acme/ads"\n' \
  "$(id -u)" > "$H/policy.toml"
"$T" serve --credential-socket "$H/credentials.sock" 2>"$H/serve.log" & DPID=$!
trap 'kill -TERM $DPID 2>/dev/null; wait $DPID 2>/dev/null || true' EXIT
for _ in $(seq 200); do [ -S "$H/tokenvault.sock" ] && [ -S "$H/credentials.sock" ] && break; sleep 0.05; done
sleep 0.3

echo "== tokenvault run -- /bin/true beside /bin/true (at ${SECONDS} s)"
python3 - "$T" "$H/tokenvault.sock" "$R" <<'PY'
import json, subprocess, sys, time
t, sock, r = sys.argv[1:]
def once(argv):
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000
plain = ["/bin/true"]
env = [t, "run", "--socket", sock, "--env", "META_TOKEN=acme/ads", "--", "/bin/true"]
file = [t, "run", "--socket", sock, "--file", "META_TOKEN_FILE=acme/ads", "--", "/bin/true"]
get = [t, "get", "acme/ads", "--socket", sock]
times = {"true": [], "run_env": [], "run_file": [], "get": []}
for argv in (plain, env, file, get):
    once(argv)  # warm the page cache
for _ in range(40):
    for key, argv in (("true", plain), ("run_env", env), ("run_file", file), ("get", get)):
        times[key].append(once(argv))
med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
open(r, "a").write(json.dumps({"bench": "run-overhead", "runs": 40, **{k + "_ms": round(v, 2) for k, v in med.items()}}) + "\n")
PY

echo "== one change, 1,000 watchers (at ${SECONDS} s)"
for rep in 1 2 3; do
  rec "{\"bench\":\"watch-fanout\",\"rep\":$rep,\"result\":$("$T" bench watch --socket "$H/tokenvault.sock" --watchers 1000 --changes 20 --name bench/watched)}"
done

if [ "$(id -u)" = 0 ]; then
  echo "== the credential socket, 1,000 connections one after another (at ${SECONDS} s)"
  for rep in 1 2 3; do
    rec "{\"bench\":\"credential-socket\",\"rep\":$rep,\"result\":$("$T" bench credential --socket "$H/credentials.sock" --unit adsync.service --id meta_token --count 1000)}"
  done
else
  echo "(not root: the credential-socket benchmark is skipped; systemd connects as uid 0)" >&2
fi
