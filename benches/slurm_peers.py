#!/usr/bin/env python3
"""The peers of the Slurm benchmark (scripts/bench-slurm.sh runs them beside SlurmPool on
the same cluster): a raw `sbatch --array` of the same commands, and submitit's `map_array`.

    slurm_peers.py raw noop N          one array element per task: `true`
    slurm_peers.py raw sleep N MS      one array element per task: `sleep MS/1000`
    slurm_peers.py submitit noop N     submitit map_array of a no-op function
    slurm_peers.py submitit sleep N MS submitit map_array of time.sleep(MS/1000)

Prints one line `PEER-BENCH N SECS`. `-j N` (first) caps the elements running at once
(default 8, the test cluster's CPUs). The clock runs from submission until every result is
in (raw: until the array has left squeue, polled every 0.1 s).
"""
import subprocess
import sys
import tempfile
import time


def raw(kind, n, ms, j):
    cmd = "true" if kind == "noop" else f"sleep {ms / 1000}"
    t = time.monotonic()
    out = subprocess.run(
        ["sbatch", "--parsable", f"--array=0-{n - 1}%{j}", "--output=/dev/null",
         "--job-name=peer-raw", "--wrap", cmd],
        check=True, capture_output=True, text=True).stdout
    job = out.strip().split(";")[0]
    while subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"],
                         capture_output=True, text=True).stdout.strip():
        time.sleep(0.1)
    return time.monotonic() - t


def noop(x):
    return x


def sleeper(ms):
    time.sleep(ms / 1000)
    return ms


def submitit_run(kind, n, ms, j):
    import submitit
    with tempfile.TemporaryDirectory(prefix="peer-submitit-", dir="/tmp") as d:
        ex = submitit.AutoExecutor(folder=d, cluster="slurm")
        ex.update_parameters(timeout_min=120, cpus_per_task=1, slurm_array_parallelism=j,
                             name="peer-submitit")
        t = time.monotonic()
        if kind == "noop":
            jobs = ex.map_array(noop, range(n))
        else:
            jobs = ex.map_array(sleeper, [ms] * n)
        results = [job.result() for job in jobs]
        took = time.monotonic() - t
        assert len(results) == n
        return took


def main(argv):
    j = 8
    if argv[:1] == ["-j"]:
        j = int(argv[1])
        argv = argv[2:]
    peer, kind, n = argv[0], argv[1], int(argv[2])
    ms = int(argv[3]) if kind == "sleep" else 0
    took = (raw if peer == "raw" else submitit_run)(kind, n, ms, j)
    label = "noop" if kind == "noop" else f"sleep{ms}"
    print(f"{peer}-{label} {n} {took:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
