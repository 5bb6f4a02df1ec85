//! Test helper for poolrun-procpool's integration tests (not a user tool).
//!
//! - `parent-kill N`: build a pool of N workers, keep half of them busy, print
//!   `PIDS <pid>...` and sleep; the test SIGKILLs this process and checks that every worker
//!   is gone a second later.
//! - `grandchild`: a task starts `sleep 60` with `std::process::Command` and leaves it
//!   running; print `GRANDCHILD <pid>` and sleep; the test SIGKILLs this process and checks
//!   that the `sleep` is gone too.
//! - `stream`: a 2-worker pool maps a no-op over an endless input; once it flows, print
//!   `STREAMING <pid> <pid>` and keep consuming; the test SIGKILLs this process mid-stream.
//! - `host-threads`: run 8 host threads that print and allocate non-stop while the pool forks
//!   and respawns workers whose tasks print too; prints `OK <n>` when every task finished.
//! - `host-panics`: a host thread panics in a loop (default hook) while pools fork workers
//!   whose tasks panic; prints `OK 8` when every round's tasks failed `Panicked` in time.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use poolrun_core::{Executor, PoolConfig, TaskError};
use poolrun_procpool::ProcessPool;

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn chatty(i: u64) -> u64 {
    println!("task {i} says hello from {}", std::process::id());
    eprintln!("task {i} on stderr");
    let v: Vec<u64> = (0..1000).collect();
    v.iter().sum::<u64>() + i
}

fn parent_kill(n: usize) -> i32 {
    let pool = match ProcessPool::new(PoolConfig::new().workers(n)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("helper: {e}");
            return 2;
        }
    };
    let busy: Vec<_> = (0..n / 2).map(|_| pool.submit(sleep_ms, 60_000)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !busy.iter().all(|f| f.running()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    let pids: Vec<String> = pool.worker_pids().iter().map(|p| p.to_string()).collect();
    println!("PIDS {}", pids.join(" "));
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(60));
    0
}

/// A task that starts a long-running process and leaves it running; returns its pid.
fn start_sleeper(_: ()) -> u32 {
    match std::process::Command::new("sleep").arg("60").spawn() {
        Ok(child) => child.id(), // (dropping `Child` neither kills nor waits for it)
        Err(_) => 0,
    }
}

fn grandchild() -> i32 {
    let pool = match ProcessPool::new(PoolConfig::new().workers(1)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("helper: {e}");
            return 2;
        }
    };
    match pool
        .submit(start_sleeper, ())
        .result_timeout(Duration::from_secs(20))
    {
        Ok(pid) if pid != 0 => {
            println!("GRANDCHILD {pid}");
            let _ = std::io::stdout().flush();
            std::thread::sleep(Duration::from_secs(60));
            0
        }
        other => {
            eprintln!("helper: could not start the sleeper: {other:?}");
            1
        }
    }
}

fn noop(x: u64) -> u64 {
    x
}

fn stream() -> i32 {
    let pool = match ProcessPool::new(PoolConfig::new().workers(2)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("helper: {e}");
            return 2;
        }
    };
    let pids: Vec<String> = pool.worker_pids().iter().map(|p| p.to_string()).collect();
    let mut said = false;
    for (i, r) in pool.map(noop, 0u64..).enumerate() {
        if r != Ok(i as u64) {
            eprintln!("helper: item {i}: {r:?}");
            return 1;
        }
        if i == 10_000 && !said {
            println!("STREAMING {}", pids.join(" "));
            let _ = std::io::stdout().flush();
            said = true;
        }
    }
    0
}

fn host_threads() -> i32 {
    let stop = Arc::new(AtomicBool::new(false));
    let mut noise = Vec::new();
    for t in 0..8 {
        let stop = stop.clone();
        noise.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v: Vec<String> = (0..50).map(|i| format!("{t}-{i}")).collect();
                println!("host thread {t} line {n} {}", v.len());
                eprintln!("host thread {t} err {n}");
                n += 1;
            }
        }));
    }
    let pool = match ProcessPool::new(PoolConfig::new().workers(3).max_tasks_per_child(Some(5))) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("helper: {e}");
            return 2;
        }
    };
    let n = 300u64;
    let futures: Vec<_> = (0..n).map(|i| pool.submit(chatty, i)).collect();
    // and some respawns by death, too
    for _ in 0..5 {
        if let Some(&pid) = pool.worker_pids().first() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut ok = 0;
    for (i, f) in futures.into_iter().enumerate() {
        match f.result_timeout(Duration::from_secs(30)) {
            Ok(v) => {
                assert_eq!(v, 499_500 + i as u64);
                ok += 1;
            }
            Err(TaskError::WorkerDied { .. }) => {}
            Err(e) => {
                eprintln!("helper: task {i} failed: {e}");
                return 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in noise {
        let _ = t.join();
    }
    drop(pool);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "OK {ok}");
    let _ = out.flush();
    0
}

fn panics_always(x: u64) -> u64 {
    panic!("task {x} panics")
}

/// A host thread that is inside std's panic hook at the instant of a fork leaves the hook
/// and backtrace locks held in the child; workers must still run (and panic) normally.
fn host_panics() -> i32 {
    let stop = Arc::new(AtomicBool::new(false));
    let noise = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = std::panic::catch_unwind(|| panic!("host noise"));
                std::thread::sleep(Duration::from_micros(20));
            }
        })
    };
    let mut code = 0;
    'rounds: for round in 0..8 {
        let pool = match ProcessPool::new(PoolConfig::new().workers(2)) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("helper: {e}");
                code = 2;
                break;
            }
        };
        let fs: Vec<_> = (0..4).map(|i| pool.submit(panics_always, i)).collect();
        for f in fs {
            match f.result_timeout(Duration::from_secs(20)) {
                Err(TaskError::Panicked { .. }) => {}
                other => {
                    println!("FAIL round {round}: {other:?}");
                    code = 1;
                    break 'rounds;
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = noise.join();
    if code == 0 {
        println!("OK 8");
    }
    let _ = std::io::stdout().flush();
    code
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("parent-kill") => {
            let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
            parent_kill(n)
        }
        Some("grandchild") => grandchild(),
        Some("stream") => stream(),
        Some("host-threads") => host_threads(),
        Some("host-panics") => host_panics(),
        _ => {
            eprintln!("usage: procpool-test-helper parent-kill N | grandchild | stream | host-threads | host-panics");
            2
        }
    };
    std::process::exit(code);
}
