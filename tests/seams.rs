//! Regression tests for the hangs found at the seams between the pools. Each test
//! failed (hung, or returned the wrong error) before the fix it names; every blocking step
//! is bounded, so a regression fails the test instead of hanging CI.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use poolrun::{Executor, Mode, Pool, PoolConfig, ProcessPool, TaskError, ThreadPool};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Run `f` on a thread; `Some(value)` if it finished within `limit`, `None` if it hung (the
/// thread is left behind; the test fails on the `None`).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

fn abort_with_big_arg(arg: Vec<u8>) -> u64 {
    if arg.first() == Some(&1) {
        std::process::abort();
    }
    arg.len() as u64
}

/// Bug 1: a worker that dies while the parent is sending it a large job must not wedge the
/// sender. Large messages used to travel over a socket whose receiving end later forks
/// inherited, so the dead worker's socket never closed and the send blocked forever.
#[test]
fn big_jobs_to_dying_workers_never_wedge_the_pool() {
    let pool = ProcessPool::new(PoolConfig::new().workers(2)).expect("pool");
    let big = 4 << 20;
    let args: Vec<Vec<u8>> = (0..12)
        .map(|i| {
            let mut v = vec![0u8; big];
            v[0] = u8::from(i % 3 != 2); // two of every three crash their worker
            v
        })
        .collect();
    let futs: Vec<_> = args
        .into_iter()
        .map(|a| pool.submit(abort_with_big_arg, a))
        .collect();
    for (i, f) in futs.iter().enumerate() {
        let r = f.result_timeout(Duration::from_secs(30));
        if i % 3 == 2 {
            assert_eq!(r, Ok(big as u64), "item {i}");
        } else {
            assert!(
                matches!(
                    r,
                    Err(TaskError::WorkerDied {
                        signal: Some(6),
                        ..
                    })
                ),
                "item {i}: {r:?}"
            );
        }
    }
    // The pool still works, and dropping it (joining every pool thread) returns.
    assert_eq!(
        pool.submit(square, 9)
            .result_timeout(Duration::from_secs(10)),
        Ok(81)
    );
    assert!(
        within(Duration::from_secs(20), move || drop(pool)).is_some(),
        "dropping the pool hung"
    );
    assert!(eventually(T, || zombies().is_empty()));
}

/// A value whose `Deserialize` panics: the worker only encodes it, the parent decodes it.
#[derive(Debug)]
struct PanicsOnDecode;

impl Serialize for PanicsOnDecode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(7)
    }
}

impl<'de> Deserialize<'de> for PanicsOnDecode {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        panic!("decoding PanicsOnDecode exploded")
    }
}

fn make_panicking(_: ()) -> PanicsOnDecode {
    PanicsOnDecode
}

/// Bug 2: a result whose `Deserialize` panics in the parent used to kill the worker's
/// collector thread: the future stayed running forever, later tasks routed to that worker
/// hung and the worker was never reaped.
#[test]
fn a_panicking_result_decoder_fails_only_its_task() {
    let pool = ProcessPool::new(PoolConfig::new().workers(1)).expect("pool");
    let f = pool.submit(make_panicking, ());
    match f.result_timeout(Duration::from_secs(20)) {
        Err(TaskError::Codec(msg)) => {
            assert!(msg.contains("PanicsOnDecode"), "{msg}");
            assert!(msg.contains("decoding PanicsOnDecode exploded"), "{msg}");
        }
        other => panic!("expected Codec, got {other:?}"),
    }
    // The same (only) worker still takes tasks.
    for i in 0..5u64 {
        assert_eq!(
            pool.submit(square, i)
                .result_timeout(Duration::from_secs(20)),
            Ok(i * i)
        );
    }
    assert!(within(Duration::from_secs(20), move || pool.shutdown(true, false)).is_some());
    assert!(eventually(T, || zombies().is_empty()));
}

