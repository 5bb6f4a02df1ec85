//! The Executor API in process mode: results, order, chunks, callbacks, cancel, shutdown,
//! codec errors, initializer, max_tasks_per_child, GIL.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use poolrun_core::{as_completed, wait, Executor, GilMode, PoolConfig, ReturnWhen, TaskError};
use poolrun_procpool::ProcessPool;

fn square(x: u64) -> u64 {
    x * x
}
fn my_pid(_: ()) -> u32 {
    std::process::id()
}
fn fail_on_13(x: u64) -> u64 {
    if x == 13 {
        panic!("thirteen");
    }
    x
}
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn pool(n: usize) -> ProcessPool {
    ProcessPool::new(PoolConfig::new().workers(n)).expect("pool")
}

#[test]
fn submit_runs_in_another_process() {
    let p = pool(2);
    assert_eq!(p.submit(square, 12).result_timeout(LIMIT), Ok(144));
    let wpid = p.submit(my_pid, ()).result_timeout(LIMIT).unwrap();
    assert_ne!(wpid, std::process::id());
    assert!(p.worker_pids().contains(&wpid));
    assert_eq!(p.mode(), poolrun_core::Mode::Process);
    assert_eq!(p.workers(), 2);
}

#[test]
fn map_in_order_with_chunks_and_per_item_errors() {
    let p = pool(2);
    for chunk in [1, 4, 256] {
        let out: Vec<Result<u64, TaskError>> =
            p.map(fail_on_13, 0..40u64).chunksize(chunk).collect();
        assert_eq!(out.len(), 40);
        for (i, r) in out.iter().enumerate() {
            if i == 13 {
                assert!(
                    matches!(r, Err(TaskError::Panicked { message }) if message.contains("thirteen")),
                    "{r:?}"
                );
            } else {
                assert_eq!(r, &Ok(i as u64), "chunksize {chunk}");
            }
        }
    }
    let mut un: Vec<(usize, u64)> = p
        .map_unordered(square, 0..50u64)
        .chunksize(3)
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    un.sort();
    assert_eq!(un.len(), 50);
    assert!(un.iter().all(|&(i, v)| v == (i as u64) * (i as u64)));
}

fn pid_after_ms(ms: u64) -> u32 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    std::process::id()
}

/// Without a chunksize, long items are not bunched onto one worker: 6 items of 100 ms on
/// 2 workers run on both, and tiny items still come back in order, one result each.
#[test]
fn automatic_chunks_spread_long_items_and_keep_order() {
    let p = pool(2);
    let pids: std::collections::HashSet<u32> = p
        .map(pid_after_ms, vec![100u64; 6])
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "long items ran on {pids:?}");
    let n = 50_000u64;
    let out: Vec<u64> = p.map(square, 0..n).map(|r| r.unwrap()).collect();
    assert_eq!(out.len(), n as usize);
    assert!(out
        .iter()
        .enumerate()
        .all(|(i, &v)| v == (i as u64) * (i as u64)));
}

#[test]
fn map_is_lazy_over_endless_input() {
    let p = pool(2);
    let first: Vec<u64> = p
        .map(square, 0u64..)
        .chunksize(8)
        .take(100)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(first[99], 99 * 99);
}

#[test]
fn callbacks_run_in_a_parent_thread() {
    let p = pool(1);
    let f = p.submit(my_pid, ());
    let seen = Arc::new(Mutex::new(None));
    let s2 = seen.clone();
    f.add_done_callback(move |r| {
        *s2.lock().unwrap() = Some((std::process::id(), r.clone()));
    });
    let wpid = f.result_timeout(LIMIT).unwrap();
    let got = seen
        .lock()
        .unwrap()
        .clone()
        .expect("callback ran before result returned");
    assert_eq!(got.0, std::process::id(), "callback must run in the parent");
    assert_eq!(got.1, Ok(wpid));
}

#[test]
fn queued_tasks_stay_cancellable() {
    let p = pool(1);
    let running = p.submit(sleep_ms, 300);
    assert!(eventually(LIMIT, || running.running()));
    // one may be handed to the worker ahead of time; everything behind stays cancellable
    let queued: Vec<_> = (0..5).map(|_| p.submit(sleep_ms, 1)).collect();
    let cancelled = queued.iter().filter(|f| f.cancel()).count();
    assert!(
        cancelled >= 4,
        "only {cancelled} of 5 queued tasks could be cancelled"
    );
    assert!(!running.cancel());
    assert_eq!(running.result_timeout(LIMIT), Ok(300));
    for f in queued {
        let r = f.result_timeout(LIMIT);
        assert!(r == Ok(1) || r == Err(TaskError::Cancelled), "{r:?}");
    }
}

