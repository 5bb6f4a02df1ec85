//! NODE_FAIL: the node's `slurmd` dies while an array task runs. Slurm marks the node down
//! after `SlurmdTimeout` (30 s on the test cluster) and the array task NODE_FAIL; the pool
//! fails its unfinished task with exactly that, and once `slurmd` is back nothing of the
//! array is left.
//!
//! Destructive for anything else using the cluster (its only node goes down for ~50 s), so
//! it is ignored by default; `.ci/run` runs it alone after the suite:
//! `cargo test -p poolrun-slurm --test node_fail -- --ignored`.

use std::process::Command;
use std::time::{Duration, Instant};

use poolrun_core::{Executor, PoolConfig, TaskError};
use poolrun_slurm::{SlurmConfig, SlurmPool};
use poolrun_testkit::slurm::{assert_left_queue, cluster_or_skip, running_image};
use poolrun_testkit::tasks::sleep_ms;

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
#[ignore = "takes the test cluster's only node down for ~50 s: run alone (.ci/run does)"]
fn a_node_failure_fails_the_unfinished_tasks_as_node_fail() {
    if !cluster_or_skip("a_node_failure_fails_the_unfinished_tasks_as_node_fail") {
        return;
    }
    let node = sh("sinfo -h -o %N | head -1");
    let conf = std::env::var("SLURM_CONF").unwrap_or_else(|_| "/etc/slurm/slurm.conf".into());
    let p = SlurmPool::new(
        PoolConfig::new().workers(1).daemon(false),
        SlurmConfig::new()
            .work_dir(std::env::temp_dir().join("poolrun-slurm-nodefail"))
            .poll_interval(Duration::from_millis(500)),
    )
    .unwrap();
    let f = p.submit(sleep_ms, 600_000);
    let t = Instant::now();
    while p.progress().1 == 0 {
        assert!(t.elapsed() < Duration::from_secs(90), "never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let jobs = p.active_jobs();
    let slurmd = sh("pgrep -x slurmd");
    assert!(!slurmd.is_empty(), "no slurmd to kill");
    poolrun_testkit::sigkill(slurmd.parse().unwrap());
    let r = f.result_timeout(Duration::from_secs(150));
    // Bring the node back whatever the outcome, so the cluster outlives a failure.
    let restarted = Command::new("slurmd")
        .args(["-f", &conf, "-N", &node])
        .status()
        .map(|s| s.success());
    match r {
        Err(TaskError::JobFailed { job, state, .. }) => {
            assert_eq!(
                (job, state.as_str()),
                (format!("{}_0", jobs[0]), "NODE_FAIL")
            )
        }
        other => panic!("expected JobFailed NODE_FAIL, got {other:?}"),
    }
    assert_eq!(restarted.ok(), Some(true), "slurmd restarted");
    let t = Instant::now();
    while !matches!(
        sh(&format!("sinfo -h -n {node} -o %t")).as_str(),
        "idle" | "mix" | "alloc"
    ) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the node did not come back"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let exe = p.work_dir().join("exe");
    let dir = p.work_dir().to_path_buf();
    p.shutdown(true, false);
    assert_left_queue(&jobs, Duration::from_secs(30));
    let t = Instant::now();
    while !running_image(&exe).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the array task outlived its job"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_dir_all(dir);
}
