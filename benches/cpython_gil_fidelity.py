#!/usr/bin/env python3
"""CPython's side of poolrun's GIL-fidelity benchmark.

Runs the experiments that `benches/gil_fidelity.rs` runs on poolrun's emulated GIL, in the
real CPython 3 interpreter, and prints each one's *ratio* (so machines of any speed compare):

  cpu4_thread      4 CPU-bound tasks: serial time / time on 4 threads (ThreadPoolExecutor)
  cpu4_process     4 CPU-bound tasks: serial time / time on 4 processes (ProcessPoolExecutor)
  sleep4_thread    4 sleeping tasks on 4 threads: wall time / one sleep
  sleep100_thread  100 sleeping tasks on 100 threads: wall time / one sleep
  convoy1          a thread doing 100 x 1 ms sleeps: time beside 1 CPU-bound thread / alone
  convoy2          the same beside 2 CPU-bound threads
  convoy1_0.1ms    convoy1 with sys.setswitchinterval(0.0001)
  convoy2_0.1ms    convoy2 with sys.setswitchinterval(0.0001)

Usage: python3 benches/cpython_gil_fidelity.py [--json | --kv] [--repeat N] [--cpu-ms MS]
Each ratio is the median over N repeats (default 3). Pool start-up is excluded (pools are
built and warmed before timing). Prints a table; one JSON object with --json; with --kv, lines `ratio NAME VALUE`,
`extra NAME VALUE` and `python VERSION` (what the Rust bench reads).
"""

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

SLEEP_S = 0.05  # one sleeping task
IO_ITERS = 100  # convoy: iterations of the I/O-ish loop
IO_SLEEP_S = 0.001


def burn(n):
    """CPU-bound pure-Python loop (the eval breaker is polled on every backward jump)."""
    x = 0
    for i in range(n):
        x = (x + i * i) % 1000003
    return x


def calibrate(cpu_ms):
    """Iterations of `burn` that take about cpu_ms on this machine."""
    n = 20000
    while True:
        t0 = time.perf_counter()
        burn(n)
        dt = time.perf_counter() - t0
        if dt > 0.05:
            return max(1, int(n * (cpu_ms / 1000.0) / dt))
        n *= 2


def nothing(_):
    return 0


def sleeper(s):
    time.sleep(s)
    return s


def timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def warm_threads(ex, count):
    """Make a ThreadPoolExecutor start all `count` threads (it reuses idle ones, so trivial
    warm-up tasks would leave most of them unstarted and the timed run would start them)."""
    b = threading.Barrier(count)
    list(ex.map(lambda _: b.wait(), range(count)))


def cpu4(n, kind):
    work = [n] * 4
    if kind == "serial":
        return timed(lambda: [burn(w) for w in work])
    if kind == "thread":
        with ThreadPoolExecutor(max_workers=4) as ex:
            warm_threads(ex, 4)
            return timed(lambda: list(ex.map(burn, work)))
    with ProcessPoolExecutor(max_workers=4) as ex:
        list(ex.map(nothing, range(8)))  # with fork, all 4 workers start at once
        return timed(lambda: list(ex.map(burn, work)))


def sleeps(count):
    with ThreadPoolExecutor(max_workers=count) as ex:
        warm_threads(ex, count)
        return timed(lambda: list(ex.map(sleeper, [SLEEP_S] * count))) / SLEEP_S


def io_loop():
    per = []
    t0 = time.perf_counter()
    for _ in range(IO_ITERS):
        s = time.perf_counter()
        time.sleep(IO_SLEEP_S)
        per.append(time.perf_counter() - s)
    return time.perf_counter() - t0, per


def cpu_until(stop):
    x = 0
    i = 0
    while not stop.is_set():
        x = (x + i * i) % 1000003
        i += 1


def convoy(n_cpu, interval):
    """Time of the I/O loop beside n_cpu CPU-bound threads (seconds, per-iteration list)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        stop = threading.Event()
        cpus = [threading.Thread(target=cpu_until, args=(stop,)) for _ in range(n_cpu)]
        for t in cpus:
            t.start()
        time.sleep(0.02)  # let the CPU threads get going
        res = {}
        io = threading.Thread(target=lambda: res.setdefault("r", io_loop()))
        io.start()
        io.join()
        stop.set()
        for t in cpus:
            t.join()
        return res["r"]
    finally:
        sys.setswitchinterval(old)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--kv", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cpu-ms", type=float, default=200.0, help="one CPU task, ms")
    a = ap.parse_args()
    if a.repeat < 1 or a.cpu_ms <= 0:
        ap.error("--repeat and --cpu-ms must be positive")

    n = calibrate(a.cpu_ms)
    ratios = {}
    extra = {}

    ser, thr, pro = [], [], []
    for _ in range(a.repeat):
        s = cpu4(n, "serial")
        ser.append(s)
        thr.append(s / cpu4(n, "thread"))
        pro.append(s / cpu4(n, "process"))
    ratios["cpu4_thread"] = statistics.median(thr)
    ratios["cpu4_process"] = statistics.median(pro)
    extra["cpu4_serial_s"] = statistics.median(ser)

    ratios["sleep4_thread"] = statistics.median(sleeps(4) for _ in range(a.repeat))
    ratios["sleep100_thread"] = statistics.median(sleeps(100) for _ in range(a.repeat))

    for interval, suffix in ((0.005, ""), (0.0001, "_0.1ms")):
        alone = statistics.median(convoy(0, interval)[0] for _ in range(a.repeat))
        extra["io_alone_ms" + suffix] = alone * 1000
        for k in (1, 2):
            runs = [convoy(k, interval) for _ in range(a.repeat)]
            tot = statistics.median(r[0] for r in runs)
            per = [p for r in runs for p in r[1]]
            ratios[f"convoy{k}{suffix}"] = tot / alone
            extra[f"convoy{k}{suffix}_iter_p50_ms"] = pct(per, 0.5) * 1000
            extra[f"convoy{k}{suffix}_iter_p99_ms"] = pct(per, 0.99) * 1000

    out = {
        "python": sys.version.split()[0],
        "switch_interval_s": sys.getswitchinterval(),
        "cpu_task_iterations": n,
        "repeat": a.repeat,
        "ratios": ratios,
        "extra": extra,
    }
    if a.json:
        print(json.dumps(out))
    elif a.kv:
        print("python", out["python"])
        for k, v in ratios.items():
            print("ratio", k, repr(v))
        for k, v in extra.items():
            print("extra", k, repr(v))
    else:
        print(f"CPython {out['python']}, repeat {a.repeat} (medians)")
        for k, v in ratios.items():
            print(f"  {k:<18} {v:8.3f}")
        for k, v in extra.items():
            print(f"  {k:<28} {v:10.3f}")


if __name__ == "__main__":
    main()
