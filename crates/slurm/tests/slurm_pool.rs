//! `SlurmPool` against the real one-node Slurm cluster of `scripts/slurm/start.sh`.
//!
//! Skipped, with one line saying why, where no cluster answers (`sbatch` missing or the
//! controller down); `.ci/run` starts the cluster and sets `POOLRUN_REQUIRE_SLURM=1`, which
//! turns a missing cluster into a failure instead.

use std::time::{Duration, Instant};

use poolrun_core::{as_completed, Executor, PoolConfig, PoolError, TaskError};
use poolrun_slurm::{SlurmConfig, SlurmPool};
use poolrun_testkit::slurm::cluster_or_skip;
use poolrun_testkit::tasks::*;

fn work_base() -> std::path::PathBuf {
    std::env::temp_dir().join("poolrun-slurm-tests")
}

fn pool(workers: usize) -> SlurmPool {
    let slurm = SlurmConfig::new()
        .work_dir(work_base())
        .poll_interval(Duration::from_millis(100));
    SlurmPool::new(PoolConfig::new().workers(workers).daemon(false), slurm).expect("slurm pool")
}

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn submit_and_map_through_job_arrays() {
    if !cluster_or_skip("submit_and_map_through_job_arrays") {
        return;
    }
    let p = pool(2);
    let t = Instant::now();
    assert_eq!(p.submit(square, 12).result_timeout(LIMIT), Ok(144));
    eprintln!("one submit().result(): {:?}", t.elapsed());
    let got: Vec<_> = p.map(square, 0..200u64).timeout(LIMIT).collect();
    assert_eq!(got, (0..200u64).map(|i| Ok(i * i)).collect::<Vec<_>>());
    let dir = p.work_dir().to_path_buf();
    p.shutdown(true, false);
    assert!(!dir.exists(), "a clean shutdown removes the work directory");
}

#[test]
fn a_crashing_task_fails_alone_and_panics_are_per_task() {
    if !cluster_or_skip("a_crashing_task_fails_alone_and_panics_are_per_task") {
        return;
    }
    let p = pool(2);
    let futs: Vec<_> = (0..6u64).map(|i| p.submit(panics_on_odd, i)).collect();
    let got: Vec<_> = futs.into_iter().map(|f| f.result_timeout(LIMIT)).collect();
    for (i, r) in got.iter().enumerate() {
        if i % 2 == 1 {
            assert_eq!(
                r,
                &Err(TaskError::Panicked {
                    message: format!("boom on {i}")
                })
            );
        } else {
            assert_eq!(r, &Ok(i as u64));
        }
    }
    let done: Vec<_> = as_completed(
        (0..4u64)
            .map(|i| p.submit(sleep_then, (10 * (4 - i), i)))
            .collect(),
    )
    .map(|(i, r)| (i, r.unwrap()))
    .collect();
    assert_eq!(done.len(), 4);
    p.shutdown(true, false);
}

#[test]
fn options_slurm_refuses_fail_at_start() {
    if !cluster_or_skip("options_slurm_refuses_fail_at_start") {
        return;
    }
    let start =
        |s: SlurmConfig| SlurmPool::new(PoolConfig::new().workers(1), s.work_dir(work_base()));
    match start(SlurmConfig::new().partition("nope")) {
        Err(PoolError::InvalidConfig(m)) => {
            assert!(m.contains("invalid partition specified: nope"), "{m}")
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
    match start(SlurmConfig::new().cpus_per_task(4096)) {
        Err(PoolError::InvalidConfig(m)) => {
            assert!(
                m.contains("Requested node configuration is not available"),
                "{m}"
            )
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
