//! Handing a big buffer to a process-pool worker (BENCHMARKS.md): 1 MiB / 64 MiB / 1 GiB as a
//! `SharedBytes` (a handle: the worker maps the segment) against the same bytes as a
//! `Vec<u8>` argument (encoded, sent through ipc-channel, decoded), in the same run. The
//! worker returns the length and the last byte, so it really reaches the data. Each figure
//! is one `submit(..).result()` round trip on a 1-worker `ProcessPool` (median and min of
//! k runs). The worker keeps the mapping between tasks (its receiver cache), so only the
//! first hand-off of a segment maps it. `shm repeat`: the same 256 MiB buffer handed again
//! with the worker touching every page, kept mapping against unmapping after each task. Also
//! reported: the one-off cost of *creating* the `SharedBytes` (`from_slice`, a copy in).
//! CPython's peer (`bytes` vs `multiprocessing.shared_memory` through a
//! `ProcessPoolExecutor`) runs at the end: `python3 benches/python_sync_peer.py handoff`.
//!
//! `cargo bench --bench shm` (`POOLRUN_BENCH_NO_PYTHON=1` skips the CPython peer;
//! `POOLRUN_BENCH_SHM_MAX_MIB=64` skips the 1 GiB size, which needs ~5 GiB of memory).
//! Plain harness (`harness = false`), not criterion: a 1 GiB `Vec` round trip takes
//! seconds, far too long for criterion's minimum of 10 samples plus warm-up.

use std::hint::black_box;
use std::time::{Duration, Instant};

use poolrun::shm::SharedBytes;
use poolrun::{Executor, PoolConfig, ProcessPool};

fn take_shared(b: SharedBytes) -> (usize, u8) {
    (b.len(), b.last().copied().unwrap_or(0))
}

/// Read one byte of every page (the worker really maps all of it).
fn touch(b: &SharedBytes) -> u64 {
    b.iter().step_by(4096).map(|&x| u64::from(x)).sum()
}

fn touch_shared(b: SharedBytes) -> u64 {
    touch(&b)
}

/// The same, then unmap at once (what every hand-off cost before the receiver's cache).
fn touch_shared_uncached(b: SharedBytes) -> u64 {
    let s = touch(&b);
    drop(b);
    poolrun::shm::release_cached();
    s
}

fn take_vec(b: Vec<u8>) -> (usize, u8) {
    (b.len(), b.last().copied().unwrap_or(0))
}

/// (median, min) of `k` runs of `f`, each given a fresh input from `prep` (not timed).
fn time<I, O>(
    k: usize,
    mut prep: impl FnMut() -> I,
    mut f: impl FnMut(I) -> O,
) -> (Duration, Duration) {
    let mut v: Vec<Duration> = (0..k)
        .map(|_| {
            let input = prep();
            let t = Instant::now();
            black_box(f(input));
            t.elapsed()
        })
        .collect();
    v.sort();
    (v[v.len() / 2], v[0])
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// The same `SharedBytes` handed to the worker again and again, the worker touching every
/// page: with the receiver's mapping cache (now) against unmapping after each task (the
/// behaviour before issue 11), same run, same pool.
fn repeat_touch(pool: &ProcessPool, mib: usize) {
    let n = mib << 20;
    let shared = SharedBytes::from_slice(&vec![1u8; n]).expect("SharedBytes");
    let pages = n.div_ceil(4096) as u64;
    let t = Instant::now();
    assert_eq!(
        pool.submit(touch_shared, shared.clone()).result(),
        Ok(pages)
    );
    let first = t.elapsed();
    let (cached_med, cached_min) = time(
        20,
        || shared.clone(),
        |b| assert_eq!(pool.submit(touch_shared, b).result(), Ok(pages)),
    );
    let (fresh_med, fresh_min) = time(
        10,
        || shared.clone(),
        |b| assert_eq!(pool.submit(touch_shared_uncached, b).result(), Ok(pages)),
    );
    println!(
        "shm repeat/{mib}MiB touch every page: first {} | again (mapping kept) {} (min {}, k=20) | again, unmapped after each task {} (min {}, k=10) | {:.0}x",
        ms(first),
        ms(cached_med),
        ms(cached_min),
        ms(fresh_med),
        ms(fresh_min),
        fresh_med.as_secs_f64() / cached_med.as_secs_f64()
    );
}

fn main() {
    let max_mib: usize = std::env::var("POOLRUN_BENCH_SHM_MAX_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let pool = ProcessPool::new(PoolConfig::new().workers(1)).expect("pool");
    // Warm up: the worker is forked and has run a task.
    let warm = SharedBytes::from_slice(b"warm").expect("SharedBytes");
    assert_eq!(pool.submit(take_shared, warm).result(), Ok((4, b'm')));

    println!("shm handoff: one submit(..).result() round trip on a 1-worker ProcessPool");
    for (label, mib, k_shared, k_vec) in [
        ("1MiB", 1usize, 50, 20),
        ("64MiB", 64, 20, 5),
        ("1GiB", 1024, 10, 2),
    ] {
        if mib > max_mib {
            println!("shm handoff/{label}: skipped (POOLRUN_BENCH_SHM_MAX_MIB={max_mib})");
            continue;
        }
        let n = mib << 20;
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let last = data[n - 1];

        let (create, _) = time(
            3,
            || (),
            |_| SharedBytes::from_slice(&data).expect("create"),
        );
        let shared = SharedBytes::from_slice(&data).expect("SharedBytes");
        let (sh_med, sh_min) = time(
            k_shared,
            || shared.clone(),
            |b| {
                let r = pool.submit(take_shared, b).result();
                assert_eq!(r, Ok((n, last)));
            },
        );
        drop(shared);
        let (v_med, v_min) = time(
            k_vec,
            || data.clone(),
            |b| {
                let r = pool.submit(take_vec, b).result();
                assert_eq!(r, Ok((n, last)));
            },
        );
        println!(
            "shm handoff/{label}: SharedBytes {} (min {}, k={k_shared}) | Vec<u8> {} (min {}, k={k_vec}) | {:.0}x | creating the SharedBytes once: {}",
            ms(sh_med),
            ms(sh_min),
            ms(v_med),
            ms(v_min),
            v_med.as_secs_f64() / sh_med.as_secs_f64(),
            ms(create)
        );
    }
    repeat_touch(&pool, max_mib.min(256));
    pool.shutdown(true, false);

    if std::env::var_os("POOLRUN_BENCH_NO_PYTHON").is_none() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_sync_peer.py");
        println!("\n== CPython peer: python3 benches/python_sync_peer.py handoff");
        match std::process::Command::new("python3")
            .arg(script)
            .arg("handoff")
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => println!("(python peer failed: {s})"),
            Err(e) => println!("(python3 not available: {e})"),
        }
    }
}
