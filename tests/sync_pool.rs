//! The sync primitives used by pool tasks, the same test in thread mode and process mode:
//! exact counters under a Lock, strict Condition alternation, Event, Semaphore, Barrier,
//! OwnerDied after the holder is killed. Every wait has a timeout.

use std::time::Duration;

use poolrun::shm::SharedArray;
use poolrun::sync::{Barrier, Condition, Event, Lock, Semaphore, SyncError};
use poolrun::{Executor, Mode, Pool, PoolConfig, TaskError};

const T: Option<Duration> = Some(Duration::from_secs(20));
const MODES: [Mode; 2] = [Mode::Thread, Mode::Process];

fn pool(mode: Mode, n: usize) -> Pool {
    Pool::new(mode, PoolConfig::new().workers(n)).expect("pool")
}

fn count((lock, arr, n): (Lock, SharedArray<u64>, u32)) -> Result<(), String> {
    for _ in 0..n {
        let _g = lock.acquire(T).map_err(|e| e.to_string())?;
        arr.set(0, arr.get(0) + 1);
    }
    Ok(())
}

#[test]
fn lock_counter_is_exact_across_4_workers() {
    for mode in MODES {
        let p = pool(mode, 4);
        let lock = Lock::new().unwrap();
        let arr = SharedArray::<u64>::new(1).unwrap();
        let futs: Vec<_> = (0..4)
            .map(|_| p.submit(count, (lock.clone(), arr.clone(), 2500)))
            .collect();
        for f in futs {
            assert_eq!(f.result(), Ok(Ok(())), "{mode}");
        }
        assert_eq!(arr.get(0), 10_000, "{mode}");
        p.shutdown(true, false);
    }
}

fn party((who, cond, turn, rounds): (u32, Condition, SharedArray<u32>, u32)) -> Result<(), String> {
    for _ in 0..rounds {
        let mut g = cond.acquire(T).map_err(|e| e.to_string())?;
        let ok = cond
            .wait_for(&mut g, || turn.get(0) % 2 == who, T)
            .map_err(|e| e.to_string())?;
        if !ok {
            return Err("no turn within the timeout".into());
        }
        let n = turn.get(0);
        turn.set(1 + n as usize, who + 1);
        turn.set(0, n + 1);
        cond.notify_all();
    }
    Ok(())
}

#[test]
fn condition_alternation_is_strict() {
    for mode in MODES {
        let p = pool(mode, 2);
        let cond = Condition::new().unwrap();
        let rounds = 20;
        let turn = SharedArray::<u32>::new(1 + 2 * rounds as usize).unwrap();
        // Submit the second party first: arrival order must not matter.
        let b = p.submit(party, (1, cond.clone(), turn.clone(), rounds));
        let a = p.submit(party, (0, cond.clone(), turn.clone(), rounds));
        assert_eq!(a.result(), Ok(Ok(())), "{mode}");
        assert_eq!(b.result(), Ok(Ok(())), "{mode}");
        let said: Vec<u32> = (1..=2 * rounds as usize).map(|i| turn.get(i)).collect();
        let expect: Vec<u32> = (0..2 * rounds).map(|i| i % 2 + 1).collect();
        assert_eq!(said, expect, "{mode}");
    }
}

fn wait_event(e: Event) -> bool {
    e.wait(T)
}

#[test]
fn event_releases_every_waiter() {
    for mode in MODES {
        let p = pool(mode, 3);
        let e = Event::new().unwrap();
        let futs: Vec<_> = (0..3).map(|_| p.submit(wait_event, e.clone())).collect();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            futs.iter().all(|f| !f.done()),
            "{mode}: nobody passes before set"
        );
        e.set();
        for f in futs {
            assert_eq!(
                f.result_timeout(Duration::from_secs(20)),
                Ok(true),
                "{mode}"
            );
        }
    }
}

type Gate = (Semaphore, Lock, SharedArray<u32>);

fn bounded((sem, lock, arr): Gate) -> Result<(), String> {
    for _ in 0..5 {
        let _s = sem.acquire(T).map_err(|e| e.to_string())?;
        {
            let _g = lock.acquire(T).map_err(|e| e.to_string())?;
            let now = arr.get(0) + 1;
            arr.set(0, now);
            arr.set(1, arr.get(1).max(now));
        }
        std::thread::sleep(Duration::from_millis(3));
        let _g = lock.acquire(T).map_err(|e| e.to_string())?;
        arr.set(0, arr.get(0) - 1);
    }
    Ok(())
}