/// Bug 3: a second shutdown with `cancel_pending` after `shutdown(false, _)` drained the
/// queue *including* the stop messages the first call had queued, so busy worker threads
/// then waited forever.
#[test]
fn thread_shutdown_nowait_then_cancel_still_joins() {
    let pool = ThreadPool::new(PoolConfig::new().workers(2)).expect("pool");
    let busy: Vec<_> = (0..2).map(|_| pool.submit(sleep_ms, 200)).collect();
    let queued: Vec<_> = (0..4).map(|_| pool.submit(sleep_ms, 200)).collect();
    assert!(eventually(T, || busy.iter().all(|f| f.running())));
    pool.shutdown(false, false);
    assert!(pool.shutdown_timeout(true, Duration::from_secs(5)));
    for f in busy {
        assert_eq!(f.result(), Ok(200));
    }
    for f in queued {
        assert_eq!(f.result(), Err(TaskError::Cancelled));
    }
}

/// Bug 3, daemon drop flavour: `shutdown(false, _)` then dropping the (daemon) pool.
#[test]
fn thread_shutdown_nowait_then_daemon_drop_finishes_running_work() {
    let pool = ThreadPool::new(PoolConfig::new().workers(2)).expect("pool");
    let running: Vec<_> = (0..2).map(|_| pool.submit(sleep_ms, 100)).collect();
    let queued: Vec<_> = (0..4).map(|_| pool.submit(sleep_ms, 100)).collect();
    assert!(eventually(T, || running.iter().all(|f| f.running())));
    pool.shutdown(false, false);
    drop(pool);
    for f in running {
        assert_eq!(f.result_timeout(Duration::from_secs(10)), Ok(100));
    }
    for f in queued {
        assert_eq!(
            f.result_timeout(Duration::from_secs(10)),
            Err(TaskError::Cancelled)
        );
    }
}

/// Bug 4: `MapIter::timeout` yielded `Err(Cancelled)` for the items it cancelled at the
/// deadline; the documented result is `Err(WaitTimeout)`.
#[test]
fn map_timeout_yields_wait_timeout_for_every_unfinished_item() {
    for mode in [Mode::Thread, Mode::Process] {
        let pool = Pool::new(mode, PoolConfig::new().workers(1)).expect("pool");
        let t = Instant::now();
        let got: Vec<_> = pool
            .map(sleep_ms, vec![5u64, 3000, 3000, 3000, 3000])
            .timeout(Duration::from_millis(600))
            .collect();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{mode}: {:?}",
            t.elapsed()
        );
        assert_eq!(
            got,
            vec![
                Ok(5),
                Err(TaskError::WaitTimeout),
                Err(TaskError::WaitTimeout),
                Err(TaskError::WaitTimeout),
                Err(TaskError::WaitTimeout),
            ],
            "{mode}"
        );
        pool.shutdown(false, true);
    }
}

/// The same rule for `map_unordered`.
#[test]
fn map_unordered_timeout_yields_wait_timeout() {
    for mode in [Mode::Thread, Mode::Process] {
        let pool = Pool::new(mode, PoolConfig::new().workers(1)).expect("pool");
        let mut got: Vec<_> = pool
            .map_unordered(sleep_ms, vec![5u64, 3000, 3000])
            .timeout(Duration::from_millis(600))
            .collect();
        got.sort_by_key(|(i, _)| *i);
        assert_eq!(
            got,
            vec![
                (0, Ok(5)),
                (1, Err(TaskError::WaitTimeout)),
                (2, Err(TaskError::WaitTimeout)),
            ],
            "{mode}"
        );
        pool.shutdown(false, true);
    }
}

