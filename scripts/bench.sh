#!/usr/bin/env bash
# scripts/bench.sh: runs every benchmark and writes docs/benchmarks.md.
#
#   scripts/bench.sh            # full run (about 6-10 minutes on the 2-core machine)
#   QUICK=1 scripts/bench.sh    # smaller load, 2 failover runs (a smoke check of the script)
#
# Steps: install etcd if missing (apt-get, as root), build the release binaries, then
#   0. callgrind : instructions per renewal of the witness and of the transport floor, the
#                  server under valgrind, a fixed number of renewals (skipped without valgrind;
#                  BEFORE_WITNESS_BIN=/path/to/an/older/witness adds its count as "before");
#   1. loadgen   : 10,000 two-room clusters renewing at the default renew interval against the
#                  real `witness serve` (capped by the open-files limit), then two lower loads;
#                  each followed by the transport floor (bin `floor`: rustls mutual TLS + hyper
#                  HTTP/1.1 keep-alive, a fixed reply of the witness's size) with the same load;
#   2. etcdload  : after each, the same number of leases kept alive against one local etcd;
#   3. failover  : 5 whole-room losses at default timings with real processes;
# and assembles docs/benchmarks.md (machine, load average, figures, targets, gaps).
# Everything binds 127.0.0.1 only; every process started is stopped by the benchmark itself.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT_MD=${OUT_MD:-$ROOT/docs/benchmarks.md}
QUICK=${QUICK:-0}
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release

if [ "$QUICK" = 1 ]; then
    CLUSTERS=1000; LOWER="500"; SECONDS_MEASURE=8; RUNS=2
else
    CLUSTERS=10000; LOWER="4000 2000"; SECONDS_MEASURE=20; RUNS=5
fi

log() { printf '\n== %s\n' "$*" >&2; }

if ! command -v etcd >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing etcd (etcd-server, etcd-client)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client >/dev/null ||
            { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server etcd-client >/dev/null; } ||
            echo "warning: could not install etcd; the side-by-side step is skipped" >&2
    else
        echo "warning: etcd is not installed and this is not root; the side-by-side step is skipped" >&2
    fi
fi

log "building release binaries"
cargo build --release -p witness -p witness-agent -p witness-bench

# One connection per identity needs one descriptor each; raise the limit where allowed.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

