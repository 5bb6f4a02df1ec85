//! Per-fault-kind leak probes for the process pool: each kind of failure is repeated in
//! rounds on one pool, and the parent's RSS —
//! measured after `malloc_trim(0)`, so free memory the allocator keeps does not count —
//! must not grow by more than 1 MiB from the second round to the last. Kinds: SIGKILL of a
//! worker with jobs in flight (re-queue path), `task_timeout` kills, panics with
//! done-callbacks, results that fail to decode, chunked `map`.
//!
//! Ignored by default (about 25 s in release, longer in debug):
//! `cargo test --release --test fault_rss_kinds -- --ignored --nocapture`.

mod fault_util;

use std::time::Duration;

use fault_util::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use poolrun::{Executor, PoolConfig, ProcessPool};

#[derive(serde::Serialize, Debug)]
struct Bad(u64);

impl<'de> serde::Deserialize<'de> for Bad {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let _ = u64::deserialize(d)?;
        Err(serde::de::Error::custom("bad"))
    }
}

fn panics(x: u32) -> u32 {
    if x < u32::MAX {
        panic!("injected panic {x}")
    }
    x
}
fn bad(x: u32) -> Bad {
    Bad(x.into())
}
fn slow(x: u32) -> u32 {
    std::thread::sleep(Duration::from_millis(2));
    x
}
fn hang(x: u32) -> u32 {
    std::thread::sleep(Duration::from_secs(100));
    x
}

fn trimmed_mib() -> f64 {
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    mib(rss_bytes())
}

fn check(kind: &str, samples: &[f64]) {
    let growth = samples[samples.len() - 1] - samples[1];
    println!("RSS-KIND {kind}: trimmed RSS per round (MiB) {samples:.2?}, growth after round 1 {growth:.2} MiB");
    assert!(
        growth < 1.0,
        "{kind}: RSS grew {growth:.2} MiB: {samples:?}"
    );
}

#[test]
#[ignore = "leak probe, ~25 s in release: cargo test --release --test fault_rss_kinds -- --ignored"]
fn no_growth_per_fault_kind() {
    let _g = serial();
    no_core_dumps();
    let pool = ProcessPool::new(
        PoolConfig::new()
            .workers(4)
            .task_timeout(Some(Duration::from_millis(50))),
    )
    .expect("pool");
    let limit = Duration::from_secs(60);
    let mut s = Vec::new();
    for _ in 0..5 {
        for _ in 0..300 {
            let futs: Vec<_> = (0..8).map(|i| pool.submit(slow, i)).collect();
            std::thread::sleep(Duration::from_millis(1));
            if let Some(&p) = pool.worker_pids().first() {
                let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
            }
            for f in futs {
                assert!(f.wait(Some(limit)));
            }
        }
        s.push(trimmed_mib());
    }
    check("sigkill-with-jobs-in-flight", &s);
    let mut s = Vec::new();
    for _ in 0..4 {
        let futs: Vec<_> = (0..40).map(|i| pool.submit(hang, i)).collect();
        for f in futs {
            assert!(matches!(
                f.result_timeout(limit),
                Err(poolrun::TaskError::TimedOut { .. })
            ));
        }
        s.push(trimmed_mib());
    }
    check("task-timeout", &s);
    let mut s = Vec::new();
    for _ in 0..4 {
        let futs: Vec<_> = (0..50_000)
            .map(|i| {
                let f = pool.submit(panics, i);
                f.add_done_callback(|_| {});
                f
            })
            .collect();
        for f in futs {
            assert!(matches!(
                f.result_timeout(limit),
                Err(poolrun::TaskError::Panicked { .. })
            ));
        }
        s.push(trimmed_mib());
    }
    check("panic+callback", &s);
    let mut s = Vec::new();
    for _ in 0..4 {
        let futs: Vec<_> = (0..50_000).map(|i| pool.submit(bad, i)).collect();
        for f in futs {
            assert!(matches!(
                f.result_timeout(limit),
                Err(poolrun::TaskError::Codec(_))
            ));
        }
        s.push(trimmed_mib());
    }
    check("bad-decode", &s);
    let mut s = Vec::new();
    for _ in 0..4 {
        assert_eq!(
            pool.map(slow, 0..2000u32)
                .chunksize(8)
                .filter(|r| r.is_ok())
                .count(),
            2000
        );
        s.push(trimmed_mib());
    }
    check("chunked-map", &s);
}
