//! Slurm faults, against the real one-node cluster of `scripts/slurm/start.sh`: every way an
//! array task can end early becomes a per-task `TaskError::JobFailed` naming the job, the
//! Slurm state and the end of its log; a bad work directory is an `Err` at pool start; a
//! submitter killed by SIGKILL leaves nothing in `squeue`. After each test nothing of it is
//! left in the queue and no process runs its executable copy.
//!
//! Skipped, with one line saying why, where no cluster answers (`POOLRUN_REQUIRE_SLURM=1`
//! turns that into a failure, as `.ci/run` does).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use poolrun_core::{Executor, PoolConfig, PoolError, TaskError, TaskFuture};
use poolrun_slurm::{SlurmConfig, SlurmPool};
use poolrun_testkit::slurm::{assert_left_queue, cluster_or_skip, running_image};
use poolrun_testkit::tasks::*;

/// Bound for one wait: scheduling ticks plus a busy cluster (the suites share it).
const L: Duration = Duration::from_secs(90);
/// Bound for a job to leave the queue once it is over.
const GONE: Duration = Duration::from_secs(30);

fn base() -> PathBuf {
    std::env::temp_dir().join("poolrun-slurm-faults")
}

fn slurm() -> SlurmConfig {
    SlurmConfig::new()
        .work_dir(base())
        .poll_interval(Duration::from_millis(100))
}

fn pool(slurm: SlurmConfig) -> SlurmPool {
    SlurmPool::new(PoolConfig::new().workers(1).daemon(false), slurm).expect("slurm pool")
}

