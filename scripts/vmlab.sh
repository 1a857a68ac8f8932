#!/usr/bin/env bash
# The whole VM lab (tests/tests/vmlab.rs): the real agent in qemu VMs (TCG) with the real
# i6300esb watchdog and real DRBD 8.4 between the rooms. scripts/test.sh runs the short slice
# (watchdog reset after SIGKILL, loss of room b); this runs every scenario, one at a time, then
# writes the rows they measured (target/vmlab-report/*.json) into the VM lab table of
# docs/scenarios.md and tests/scenarios-header.md (between the `vmlab-rows` markers), also
# when a scenario failed (its row says FAIL and why).
# Needs root and the packages .ci/run installs (qemu-system-x86 busybox-static cpio kmod
# drbd-utils nftables binutils); the first run downloads the kernel package (apt-get download)
# into target/vmlab-cache. Console logs: target/vmlab-logs/<scenario>/.
#   scripts/vmlab.sh                 every scenario, then the table
#   scripts/vmlab.sh --exact NAME    one scenario (cargo test filter arguments), then the table
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
# The guests run the release agent (a debug build is too slow under TCG).
cargo build --release -p witness-agent
set +e
AGENT_BIN="$PWD/target/release/witness-agent" \
    cargo test --workspace --features witness-tests/vmlab --test vmlab -- --ignored --nocapture --test-threads 1 "$@"
status=$?
set -e
if [ "$(id -u)" = 0 ]; then
    target/debug/vmlab-report docs/scenarios.md tests/scenarios-header.md
else
    echo "not root: the scenarios were skipped; docs/scenarios.md left as it is"
fi
exit "$status"
