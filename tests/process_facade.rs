//! Process mode through the facade (`poolrun::Pool`): crash isolation, timeouts and
//! recycling behave as README says, and the pool keeps working afterwards. (The shared
//! Executor conformance suite runs in `tests/conformance.rs`; the fork, zombie, fd and
//! orphan tests live in `crates/procpool/tests/`.)

use std::time::Duration;

use poolrun::{Executor, Mode, Pool, PoolConfig, TaskError};

const LIMIT: Duration = Duration::from_secs(20);

fn pid(_: ()) -> u32 {
    std::process::id()
}
fn crash_on(x: u64) -> u64 {
    match x {
        3 => std::process::abort(),
        5 => std::process::exit(5),
        _ => x * 10,
    }
}
fn hang(_: ()) -> u32 {
    std::thread::sleep(Duration::from_secs(60));
    0
}

#[test]
fn crashes_fail_only_their_items_and_the_pool_goes_on() {
    let p = Pool::new(Mode::Process, PoolConfig::new().workers(2)).expect("pool");
    let out: Vec<_> = p.map(crash_on, 0..8u64).chunksize(3).collect();
    for (i, r) in out.into_iter().enumerate() {
        match i {
            3 => assert!(
                matches!(
                    r,
                    Err(TaskError::WorkerDied {
                        signal: Some(6),
                        ..
                    })
                ),
                "{r:?}"
            ),
            5 => assert!(
                matches!(
                    r,
                    Err(TaskError::WorkerDied {
                        signal: None,
                        exit_code: Some(5),
                        ..
                    })
                ),
                "{r:?}"
            ),
            _ => assert_eq!(r, Ok(i as u64 * 10)),
        }
    }
    let w = p
        .submit(pid, ())
        .result_timeout(LIMIT)
        .expect("pool still works");
    assert_ne!(w, std::process::id());
}

#[test]
fn timeout_and_recycling_through_the_facade() {
    let t = Duration::from_millis(200);
    let p = Pool::new(
        Mode::Process,
        PoolConfig::new()
            .workers(1)
            .task_timeout(Some(t))
            .max_tasks_per_child(Some(2)),
    )
    .expect("pool");
    assert_eq!(
        p.submit(hang, ()).result_timeout(LIMIT),
        Err(TaskError::TimedOut { after: t })
    );
    let pids: Vec<u32> = (0..6)
        .map(|_| p.submit(pid, ()).result_timeout(LIMIT).unwrap())
        .collect();
    let mut distinct = pids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "2 tasks per child: {pids:?}");
    assert!(p.shutdown_timeout(false, LIMIT));
}