#[test]
fn wait_and_as_completed() {
    let p = pool(2);
    let fs: Vec<_> = [200u64, 1, 1]
        .iter()
        .map(|&ms| p.submit(sleep_ms, ms))
        .collect();
    let (done, _pending) = wait(&fs, Some(LIMIT), ReturnWhen::FirstCompleted);
    assert!(!done.is_empty());
    let (done, pending) = wait(&fs, Some(LIMIT), ReturnWhen::AllCompleted);
    assert_eq!((done.len(), pending.len()), (3, 0));
    let fs: Vec<_> = (0..6u64).map(|i| p.submit(square, i)).collect();
    let mut got: Vec<(usize, u64)> = as_completed(fs).map(|(i, r)| (i, r.unwrap())).collect();
    got.sort();
    assert_eq!(got, (0..6).map(|i| (i, (i * i) as u64)).collect::<Vec<_>>());
}

#[test]
fn shutdown_semantics() {
    let p = pool(1);
    let a = p.submit(sleep_ms, 100);
    assert!(eventually(LIMIT, || a.running()));
    let rest: Vec<_> = (0..4).map(|_| p.submit(sleep_ms, 1)).collect();
    p.shutdown(true, true);
    assert_eq!(a.result_timeout(LIMIT), Ok(100));
    for f in rest {
        let r = f.result_timeout(LIMIT);
        assert!(r == Ok(1) || r == Err(TaskError::Cancelled), "{r:?}");
    }
    assert_eq!(
        p.submit(square, 2).result_timeout(LIMIT),
        Err(TaskError::Shutdown)
    );
    p.shutdown(true, false); // idempotent
    assert!(p.shutdown_timeout(false, Duration::from_millis(10)));
    assert!(p.worker_pids().is_empty());
}

#[test]
fn shutdown_without_cancel_runs_everything() {
    let p = pool(2);
    let fs: Vec<_> = (0..20u64).map(|i| p.submit(square, i)).collect();
    let pids = p.worker_pids();
    assert!(p.shutdown_timeout(false, LIMIT));
    for (i, f) in fs.into_iter().enumerate() {
        assert_eq!(f.result_timeout(LIMIT), Ok((i * i) as u64));
    }
    assert_reaped(&pids, LIMIT);
}

#[test]
fn non_daemon_drop_waits_for_work() {
    let p = ProcessPool::new(PoolConfig::new().workers(2).daemon(false)).unwrap();
    let fs: Vec<_> = (0..6).map(|_| p.submit(sleep_ms, 20)).collect();
    let pids = p.worker_pids();
    drop(p);
    for f in fs {
        assert!(f.done());
        assert_eq!(f.result(), Ok(20));
    }
    assert_reaped(&pids, LIMIT);
}

#[test]
fn daemon_drop_kills_at_once() {
    let p = pool(2);
    let long: Vec<_> = (0..2).map(|_| p.submit(sleep_ms, 30_000)).collect();
    let queued: Vec<_> = (0..4).map(|_| p.submit(sleep_ms, 30_000)).collect();
    assert!(eventually(LIMIT, || long.iter().all(|f| f.running())));
    let pids = p.worker_pids();
    let t = std::time::Instant::now();
    drop(p);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "drop took {:?}",
        t.elapsed()
    );
    for f in long {
        assert_eq!(f.result_timeout(LIMIT), Err(TaskError::Shutdown));
    }
    for f in queued {
        let r = f.result_timeout(LIMIT);
        assert!(
            matches!(r, Err(TaskError::Cancelled) | Err(TaskError::Shutdown)),
            "{r:?}"
        );
    }
    assert_reaped(&pids, LIMIT);
}

/// A type whose encoding always fails.
struct Unencodable;
impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to encode"))
    }
}
impl<'de> serde::Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let _ = u8::deserialize(d)?;
        Ok(Unencodable)
    }
}
/// A type that encodes but never decodes.
#[derive(Debug)]
struct Undecodable;
impl serde::Serialize for Undecodable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}
impl<'de> serde::Deserialize<'de> for Undecodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("refuses to decode"))
    }
}
fn takes_unencodable(_: Unencodable) -> u8 {
    1
}
fn returns_unencodable(_: u8) -> Unencodable {
    Unencodable
}
fn takes_undecodable(_: Undecodable) -> u8 {
    1
}
fn returns_undecodable(_: u8) -> Undecodable {
    Undecodable
}

#[test]
fn codec_errors_fail_only_their_task() {
    let p = pool(1);
    let pid = p.submit(my_pid, ()).result_timeout(LIMIT).unwrap();
    assert!(matches!(
        p.submit(takes_unencodable, Unencodable)
            .result_timeout(LIMIT),
        Err(TaskError::Codec(_))
    ));
    assert!(matches!(
        p.submit(returns_unencodable, 1)
            .result_timeout(LIMIT)
            .map(|_| ()),
        Err(TaskError::Codec(_))
    ));
    assert!(matches!(
        p.submit(takes_undecodable, Undecodable)
            .result_timeout(LIMIT),
        Err(TaskError::Codec(_))
    ));
    assert!(matches!(
        p.submit(returns_undecodable, 1)
            .result_timeout(LIMIT)
            .map(|_| ()),
        Err(TaskError::Codec(_))
    ));
    // the same worker is still there and works
    assert_eq!(p.submit(my_pid, ()).result_timeout(LIMIT), Ok(pid));
}

