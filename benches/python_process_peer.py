#!/usr/bin/env python3
"""CPython peers for benches/procpool.rs: the same shapes through ProcessPoolExecutor and
multiprocessing.Pool (start method "fork", CPython's Linux default before 3.14).

    python3 benches/python_process_peer.py [N] [WORKERS]

Prints, per shape, the best of 3 runs: seconds and µs per task; round-trip latency per call;
start-up time (constructor, and constructor + one answered task per worker) for 2 and 16
workers."""
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def noop(x):
    return x


def best_of(k, fn):
    best = None
    for _ in range(k):
        t = time.perf_counter()
        fn()
        e = time.perf_counter() - t
        best = e if best is None else min(best, e)
    return best


def report(name, n, secs):
    print(f"cpython {name}: {n} tasks: {secs:.3f} s = {secs / n * 1e6:.1f} us/task (best of 3)")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    w = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    ctx = mp.get_context("fork")

    # round trip on one worker
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
        ex.submit(noop, 0).result()
        k = 2000
        t = best_of(3, lambda: [ex.submit(noop, i).result() for i in range(k)])
        print(f"cpython ProcessPoolExecutor round trip (1 worker): {t / k * 1e6:.1f} us/call (best of 3 x {k})")
    with ctx.Pool(1) as pool:
        pool.apply(noop, (0,))
        k = 2000
        t = best_of(3, lambda: [pool.apply(noop, (i,)) for i in range(k)])
        print(f"cpython multiprocessing.Pool apply round trip (1 worker): {t / k * 1e6:.1f} us/call (best of 3 x {k})")

    with ProcessPoolExecutor(max_workers=w, mp_context=ctx) as ex:
        list(ex.map(noop, range(w * 4)))
        report(f"ProcessPoolExecutor({w}) submit_then_result", n,
               best_of(3, lambda: [f.result() for f in [ex.submit(noop, i) for i in range(n)]]))
        report(f"ProcessPoolExecutor({w}) map chunksize=1", n,
               best_of(3, lambda: list(ex.map(noop, range(n)))))
        report(f"ProcessPoolExecutor({w}) map chunksize=256", n,
               best_of(3, lambda: list(ex.map(noop, range(n), chunksize=256))))
    with ctx.Pool(w) as pool:
        pool.map(noop, range(w * 4))
        report(f"multiprocessing.Pool({w}) apply_async+get", n,
               best_of(3, lambda: [r.get() for r in [pool.apply_async(noop, (i,)) for i in range(n)]]))
        report(f"multiprocessing.Pool({w}) map chunksize=1", n,
               best_of(3, lambda: pool.map(noop, range(n), chunksize=1)))
        report(f"multiprocessing.Pool({w}) map chunksize=256", n,
               best_of(3, lambda: pool.map(noop, range(n), chunksize=256)))

    for workers in (2, 16):
        def ppe_ready():
            ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
            list(ex.map(noop, range(workers)))
            return ex
        def pool_new():
            return ctx.Pool(workers)
        def pool_ready():
            p = ctx.Pool(workers)
            p.map(noop, range(workers), chunksize=1)
            return p
        for name, make, close in (
            ("ProcessPoolExecutor ready (first map answered)", ppe_ready, lambda e: e.shutdown()),
            ("multiprocessing.Pool new", pool_new, lambda p: (p.terminate(), p.join())),
            ("multiprocessing.Pool ready (first map answered)", pool_ready, lambda p: (p.terminate(), p.join())),
        ):
            best = None
            for _ in range(5):
                t = time.perf_counter()
                obj = make()
                e = time.perf_counter() - t
                close(obj)
                best = e if best is None else min(best, e)
            print(f"cpython {name}, {workers} workers: {best * 1e3:.2f} ms (best of 5)")


if __name__ == "__main__":
    main()
