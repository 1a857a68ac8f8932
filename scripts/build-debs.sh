#!/usr/bin/env bash
# Builds the Debian packages `witness` and `witness-agent` with dpkg-deb from built binaries:
# the binary, the systemd unit of deploy/witness or deploy/agent-systemd (with the packaged
# binary's path), the sample configuration as a conffile in /etc (commented), the witness's
# system user (sysusers.d, created by postinst), and a postinst that prints the next step.
#
#   scripts/build-debs.sh OUT_DIR      writes OUT_DIR/witness_<v>_<arch>.deb and
#                                      OUT_DIR/witness-agent_<v>_<arch>.deb
# Environment: WITNESS_BIN, AGENT_BIN (default target/release/{witness,witness-agent}),
# DEB_COMPRESS (dpkg-deb -Z, default xz; the deploy checks use gzip for speed).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:?usage: scripts/build-debs.sh OUT_DIR}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WITNESS_BIN=${WITNESS_BIN:-$TARGET_DIR/release/witness}
AGENT_BIN=${AGENT_BIN:-$TARGET_DIR/release/witness-agent}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
ARCH=$(dpkg --print-architecture)
for b in "$WITNESS_BIN" "$AGENT_BIN"; do
    [ -x "$b" ] || { echo "build-debs: $b missing: cargo build --release -p witness -p witness-agent (or set WITNESS_BIN/AGENT_BIN)" >&2; exit 1; }
