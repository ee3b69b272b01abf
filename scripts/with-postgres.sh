#!/usr/bin/env bash
# Runs a command beside a private PostgreSQL cluster made for it, and stops the cluster afterwards, also
# when the command fails or is interrupted. The cluster: `initdb` into a temporary directory owned by an
# unprivileged user (PostgreSQL refuses to run as root), a Unix socket only (no TCP), trust for local
# connections but for one password user (scram-sha-256) the password tests use.
#
# The command sees TOKENVAULT_TEST_PG (a store URL for the cluster's superuser), TOKENVAULT_TEST_PG_SOCKET
# (the socket directory), TOKENVAULT_TEST_PG_BIN (the server's bin directory) and TOKENVAULT_REQUIRE_PG=1.
#
#   scripts/with-postgres.sh swift test ...
set -euo pipefail

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
  echo "with-postgres: no PostgreSQL server under /usr/lib/postgresql; run \`make deps\` (it installs Debian's postgresql)" >&2
  exit 1
fi

dir=$(mktemp -d /tmp/tokenvault-pg.XXXXXX)
run_as=()
if [ "$(id -u)" = 0 ]; then
  owner=postgres
  id -u "$owner" >/dev/null 2>&1 || owner=nobody
  chown "$owner" "$dir"
  run_as=(setpriv --reuid="$owner" --regid="$(id -g "$owner")" --init-groups --)
fi
chmod 700 "$dir"

stop() {
  "${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT
trap 'exit 130' INT TERM

"${run_as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
"${run_as[@]}" mkdir -m 700 "$dir/sock"
cat > "$dir/hba" <<HBA
local all vault_pw scram-sha-256
local all all trust
HBA
"${run_as[@]}" cp "$dir/hba" "$dir/data/pg_hba.conf"
"${run_as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-k $dir/sock -c listen_addresses='' -c max_connections=300 -c password_encryption=scram-sha-256" start >/dev/null \
  || { cat "$dir/server.log" >&2; exit 1; }

export TOKENVAULT_TEST_PG="postgres:///postgres?host=$dir/sock&user=postgres"
export TOKENVAULT_TEST_PG_SOCKET="$dir/sock"
export TOKENVAULT_TEST_PG_BIN="$bin"
export TOKENVAULT_TEST_PG_DATA="$dir/data"
export TOKENVAULT_TEST_PG_RUN_AS="${run_as[*]:-}"
export TOKENVAULT_REQUIRE_PG=1
echo "with-postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on $dir/sock"
"$@"
