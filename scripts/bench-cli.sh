#!/usr/bin/env bash
# Command-line throughput on trivial tasks, poolrun against xargs in the same run:
#
#   scripts/bench-cli.sh [ROUNDS] [LINES]        # defaults: 3 rounds, 1,000,000 lines
#   OLD=<commit> scripts/bench-cli.sh            # also an older poolrun, interleaved
#
# Each round runs, one after the other: `seq 1 N | poolrun --mode process -j 2 echo`,
# the same in thread mode, and `seq 1 N | xargs -P 2 -n 1000 echo` (xargs hands 1000
# lines to each `echo`; poolrun runs one task per line and prints one result line per
# input, in input order). Output goes to a file and is checked for N lines. Prints the
# wall time and max RSS of each run (GNU time), then the medians.
set -euo pipefail
rounds=${1:-3}
n=${2:-1000000}
root=$(cd "$(dirname "$0")/.." && pwd)
(cd "$root" && cargo build --release -q -p poolrun-cli)
new="$root/target/release/poolrun"
old=""
if [ -n "${OLD:-}" ]; then
  wt=/tmp/poolrun-cli-ab-$OLD
  [ -d "$wt" ] || git -C "$root" worktree add -q "$wt" "$OLD"
  (cd "$wt" && CARGO_TARGET_DIR=/tmp/poolrun-cli-ab-target cargo build --release -q -p poolrun-cli)
  old=/tmp/poolrun-cli-ab-target/release/poolrun
fi
out=$(mktemp)
log=$(mktemp)
one() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$log.t" bash -c "$*" >"$out"
  local lines; lines=$(wc -l <"$out")
  read -r wall rss <"$log.t"
  echo "$label $wall $rss $lines" | tee -a "$log"
}
for r in $(seq 1 "$rounds"); do
  one poolrun-process "seq 1 $n | $new --mode process -j 2 echo"
  one poolrun-thread "seq 1 $n | $new --mode thread -j 2 echo"
  if [ -n "$old" ]; then
    one old-process "seq 1 $n | $old --mode process -j 2 echo"
    one old-thread "seq 1 $n | $old --mode thread -j 2 echo"
  fi
  one xargs-P2-n1000 "seq 1 $n | xargs -P 2 -n 1000 echo"
done
python3 - "$log" "$n" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    label, wall, rss, lines = line.split()
    runs[label].append((float(wall), int(rss), int(lines)))
print(f"\n{sys.argv[2]} lines, median of {len(next(iter(runs.values())))} runs:")
for label, v in runs.items():
    print(f"{label:18} {statistics.median(w for w, _, _ in v):6.2f} s  max RSS {max(r for _, r, _ in v)/1024:.1f} MiB  output lines {v[0][2]}")
PY
