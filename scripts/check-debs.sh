#!/usr/bin/env bash
# Builds the Debian packages (scripts/build-debs.sh), installs them with dpkg -i, starts each
# unit's ExecStart the way systemd would (its User=, WorkingDirectory= and command line, read
# from the installed unit; there is no systemd here), checks that both answer on their status
# ports, stops them, and purges the packages. lintian's findings are shown when it is there.
# Needs root (dpkg -i); without it: "skipped: needs root", exit 0 with SKIP on stdout.
# Traffic stays on 127.0.0.1. Environment: WITNESS_BIN, AGENT_BIN as for build-debs.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "$(id -u)" != 0 ]; then echo "SKIP skipped: needs root for dpkg -i"; exit 0; fi
for p in witness witness-agent; do
    if dpkg -s "$p" >/dev/null 2>&1 || [ -e "/etc/$p" ] || [ -e "/var/lib/$p" ]; then
        echo "check-debs: $p is already installed here (or /etc/$p or /var/lib/$p exists); not touching it" >&2
        exit 1
    fi
done
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    dpkg --purge witness witness-agent >/dev/null 2>&1 || true
    # The certificates and the state this test made (not package files: purge leaves them).
    rm -rf /etc/witness /etc/witness-agent /run/witness-agent /var/lib/witness "$WORK"
}
trap cleanup EXIT
say() { printf '%s\n' "$*"; }
DEB_COMPRESS=gzip "$ROOT/scripts/build-debs.sh" "$WORK/debs" >/dev/null
say "ok    built $(cd "$WORK/debs" && ls *.deb | tr '\n' ' ')"
if command -v lintian >/dev/null; then
    # Informational: a locally built package has no signed changes, no man pages, ...
    lintian --no-tag-display-limit "$WORK"/debs/*.deb 2>&1 | grep -E '^E:' | sed 's/^/info  lintian /' | head -20 || true
fi
dpkg -i "$WORK"/debs/witness_*.deb >"$WORK/install-w.log" 2>&1 || { cat "$WORK/install-w.log"; exit 1; }
grep -q 'systemctl enable --now witness' "$WORK/install-w.log"
say "ok    dpkg -i witness: user $(id -un witness), postinst says the next step"
dpkg -i "$WORK"/debs/witness-agent_*.deb >"$WORK/install-a.log" 2>&1 || { cat "$WORK/install-a.log"; exit 1; }
grep -q 'systemctl enable --now witness-agent' "$WORK/install-a.log"
say "ok    dpkg -i witness-agent: postinst says the next step"

read -r P_LEASE P_STATUS P_HB P_AST < <(python3 -c '
import socket
ps=[]
for _ in range(4):
    s=socket.socket(); s.bind(("127.0.0.1",0)); ps.append(s)
print(*[s.getsockname()[1] for s in ps])')
# Certificates the documented way, then the installed configurations with loopback addresses
# (what an operator edits anyway) and the agent's drivers off (no VMs, DRBD or watchdog here).
witness certs ca --out "$WORK/ca" >/dev/null
witness certs server --ca-dir "$WORK/ca" --name localhost --ip 127.0.0.1 --out /etc/witness/tls >/dev/null
cp "$WORK/ca/ca.pem" /etc/witness/tls/ && chgrp -R witness /etc/witness/tls && chmod 0640 /etc/witness/tls/*
witness certs node --ca-dir "$WORK/ca" --cluster store-0042 --room room-a --node edge-1 --out /etc/witness-agent/tls >/dev/null
cp "$WORK/ca/ca.pem" /etc/witness-agent/tls/
sed -i "s#^listen = .*#listen = \"127.0.0.1:$P_LEASE\"#; s#^status_listen = .*#status_listen = \"127.0.0.1:$P_STATUS\"#" /etc/witness/witness.toml
python3 - "$P_LEASE" "$P_HB" "$P_AST" <<'PY'
import re, sys
lease, hb, st = sys.argv[1:]
p = "/etc/witness-agent/agent.toml"
s = open(p).read()
s = re.sub(r'(?m)^witness_url = .*', f'witness_url = "https://127.0.0.1:{lease}"', s)
s = re.sub(r'(?m)^listen = .*', f'listen = "127.0.0.1:{hb}"', s)
s = re.sub(r'(?m)^status_listen = .*', f'status_listen = "127.0.0.1:{st}"', s)
for sec in ("kubernetes", "vm", "drbd", "watchdog"):
    s = re.sub(rf'(?ms)^(\[{sec}\]\n(?:(?!\[).*\n)*?)enabled = true', r'\1enabled = false', s)
open(p, "w").write(s)
PY
unit_field() { sed -n "s/^$2=//p" "$1" | tail -1; }
start_unit() { # unit-file log
    local unit=$1 log=$2 user wd cmd
    user=$(unit_field "$unit" User); wd=$(unit_field "$unit" WorkingDirectory); cmd=$(unit_field "$unit" ExecStart)
    [ -n "$wd" ] || wd=/
    grep -q '^RuntimeDirectory=witness-agent' "$unit" && install -d -m 0700 /run/witness-agent
    say "      starting $(basename "$unit"): as ${user:-root} in $wd: $cmd"
    (cd "$wd" && exec setpriv --reuid="${user:-root}" --regid="${user:-root}" --init-groups -- $cmd) >"$log" 2>&1 &
    PIDS+=($!)
}
fetch() { python3 -c 'import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=2).status)' "$1" 2>/dev/null; }
wait_200() { for _ in $(seq 1 100); do [ "$(fetch "$1")" = 200 ] && return 0; sleep 0.2; done; return 1; }
start_unit /lib/systemd/system/witness.service "$WORK/witness.log"
WPID=${PIDS[-1]}
wait_200 "http://127.0.0.1:$P_STATUS/readyz" || { tail -20 "$WORK/witness.log"; exit 1; }
say "ok    the installed witness unit's ExecStart answers /readyz on 127.0.0.1:$P_STATUS"
start_unit /lib/systemd/system/witness-agent.service "$WORK/agent.log"
APID=${PIDS[-1]}
wait_200 "http://127.0.0.1:$P_AST/healthz" || { tail -20 "$WORK/agent.log"; exit 1; }
say "ok    the installed witness-agent unit's ExecStart answers /healthz on 127.0.0.1:$P_AST"
for pid in "$APID" "$WPID"; do
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then say "FAIL  pid $pid did not stop within 10 s of SIGTERM"; exit 1; fi
done
PIDS=()
say "ok    both stop on SIGTERM (systemctl stop)"
dpkg --purge witness-agent witness >"$WORK/purge.log" 2>&1 || { cat "$WORK/purge.log"; exit 1; }
[ ! -e /usr/bin/witness ] && [ ! -e /usr/sbin/witness-agent ] && [ ! -e /lib/systemd/system/witness.service ]
say "ok    dpkg --purge removes both"