/// Bug 5: a huge `task_timeout` overflowed `Instant + Duration` in the worker threads (a
/// panic outside `catch_unwind`), and the tasks failed as "shut down".
#[test]
fn huge_task_timeout_means_no_deadline() {
    for mode in [Mode::Thread, Mode::Process] {
        for t in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            let cfg = PoolConfig::new().workers(2).task_timeout(Some(t));
            let pool = Pool::new(mode, cfg).expect("pool");
            let futs: Vec<_> = (0..4u64).map(|i| pool.submit(square, i)).collect();
            for (i, f) in futs.into_iter().enumerate() {
                let i = i as u64;
                assert_eq!(
                    f.result_timeout(Duration::from_secs(20)),
                    Ok(i * i),
                    "{mode} {t:?}"
                );
            }
            assert!(pool.shutdown_timeout(false, Duration::from_secs(10)));
        }
    }
    assert!(poolrun::shm::wait_pins_released(Duration::MAX));
}

/// Spins without ever calling `checkpoint()` (third-party code: a hash, a regex) until
/// `flag` is set.
fn spin_without_checkpoints(flag: poolrun::shm::SharedArray<u64>) -> u64 {
    while flag.get(0) == 0 {
        std::hint::spin_loop();
    }
    flag.get(0)
}

/// Sets the flag when dropped, so a failing assertion never leaves a non-daemon pool
/// waiting for a thread that spins forever (declare it after the pool: it drops first).
struct Release(poolrun::shm::SharedArray<u64>);
impl Drop for Release {
    fn drop(&mut self) {
        self.0.set(0, 1);
    }
}

/// Bug 6: a thread-mode task that was killed (or timed out) but never reaches a checkpoint
/// kept `shutdown(true, _)` and a non-daemon drop waiting forever, although its future was
/// already done. The pool now detaches that thread (and replaces it).
#[test]
fn thread_kill_without_checkpoints_does_not_block_shutdown() {
    let flag = poolrun::shm::SharedArray::<u64>::new(1).expect("array");
    let pool = ThreadPool::new(PoolConfig::new().workers(1).daemon(false)).expect("pool");
    let release = Release(flag.clone());
    let stuck = pool.submit(spin_without_checkpoints, flag.clone());
    assert!(eventually(T, || stuck.running()));
    assert!(stuck.kill());
    assert_eq!(stuck.result(), Err(TaskError::Cancelled));
    // The replacement thread keeps the pool at full strength.
    assert_eq!(
        pool.submit(square, 6)
            .result_timeout(Duration::from_secs(10)),
        Ok(36)
    );
    assert!(pool.shutdown_timeout(false, Duration::from_secs(5)));
    assert!(
        within(Duration::from_secs(10), move || drop(pool)).is_some(),
        "non-daemon drop hung"
    );
    drop(release); // let the detached thread finish
}

/// Bug 6, timeout flavour.
#[test]
fn thread_timeout_without_checkpoints_does_not_block_shutdown() {
    let flag = poolrun::shm::SharedArray::<u64>::new(1).expect("array");
    let cfg = PoolConfig::new()
        .workers(1)
        .daemon(false)
        .task_timeout(Some(Duration::from_millis(100)));
    let pool = ThreadPool::new(cfg).expect("pool");
    let release = Release(flag.clone());
    let stuck = pool.submit(spin_without_checkpoints, flag.clone());
    assert_eq!(
        stuck.result_timeout(Duration::from_secs(10)),
        Err(TaskError::TimedOut {
            after: Duration::from_millis(100)
        })
    );
    let done = Arc::new(AtomicUsize::new(0));
    let d2 = done.clone();
    let next = pool.submit(square, 7);
    next.add_done_callback(move |_| {
        d2.fetch_add(1, Ordering::SeqCst);
    });
    assert_eq!(next.result_timeout(Duration::from_secs(10)), Ok(49));
    assert_eq!(done.load(Ordering::SeqCst), 1);
    assert!(
        within(Duration::from_secs(10), move || {
            pool.shutdown(true, false);
            drop(pool);
        })
        .is_some(),
        "shutdown(true) hung on a detached thread"
    );
    drop(release);
}