#[test]
fn semaphore_bounds_concurrency() {
    for mode in MODES {
        let p = pool(mode, 4);
        let sem = Semaphore::new(2).unwrap();
        let lock = Lock::new().unwrap();
        let arr = SharedArray::<u32>::new(2).unwrap();
        let futs: Vec<_> = (0..4)
            .map(|_| p.submit(bounded, (sem.clone(), lock.clone(), arr.clone())))
            .collect();
        for f in futs {
            assert_eq!(f.result(), Ok(Ok(())), "{mode}");
        }
        let max = arr.get(1);
        assert!(
            (1..=2).contains(&max),
            "{mode}: at most 2 inside, saw {max}"
        );
        assert_eq!(sem.value(), 2, "{mode}");
    }
}

fn barrier_wait(b: Barrier) -> Result<usize, String> {
    b.wait(T).map_err(|e| e.to_string())
}

#[test]
fn barrier_releases_all_parties() {
    for mode in MODES {
        let p = pool(mode, 3);
        let b = Barrier::new(3).unwrap();
        let futs: Vec<_> = (0..3).map(|_| p.submit(barrier_wait, b.clone())).collect();
        let mut idx: Vec<usize> = futs
            .into_iter()
            .map(|f| f.result().unwrap().unwrap())
            .collect();
        idx.sort();
        assert_eq!(idx, vec![0, 1, 2], "{mode}");
        // A party that times out breaks it for the others.
        let b = Barrier::new(3).unwrap();
        let f = p.submit(barrier_wait, b.clone());
        assert!(matches!(
            b.wait(Some(Duration::from_millis(50))),
            Err(SyncError::Broken)
        ));
        assert_eq!(f.result(), Ok(Err(SyncError::Broken.to_string())), "{mode}");
    }
}

/// Take the lock and die holding it (the worker process SIGKILLs itself).
fn die_holding(lock: Lock) -> u32 {
    let g = lock.acquire(T).expect("acquire");
    std::mem::forget(g);
    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    std::process::id()
}

#[test]
fn owner_died_after_holder_killed() {
    // Process mode: the worker is killed holding the lock.
    let p = pool(Mode::Process, 1);
    let lock = Lock::new().unwrap();
    let r = p.submit(die_holding, lock.clone()).result();
    let pid = match r {
        Err(TaskError::WorkerDied { pid, .. }) => pid,
        other => panic!("expected WorkerDied, got {other:?}"),
    };
    match lock.acquire(T) {
        Err(SyncError::OwnerDied { pid: p2 }) => assert_eq!(p2, pid),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(
        lock.acquire(Some(Duration::from_secs(1))).is_ok(),
        "free and consistent again"
    );
    p.shutdown(true, false);
}

fn leak_guard(lock: Lock) -> u32 {
    std::mem::forget(lock.acquire(T).expect("acquire"));
    std::process::id()
}

#[test]
fn owner_died_after_holder_thread_exits() {
    // Thread mode: a fresh thread per task, so the thread that leaked the guard exits.
    let p = Pool::new(
        Mode::Thread,
        PoolConfig::new().workers(1).max_tasks_per_child(Some(1)),
    )
    .unwrap();
    let lock = Lock::new().unwrap();
    assert_eq!(
        p.submit(leak_guard, lock.clone()).result(),
        Ok(std::process::id())
    );
    match lock.acquire(T) {
        Err(SyncError::OwnerDied { pid }) => assert_eq!(pid, std::process::id()),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(lock.acquire(Some(Duration::from_secs(1))).is_ok());
    p.shutdown(true, false);
}

/// Hold the lock while burning CPU under the GIL (checkpoints let others in).
fn hold_and_spin((lock, started): (Lock, Event)) -> Result<u64, String> {
    let _g = lock.acquire(T).map_err(|e| e.to_string())?;
    started.set();
    let t0 = std::time::Instant::now();
    let mut x = 0u64;
    while t0.elapsed() < Duration::from_millis(100) {
        for i in 0..1000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        poolrun::gil::checkpoint();
    }
    Ok(x)
}

fn wait_lock((lock, started): (Lock, Event)) -> Result<(), String> {
    if !started.wait(T) {
        return Err("holder never started".into());
    }
    // Blocks ~100 ms: must release the GIL meanwhile, or the holder could never finish.
    lock.acquire(Some(Duration::from_secs(5)))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn blocking_on_a_lock_releases_the_gil() {
    let p = Pool::new(
        Mode::Thread,
        PoolConfig::new()
            .workers(2)
            .gil(poolrun::GilMode::cpython()),
    )
    .unwrap();
    let lock = Lock::new().unwrap();
    let started = Event::new().unwrap();
    let w = p.submit(wait_lock, (lock.clone(), started.clone()));
    let h = p.submit(hold_and_spin, (lock.clone(), started.clone()));
    assert!(h.result().unwrap().is_ok());
    assert_eq!(w.result(), Ok(Ok(())));
    p.shutdown(true, false);
}
