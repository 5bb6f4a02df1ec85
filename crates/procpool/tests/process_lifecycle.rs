//! Lifecycle: no zombies, no leaked fds, no orphans after a parent SIGKILL, and a pool that
//! works inside a busy multithreaded host. Tests here share one mutex: they count fds and
//! zombies of the whole test process.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use poolrun_core::{Executor, PoolConfig, TaskError};
use poolrun_procpool::ProcessPool;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn my_pid(_: ()) -> u32 {
    std::process::id()
}
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}
fn do_abort(_: ()) -> u32 {
    std::process::abort()
}

#[test]
fn no_zombies_and_fds_back_to_baseline() {
    let _g = serial();
    // warm up process-global state (the spawner thread) before taking the baseline
    drop(ProcessPool::new(PoolConfig::new().workers(1)).unwrap());
    let baseline = fd_count();
    let mut all_pids = Vec::new();
    for daemon in [true, false] {
        let p = ProcessPool::new(
            PoolConfig::new()
                .workers(3)
                .daemon(daemon)
                .task_timeout(Some(Duration::from_millis(500)))
                .max_tasks_per_child(Some(7)),
        )
        .unwrap();
        all_pids.extend(p.worker_pids());
        let v: Vec<_> = p
            .map(my_pid, vec![(); 40])
            .chunksize(3)
            .map(|r| r.unwrap())
            .collect();
        all_pids.extend(v);
        assert!(matches!(
            p.submit(do_abort, ()).result_timeout(LIMIT),
            Err(TaskError::WorkerDied { .. })
        ));
        assert!(matches!(
            p.submit(sleep_ms, 5_000).result_timeout(LIMIT),
            Err(TaskError::TimedOut { .. })
        ));
        all_pids.extend(p.worker_pids());
        // at any time a dead worker is reaped within milliseconds: no lingering zombie
        assert!(
            eventually(LIMIT, || zombies().is_empty()),
            "zombies: {:?}",
            zombies()
        );
        let _pending: Vec<_> = (0..3).map(|_| p.submit(sleep_ms, 20)).collect();
        drop(p);
    }
    all_pids.sort();
    all_pids.dedup();
    assert_reaped(&all_pids, LIMIT);
    assert!(zombies().is_empty(), "zombies: {:?}", zombies());
    assert!(
        eventually(LIMIT, || fd_count() == baseline),
        "fds: baseline {baseline}, now {}",
        fd_count()
    );
}

#[test]
fn shutdown_leaves_no_children() {
    let _g = serial();
    let p = ProcessPool::new(PoolConfig::new().workers(4)).unwrap();
    let pids = p.worker_pids();
    let v: Vec<_> = p
        .map(sleep_ms, vec![2u64; 16])
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(v.len(), 16);
    p.shutdown(true, false);
    // after shutdown(wait) returns, the pool's children are already reaped
    for pid in &pids {
        assert!(
            !is_our_child(*pid),
            "worker {pid} still our child: {:?}",
            stat(*pid)
        );
    }
}

fn helper() -> Command {
    Command::new(env!("CARGO_BIN_EXE_procpool-test-helper"))
}

#[test]
fn parent_sigkill_leaves_no_worker_alive() {
    let _g = serial();
    let mut cmd = helper();
    cmd.args(["parent-kill", "4"]).stderr(Stdio::inherit());
    let (mut child, line) = start_and_read_line(cmd, "helper did not report its workers");
    let pids: Vec<u32> = line
        .strip_prefix("PIDS ")
        .unwrap_or_else(|| panic!("bad helper line {line:?}"))
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 4);
    for &p in &pids {
        assert!(
            matches!(stat(p), Some((s, _)) if s != 'Z'),
            "worker {p} not alive before the kill"
        );
    }
    child.kill().expect("SIGKILL helper"); // std's kill is SIGKILL
    child.wait().expect("reap helper");
    let t = Instant::now();
    let alive = |p: u32| matches!(stat(p), Some((s, _)) if s != 'Z');
    let gone = eventually(Duration::from_secs(1), || pids.iter().all(|&p| !alive(p)));
    assert!(
        gone,
        "workers alive {:?} after the parent was SIGKILLed: {:?}",
        t.elapsed(),
        pids.iter().map(|&p| (p, stat(p))).collect::<Vec<_>>()
    );
}

/// A process that a *task* started (its worker's child) dies with the host, even when the
/// host is SIGKILLed: the worker takes its whole process group down when its parent goes.
#[test]
fn parent_sigkill_takes_down_what_tasks_started() {
    let _g = serial();
    let mut cmd = helper();
    cmd.arg("grandchild").stderr(Stdio::null());
    let (mut child, line) = start_and_read_line(cmd, "helper did not report its grandchild");
    let pid: u32 = line
        .trim()
        .strip_prefix("GRANDCHILD ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad helper line {line:?}"));
    let alive = |p: u32| matches!(stat(p), Some((s, _)) if s != 'Z');
    assert!(
        alive(pid),
        "the task's sleep {pid} is not running before the kill"
    );
    child.kill().expect("SIGKILL helper");
    child.wait().expect("reap helper");
    let t = Instant::now();
    let gone = eventually(Duration::from_secs(2), || !alive(pid));
    if !gone {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        gone,
        "the task's sleep {pid} still ran {:?} after the host was SIGKILLed",
        t.elapsed()
    );
}

/// Run the helper in `mode`, bounded; returns its last `OK ...`/`FAIL ...` line.
fn run_helper(mode: &str) -> String {
    let mut child = helper()
        .arg(mode)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start helper");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut last = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("OK ") || line.starts_with("FAIL") {
                last = line;
            }
        }
        let _ = tx.send(last);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait helper") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let status = status.expect("helper hung (deadlock in a forked worker?)");
    let last = rx.recv_timeout(LIMIT).expect("helper output");
    assert!(
        status.success(),
        "helper {mode} failed: {status:?} {last:?}"
    );
    last
}

#[test]
fn busy_multithreaded_host_forks_and_respawns_safely() {
    let _g = serial();
    let last = run_helper("host-threads");
    let ok: u32 = last
        .trim_start_matches("OK ")
        .trim()
        .parse()
        .expect("OK count");
    assert!(ok >= 250, "only {ok} of 300 tasks succeeded");
}

#[test]
fn host_panicking_while_workers_fork_does_not_hang_them() {
    let _g = serial();
    assert_eq!(run_helper("host-panics"), "OK 8");
}
