#!/usr/bin/env python3
"""CPython peer for benches/threadpool.rs: tiny no-op tasks through ThreadPoolExecutor.

    python3 benches/python_thread_peer.py [N] [WORKERS]

Prints seconds and ns/task for submit-then-result and for map, the same shapes the Rust
bench measures. N defaults to 200,000 (CPython needs ~10 µs per task; the per-task figure is
what BENCHMARKS.md compares)."""
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def noop(x):
    return x


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    w = int(sys.argv[2]) if len(sys.argv) > 2 else os.cpu_count()
    with ThreadPoolExecutor(max_workers=w) as ex:
        ex.submit(noop, 0).result()  # warm up the threads
        for name, run in (
            ("submit_then_result", lambda: [f.result() for f in [ex.submit(noop, i) for i in range(n)]]),
            ("map", lambda: list(ex.map(noop, range(n)))),
        ):
            best = None
            for _ in range(3):
                t = time.perf_counter()
                run()
                e = time.perf_counter() - t
                best = e if best is None else min(best, e)
            print(f"cpython ThreadPoolExecutor {name}: {n} tasks on {w} threads: "
                  f"{best:.3f} s = {best / n * 1e9:.0f} ns/task (best of 3)")


if __name__ == "__main__":
    main()
