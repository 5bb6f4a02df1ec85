//! `TaskFuture` awaited from tokio (issue 12): thousands of concurrent awaits on a few
//! runtime threads, in every local mode; no thread blocks per await.

use std::time::Duration;

use poolrun::{Executor, Mode, Pool, PoolConfig, TaskError};

fn square(x: u64) -> u64 {
    x * x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn thousands_of_awaits(mode: Mode) {
    let pool = std::sync::Arc::new(Pool::new(mode, PoolConfig::new().workers(2)).expect("pool"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let before = os_threads();
    let n = 3000u64;
    let (sum, peak) = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let fut = pool.submit(square, i);
            set.spawn(fut); // a TaskFuture is itself a Send future
        }
        let peak = os_threads();
        let mut sum = 0u64;
        while let Some(r) = set.join_next().await {
            sum += r.expect("join").expect("task");
        }
        (sum, peak)
    });
    assert_eq!(sum, (0..n).map(|i| i * i).sum::<u64>());
    // 3000 awaits in flight, and the process has only the runtime's and the pool's threads.
    assert!(
        peak < before + 16,
        "{peak} threads while awaiting (before: {before}): a thread per await?"
    );
}

#[test]
fn thousands_of_awaits_in_thread_mode() {
    thousands_of_awaits(Mode::Thread);
}

#[test]
fn thousands_of_awaits_in_process_mode() {
    thousands_of_awaits(Mode::Process);
}

/// A tokio timeout around an await leaves the task running and the future usable; a killed
/// task's await yields `Cancelled`.
#[test]
fn timeouts_and_kill_around_an_await() {
    for mode in [Mode::Thread, Mode::Process] {
        let pool = Pool::new(mode, PoolConfig::new().workers(1)).expect("pool");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut fut = pool.submit(sleep_ms, 200);
            let early = tokio::time::timeout(Duration::from_millis(20), &mut fut).await;
            assert!(early.is_err(), "{mode:?}: done after 20 ms?");
            assert_eq!(fut.await, Ok(200), "{mode:?}");
            let runaway = pool.submit(sleep_ms, 60_000);
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(runaway.kill() || runaway.done());
            assert_eq!(runaway.await, Err(TaskError::Cancelled), "{mode:?}");
        });
    }
}
