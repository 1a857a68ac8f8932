#!/usr/bin/env bash
# The project's test command (README): formatting, lints, every crate's tests (protocol model
# check, simulation slice, mutation checks, scenario tests, witness and agent integration
# tests, the real-process network-namespace harness), then the offline deployment checks.
# Tests that need root for network namespaces say "skipped: needs root" when run without it;
# CI runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo build (the binaries the harness and the deploy checks start)"
cargo build --workspace --bins

echo "== kubernetes control plane (kube-apiserver, -controller-manager, -scheduler, kine from Go modules; cached)"
# Built once per version into ~/.cache/witness-kube (a rerun finds it there); tests/tests/kube.rs
# then runs the agents against it inside cargo test. Without Go that test says "skipped".
export PATH="$PATH:/usr/local/go/bin"
if command -v go >/dev/null; then
    start=$SECONDS
    scripts/kube-fixture.sh build
    echo "kubernetes control plane ready in $((SECONDS - start)) s"
else
    echo "skipped: Go is not installed (needed to build the Kubernetes control plane)"
fi

echo "== cargo test"
mkdir -p target
# Show the lines that matter as they come; the verdict is cargo's own exit status.
set +e
cargo test --workspace --no-fail-fast -- --nocapture 2>&1 | tee target/test-output.log |
    grep --line-buffered -E '^(test |running |test result|model check|simulation:|checker|skipped|.*caught)'
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "cargo test failed with status $status (full output in target/test-output.log):"
    grep -E 'panicked|FAILED|failures:|^error' target/test-output.log | head -50
    exit "$status"
fi
grep -E '^test result' target/test-output.log |
    awk '{p+=$4; f+=$6; i+=$8} END {printf "cargo test: %d passed, %d failed, %d ignored\n", p, f, i}'

echo "== deployment checks (manifests, alerts, dashboard, units, metrics the binaries export)"
WITNESS_BIN="$PWD/target/debug/witness" AGENT_BIN="$PWD/target/debug/witness-agent" \
    scripts/check-deploy.sh
