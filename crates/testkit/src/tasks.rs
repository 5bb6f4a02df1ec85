//! The plain `fn` tasks the conformance, seam and fault suites run in every mode (tasks are
//! `fn` pointers so one test runs against a thread pool and a process pool alike).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `x * x`.
pub fn square(x: u64) -> u64 {
    x * x
}

/// Sleep `ms` with the GIL released, then return `ms`.
pub fn sleep_ms(ms: u64) -> u64 {
    poolrun_core::gil::allow_threads(|| std::thread::sleep(Duration::from_millis(ms)));
    ms
}

/// Sleep `ms`, then return `v` (to make completion order differ from input order).
pub fn sleep_then(arg: (u64, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(arg.0));
    arg.1
}

/// Panic (`boom on {x}`) for odd `x`, else return `x`.
pub fn panics_on_odd(x: u64) -> u64 {
    if x % 2 == 1 {
        panic!("boom on {x}");
    }
    x
}

/// `(pid, thread id)`: identifies the worker that ran the task.
pub fn whoami(_: ()) -> (u32, String) {
    (
        std::process::id(),
        format!("{:?}", std::thread::current().id()),
    )
}

/// Spin until stopped (calls `checkpoint`, so thread mode can stop it; process mode kills).
pub fn spin_forever(_: ()) -> u64 {
    let mut i = 0u64;
    loop {
        i = i.wrapping_add(1);
        poolrun_core::gil::checkpoint();
        std::hint::black_box(i);
    }
}

/// Spin `ms` with checkpoints, then return `ms`.
pub fn spin_ms(ms: u64) -> u64 {
    let t = Instant::now();
    let mut i = 0u64;
    while t.elapsed() < Duration::from_millis(ms) {
        i = i.wrapping_add(1);
        poolrun_core::gil::checkpoint();
    }
    std::hint::black_box(i);
    ms
}

/// Spin `ms` (with checkpoints), then return `v`.
pub fn spin_then(arg: (u64, u64)) -> u64 {
    spin_ms(arg.0);
    arg.1
}

/// Spin `us` microseconds (with checkpoints), then return `v`.
pub fn spin_us_then(arg: (u64, u64)) -> u64 {
    let t = Instant::now();
    while t.elapsed() < Duration::from_micros(arg.0) {
        poolrun_core::gil::checkpoint();
    }
    arg.1
}

/// Block on `ev` (no checkpoint while blocked: a thread-mode kill cannot stop it), then
/// record that it got past.
pub fn block_on_event(
    arg: (
        poolrun_core::sync::Event,
        poolrun_core::shm::SharedArray<u64>,
    ),
) -> u64 {
    let (ev, arr) = arg;
    ev.wait(None);
    arr.set(0, 1);
    1
}

/// Record that this task ran: `arr[i] += 1` (visible to the parent in both modes).
pub fn mark(arg: (poolrun_core::shm::SharedArray<u64>, usize)) -> u64 {
    let (arr, i) = arg;
    arr.set(i, arr.get(i) + 1);
    i as u64
}

/// What [`init_set`] stored in this worker.
pub static INIT_VALUE: AtomicU64 = AtomicU64::new(0);

/// An initializer: store `v` in [`INIT_VALUE`].
pub fn init_set(v: u64) {
    INIT_VALUE.store(v, Ordering::SeqCst);
}

/// An initializer that panics.
pub fn init_panics(_: u64) {
    panic!("initializer exploded");
}

/// Read [`INIT_VALUE`] in the worker.
pub fn read_init(_: ()) -> u64 {
    INIT_VALUE.load(Ordering::SeqCst)
}