export WITNESS_BIN=$BIN/witness AGENT_BIN=$BIN/witness-agent BENCH_NO_BUILD=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
START=$(date -u +%FT%TZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$(date +%s)

# Instructions per renewal: repeatable whatever else the machine runs.
CG_CLUSTERS=20; CG_RENEWALS=50
if command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1; then
    if [ -n "${BEFORE_WITNESS_BIN:-}" ]; then
        log "0. callgrind: the witness before ($BEFORE_WITNESS_BIN)"
        WITNESS_BIN=$BEFORE_WITNESS_BIN "$BIN/loadgen" --clusters $CG_CLUSTERS --callgrind $CG_RENEWALS \
            --callgrind-keep "$WORK/cg-before" | tee -a "$WORK/callgrind.txt"
        BEFORE_IR=$(sed -n 's/^callgrind: witness: .*, \([0-9]*\) per request.*/\1/p' "$WORK/callgrind.txt" | tail -1)
    fi
    log "0. callgrind: the witness and the floor, $CG_CLUSTERS clusters x 2 identities x $CG_RENEWALS renewals"
    "$BIN/loadgen" --clusters $CG_CLUSTERS --callgrind $CG_RENEWALS --floor --callgrind-keep "$WORK/cg" \
        --markdown "$WORK/05-callgrind.md" | tee -a "$WORK/callgrind.txt"
    if [ -n "${BEFORE_IR:-}" ]; then
        printf 'Before (%s): %s instructions per renewal.\n\n' "$BEFORE_WITNESS_BIN" "$BEFORE_IR" >> "$WORK/05-callgrind.md"
    fi
    if command -v python3 >/dev/null 2>&1 && [ -f "$WORK/cg/callgrind.witness.out" ]; then
        # The witness's own cost by function (self instructions), per renewal.
        python3 - "$WORK/cg/callgrind.witness.out" $((CG_CLUSTERS * 2 * CG_RENEWALS)) >> "$WORK/05-callgrind.md" <<'PY'
import collections, re, sys
names, cost, fn, after_call = {}, collections.Counter(), None, False
def name(tok):
    m = re.match(r'\((\d+)\)(?: (.*))?', tok)
    if not m:
        return tok
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names.get(m.group(1), tok)
for line in open(sys.argv[1]):
    line = line.rstrip('\n')
    if line.startswith('fn='):
        fn = name(line[3:])
    elif line.startswith('cfn='):
        name(line[4:])
    elif line.startswith('calls='):
        after_call = True
    elif line[:1].isdigit() or line[:1] in '+-*':
        if after_call:
            after_call = False  # the inclusive cost of a call, not this function's own
        elif fn and len(line.split()) > 1:
            cost[fn] += int(line.split()[1])
total, n = sum(cost.values()), int(sys.argv[2])
print('Where the witness\'s instructions go (self cost by function, top 15):\n')
print('| function | instructions per renewal | share |\n|---|---|---|')
for f, c in cost.most_common(15):
    f = f.replace('|', '\\|')[:110]
    print(f'| `{f}` | {c / n:.0f} | {100 * c / total:.1f}% |')
print()
PY
    fi
else
    printf '## Instructions per renewal (callgrind)\n\nSkipped: valgrind is not installed (apt-get install valgrind).\n\n' > "$WORK/05-callgrind.md"
fi

# Each load level: the witness, the transport floor, then etcd with the same number of leases
# (same run).
level=0
for N in $CLUSTERS $LOWER; do
    level=$((level + 1))
    log "1.$level witness capacity: $N clusters"
    "$BIN/loadgen" --clusters "$N" --seconds "$SECONDS_MEASURE" --floor \
        --json-out "$WORK/witness-$level.json" --markdown "$WORK/1$level-a-load.md" | tee -a "$WORK/load.txt"
    IDS=$(sed -n 's/.*"identities":\([0-9]*\).*/\1/p' "$WORK/witness-$level.json")
    if command -v etcd >/dev/null 2>&1; then
        log "2.$level etcd with the same $IDS leases"
        "$BIN/etcdload" --leases "$IDS" --seconds "$SECONDS_MEASURE" \
            --witness-json "$WORK/witness-$level.json" --markdown "$WORK/1$level-b-etcd.md" | tee -a "$WORK/etcd.txt"
    else
        printf '## Side by side: etcd\n\nSkipped: etcd is not installed (apt-get install etcd-server).\n\n' > "$WORK/1$level-b-etcd.md"
    fi
done

log "3. failover at default timings, $RUNS runs"
"$BIN/failover" --runs "$RUNS" --markdown "$WORK/40-failover.md" | tee "$WORK/failover.txt"

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(( $(date +%s) - T0 ))
MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MEM=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1024/1024}' /proc/meminfo)

