//! Lockdep across two worker processes (its own test binary: lockdep is process-wide).

use std::time::Duration;

use poolrun::sync::{lockdep, Barrier, Event, Lock, SyncError};
use poolrun::{Executor, Mode, Pool, PoolConfig};

const T: Option<Duration> = Some(Duration::from_secs(20));

type Args = (u32, Lock, Lock, Barrier, Event);

/// Party 0 takes A then B and sets the event; party 1 waits for it, then takes B then A.
/// Returns (own pid, the other pid named by an inversion report, if any).
fn party((who, a, b, start, a_then_b_done): Args) -> Result<(u32, Option<u32>), String> {
    // Both parties run at once, so they are on two different workers (processes).
    start.wait(T).map_err(|e| e.to_string())?;
    let me = std::process::id();
    if who == 0 {
        let _ga = a.acquire(T).map_err(|e| e.to_string())?;
        let _gb = b.acquire(T).map_err(|e| e.to_string())?;
        a_then_b_done.set();
        Ok((me, None))
    } else {
        if !a_then_b_done.wait(T) {
            return Err("party 0 never finished".into());
        }
        let _gb = b.acquire(T).map_err(|e| e.to_string())?;
        match a.acquire(T) {
            Err(SyncError::LockOrderInversion { report }) => Ok((me, Some(report.other_pid))),
            Err(e) => Err(e.to_string()),
            Ok(_) => Ok((me, None)),
        }
    }
}

#[test]
fn lockdep_reports_an_inversion_across_two_processes() {
    lockdep::enable();
    let p = Pool::new(Mode::Process, PoolConfig::new().workers(2)).unwrap();
    let (a, b) = (Lock::named("A").unwrap(), Lock::named("B").unwrap());
    let start = Barrier::new(2).unwrap();
    let done = Event::new().unwrap();
    let f1 = p.submit(
        party,
        (1, a.clone(), b.clone(), start.clone(), done.clone()),
    );
    let f0 = p.submit(
        party,
        (0, a.clone(), b.clone(), start.clone(), done.clone()),
    );
    let (pid0, _) = f0.result().unwrap().unwrap();
    let (pid1, other) = f1.result().unwrap().unwrap();
    assert_ne!(pid0, pid1, "two processes");
    assert_ne!(pid0, std::process::id());
    assert_eq!(
        other,
        Some(pid0),
        "the report names the process that took A then B"
    );
    // The allowed order still works, here in the parent.
    let _ga = a.acquire(T).unwrap();
    let _gb = b.acquire(T).unwrap();
    p.shutdown(true, false);
}
