#!/usr/bin/env bash
# The long version of the Kubernetes scenarios (tests/tests/kube.rs): the agents against a real
# kube-apiserver, kube-controller-manager and kube-scheduler (built and cached by
# scripts/kube-fixture.sh), run N times for each takeover mode, then the figures: power cut to
# the takeover, and power cut to the last replacement pod bound on the survivor, with
# `kubernetes.takeover_delete = "pods-and-vmis"` (the survivor force-deletes the lost room's
# pods and VMIs after the bound) and `"none"` (the out-of-service taint alone; the controller
# manager's node-monitor grace and pod GC decide). scripts/test.sh runs one pass of the first.
#
# Usage: scripts/kube-long.sh [N] (default 5). Needs root and Go (.ci/run installs both).
# Every run's output: target/kube-long/<mode>-<i>.log; the control plane's logs of a failed
# run are kept (WITNESS_KEEP_LOGS) and named in its log.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5}
export PATH="$PATH:/usr/local/go/bin"
scripts/kube-fixture.sh build >/dev/null
cargo build -p witness -p witness-agent --bins
cargo test -p witness-tests --test kube --no-run
OUT=target/kube-long
mkdir -p "$OUT"
failed=0
for mode in pods-and-vmis none; do
    for i in $(seq 1 "$N"); do
        dir=$(mktemp -d)
        log="$OUT/$mode-$i.log"
        if WITNESS_KEEP_LOGS=1 WITNESS_KUBE_MEASURE_DIR="$dir" WITNESS_KUBE_TAKEOVER_DELETE="$mode" \
            cargo test -p witness-tests --test kube -- --ignored --nocapture >"$log" 2>&1; then
            verdict=ok
        else
            verdict=FAILED
            failed=$((failed + 1))
        fi
        takeover=$(cat "$dir/power_cut_to_takeover_ms" 2>/dev/null || echo -)
        bound=$(cat "$dir/power_cut_to_replacement_bound_ms.$mode" 2>/dev/null || echo -)
        unfence=$(grep -o "fence taint removed [0-9]* ms" "$log" | grep -o "[0-9]*" || echo -)
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$i" "$verdict" "$takeover" "$bound" "$unfence" \
            >>"$OUT/figures.tsv.new"
        printf '%-14s run %2d  %-6s  takeover %6s ms  last replacement bound %6s ms  unfenced %5s ms after the lift\n' \
            "$mode" "$i" "$verdict" "$takeover" "$bound" "$unfence"
        rm -rf "$dir"
    done
done
mv "$OUT/figures.tsv.new" "$OUT/figures.tsv"
# min / median / max of the power cut to the last replacement bound, per mode.
python3 - "$OUT/figures.tsv" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
for mode in ("pods-and-vmis", "none"):
    ok = [int(r[4]) for r in rows if r[0] == mode and r[2] == "ok" and r[4].isdigit()]
    tk = [int(r[3]) for r in rows if r[0] == mode and r[2] == "ok" and r[3].isdigit()]
    runs = sum(1 for r in rows if r[0] == mode)
    if ok:
        print(f"{mode}: {len(ok)}/{runs} runs passed; power cut -> takeover "
              f"{min(tk)}/{int(statistics.median(tk))}/{max(tk)} ms; -> last replacement bound "
              f"min/median/max {min(ok)}/{int(statistics.median(ok))}/{max(ok)} ms")
    else:
        print(f"{mode}: 0/{runs} runs passed")
EOF
[ "$failed" = 0 ] || { echo "$failed run(s) failed: see $OUT/*.log"; exit 1; }
