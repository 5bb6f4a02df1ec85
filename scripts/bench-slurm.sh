#!/usr/bin/env bash
# The Slurm benchmark: SlurmPool against a raw `sbatch --array` of the same commands and
# submitit's map_array, interleaved, on the same running cluster (scripts/slurm/start.sh).
#
#   scripts/bench-slurm.sh [ROUNDS]        # default 3 rounds of the 200 x 50 ms set
#
# Knobs: NOOP=10000 (no-op tasks for SlurmPool), PEER_NOOP=$NOOP (no-op tasks for the two
# peers: each array element is a Slurm job, ~8 per second on the 8-CPU test node, so 10,000
# take about 20 minutes each), SLEEP_N=200, SLEEP_MS=50, J=8 (array tasks / elements at
# once). Needs python3 with submitit (`pip install submitit`) for the submitit column.
# Prints one line per measurement and a summary table (medians) at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
NOOP=${NOOP:-10000}
PEER_NOOP=${PEER_NOOP:-$NOOP}
SLEEP_N=${SLEEP_N:-200}
SLEEP_MS=${SLEEP_MS:-50}
J=${J:-8}

squeue >/dev/null || { echo "no Slurm cluster: start one with scripts/slurm/start.sh" >&2; exit 2; }
cargo build --release -q -p poolrun-slurm --example slurm_bench
ours=target/release/examples/slurm_bench
peers="python3 benches/slurm_peers.py"
has_submitit=1
python3 -c 'import submitit' 2>/dev/null || { has_submitit=0; echo "(submitit not installed: its column is skipped)"; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# Keep only the result lines (`name tasks secs`); submitit logs its sacct warnings.
run() { "$@" 2>/dev/null | grep -E '^[a-z0-9-]+ [0-9]+ [0-9.]+$' | tee -a "$out"; }

echo "== one submit().result(), $ROUNDS times"
run $ours -j "$J" latency "$ROUNDS"
echo "== $SLEEP_N x $SLEEP_MS ms, $ROUNDS rounds, interleaved"
for _ in $(seq "$ROUNDS"); do
    run $ours -j "$J" sleep "$SLEEP_N" "$SLEEP_MS"
    run $peers -j "$J" raw sleep "$SLEEP_N" "$SLEEP_MS"
    [ "$has_submitit" = 1 ] && run $peers -j "$J" submitit sleep "$SLEEP_N" "$SLEEP_MS"
done
echo "== no-op tasks: SlurmPool $NOOP ($ROUNDS rounds), peers $PEER_NOOP (once)"
for _ in $(seq "$ROUNDS"); do run $ours -j "$J" noop "$NOOP"; done
run $peers -j "$J" raw noop "$PEER_NOOP"
[ "$has_submitit" = 1 ] && run $peers -j "$J" submitit noop "$PEER_NOOP"

echo
python3 - "$out" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, n, secs = line.split()
    rows.setdefault((name, int(n)), []).append(float(secs))
print("| measurement | tasks | median s | runs (s) |")
print("|---|---:|---:|---|")
for (name, n), v in sorted(rows.items()):
    print(f"| {name} | {n} | {statistics.median(v):.2f} | {', '.join(f'{x:.2f}' for x in v)} |")
PY
