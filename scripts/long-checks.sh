#!/usr/bin/env bash
# Long runs of the protocol checks (not in CI): a deeper model check, many more simulation
# seeds, and the real-process chaos mode.
#   scripts/long-checks.sh [--model-ticks N] [--seeds N] [--sim-ticks N] [--chaos-seeds N --chaos-minutes M] [--reports]
# --reports: the report-only measurements with real processes (clock rates beyond the stated
# bound; needs root), which are not tests and so not in scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_TICKS=3 SEEDS=20000 SIM_TICKS=2000 CHAOS_SEEDS=0 CHAOS_MINUTES=10 REPORTS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --model-ticks) MODEL_TICKS=$2; shift 2 ;;
        --seeds) SEEDS=$2; shift 2 ;;
        --sim-ticks) SIM_TICKS=$2; shift 2 ;;
        --chaos-seeds) CHAOS_SEEDS=$2; shift 2 ;;
        --chaos-minutes) CHAOS_MINUTES=$2; shift 2 ;;
        --reports) REPORTS=1; shift ;;
        *) echo "unknown option $1 (see the header of $0)" >&2; exit 64 ;;
    esac
done
echo "== model check, horizons +$MODEL_TICKS ticks"
MODEL_EXTRA_TICKS=$MODEL_TICKS MODEL_MAX_STATES=400000000 \
    cargo test --release -p witness-proto --test model_check -- --nocapture
echo "== simulation, $SEEDS seeds x $SIM_TICKS ticks"
SIM_SEEDS=$SEEDS SIM_TICKS=$SIM_TICKS cargo test --release -p witness-proto --test simulation -- --nocapture
if [ "$CHAOS_SEEDS" -gt 0 ]; then
    echo "== real-process chaos, $CHAOS_SEEDS seeds"
    scripts/chaos.sh --seeds "$CHAOS_SEEDS" --minutes "$CHAOS_MINUTES"
fi
if [ "$REPORTS" -eq 1 ]; then
    echo "== report-only measurements (real processes, clock rates beyond the bound)"
    cargo test -p witness-tests --test scenarios report_only_ -- --nocapture --ignored
fi
