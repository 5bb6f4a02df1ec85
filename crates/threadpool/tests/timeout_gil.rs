//! `task_timeout` in a GIL-bound pool measures the task's running time, not its wait for
//! the GIL (found by the fault suite: a trivial task queued behind a GIL hog timed out).

use std::time::{Duration, Instant};

use poolrun_core::{Executor, GilMode, PoolConfig, TaskError};
use poolrun_threadpool::ThreadPool;

/// Holds the GIL for `ms` without a checkpoint (so it never hands it over).
fn hog(ms: u64) -> u64 {
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(ms) {
        std::hint::spin_loop();
    }
    ms
}

fn trivial(x: u64) -> u64 {
    x + 1
}

#[test]
fn waiting_for_the_gil_is_not_running_time() {
    let cfg = PoolConfig::new()
        .workers(2)
        .gil(GilMode::cpython())
        .task_timeout(Some(Duration::from_millis(100)));
    let pool = ThreadPool::new(cfg).unwrap();
    let h = pool.submit(hog, 400);
    // Let the hog take the GIL first.
    let t = Instant::now();
    while !h.running() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    let f = pool.submit(trivial, 1);
    assert_eq!(f.result_timeout(Duration::from_secs(20)), Ok(2));
    // The hog itself ran past its timeout.
    assert_eq!(
        h.result_timeout(Duration::from_secs(20)),
        Err(TaskError::TimedOut {
            after: Duration::from_millis(100)
        })
    );
    assert!(pool.shutdown_timeout(false, Duration::from_secs(20)));
}
