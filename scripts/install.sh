#!/usr/bin/env bash
# `make install`: the release binary (Swift runtime linked in: it runs without the toolchain), shell
# completions and the man page (both generated from the argument parser), and the systemd units.
#   scripts/install.sh BINARY DESTDIR PREFIX [UNITDIR]
# UNITDIR defaults to $PREFIX/lib/systemd/system (systemd reads /usr/local/lib/systemd/system too).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$1 DESTDIR=${2:-} PREFIX=${3:-/usr/local}
UNITDIR=${4:-$PREFIX/lib/systemd/system}
[ -x "$BIN" ] || { echo "install: no binary at $BIN (build it first)" >&2; exit 1; }
D=$DESTDIR
install -d "$D$PREFIX/bin" "$D$PREFIX/share/man/man1" "$D$PREFIX/share/bash-completion/completions" \
  "$D$PREFIX/share/zsh/site-functions" "$D$PREFIX/share/fish/vendor_completions.d" "$D$UNITDIR" \
  "$D$PREFIX/share/doc/tokenvault"
install -m 0755 "$BIN" "$D$PREFIX/bin/tokenvault"
strip --strip-unneeded "$D$PREFIX/bin/tokenvault"  # debug info stays in the build (the release build carries it)
"$BIN" --generate-completion-script bash > "$D$PREFIX/share/bash-completion/completions/tokenvault"
"$BIN" --generate-completion-script zsh > "$D$PREFIX/share/zsh/site-functions/_tokenvault"
"$BIN" --generate-completion-script fish > "$D$PREFIX/share/fish/vendor_completions.d/tokenvault.fish"
# The man page (mdoc): swift-argument-parser's manual generator. The plugin builds the command in release
# mode in .build (as `make bench` does), not in the static build's folder, whose flags differ.
MAN=$(mktemp -d); trap 'rm -rf "$MAN"' EXIT
(cd "$ROOT" && swift package --allow-writing-to-directory "$MAN" generate-manual --output-directory "$MAN" --section 1 >/dev/null)
install -m 0644 "$MAN/tokenvault.1" "$D$PREFIX/share/man/man1/tokenvault.1"
gzip -n -9 -f "$D$PREFIX/share/man/man1/tokenvault.1"
for unit in tokenvault.service tokenvault.socket; do
  sed "s|/usr/local/bin/tokenvault|$PREFIX/bin/tokenvault|g" "$ROOT/dist/systemd/$unit" > "$D$UNITDIR/$unit"
  chmod 0644 "$D$UNITDIR/$unit"
done
install -m 0644 "$ROOT/dist/systemd/credentials.conf" "$D$PREFIX/share/doc/tokenvault/credentials.conf"
for doc in README.md Docs/OPERATIONS.md Docs/SECURITY.md; do
  [ -f "$ROOT/$doc" ] && install -m 0644 "$ROOT/$doc" "$D$PREFIX/share/doc/tokenvault/$(basename "$doc")"
done
echo "installed tokenvault into ${D:-/}${PREFIX#/} (units in $UNITDIR)"
