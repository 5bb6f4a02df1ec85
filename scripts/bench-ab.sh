#!/usr/bin/env bash
# A/B of the thread-pool and process-pool criterion benches between two commits, run
# interleaved on the same machine (old, new, new, old, ...), so drift hits both alike.
#
#   scripts/bench-ab.sh OLD_COMMIT [ROUNDS]      # NEW = the working tree
#
# Builds OLD in a git worktree under /tmp (its own target dir), prints one line per bench
# function: the median of each run, old vs new.
set -euo pipefail
old=${1:?usage: scripts/bench-ab.sh OLD_COMMIT [ROUNDS]}
rounds=${2:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
wt=/tmp/poolrun-ab-$old
[ -d "$wt" ] || git -C "$root" worktree add -q "$wt" "$old"
(cd "$wt" && CARGO_TARGET_DIR=/tmp/poolrun-ab-target cargo bench --bench threadpool --bench procpool --no-run >/dev/null 2>&1)
(cd "$root" && cargo bench --bench threadpool --bench procpool --no-run >/dev/null 2>&1)
bin() { ls -t "$1"/release/deps/"$2"-* | grep -v '\.d$' | head -1; }
export POOLRUN_BENCH_NO_PYTHON=1
log=$(mktemp)
for r in $(seq 1 "$rounds"); do
  for b in threadpool procpool; do
    for side in old new; do
      if [ "$side" = old ]; then x=$(bin /tmp/poolrun-ab-target "$b"); else x=$(bin "$root/target" "$b"); fi
      echo "=== $side $b" >>"$log"
      (cd "$root" && "$x" --bench --noplot 2>&1) | grep -E "time:|^[a-z_0-9]+/" >>"$log" || true
    done
  done
done
python3 - "$log" <<'PY'
import re, sys
res = {}
side = bench = name = None
for line in open(sys.argv[1]):
    m = re.match(r'=== (\w+) (\w+)', line)
    if m:
        side, bench = m.groups(); continue
    head = line.split('time:')[0].strip()
    if head and '%' not in line: name = head
    t = re.search(r'time:\s*\[[\d.]+ \S+ ([\d.]+) (\S+)', line)
    if t and '%' not in line and name:
        v = float(t.group(1)) * {'ns': 1e-3, 'µs': 1, 'ms': 1e3, 's': 1e6}[t.group(2)]
        res.setdefault((bench, name), {}).setdefault(side, []).append(v)
for (b, n), d in sorted(res.items()):
    f = lambda xs: ', '.join(f'{x:.1f}' for x in xs)
    print(f"{b:10} {n:58} old [{f(d.get('old', []))}] new [{f(d.get('new', []))}] µs")
PY
