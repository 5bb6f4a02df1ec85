//! Bounded waits: every blocking step of a test has a limit, so a regression fails the test
//! instead of hanging CI.

use std::time::{Duration, Instant};

use crate::procfs;

/// Generous bound for any single wait.
pub const LIMIT: Duration = Duration::from_secs(20);
/// Same as [`LIMIT`] (the name the conformance suite uses).
pub const T: Duration = LIMIT;

/// Poll `cond` every 2 ms for up to `limit`; true once it holds.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Wait (bounded) until none of `pids` is a child of this process any more — every one was
/// reaped. Panics after `limit`, naming the leftovers and their states.
pub fn assert_reaped(pids: &[u32], limit: Duration) {
    let t = Instant::now();
    loop {
        let left: Vec<(u32, Option<(char, u32)>)> = pids
            .iter()
            .copied()
            .filter(|&p| procfs::is_our_child(p))
            .map(|p| (p, procfs::stat(p)))
            .collect();
        if left.is_empty() {
            return;
        }
        if t.elapsed() >= limit {
            panic!("workers not reaped after {limit:?}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