done
mkdir -p "$OUT"
# The newest glibc symbol version a binary needs (what dpkg-shlibdeps would compute).
libc_dep() {
    local v
    v=$(objdump -T "$1" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
    echo "libc6 (>= ${v:-2.31})"
}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

common_docs() { # pkg dir
    local pkg=$1 d=$2
    install -d "$d/usr/share/doc/$pkg"
    cat >"$d/usr/share/doc/$pkg/copyright" <<EOT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: witness
Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
EOT
    printf '%s (%s) unstable; urgency=medium\n\n  * Built from the witness workspace.\n\n -- witness maintainers <witness@example.org>  %s\n' \
        "$pkg" "$VERSION" "$(date -R -u -d @0)" | gzip -9n >"$d/usr/share/doc/$pkg/changelog.Debian.gz"
}

# ---- witness -------------------------------------------------------------------------------
d=$WORK/witness
install -d "$d/DEBIAN" "$d/usr/bin" "$d/lib/systemd/system" "$d/usr/lib/sysusers.d" "$d/etc/witness"
install -m 0755 "$WITNESS_BIN" "$d/usr/bin/witness"
strip --strip-unneeded "$d/usr/bin/witness" 2>/dev/null || true
sed 's#/usr/local/bin/witness#/usr/bin/witness#g' "$ROOT/deploy/witness/witness.service" >"$d/lib/systemd/system/witness.service"
install -m 0644 "$ROOT/deploy/witness/witness.sysusers" "$d/usr/lib/sysusers.d/witness.conf"
install -m 0640 "$ROOT/deploy/witness/witness.toml" "$d/etc/witness/witness.toml"
common_docs witness "$d"
install -m 0644 "$ROOT/deploy/witness/README.md" "$d/usr/share/doc/witness/README.md"
echo /etc/witness/witness.toml >"$d/DEBIAN/conffiles"
cat >"$d/DEBIAN/control" <<EOT
Package: witness
Version: $VERSION
Architecture: $ARCH
Maintainer: witness maintainers <witness@example.org>
Section: net
Priority: optional
Depends: $(libc_dep "$WITNESS_BIN"), passwd
Installed-Size: $(du -k -s "$d" | cut -f1)
Homepage: https://example.org/witness
Description: site lease arbiter for two-room clusters (mutual TLS)
 Runs in a third location and grants time-bounded site leases to the agents of
 both rooms, so that when the rooms lose sight of each other exactly one goes on.
EOT
cat >"$d/DEBIAN/postinst" <<'EOT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    if ! getent passwd witness >/dev/null; then
        useradd --system --home-dir /var/lib/witness --no-create-home \
            --shell /usr/sbin/nologin --comment "Witness for two-room clusters" witness
    fi
    install -d -m 0700 -o witness -g witness /var/lib/witness
    install -d -m 0750 -o root -g witness /etc/witness/tls
    chgrp witness /etc/witness/witness.toml
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
    cat <<'MSG'
witness installed. Next:
  1. certificates (on an offline machine keep the CA):  witness certs ca --out ca
     witness certs server --ca-dir ca --name <this VM's DNS name> --ip <its IP> --out /etc/witness/tls
     cp ca/ca.pem /etc/witness/tls/ && chgrp -R witness /etc/witness/tls && chmod 0640 /etc/witness/tls/*
  2. edit /etc/witness/witness.toml (clusters, preferred_room; check: witness check-config)
  3. systemctl enable --now witness    then: witness status
MSG
fi
EOT
cat >"$d/DEBIAN/postrm" <<'EOT'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rmdir /etc/witness/tls /etc/witness 2>/dev/null || true
    echo "witness purged; its state in /var/lib/witness and the user witness are kept (remove them by hand)"
fi
EOT
chmod 0755 "$d/DEBIAN/postinst" "$d/DEBIAN/postrm"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$d" "$OUT/witness_${VERSION}_${ARCH}.deb" >/dev/null

# ---- witness-agent (plain hosts; the Kubernetes form is the container image) -----------------
d=$WORK/witness-agent
install -d "$d/DEBIAN" "$d/usr/sbin" "$d/lib/systemd/system" "$d/etc/witness-agent"
install -m 0755 "$AGENT_BIN" "$d/usr/sbin/witness-agent"
strip --strip-unneeded "$d/usr/sbin/witness-agent" 2>/dev/null || true
sed 's#/usr/local/sbin/witness-agent#/usr/sbin/witness-agent#g' "$ROOT/deploy/agent-systemd/witness-agent.service" >"$d/lib/systemd/system/witness-agent.service"
install -m 0600 "$ROOT/deploy/agent-systemd/agent.toml" "$d/etc/witness-agent/agent.toml"
common_docs witness-agent "$d"
install -m 0644 "$ROOT/deploy/agent-systemd/README.md" "$d/usr/share/doc/witness-agent/README.md"
echo /etc/witness-agent/agent.toml >"$d/DEBIAN/conffiles"
cat >"$d/DEBIAN/control" <<EOT
Package: witness-agent
Version: $VERSION
Architecture: $ARCH
Maintainer: witness maintainers <witness@example.org>
Section: admin
Priority: optional
Depends: $(libc_dep "$AGENT_BIN")
Recommends: drbd-utils
Installed-Size: $(du -k -s "$d" | cut -f1)
Homepage: https://example.org/witness
Description: node agent for two-room clusters: fences its own node
 Holds a lease from the witness and heartbeats with the other room; when its room
 may no longer run it stops VMs, demotes DRBD and lets the watchdog reset the node.
EOT
cat >"$d/DEBIAN/postinst" <<'EOT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    install -d -m 0700 /etc/witness-agent/tls
    if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
    cat <<'MSG'
witness-agent installed (runs as root: it fences this node). Next:
  1. this node's certificate from the witness's CA:
     witness certs node --ca-dir ca --cluster <cluster> --room <room> --node <this node> --out /etc/witness-agent/tls
     and ca.pem beside it
  2. edit /etc/witness-agent/agent.toml (cluster, room, node, witness_url, peers, drivers);
     check it: witness-agent check-config --config /etc/witness-agent/agent.toml
  3. a watchdog device (/dev/watchdog; softdog if there is no hardware one), then
     systemctl enable --now witness-agent    and: witness-agent status
MSG
fi
EOT
chmod 0755 "$d/DEBIAN/postinst"
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" --build "$d" "$OUT/witness-agent_${VERSION}_${ARCH}.deb" >/dev/null
ls "$OUT"/*.deb
