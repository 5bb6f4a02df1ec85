//! Resource probes shared by the fault-injection and soak suites (`tests/fault_*.rs`,
//! `tests/soak_*.rs`): resident memory, open fds, `/dev/shm`, zombies and live children, all
//! read from `/proc` of this process.
//!
//! Each resource-counting test lives in its own test binary (one `#[test]` that counts per
//! binary, or a binary-wide mutex), because other tests of the same binary would create
//! pools and fds in parallel threads.
#![allow(dead_code)]

pub mod faults;

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Serialises the resource-counting tests of one binary (`cargo test` runs tests in
/// parallel threads; nextest gives each its own process, where this is free).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resident set size of this process in bytes (`VmRSS` in `/proc/self/status`).
pub fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Bytes → MiB, for messages.
pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// The open fds of this process: number → link target.
pub fn fds() -> Vec<(u32, String)> {
    fds_of("self")
}

/// The open fds of process `who` (`"self"` or a pid): number → link target. An fd that
/// closes while we read is skipped.
pub fn fds_of(who: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(format!("/proc/{who}/fd")) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(n) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(t) = std::fs::read_link(e.path()) {
            out.push((n, t.to_string_lossy().into_owned()));
        }
    }
    out.sort();
    out
}

/// Number of open fds of this process (minus the one `read_dir` itself holds).
pub fn fd_count() -> usize {
    fds().len()
}

/// Names in `/dev/shm` right now (empty if it does not exist).
pub fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `(pid, state)` of every process whose parent is this process.
pub fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((state, ppid)) = stat_of(pid) {
            if ppid == me {
                out.push((pid, state));
            }
        }
    }
    out
}

/// Children of this process that are zombies right now.
pub fn zombies() -> Vec<u32> {
    children()
        .into_iter()
        .filter(|&(_, s)| s == 'Z')
        .map(|(p, _)| p)
        .collect()
}

/// `(state, ppid)` of `pid` from `/proc/<pid>/stat`.
pub fn stat_of(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may contain spaces, so split after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Poll `cond` every 2 ms for up to `limit`; true once it holds.
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

/// No core files from the crashes we provoke (workers inherit the limit through fork).
pub fn no_core_dumps() {
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
}

/// A small, seedable xorshift generator (the suites must be reproducible from a seed
/// printed on failure, and need no extra crate).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// From `POOLRUN_SEED` if set, else from the clock; the seed is printed.
    pub fn from_env(name: &str) -> Rng {
        let seed = std::env::var("POOLRUN_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9e37_79b9_7f4a_7c15)
            });
        eprintln!("{name}: POOLRUN_SEED={seed}");
        Rng::new(seed)
    }

    /// From a fixed seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x2545_f491_4f6c_dd1d | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// An env var as a number, or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// True when the long forms were asked for (`POOLRUN_SOAK=1` / `POOLRUN_FAULT_LONG=1`).
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The soak run shared by `tests/soak_process.rs` and `tests/soak_thread.rs` (issue 6,
/// item 2): `POOLRUN_SOAK_TASKS` (default 100,000; 1,000,000 with `POOLRUN_SOAK=1`) tiny
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
