//! Crash isolation: a worker that dies (SIGKILL, abort, segfault, exit) or overruns its
//! timeout fails only its own task; the pool reaps it, forks a replacement and carries on.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use poolrun_core::{Executor, PoolConfig, TaskError};
use poolrun_procpool::ProcessPool;

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
fn do_segfault(_: ()) -> u32 {
    // SAFETY: none — this deliberately writes through a null pointer to crash the worker
    // with SIGSEGV; it runs only inside a forked pool worker, never in the test process.
    unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u32>(), 1) };
    0
}
fn do_exit3(_: ()) -> u32 {
    std::process::exit(3)
}
fn self_kill(_: ()) -> u32 {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    std::thread::sleep(Duration::from_secs(30));
    0
}

fn pool(n: usize) -> ProcessPool {
    ProcessPool::new(PoolConfig::new().workers(n)).expect("pool")
}

/// Submit a crashing task between healthy ones; check the error, that the others are
/// untouched, that the dead worker was reaped and replaced.
fn check_crash(crash: fn(()) -> u32, expect: impl Fn(&TaskError) -> bool) {
    let p = pool(2);
    let before = p.worker_pids();
    let ok1 = p.submit(sleep_ms, 50);
    let bad = p.submit(crash, ());
    let ok2: Vec<_> = (0..6).map(|_| p.submit(sleep_ms, 5)).collect();
    let r = bad.result_timeout(LIMIT);
    match &r {
        Err(e) if expect(e) => {}
        other => panic!("unexpected outcome {other:?}"),
    }
    let Err(TaskError::WorkerDied { pid, .. }) = r else {
        unreachable!()
    };
    assert!(
        before.contains(&pid),
        "the error names the worker that died"
    );
    assert_eq!(ok1.result_timeout(LIMIT), Ok(50));
    for f in ok2 {
        assert_eq!(f.result_timeout(LIMIT), Ok(5));
    }
    // reaped (no zombie) and replaced
    assert_reaped(&[pid], LIMIT);
    assert!(eventually(LIMIT, || p.worker_pids().len() == 2
        && !p.worker_pids().contains(&pid)));
    let again = p.submit(my_pid, ()).result_timeout(LIMIT).unwrap();
    assert_ne!(again, pid);
}

#[test]
fn sigkill_mid_task() {
    check_crash(self_kill, |e| {
        matches!(
            e,
            TaskError::WorkerDied {
                signal: Some(9),
                exit_code: None,
                ..
            }
        )
    });
}

#[test]
fn abort_in_task() {
    check_crash(do_abort, |e| {
        matches!(
            e,
            TaskError::WorkerDied {
                signal: Some(6),
                ..
            }
        )
    });
}

#[test]
fn segfault_in_task() {
    check_crash(do_segfault, |e| {
        matches!(
            e,
            TaskError::WorkerDied {
                signal: Some(11),
                ..
            }
        )
    });
}

#[test]
fn exit_in_task() {
    check_crash(do_exit3, |e| {
        matches!(
            e,
            TaskError::WorkerDied {
                signal: None,
                exit_code: Some(3),
                ..
            }
        )
    });
}

#[test]
fn external_kill_of_a_busy_worker() {
    let p = pool(1);
    let wpid = p.submit(my_pid, ()).result_timeout(LIMIT).unwrap();
    let f = p.submit(sleep_ms, 10_000);
    assert!(eventually(LIMIT, || f.running()));
    std::thread::sleep(Duration::from_millis(30)); // let it really start
    sigkill(wpid);
    assert_eq!(
        f.result_timeout(LIMIT),
        Err(TaskError::WorkerDied {
            pid: wpid,
            signal: Some(9),
            exit_code: None
        })
    );
    assert_reaped(&[wpid], LIMIT);
    assert_eq!(p.submit(sleep_ms, 1).result_timeout(LIMIT), Ok(1));
}

#[test]
fn idle_worker_killed_is_replaced_without_failing_anything() {
    let p = pool(2);
    let pids = p.worker_pids();
    sigkill(pids[0]);
    assert_reaped(&[pids[0]], LIMIT);
    assert!(eventually(LIMIT, || p.worker_pids().len() == 2));
    let v: Vec<u64> = p
        .map(sleep_ms, vec![1u64; 10])
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(v.len(), 10);
}

/// Spawns `sleep 60` in the worker's process group, reports its pid, then hangs.
#[allow(clippy::zombie_processes)] // the worker is killed with its group; init reaps `sleep`
fn spawn_grandchild_and_hang(path: String) -> u32 {
    let child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let _ = std::fs::write(&path, child.id().to_string());
    std::thread::sleep(Duration::from_secs(60));
    0
}

