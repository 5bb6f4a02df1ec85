#!/usr/bin/env python3
"""CPython peers for benches/sync.rs and benches/shm.rs (start method "fork").

    python3 benches/python_sync_peer.py            # sync: lock + condition ping-pong
    python3 benches/python_sync_peer.py handoff    # shm: bytes vs SharedMemory to a worker

sync: uncontended acquire+release of multiprocessing.Lock / RLock / threading.Lock (ns per
pair, best of 5); a Condition ping-pong round trip between two processes
(multiprocessing.Condition + a multiprocessing.Value turn flag) and between two threads
(threading.Condition), the same protocol as poolrun's bench.

handoff: hand 1 MiB / 64 MiB / 1 GiB to a ProcessPoolExecutor worker that returns its length
and last byte: as `bytes` (pickled through the pipe) and as a
multiprocessing.shared_memory.SharedMemory name the worker attaches to."""
import multiprocessing as mp
import sys
import threading
import time


def best(k, fn):
    b = None
    for _ in range(k):
        t = time.perf_counter()
        fn()
        e = time.perf_counter() - t
        b = e if b is None else min(b, e)
    return b


def lock_loop(lock, n):
    acq, rel = lock.acquire, lock.release
    for _ in range(n):
        acq()
        rel()


def empty_loop(n):
    for _ in range(n):
        pass


def play(cond, turn, me, rounds):
    for _ in range(rounds):
        with cond:
            while turn.value != me:
                cond.wait(30)
            turn.value = 1 - me
            cond.notify()


class Box:
    def __init__(self):
        self.value = 0


def sync_peers():
    ctx = mp.get_context("fork")
    n = 1_000_000
    base = best(5, lambda: empty_loop(n))
    for name, lock in [
        ("multiprocessing.Lock", ctx.Lock()),
        ("multiprocessing.RLock", ctx.RLock()),
        ("threading.Lock", threading.Lock()),
    ]:
        t = best(5, lambda: lock_loop(lock, n))
        print(f"cpython lock_uncontended/{name}: {t / n * 1e9:.1f} ns per acquire+release "
              f"(loop overhead {base / n * 1e9:.1f} ns included)")

    m = 20_000
    t = best(3, lambda: [ctx.Lock() for _ in range(m)])
    print(f"cpython create/multiprocessing.Lock(): {t / m * 1e6:.2f} us each")

    rounds = 20_000
    cond = ctx.Condition()
    turn = ctx.Value("i", 0, lock=False)
    p = ctx.Process(target=play, args=(cond, turn, 1, rounds))
    p.start()
    t = time.perf_counter()
    play(cond, turn, 0, rounds)
    e = time.perf_counter() - t
    p.join(30)
    print(f"cpython condition_pingpong/multiprocessing.Condition_2_processes: "
          f"{e / rounds * 1e6:.2f} us per round trip ({rounds} rounds)")

    cond = threading.Condition()
    turn = Box()
    th = threading.Thread(target=play, args=(cond, turn, 1, rounds))
    th.start()
    t = time.perf_counter()
    play(cond, turn, 0, rounds)
    e = time.perf_counter() - t
    th.join(30)
    print(f"cpython condition_pingpong/threading.Condition_2_threads: "
          f"{e / rounds * 1e6:.2f} us per round trip ({rounds} rounds)")


def take_bytes(b):
    return len(b), b[-1]


def take_shm(arg):
    from multiprocessing import shared_memory
    name, n = arg
    s = shared_memory.SharedMemory(name=name)
    r = (n, s.buf[n - 1])
    s.close()
    return r


def handoff_peers():
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import shared_memory
    ctx = mp.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        ex.submit(len, b"warm").result()
        for label, n, k in [("1MiB", 1 << 20, 20), ("64MiB", 64 << 20, 5), ("1GiB", 1 << 30, 2)]:
            data = bytes(range(256)) * (n // 256)
            t_bytes = best(k, lambda: ex.submit(take_bytes, data).result())
            s = shared_memory.SharedMemory(create=True, size=n)
            try:
                s.buf[:n] = data
                t_shm = best(k, lambda: ex.submit(take_shm, (s.name, n)).result())
            finally:
                s.close()
                s.unlink()
            del data
            print(f"cpython handoff/{label}: bytes {t_bytes * 1e3:.3f} ms, "
                  f"SharedMemory by name {t_shm * 1e3:.3f} ms (best of {k})")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "handoff":
        handoff_peers()
    else:
        sync_peers()
