#!/usr/bin/env bash
# Part of `make test`: `make install` into a temporary DESTDIR, then what an admin's machine sees — a
# binary that runs with no toolchain on any path, its completions, man page and units — and `make deb`'s
# package, read back with dpkg-deb.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }
make -s install DESTDIR="$T/root" PREFIX=/usr/local >/dev/null
B=$T/root/usr/local/bin/tokenvault
[ -x "$B" ] || fail "no binary at /usr/local/bin/tokenvault"
libs=$(ldd "$B")
if grep -qiE "swift|/opt/|toolchain|not found" <<<"$libs"; then fail "the binary links the toolchain: $libs"; fi
# Runs with a bare environment (no LD_LIBRARY_PATH, no toolchain on PATH).
v=$(env -i PATH=/usr/bin:/bin "$B" --version) || fail "the installed binary does not run"
env -i PATH=/usr/bin:/bin HOME="$T" TOKENVAULT_HOME="$T/vault" "$B" init >/dev/null 2>&1 || fail "init with the installed binary failed"
for f in share/bash-completion/completions/tokenvault share/zsh/site-functions/_tokenvault \
         share/fish/vendor_completions.d/tokenvault.fish share/man/man1/tokenvault.1.gz \
         lib/systemd/system/tokenvault.service lib/systemd/system/tokenvault.socket; do
  [ -s "$T/root/usr/local/$f" ] || fail "missing /usr/local/$f"
done
grep -q "serve" "$T/root/usr/local/share/bash-completion/completions/tokenvault" || fail "bash completion lacks serve"
man=$(zcat "$T/root/usr/local/share/man/man1/tokenvault.1.gz")  # not piped into grep -q: pipefail and SIGPIPE
grep -q '^\.Dt TOKENVAULT 1' <<<"$man" || fail "the man page is not a man page"
grep -q 'serve' <<<"$man" || fail "the man page lacks serve"
grep -q "^ExecStart=/usr/local/bin/tokenvault serve" "$T/root/usr/local/lib/systemd/system/tokenvault.service" || fail "ExecStart not at PREFIX"
deb=$(make -s deb | tail -1)
[ -f "$deb" ] || fail "make deb made no package"
contents=$(dpkg-deb --contents "$deb")
unit=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./lib/systemd/system/tokenvault.service)
for f in ./usr/bin/tokenvault ./lib/systemd/system/tokenvault.service ./usr/share/man/man1/tokenvault.1.gz; do
  grep -q " $f\$" <<<"$contents" || fail "the package lacks $f"
done
[ "$(dpkg-deb --field "$deb" Package)" = tokenvault ] || fail "bad control file"
control=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
grep -q postinst <<<"$control" || fail "no postinst"
grep -q "^ExecStart=/usr/bin/tokenvault serve" <<<"$unit" || fail "the package's unit does not run /usr/bin/tokenvault"
echo "test-install: ok ($v; $(du -h "$B" | cut -f1) binary; $(basename "$deb"))"