#[test]
fn timeout_kills_worker_and_its_process_group() {
    let timeout = Duration::from_millis(300);
    let p = ProcessPool::new(PoolConfig::new().workers(1).task_timeout(Some(timeout))).unwrap();
    let path = std::env::temp_dir().join(format!("poolrun-gc-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let wpid = p.submit(my_pid, ()).result_timeout(LIMIT).unwrap();
    let t = Instant::now();
    let f = p.submit(
        spawn_grandchild_and_hang,
        path.to_string_lossy().into_owned(),
    );
    let r = f.result_timeout(LIMIT);
    assert_eq!(r.map(|_| ()), Err(TaskError::TimedOut { after: timeout }));
    assert!(t.elapsed() >= timeout);
    let gc: u32 = std::fs::read_to_string(&path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    // the grandchild (same process group) is gone too (a zombie until init reaps it is fine)
    assert!(
        eventually(LIMIT, || !matches!(stat(gc), Some((s, _)) if s != 'Z')),
        "grandchild {gc} survived: {:?}",
        stat(gc)
    );
    assert_reaped(&[wpid], LIMIT);
    // the pool carries on with a fresh worker; quick tasks are not affected by the timeout
    assert_eq!(p.submit(sleep_ms, 10).result_timeout(LIMIT), Ok(10));
    assert_ne!(p.submit(my_pid, ()).result_timeout(LIMIT), Ok(wpid));
}

#[test]
fn crash_inside_a_chunk_fails_only_that_item() {
    fn crash_on_7(x: u64) -> u64 {
        if x == 7 {
            std::process::abort();
        }
        x
    }
    let p = pool(2);
    for chunk in [1usize, 5, 64] {
        let out: Vec<_> = p.map(crash_on_7, 0..30u64).chunksize(chunk).collect();
        for (i, r) in out.iter().enumerate() {
            if i == 7 {
                assert!(
                    matches!(
                        r,
                        Err(TaskError::WorkerDied {
                            signal: Some(6),
                            ..
                        })
                    ),
                    "chunk {chunk}: {r:?}"
                );
            } else {
                assert_eq!(r, &Ok(i as u64), "chunk {chunk}");
            }
        }
    }
}

fn tiny(x: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(300));
    x
}

#[test]
fn random_kills_lose_nothing_and_duplicate_nothing() {
    let p = Arc::new(pool(2));
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let p = p.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut kills = 0u32;
            let mut seed = 0x9e37_79b9_u64;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(8));
                let pids = p.worker_pids();
                if pids.is_empty() {
                    continue;
                }
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                sigkill(pids[(seed as usize) % pids.len()]);
                kills += 1;
            }
            kills
        })
    };
    let n = 2000u64;
    let futures: Vec<_> = (0..n).map(|i| p.submit(tiny, i)).collect();
    let mut ok = 0;
    let mut died = 0;
    let mut seen = HashSet::new();
    for (i, f) in futures.into_iter().enumerate() {
        match f.result_timeout(Duration::from_secs(60)) {
            Ok(v) => {
                assert_eq!(v, i as u64);
                assert!(seen.insert(v), "result {v} delivered twice");
                ok += 1;
            }
            Err(TaskError::WorkerDied { .. }) => died += 1,
            Err(e) => panic!("task {i}: unexpected {e:?}"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let kills = killer.join().unwrap();
    assert_eq!(ok + died, n);
    assert!(kills > 0);
    assert!(
        died <= u64::from(kills),
        "{died} failures for {kills} kills"
    );
    // and with a map over chunks
    let out: Vec<_> = p.map(tiny, 0..300u64).chunksize(16).collect();
    assert_eq!(out.len(), 300);
    eprintln!("random kills: {kills} kills, {died} tasks failed WorkerDied, {ok} ok");
}

fn echo_len(v: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
    let mut out = v.into_vec();
    out.reverse();
    serde_bytes::ByteBuf::from(out)
}

#[test]
fn sixty_four_mib_argument_and_result() {
    let p = pool(2);
    let n = 64 << 20;
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let fs: Vec<_> = (0..2)
        .map(|_| p.submit(echo_len, serde_bytes::ByteBuf::from(data.clone())))
        .collect();
    for f in fs {
        let back = f.result_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(back.len(), n);
        assert!(back.iter().rev().zip(data.iter()).all(|(a, b)| a == b));
    }
}

fn init_aborts(_: ()) {
    std::process::abort()
}

#[test]
fn crashing_initializer_is_stopped_by_the_restart_limit() {
    let p = ProcessPool::new(PoolConfig::new().workers(2).initializer(init_aborts, ())).unwrap();
    let fs: Vec<_> = (0..4u64).map(|i| p.submit(sleep_ms, i)).collect();
    for f in fs {
        let r = f.result_timeout(LIMIT);
        assert!(
            matches!(&r, Err(TaskError::Broken(m)) if m.contains("failed to start")),
            "{r:?}"
        );
    }
    assert!(matches!(
        p.submit(sleep_ms, 1).result_timeout(LIMIT),
        Err(TaskError::Broken(_))
    ));
    // no fork bomb: the slots stopped respawning
    std::thread::sleep(Duration::from_millis(100));
    assert!(p.worker_pids().is_empty(), "{:?}", p.worker_pids());
}

fn slow_on_2(x: u64) -> u64 {
    if x == 2 {
        std::thread::sleep(Duration::from_secs(30));
    }
    x
}

#[test]
fn timeout_inside_a_chunk_fails_only_that_item() {
    let t = Duration::from_millis(300);
    let p = ProcessPool::new(PoolConfig::new().workers(1).task_timeout(Some(t))).unwrap();
    let out: Vec<_> = p.map(slow_on_2, 0..6u64).chunksize(6).collect();
    for (i, r) in out.into_iter().enumerate() {
        if i == 2 {
            assert_eq!(r, Err(TaskError::TimedOut { after: t }));
        } else {
            assert_eq!(r, Ok(i as u64));
        }
    }
}