/// Wait until `f`'s array task runs on the node; its array's job id.
fn running_on_node(p: &SlurmPool, f: &TaskFuture<u64>) -> String {
    let t = Instant::now();
    while p.progress().1 == 0 {
        assert!(t.elapsed() < L, "the array task did not start within {L:?}");
        assert!(!f.done(), "the task finished before its array task ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let jobs = p.active_jobs();
    assert_eq!(jobs.len(), 1, "one array: {jobs:?}");
    jobs[0].clone()
}

/// The failure every unfinished task of array task `job`_`index` gets, checked field by
/// field; its log tail names where the kept log is.
fn assert_job_failed(
    r: Result<u64, TaskError>,
    job: &str,
    index: usize,
    state: &str,
    p: &SlurmPool,
) {
    match r {
        Err(TaskError::JobFailed {
            job: j,
            state: s,
            log,
        }) => {
            assert_eq!(
                (j.as_str(), s.as_str()),
                (format!("{job}_{index}").as_str(), state)
            );
            assert!(
                log.contains(&p.work_dir().display().to_string()),
                "the error says where the log is: {log}"
            );
        }
        other => panic!("expected JobFailed {state} for {job}_{index}, got {other:?}"),
    }
}

/// After a failed task: the work directory is kept (with the log), then nothing is left —
/// not in the queue, not as a process running the executable copy.
fn end(p: SlurmPool, jobs: &[String]) {
    let dir = p.work_dir().to_path_buf();
    let exe = dir.join("exe");
    p.shutdown(true, false);
    assert!(
        dir.exists(),
        "a pool whose task failed on the cluster keeps its work directory"
    );
    assert_left_queue(jobs, GONE);
    let t = Instant::now();
    while !running_image(&exe).is_empty() {
        assert!(
            t.elapsed() < GONE,
            "processes still run {}: {:?}",
            exe.display(),
            running_image(&exe)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn scancel_from_outside_fails_the_unfinished_tasks_as_cancelled() {
    if !cluster_or_skip("scancel_from_outside_fails_the_unfinished_tasks_as_cancelled") {
        return;
    }
    let p = pool(slurm());
    let f = p.submit(sleep_ms, 120_000);
    let job = running_on_node(&p, &f);
    let out = Command::new("scancel").arg(&job).output().unwrap();
    assert!(out.status.success(), "scancel: {out:?}");
    assert_job_failed(f.result_timeout(L), &job, 0, "CANCELLED", &p);
    // The pool still works after one of its arrays was cancelled.
    assert_eq!(p.submit(square, 9).result_timeout(L), Ok(81));
    end(p, &[job]);
}

#[test]
fn an_array_task_killed_on_the_node_fails_its_tasks() {
    if !cluster_or_skip("an_array_task_killed_on_the_node_fails_its_tasks") {
        return;
    }
    let p = pool(slurm());
    let f = p.submit(sleep_ms, 120_000);
    let job = running_on_node(&p, &f);
    // The array task is the process running the copy whose parent is slurmstepd (its
    // local workers are its children).
    let exe = p.work_dir().join("exe");
    let t = Instant::now();
    let main = loop {
        let pids = running_image(&exe);
        let main = pids
            .iter()
            .copied()
            .find(|pid| poolrun_testkit::stat(*pid).is_some_and(|(_, ppid)| !pids.contains(&ppid)));
        if let Some(m) = main {
            break m;
        }
        assert!(t.elapsed() < L, "no process runs {}", exe.display());
        std::thread::sleep(Duration::from_millis(50));
    };
    poolrun_testkit::sigkill(main);
    assert_job_failed(f.result_timeout(L), &job, 0, "FAILED", &p);
    end(p, &[job]);
}

#[test]
fn a_time_limit_fails_the_unfinished_tasks_as_timeout() {
    if !cluster_or_skip("a_time_limit_fails_the_unfinished_tasks_as_timeout") {
        return;
    }
    // Slurm's smallest limit is one minute (and it checks about every 30 s).
    let p = pool(slurm().time_limit(Duration::from_secs(60)));
    let quick = p.submit(square, 4);
    let f = p.submit(sleep_ms, 600_000);
    let job = running_on_node(&p, &f);
    assert_eq!(
        quick.result_timeout(L),
        Ok(16),
        "finished before the limit: kept"
    );
    // One array task (one worker) claimed both chunks in turn.
    let r = f.result_timeout(Duration::from_secs(180));
    assert_job_failed(r, &job, 0, "TIMEOUT", &p);
    end(p, &[job]);
}

#[test]
fn a_rebuilt_binary_fails_each_task_and_runs_nothing() {
    if !cluster_or_skip("a_rebuilt_binary_fails_each_task_and_runs_nothing") {
        return;
    }
    let p = pool(slurm());
    // What a rebuild between submission and start looks like to the array task: the
    // executable it runs is not the one the pool hashed.
    let exe = p.work_dir().join("exe");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&exe)
        .and_then(|mut f| f.write_all(b"rebuilt"))
        .unwrap();
    let futs: Vec<_> = (0..3u64).map(|i| p.submit(square, i)).collect();
    let jobs = {
        let t = Instant::now();
        while p.active_jobs().is_empty() && !futs.iter().all(TaskFuture::done) {
            assert!(t.elapsed() < L);
            std::thread::sleep(Duration::from_millis(20));
        }
        p.active_jobs()
    };
    for f in futs {
        match f.result_timeout(L) {
            Err(TaskError::JobFailed { state, log, .. }) => {
                assert_eq!(state, "BINARY_MISMATCH");
                assert!(log.contains("is not the submitter's"), "{log}");
                assert!(log.contains("no task was run"), "{log}");
            }
            other => panic!("expected JobFailed BINARY_MISMATCH, got {other:?}"),
        }
    }
    let dir = p.work_dir().to_path_buf();
    p.shutdown(true, false);
    assert_left_queue(&jobs, GONE);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unusable_work_directory_is_an_error_at_start() {
    if !cluster_or_skip("an_unusable_work_directory_is_an_error_at_start") {
        return;
    }
    // Below a regular file: no directory can be made there (as root too).
    let file = base().join("a-file");
    std::fs::create_dir_all(base()).unwrap();
    std::fs::write(&file, b"").unwrap();
    let bad = file.join("work");
    match SlurmPool::new(PoolConfig::new(), slurm().work_dir(&bad)) {
        Err(PoolError::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::NotADirectory);
            assert!(
                e.to_string().contains(&bad.display().to_string()),
                "names the path: {e}"
            );
        }
        other => panic!("expected PoolError::Io, got {other:?}"),
    }
    std::fs::remove_file(&file).unwrap();
}

/// The submitter of `a_killed_submitter_leaves_nothing_in_the_queue`, run as a child
/// process of that test (ignored otherwise): a pool with a 5 s heartbeat, two array tasks
/// running and more queued; it prints its job ids and work directory, then waits to die.
#[test]
#[ignore = "run by a_killed_submitter_leaves_nothing_in_the_queue"]
fn submitter_child() {
    if std::env::var_os("POOLRUN_SUBMITTER_CHILD").is_none() {
        return;
    }
    let p = SlurmPool::new(
        PoolConfig::new().workers(2),
        slurm()
            .heartbeat_timeout(Duration::from_secs(5))
            .chunk_size(Some(1)),
    )
    .unwrap();
    let futs: Vec<_> = (0..4).map(|_| p.submit(sleep_ms, 300_000)).collect();
    let t = Instant::now();
    while p.progress().1 < 2 {
        assert!(t.elapsed() < L);
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "JOBS {} {}",
        p.active_jobs().join(","),
        p.work_dir().display()
    );
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(600));
    drop(futs);
}

#[test]
fn a_killed_submitter_leaves_nothing_in_the_queue() {
    if !cluster_or_skip("a_killed_submitter_leaves_nothing_in_the_queue") {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "submitter_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("POOLRUN_SUBMITTER_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The harness prints `test submitter_child ... ` before the line, on the same line.
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let report = loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the submitter ended without reporting its jobs");
        }
        if let Some((_, report)) = line.split_once("JOBS ") {
            break report.to_string();
        }
    };
    let mut words = report.split_whitespace();
    let jobs: Vec<String> = words
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let dir = PathBuf::from(words.next().unwrap());
    assert!(!poolrun_testkit::slurm::queued(&jobs).is_empty());
    child.kill().unwrap(); // SIGKILL: no destructor, no scancel from the submitter
    let killed = Instant::now();
    child.wait().unwrap();
    let took = assert_left_queue(&jobs, GONE);
    eprintln!(
        "arrays {jobs:?} left the queue {:?} after the submitter's SIGKILL (heartbeat 5 s)",
        killed.elapsed().max(took)
    );
    let exe = dir.join("exe");
    let t = Instant::now();
    while !running_image(&exe).is_empty() {
        assert!(
            t.elapsed() < GONE,
            "processes still run the copy: {:?}",
            running_image(&exe)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
