//! Task functions and helpers shared by the integration tests. Tasks are plain `fn`s so the
//! same test runs against a thread pool and a process pool.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn square(x: u64) -> u64 {
    x * x
}

pub fn sleep_ms(ms: u64) -> u64 {
    poolrun::gil::allow_threads(|| std::thread::sleep(Duration::from_millis(ms)));
    ms
}

/// Sleep `ms`, then return `v` (to make completion order differ from input order).
pub fn sleep_then(arg: (u64, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(arg.0));
    arg.1
}

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
        poolrun::gil::checkpoint();
        std::hint::black_box(i);
    }
}

pub fn spin_ms(ms: u64) -> u64 {
    let t = Instant::now();
    let mut i = 0u64;
    while t.elapsed() < Duration::from_millis(ms) {
        i = i.wrapping_add(1);
        poolrun::gil::checkpoint();
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
        poolrun::gil::checkpoint();
    }
    arg.1
}

/// Block on `ev` (no checkpoint while blocked: a thread-mode kill cannot stop it), then
/// record that it got past.
pub fn block_on_event(arg: (poolrun::sync::Event, poolrun::shm::SharedArray<u64>)) -> u64 {
    let (ev, arr) = arg;
    ev.wait(None);
    arr.set(0, 1);
    1
}

/// Record that this task ran: `arr[i] += 1` (visible to the parent in both modes).
pub fn mark(arg: (poolrun::shm::SharedArray<u64>, usize)) -> u64 {
    let (arr, i) = arg;
    arr.set(i, arr.get(i) + 1);
    i as u64
}

pub static INIT_VALUE: AtomicU64 = AtomicU64::new(0);

pub fn init_set(v: u64) {
    INIT_VALUE.store(v, Ordering::SeqCst);
}

pub fn init_panics(_: u64) {
    panic!("initializer exploded");
}

pub fn read_init(_: ()) -> u64 {
    INIT_VALUE.load(Ordering::SeqCst)
}

/// Poll `cond` for up to `limit`; true once it holds.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Child processes of this process that are zombies right now.
pub fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let state = it.next().unwrap_or("");
        let ppid: u32 = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == me && state == "Z" {
            out.push(pid);
        }
    }
    out
}

pub const T: Duration = Duration::from_secs(20);
