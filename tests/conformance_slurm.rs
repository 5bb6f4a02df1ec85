//! The conformance behaviours that apply to a cluster, against `Mode::Slurm` on the real
//! one-node Slurm of `scripts/slurm/start.sh` (through `Pool::new(Mode::Slurm, cfg)`, so
//! the `POOLRUN_SLURM_*` settings path is exercised too): submit and result, map order and
//! laziness, one `Result` per item, callbacks exactly once, cancel before start, kill of a
//! running task, crash isolation, `wait` / `as_completed`, shutdown.
//!
//! Skipped, with one line saying why, where no cluster answers; `.ci/run` starts one and
//! sets `POOLRUN_REQUIRE_SLURM=1`, which turns a missing cluster into a failure.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use common::*;
use poolrun::{as_completed, wait, Executor, Mode, Pool, PoolConfig, ReturnWhen, TaskError};

/// Bound for any one wait: a task costs at least one Slurm scheduling tick (~1 s), and the
/// tests of this binary share the cluster.
const L: Duration = Duration::from_secs(90);

fn cluster() -> bool {
    static SET: Once = Once::new();
    SET.call_once(|| {
        // Settings through the environment, as `Pool::new(Mode::Slurm, …)` reads them.
        std::env::set_var("POOLRUN_SLURM_WORK_DIR", scratch());
        std::env::set_var("POOLRUN_SLURM_POLL_MS", "100");
    });
    poolrun_testkit::slurm::cluster_or_skip("conformance_slurm")
}

fn scratch() -> PathBuf {
    std::env::temp_dir().join("poolrun-slurm-conformance")
}

fn pool(workers: usize) -> Pool {
    Pool::new(
        Mode::Slurm,
        PoolConfig::new().workers(workers).daemon(false),
    )
    .expect("slurm pool")
}

/// Create `path` (a marker that the task ran).
fn touch(path: String) -> u64 {
    std::fs::write(&path, b"ran").map(|_| 1).unwrap_or(0)
}

fn marker(name: &str) -> String {
    let dir = scratch().join("markers");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p.display().to_string()
}

fn no_jobs_left(p: &Pool) {
    if let Pool::Slurm(s) = p {
        let jobs = s.active_jobs();
        assert!(jobs.is_empty(), "jobs still active: {jobs:?}");
    }
}

#[test]
fn submit_result_and_mode() {
    if !cluster() {
        return;
    }
    let p = pool(2);
    assert_eq!(p.mode(), Mode::Slurm);
    assert_eq!(p.workers(), 2);
    let t = Instant::now();
    let f = p.submit(square, 12);
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = started.clone();
    f.add_start_callback(move || s2.store(true, std::sync::atomic::Ordering::SeqCst));
    assert_eq!(f.result_timeout(L), Ok(144));
    assert!(
        started.load(std::sync::atomic::Ordering::SeqCst),
        "start callback ran"
    );
    eprintln!("slurm: one submit().result() took {:?}", t.elapsed());
    // Per-task options are refused here, clearly (the array task's pool applies the
    // pool-wide `task_timeout` only).
    let with_ctx = PoolConfig::new().workers(1).context(5u64);
    assert!(matches!(
        poolrun::slurm::SlurmPool::new(with_ctx, poolrun::slurm::SlurmConfig::from_env().unwrap()),
        Err(poolrun::PoolError::InvalidConfig(m)) if m.contains("context")
    ));
    let opts = poolrun::TaskOptions::new().timeout(Duration::from_secs(1));
    assert!(matches!(
        p.submit_with(square, 2, opts).result(),
        Err(TaskError::Unsupported(_))
    ));
    p.shutdown(true, false);
    no_jobs_left(&p);
}

#[test]
fn map_keeps_order_is_lazy_and_yields_every_item() {
    if !cluster() {
        return;
    }
    let p = pool(2);
    let got: Vec<_> = p.map(panics_on_odd, 0..40u64).timeout(L).collect();
    for (i, r) in got.iter().enumerate() {
        let i = i as u64;
        if i % 2 == 1 {
            assert_eq!(
                r,
                &Err(TaskError::Panicked {
                    message: format!("boom on {i}")
                })
            );
        } else {
            assert_eq!(r, &Ok(i));
        }
    }
    // Lazy: an endless input is fine when only a prefix is consumed.
    let first: Vec<u64> = p.map(square, 0u64..).take(5).map(|r| r.unwrap()).collect();
    assert_eq!(first, vec![0, 1, 4, 9, 16]);
    let mut unordered: Vec<usize> = p
        .map_unordered(square, 0..10u64)
        .timeout(L)
        .map(|(i, r)| {
            assert_eq!(r, Ok((i * i) as u64));
            i
        })
        .collect();
    unordered.sort_unstable();
    assert_eq!(unordered, (0..10).collect::<Vec<_>>());
    p.shutdown(true, false);
}