{
cat <<EOF
# Benchmarks

Generated by \`scripts/bench.sh\` (do not edit by hand; the analysis text lives in the script).

| | |
|---|---|
| run | $START, $ELAPSED s, commit \`$(git rev-parse --short HEAD)\`$(git diff --quiet HEAD -- witness harness bench 2>/dev/null || echo ' (+ local changes)') |
| machine | $(nproc) cores, $MODEL, $MEM RAM, Linux $(uname -r) |
| load average (1/5/15 min) at start / end | $LOAD_START / $LOAD_END |
| open-files limit | $(ulimit -n) |
| reproduce | \`scripts/bench.sh\` (root installs etcd if missing; \`QUICK=1\` for a short smoke run) |

The load generator runs on the same 2-core machine as the witness, so the two compete for the
same cores. The machine is shared: other jobs (compilers, test suites) may run at the same time;
the load average above and the "machine CPU" rows say how busy it was. CPU per renewal (from
/proc/<pid>/stat) is the figure least affected by that. Throughput at full load varies with
what else runs: in three runs on this machine the same day the 9,900-cluster load sustained
8,115, 14,478 and 5,314 renewals/s, with other processes taking roughly 95%, 26% and 122% of
the 200% CPU; CPU per renewal stayed at 74-96 us.

EOF
cat "$WORK"/05-callgrind.md
for f in $(ls "$WORK"/1*-*.md | sort); do cat "$f"; done
cat "$WORK"/40-failover.md
cat <<'EOF'
## Where the time goes (witness hot path), and what was changed

Two figures per change. **Instructions per renewal** (callgrind, the witness under valgrind,
20 clusters x 2 identities x 50 paired renewals after a warm-up; the section above): exact and
repeatable whatever else runs. **Witness CPU per renewal** (`/proc/<pid>/stat` over the
measured window divided by the renewals, 2,000 clusters = 4,000 renewals/s, loadgen and floor
on the same 2 cores): these were taken on 2026-11-30 while six other builders compiled and
tested on the same 2 cores (machine CPU 200% busy, other processes 150-180% of it), so they
carry that noise (cache and scheduler contention make them higher, not lower); the latency
figures of such runs say nothing about the witness. The transport floor was measured in the
same runs.

| witness build | instructions per renewal | witness CPU per renewal | largest costs |
|---|---|---|---|
| 2026-11-23 (jsonwebtoken::encode per proof) | | 123-132 us | Ed25519 in curve25519-dalek ~40% of samples |
| before (ring Ed25519, key parsed once; a proof on every grant) | 312,570 | 88 us | Ed25519 signing (base-point multiply, field arithmetic, SHA-512) ~35%, malloc/free ~14% |
| + a proof only on grants to act alone; one JSON parse; lease counters looked up once | 54,413 | 41-51 us | malloc/free ~20%, JSON parse and serialize ~12%, hyper, TLS records, tokio |
| + peer identity shared per connection; reply serialized once into a right-sized buffer; rate-limit key allocated only for a new identity | 50,618 | 34 us | malloc/free ~17% (String clones in the cluster table and arbiter, request extensions), serde_json (UTF-8 checks, escaping) ~12% |
| transport floor (rustls mutual TLS 1.3 + hyper HTTP/1.1, fixed reply of the witness's size) | 19,244 | 20-25 us | AES-GCM records, hyper parse/encode, tokio, syscalls |

* **Proofs only where they are read** (`witness/src/api.rs`): a grant to act alone (any
  takeover permit) carries a signed proof; a paired grant carries none. The proof's reader is
  the takeover: the agent writes the proof of the grant it takes over under into the
  `witness.dev/takeover-proof` annotation, and auditors check it offline against `/v1/jwks`.
  Nothing reads a proof of a paired grant (the DRBD fence-peer handler asks the local agent
  whether it has taken over, not for a token), and a paired renewal changes nobody's rights.
  Signing every renewal cost about 250,000 instructions of the 312,000 (docs/witness.md,
  "Signed lease proofs"; the test `alone_grants_carry_a_proof_that_a_standard_jwt_library_verifies_against_the_jwks`
  checks with jsonwebtoken against `/v1/jwks` that every proof sent verifies and that every
  alone grant carries one). Caching one proof per (cluster, epoch, mode) was the alternative;
  it would still sign every few renewals, and a cached proof's `exp` ends before the lease it
  stands for, so it was not taken.
* **One JSON parse** (`parse_versioned`): a body that parses is read once, straight into the
  request; only a body that does not is read again as a generic value, to say what is wrong
  in the same order as before (version first).
* **Fewer allocations**: the peer's identity is shared (`Arc`) instead of three strings cloned
  twice per request; the reply is serialized once into a buffer of about its size; the rate
  limiter looks its bucket up by `&str`; the lease counters are resolved once; the identity URI
  is built without `format!`.
* **Against the floor**: the witness now costs about 2.6x the floor's instructions per request
  and, in CPU from /proc (which also counts the kernel's TCP and scheduling work both share),
  1.35-2.1x of the floor's CPU per request in the runs above: the 1.5x target is met only in the
  noisier run. What is left above the floor: malloc/free (~8,500 instructions per renewal:
  String clones of cluster, room and node names in `clusters.rs` and the arbiter, request
  extensions), serde_json (~6,000: parse with UTF-8 checks, escaping on output), axum routing
  (~2,000), the cluster table and arbiter (~5,000). Next levers, not taken here: borrowed names
  in the arbiter's input, a faster allocator, answering `/v1/lease` without the axum router.
* **CPU per renewal depends on the rate**: at a low rate each request wakes the runtime's
  threads and the kernel on its own, so the fixed cost per wake-up is shared by fewer requests.
  In the same busy hour, 1,000 clusters (2,000 renewals/s) measured 82 us per renewal for the
  witness and 44 us per request for the floor (1.87x), against 34 and 25 us (1.35x) at 2,000
  clusters. Compare the witness with the floor at the same rate, and instructions across builds.
* **Full load, 9,900 clusters (19,800 renewals/s offered), 2026-11-30 under the same shared
  load** (one run, 12 s): the witness sustained 19,091/s (slowest second 14,791) at 36.8 us CPU
  per renewal (before: 7,667/s at 111 us, 2026-11-23), p99 7.4 s because both cores were busy
  (other processes 85%, witness threads waiting for a CPU 129% of the window), RSS peak 599 MiB
  (connected 431 MiB: memory per connection was not addressed here, see below). The floor in
  the same run: 19,803/s, 20.9 us per request, p99 63 ms, RSS peak 404 MiB (connected 371 MiB:
  most of the per-connection memory is rustls's and hyper's, not the witness's). Witness /
  floor CPU 1.76x. p99 <= 25 ms and RSS <= 256 MiB at this load remain open.
* **No disk on renewals**: plain renewals change no record and are not persisted (only
  decisions are, with group commit), so sled does not appear in the renewal profile; TLS
  handshakes cost about 0.45 ms of witness CPU each but happen once per connection.
* **Memory**: about 21-22 KiB per kept-alive mutual-TLS connection while idle ("connected"
  RSS / connections: 428 MiB for 19,800), of which 16 KiB is hyper's: hyper 1.x allocates an
  8 KiB header write buffer per connection and reserves an 8 KiB read buffer on the first read
  (`INIT_BUFFER_SIZE` in hyper's `proto/h1/io.rs`), and keeps both for the connection's life;
  the rest is rustls's connection state and the connection task. Not allocator fragmentation:
  with `MALLOC_ARENA_MAX=1` the connected RSS is the same (179.6 vs 180.2 MiB for 8,000
  connections). While requests queue because the CPU is saturated, every connection holds
  request and response buffers at once and the peak grows (~600 MiB at 19,800 connections).
  When the witness keeps up, the peak is ~27 KiB per connection (214 MiB for 8,000), so 512 MiB
  holds up to about 19,000 connections. Levers left (not changed: both change behaviour):
  hyper's `read_buf_exact_size` (a fixed, smaller read buffer also lowers the largest accepted
  request head, today 64 KiB), or HTTP/2 multiplexing of one site's nodes over one connection.
* **Open-files limit**: this machine's hard limit is 20,000 descriptors per process
  (`ulimit -Hn`, not raisable without CAP_SYS_RESOURCE), and both the witness and the load
  generator need one per connection, so the "10,000 clusters" run uses 9,900 clusters (19,800
  identities and connections). In production raise `LimitNOFILE` for the witness.

## Open points

* etcd 3.4 at the full load (19,800 keep-alive streams, each on its own HTTP/2 connection)
  did not keep up in our runs: it stalled (keep-alives timing out at 10 s, RSS 1.3-2.9 GiB);
  at 8,000 and 4,000 leases it kept up. The lower levels are the like-for-like comparison.
  Not investigated further (a real etcd client multiplexes many leases over one connection).
* On restart, a fenced room's agent is told to fence within ~10 ms of starting, before its
  watchdog thread has opened the device, so its fencing reports `driver watchdog: failed`
  (seen in the demo, docs/demo.md). Harmless there (the node runs nothing yet), but an
  agent-side race worth fixing (agent/ is not ours to change here).
EOF
} > "$OUT_MD"

log "wrote $OUT_MD"
