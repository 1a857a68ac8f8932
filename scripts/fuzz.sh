#!/usr/bin/env bash
# Builds and runs every fuzz target (fuzz/, cargo-fuzz with libFuzzer) for N seconds each,
# prints the executions per target and any crash (with the path of the crashing input), and
# exits non-zero when a target crashed or could not be built or run.
#
#   scripts/fuzz.sh                 # 300 s per target (a long run)
#   scripts/fuzz.sh --seconds 5     # a short run (what scripts/test.sh does)
#   scripts/fuzz.sh --seconds 600 lease_request stored_record   # only these targets
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`). New inputs
# that reach new code go to fuzz/target/corpus-new/<target>/, not to the committed corpus
# (fuzz/corpus/<target>/ is only read); to keep some, minimise them into the corpus with
# `cargo +nightly fuzz cmin`, see docs/fuzzing.md. Crashes stay in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=300
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
        --seconds=*) seconds="${1#--seconds=}"; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 64 ;;
        *) targets+=("$1"); shift ;;
    esac
done
case "$seconds" in
    ''|*[!0-9]*) echo "fuzz.sh: --seconds wants a whole number of seconds, got '$seconds'" >&2; exit 64 ;;
esac

toolchain="${FUZZ_TOOLCHAIN:-nightly}"
if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: FAILED: 'cargo +$toolchain fuzz' does not run: install the $toolchain toolchain" >&2
    echo "  (rustup toolchain install $toolchain) and cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
    exit 1
fi
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi

# No AddressSanitizer: every crate of ours forbids unsafe code, and what the targets look for
# is panics, overflows and broken properties; without it builds and runs are several times
# faster. 16 codegen units: a much quicker build for a slightly slower fuzzer.
build_flags=(--sanitizer none --codegen-units 16)
# The fuzz build is a second full build of our dependencies with coverage instrumentation
# (minutes on two cores): keep it outside the checkout, so a fresh clone on the same machine
# (as CI makes) rebuilds only our own crates.
fuzz_target_dir="${WITNESS_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/witness/fuzz-target}"
mkdir -p "$fuzz_target_dir"
build_flags+=(--target-dir "$fuzz_target_dir")
echo "== fuzz build ($(cargo "+$toolchain" fuzz --version), ${#targets[@]} targets)"
start=$(date +%s)
cargo "+$toolchain" fuzz build "${build_flags[@]}"
echo "fuzz build: $(( $(date +%s) - start )) s"

bin_dir="$fuzz_target_dir/x86_64-unknown-linux-gnu/release"
logs="target/fuzz-logs"
# The targets that decode files write each input to a scratch file under TMPDIR: our own, on
# tmpfs when there is one (rewriting a file on ext4 costs a block flush: 300 instead of 20,000
# inputs per second).
TMPDIR="$(mktemp -d /dev/shm/witness-fuzz.XXXXXX 2>/dev/null || mktemp -d)"
export TMPDIR
mkdir -p "$logs"
failed=()
printf '%-20s %12s %10s  %s\n' TARGET EXECUTIONS EXEC/S RESULT
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "target/corpus-new/$t" "artifacts/$t"
    log="$logs/$t.log"
    case "$t" in
        witness_config|agent_config) dict=(-dict=dict/toml.dict) ;;
        certificate_der|certificate_pem|identity_uri|lease_proof) dict=() ;;
        lease_port_http) dict=(-dict=dict/http.dict) ;;
        *) dict=(-dict=dict/json.dict) ;;
    esac
    set +e
    # The new-corpus directory first: libFuzzer writes new inputs to the first directory only.
    "$bin_dir/$t" -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" -rss_limit_mb=2048 -timeout=10 "${dict[@]}" \
        "target/corpus-new/$t" "corpus/$t" >"$log" 2>&1
    status=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ "$status" -eq 0 ]; then
        result=ok
    else
        result="FAILED (exit $status)${crash:+: crash input fuzz/$crash}"
        failed+=("$t")
    fi
    printf '%-20s %12s %10s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$result"
    if [ "$status" -ne 0 ]; then
        grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 | sed 's/^/    /'
        echo "    full log: fuzz/$log; reproduce: cargo +$toolchain fuzz run ${build_flags[*]} $t ${crash:-<input>}"
    fi
done
rm -rf "$TMPDIR"

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (crash inputs under fuzz/artifacts/)"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds} s each, no crash"