static INIT_VALUE: AtomicUsize = AtomicUsize::new(0);
fn init_set(v: usize) {
    INIT_VALUE.fetch_add(v, Ordering::SeqCst);
}
fn read_init(_: ()) -> usize {
    INIT_VALUE.load(Ordering::SeqCst)
}
fn init_panics(_: ()) {
    panic!("no database");
}

#[test]
fn initializer_runs_once_per_worker() {
    let p = ProcessPool::new(PoolConfig::new().workers(2).initializer(init_set, 7)).unwrap();
    let vals: Vec<usize> = p.map(read_init, vec![(); 20]).map(|r| r.unwrap()).collect();
    assert!(vals.iter().all(|&v| v == 7), "{vals:?}");
    assert_eq!(
        INIT_VALUE.load(Ordering::SeqCst),
        0,
        "the initializer must not run in the parent"
    );
}

#[test]
fn failing_initializer_fails_tasks_without_respawning() {
    let p = ProcessPool::new(PoolConfig::new().workers(2).initializer(init_panics, ())).unwrap();
    let first = p.worker_pids();
    let out: Vec<_> = (0..6).map(|i| p.submit(square, i)).collect();
    for f in out {
        let r = f.result_timeout(LIMIT);
        assert!(
            matches!(&r, Err(TaskError::Initializer(m)) if m.contains("no database")),
            "{r:?}"
        );
    }
    assert!(
        p.worker_pids().is_empty(),
        "no respawn after an initializer failure"
    );
    assert_reaped(&first, LIMIT);
}

#[test]
fn max_tasks_per_child_recycles_without_deadlock() {
    let p = ProcessPool::new(PoolConfig::new().workers(2).max_tasks_per_child(Some(1))).unwrap();
    let fs: Vec<_> = (0..10).map(|_| p.submit(my_pid, ())).collect();
    let mut pids: Vec<u32> = fs
        .into_iter()
        .map(|f| f.result_timeout(LIMIT).unwrap())
        .collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 10, "each task ran in a fresh worker");
    // chunks larger than the quota are split, not lost
    let p = ProcessPool::new(PoolConfig::new().workers(2).max_tasks_per_child(Some(3))).unwrap();
    let v: Vec<u64> = p
        .map(square, 0..50u64)
        .chunksize(8)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(v.len(), 50);
    assert_eq!(v[49], 49 * 49);
}

fn count_checkpoints(n: u64) -> u64 {
    let mut s = 0;
    for i in 0..n {
        poolrun_core::gil::checkpoint();
        s += i;
    }
    s
}

#[test]
fn gil_mode_gives_each_worker_its_own_gil() {
    let p = ProcessPool::new(PoolConfig::new().workers(2).gil(GilMode::cpython())).unwrap();
    let v: Vec<u64> = p
        .map(count_checkpoints, vec![1000u64; 8])
        .map(|r| r.unwrap())
        .collect();
    assert!(v.iter().all(|&x| x == 499_500));
}

#[test]
fn invalid_config_is_an_error() {
    let e = ProcessPool::new(PoolConfig::new().workers(0)).unwrap_err();
    assert!(e.to_string().contains("workers(0)"));
}

#[test]
fn queued_task_goes_to_an_idle_worker_not_behind_a_running_one() {
    let p = pool(2);
    for _ in 0..5 {
        let slow = p.submit(sleep_ms, 400);
        let quick = p.submit(sleep_ms, 1);
        // the second worker is idle: the quick task must not wait for the slow one
        assert_eq!(quick.result_timeout(Duration::from_millis(300)), Ok(1));
        assert_eq!(slow.result_timeout(LIMIT), Ok(400));
    }
}

#[test]
fn pool_dropped_inside_its_own_callback_does_not_hang() {
    let p = Arc::new(pool(1));
    let f = p.submit(sleep_ms, 20);
    let holder = Arc::new(Mutex::new(Some(p.clone())));
    drop(p);
    let h2 = holder.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    f.add_done_callback(move |_| {
        // the last handle goes away on the collector thread
        let last = h2.lock().unwrap().take();
        if let Some(p) = last {
            p.shutdown(true, false); // must not wait for its own thread
            drop(p);
        }
        let _ = tx.send(());
    });
    assert_eq!(f.result_timeout(LIMIT), Ok(20));
    rx.recv_timeout(LIMIT).expect("callback finished");
}

fn nested_pool(_: ()) -> String {
    match ProcessPool::new(PoolConfig::new().workers(1)) {
        Ok(_) => "created".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_worker_cannot_start_its_own_process_pool() {
    let p = pool(1);
    let msg = p.submit(nested_pool, ()).result_timeout(LIMIT).unwrap();
    assert!(msg.contains("inside a pool worker"), "{msg}");
    assert_eq!(p.submit(square, 3).result_timeout(LIMIT), Ok(9));
}
