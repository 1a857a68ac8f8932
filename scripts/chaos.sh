#!/usr/bin/env bash
# Real-process fault runs of the witness and agents (crate tests/, needs root: network
# namespaces, nftables, libfaketime).
#
#   scripts/chaos.sh --seeds N --minutes M [--first-seed S]
#       N random fault schedules of M minutes each (seeds S..S+N-1; S defaults to a random
#       number, printed), the checker after every run; a failing seed is replayed with
#       CHAOS_SEED=<seed> CHAOS_SECS=<secs> cargo test -p witness-tests --test chaos -- --nocapture --include-ignored
#   scripts/chaos.sh --scenarios
#       runs the 13 scenario tests and the CI chaos slice, then renders docs/scenarios.md
#   scripts/chaos.sh --report
#       renders docs/scenarios.md from the rows already in target/scenario-report/
#
# Environment: WT_PARALLEL (clusters at once, default 3), WITNESS_BIN / AGENT_BIN (binaries;
# default target/release, built first), CARGO_TARGET_DIR. (Plain `cargo test -p witness-tests`
# uses the newer of target/release and target/debug.)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ROWS=$TARGET_DIR/scenario-report

SEEDS=0
MINUTES=1
FIRST=""
MODE=chaos
while [ $# -gt 0 ]; do
    case "$1" in
        --seeds) SEEDS=$2; shift 2 ;;
        --minutes) MINUTES=$2; shift 2 ;;
        --first-seed) FIRST=$2; shift 2 ;;
        --report) MODE=report; shift ;;
        --scenarios) MODE=scenarios; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
done

if [ "$(id -u)" != 0 ] && [ "$MODE" != report ]; then
    echo "skipped: needs root for network namespaces" >&2
    exit 0
fi

render() {
    cargo run -q -p witness-tests --bin scenario-report -- \
        --rows "$ROWS" --header tests/scenarios-header.md --out docs/scenarios.md
    echo "wrote docs/scenarios.md ($(ls "$ROWS"/*.json 2>/dev/null | wc -l) rows from $ROWS)"
}

build() {
    cargo build --release -p witness -p witness-agent
    export WITNESS_BIN=${WITNESS_BIN:-$TARGET_DIR/release/witness}
    export AGENT_BIN=${AGENT_BIN:-$TARGET_DIR/release/witness-agent}
}

case "$MODE" in
    report)
        render
        ;;
    scenarios)
        build
        rm -f "$ROWS"/*.json
        cargo test -p witness-tests --test scenarios -- --nocapture --include-ignored
        CHAOS_REPORT=1 cargo test -p witness-tests --test chaos -- --nocapture --include-ignored
        render
        ;;
    chaos)
        if [ "$SEEDS" -lt 1 ]; then
            echo "nothing to do: give --seeds N (and --minutes M), --scenarios or --report" >&2
            exit 64
        fi
        build
        if [ -z "$FIRST" ]; then FIRST=$(( (RANDOM << 15 | RANDOM) % 1000000 )); fi
        LIST=$(seq -s, "$FIRST" $((FIRST + SEEDS - 1)))
        SECS=$((MINUTES * 60))
        echo "chaos: seeds $LIST, $SECS s each (replay one with CHAOS_SEED=<seed> CHAOS_SECS=$SECS)"
        CHAOS_SEEDS=$LIST CHAOS_SECS=$SECS CHAOS_REPORT=1 \
            cargo test -p witness-tests --test chaos -- --nocapture --include-ignored
        ;;
esac
