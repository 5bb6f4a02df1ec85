//! What the fault-injection and soak suites (`tests/fault_*.rs`, `tests/soak_*.rs`) share:
//! the probes of `poolrun-testkit` (resident memory, open fds, `/dev/shm`, zombies and live
//! children, from `/proc`), the fault suite itself (`faults.rs`) and the soak run below.
//!
//! Each resource-counting test lives in its own test binary (one `#[test]` that counts per
//! binary, or a binary-wide mutex), because other tests of the same binary would create
//! pools and fds in parallel threads.
#![allow(dead_code)]

pub mod faults;

pub use poolrun_testkit::*;

/// The soak run shared by `tests/soak_process.rs` and `tests/soak_thread.rs`:
/// `POOLRUN_SOAK_TASKS` (default 100,000; 1,000,000 with `POOLRUN_SOAK=1`) tiny
/// tasks through one pool of `mode`, in segments of 10,000 that rotate between `submit`
/// with a done-callback, `map_unordered` (chunks of 16) and ordered `map` (chunks of 64);
/// every value is checked, RSS is sampled after each segment, and the growth after the
/// warm-up (the first tenth, at least two segments) must stay under 10 MiB. Prints one
/// `SOAK-SUMMARY` line (the figure in RELIABILITY.md).
pub mod soak {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use poolrun::{Executor, Mode, Pool, PoolConfig};

    use super::*;

    fn tiny(x: u64) -> u64 {
        x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 5
    }

    const SEGMENT: u64 = 10_000;
    const LIMIT: u64 = 10 << 20;

    /// Run the soak in `mode`; panics with the figures if RSS grew too much or a value was
    /// wrong, lost or duplicated.
    pub fn run(mode: Mode) {
        let _g = serial();
        let total = env_num(
            "POOLRUN_SOAK_TASKS",
            if env_flag("POOLRUN_SOAK") {
                1_000_000
            } else {
                100_000
            },
        )
        .max(SEGMENT * 3);
        let segments = total.div_ceil(SEGMENT);
        let warm = (segments / 10).max(2);
        let workers = 2;
        let pool = Pool::new(mode, PoolConfig::new().workers(workers)).expect("pool");
        let t0 = Instant::now();
        let mut samples = Vec::with_capacity(segments as usize);
        let mut done = 0u64;
        let limit = Duration::from_secs(60);
        for s in 0..segments {
            let base = s * SEGMENT;
            let n = SEGMENT.min(total - base);
            match s % 3 {
                0 => {
                    let sum = Arc::new(AtomicU64::new(0));
                    let calls = Arc::new(AtomicU64::new(0));
                    let mut futs = Vec::with_capacity(1000);
                    for x in base..base + n {
                        let f = pool.submit(tiny, x);
                        let (sum, calls) = (sum.clone(), calls.clone());
                        f.add_done_callback(move |r| {
                            if let Ok(v) = r {
                                sum.fetch_add(*v, Ordering::Relaxed);
                            }
                            calls.fetch_add(1, Ordering::SeqCst);
                        });
                        futs.push((x, f));
                        if futs.len() == 1000 || x + 1 == base + n {
                            for (x, f) in futs.drain(..) {
                                assert_eq!(f.result_timeout(limit), Ok(tiny(x)), "task {x}");
                            }
                        }
                    }
                    let want: u64 = (base..base + n).fold(0u64, |a, x| a.wrapping_add(tiny(x)));
                    assert!(eventually(limit, || calls.load(Ordering::SeqCst) == n));
                    assert_eq!(
                        sum.load(Ordering::SeqCst),
                        want,
                        "callbacks saw other values"
                    );
                    assert_eq!(
                        calls.load(Ordering::SeqCst),
                        n,
                        "callbacks ran more than once"
                    );
                }
                1 => {
                    let mut seen = vec![false; n as usize];
                    for (i, r) in pool.map_unordered(tiny, base..base + n).chunksize(16) {
                        let x = base + i as u64;
                        assert_eq!(r, Ok(tiny(x)), "task {x}");
                        assert!(!std::mem::replace(&mut seen[i], true), "task {x} twice");
                    }
                    assert!(seen.iter().all(|b| *b), "map_unordered lost a result");
                }
                _ => {
                    let mut count = 0u64;
                    for (k, r) in pool.map(tiny, base..base + n).chunksize(64).enumerate() {
                        assert_eq!(r, Ok(tiny(base + k as u64)), "task {}", base + k as u64);
                        count += 1;
                    }
                    assert_eq!(count, n, "map lost or duplicated results");
                }
            }
            done += n;
            samples.push(rss_bytes());
        }
        let elapsed = t0.elapsed();
        pool.shutdown(true, false);
        drop(pool);
        assert!(
            eventually(Duration::from_secs(20), || children().is_empty()),
            "children left: {:?}",
            children()
        );
        let base_rss = samples[warm as usize - 1];
        let after = &samples[warm as usize..];
        let max_after = after.iter().copied().max().unwrap_or(base_rss);
        let growth = max_after.saturating_sub(base_rss);
        let last = samples.last().copied().unwrap_or(base_rss);
        println!(
            "SOAK-SUMMARY mode={mode} workers={workers} tasks={done} elapsed={:.1}s \
             rate={:.0}/s rss_first={:.1}MiB rss_after_warmup={:.1}MiB rss_max_after={:.1}MiB \
             rss_last={:.1}MiB growth_after_warmup={:.2}MiB (limit {:.0} MiB)",
            elapsed.as_secs_f64(),
            done as f64 / elapsed.as_secs_f64(),
            mib(samples[0]),
            mib(base_rss),
            mib(max_after),
            mib(last),
            mib(growth),
            mib(LIMIT)
        );
        assert!(
            growth < LIMIT,
            "RSS grew {:.2} MiB after warm-up; samples (MiB): {:?}",
            mib(growth),
            samples.iter().map(|b| mib(*b)).collect::<Vec<_>>()
        );
    }
}
