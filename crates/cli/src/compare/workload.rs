//! The three workloads `compare` runs, as pool tasks. The CPU-bound one is the built-in
//! `primes` task's prime count (one implementation for both).

use std::time::Duration;

use poolrun::gil;

use crate::builtin::count_primes_below;

/// Candidates below this are tested for primality by one CPU-bound task (`--workload cpu`);
/// about 100 ms of work on a 2020s x86 core.
pub(super) const CPU_PRIMES_BELOW: u64 = 1_500_000;
/// One I/O-bound task: a sleep of this many ms with the GIL released.
pub(super) const IO_SLEEP_MS: u64 = 20;
/// One mixed task: primes below this (about 20 ms) then a sleep of `MIXED_SLEEP_MS`.
pub(super) const MIXED_PRIMES_BELOW: u64 = 300_000;
pub(super) const MIXED_SLEEP_MS: u64 = 20;

/// CPU-bound task: the number of primes below `n` (a checkpoint per candidate).
pub(super) fn cpu_task(n: u64) -> u64 {
    count_primes_below(n)
}

/// I/O-bound task: sleep `ms` with the GIL released; returns `ms`.
pub(super) fn io_task(ms: u64) -> u64 {
    gil::allow_threads(|| std::thread::sleep(Duration::from_millis(ms)));
    ms
}

/// Mixed task: count primes below `n`, then sleep `ms` with the GIL released.
pub(super) fn mixed_task((n, ms): (u64, u64)) -> u64 {
    let c = count_primes_below(n);
    gil::allow_threads(|| std::thread::sleep(Duration::from_millis(ms)));
    c
}

/// Warm-up task: returns its argument.
pub(super) fn noop(x: u64) -> u64 {
    x
}