#[test]
fn callbacks_run_exactly_once_in_order() {
    if !cluster() {
        return;
    }
    let p = pool(1);
    let f = p.submit(square, 3);
    let log = Arc::new(Mutex::new(Vec::new()));
    for i in 0..3 {
        let log = log.clone();
        f.add_done_callback(move |r| log.lock().unwrap().push((i, r.clone())));
    }
    assert!(f.wait(Some(L)));
    assert_eq!(
        *log.lock().unwrap(),
        vec![(0, Ok(9)), (1, Ok(9)), (2, Ok(9))]
    );
    let here = Arc::new(AtomicUsize::new(0));
    let h2 = here.clone();
    f.add_done_callback(move |_| {
        h2.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(
        here.load(Ordering::SeqCst),
        1,
        "ran at once on a done future"
    );
    p.shutdown(true, false);
}

#[test]
fn cancel_before_submission_never_runs_kill_stops_a_running_task() {
    if !cluster() {
        return;
    }
    let p = pool(2);
    let m = marker("cancelled");
    let f = p.submit(touch, m.clone());
    assert!(f.cancel(), "still gathering for sbatch: cancellable");
    assert_eq!(f.result(), Err(TaskError::Cancelled));
    // A running task (its array task started) is stopped by kill(); the others in the same
    // array task are untouched.
    let long = p.submit(sleep_ms, 60_000);
    let other = p.submit(square, 5);
    let t = Instant::now();
    while !long.running() && t.elapsed() < L {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(long.kill());
    assert_eq!(long.result(), Err(TaskError::Cancelled));
    assert_eq!(other.result_timeout(L), Ok(25));
    let quick = p.submit(square, 6);
    assert_eq!(quick.result_timeout(L), Ok(36));
    // stats(): the same struct as in the local modes, every outcome counted once.
    let s = p.stats();
    assert_eq!(
        (
            s.workers,
            s.completed,
            s.cancelled,
            s.killed,
            s.failed,
            s.queued,
            s.running
        ),
        (2, 2, 2, 1, 0, 0, 0),
        "{s:?}"
    );
    p.shutdown(true, false);
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "kill did not wait for the sleep"
    );
    assert!(!Path::new(&m).exists(), "the cancelled task never ran");
    no_jobs_left(&p);
}

#[test]
fn wait_and_as_completed() {
    if !cluster() {
        return;
    }
    let p = pool(2);
    let futs: Vec<_> = (0..4u64)
        .map(|i| p.submit(sleep_then, (10 * i, i)))
        .collect();
    let (done, pending) = wait(&futs, Some(L), ReturnWhen::AllCompleted);
    assert_eq!((done.len(), pending.len()), (4, 0));
    let futs: Vec<_> = (0..4u64).map(|i| p.submit(square, i)).collect();
    let mut seen: Vec<(usize, u64)> = as_completed(futs)
        .timeout(L)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, vec![(0, 0), (1, 1), (2, 4), (3, 9)]);
    p.shutdown(true, false);
}

fn abort_on(x: u64) -> u64 {
    if x == 3 {
        std::process::abort();
    }
    x
}

#[test]
fn a_crash_fails_one_task_not_its_array_task() {
    if !cluster() {
        return;
    }
    let p = pool(1);
    let got: Vec<_> = p.map(abort_on, 0..6u64).timeout(L).collect();
    for (i, r) in got.iter().enumerate() {
        if i == 3 {
            assert!(
                matches!(
                    r,
                    Err(TaskError::WorkerDied {
                        signal: Some(6),
                        ..
                    })
                ),
                "{r:?}"
            );
        } else {
            assert_eq!(r, &Ok(i as u64));
        }
    }
    p.shutdown(true, false);
}

#[test]
fn shutdown_rules() {
    if !cluster() {
        return;
    }
    let p = pool(1);
    let queued: Vec<_> = (0..3u64).map(|i| p.submit(square, i)).collect();
    p.shutdown(false, true);
    for f in queued {
        assert_eq!(f.result_timeout(L), Err(TaskError::Cancelled));
    }
    assert_eq!(p.submit(square, 1).result(), Err(TaskError::Shutdown));
    assert!(p.shutdown_timeout(false, L));
}
