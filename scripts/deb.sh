#!/usr/bin/env bash
# `make deb`: a Debian package of the static release build, with dpkg-deb. PREFIX /usr, units in
# /lib/systemd/system; the maintainer scripts (dist/debian) create the system user and its directories.
#   scripts/deb.sh BINARY OUTDIR
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$1 OUT=$2
VERSION=$("$BIN" --version)
ARCH=$(dpkg --print-architecture)
STAGE=$(mktemp -d); trap 'rm -rf "$STAGE"' EXIT
"$ROOT/scripts/install.sh" "$BIN" "$STAGE" /usr /lib/systemd/system >/dev/null
install -d "$STAGE/DEBIAN"
for f in postinst prerm postrm; do install -m 0755 "$ROOT/dist/debian/$f" "$STAGE/DEBIAN/$f"; done
SIZE=$(du -sk "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: tokenvault
Version: $VERSION
Architecture: $ARCH
Maintainer: TokenVault developers <tokenvault@localhost>
Installed-Size: $SIZE
Depends: libc6, libstdc++6, libgcc-s1, libsodium23, libsqlite3-0, libcurl4, adduser
Section: admin
Priority: optional
Description: local vault for Meta Marketing API tokens and other API secrets
 Tokens sealed with libsodium under data keys wrapped by a master key, served to local services over a
 Unix socket under a default-deny policy, every read in a tamper-evident audit log.
CONTROL
mkdir -p "$OUT"
dpkg-deb --root-owner-group --build "$STAGE" "$OUT/tokenvault_${VERSION}_${ARCH}.deb" >/dev/null
echo "$OUT/tokenvault_${VERSION}_${ARCH}.deb"
