//! [`RunWord`]: the kill handshake on a worker's "task running now" word.
//!
//! `TaskFuture::kill` of a *running* task must stop that task and never another one, even
//! when the kill races with the task's start or end. Both backends use the same protocol on
//! one `AtomicU64` per worker — a thread pool's on the heap, a process pool's in the
//! worker's shared status page — with every access `SeqCst`:
//!
//! ```text
//! worker                                  killer (after claiming the future as cancelled)
//! W1 begin(id): word := id                K1 make the kill visible to the worker
//! W2 killed before it began? skip it         (the future is done / a mark in the page)
//! W3 run the task                         K2 claim(id): CAS word id → id|KILL
//! W4 end(): swap word := 0                   on success only: stop the worker
//!    → claimed? then a stop is on its way:      (thread: raise its stop flag;
//!      consume it before the next task)           process: SIGKILL its group)
//! ```
//!
//! W1/W2 and K1/K2 form a Dekker pair: either the worker sees the kill at W2 and skips the
//! task, or the killer sees the task running at K2 and claims it (or both). A claim succeeds
//! only while the word holds *this* id, and the worker learns of it at W4 before it can
//! begin anything else, so the stop can only ever land on the claimed task. Checked over
//! every interleaving by `poolrun-testkit`'s model tests (`crates/testkit/tests/model.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

/// The bit a successful [`claim`](RunWord::claim) sets (task ids stay far below it).
pub const KILL_BIT: u64 = 1 << 63;

/// A view of one worker's running word (see the module docs). Task ids are never 0.
#[derive(Debug, Clone, Copy)]
pub struct RunWord<'a>(&'a AtomicU64);

impl<'a> RunWord<'a> {
    /// View `word` (zero-initialised: nothing running).
    pub fn new(word: &'a AtomicU64) -> Self {
        RunWord(word)
    }

    /// Worker, W1: task `id` begins now.
    pub fn begin(self, id: u64) {
        debug_assert!(id != 0 && id & KILL_BIT == 0);
        self.0.store(id, Ordering::SeqCst);
    }

    /// Worker, W4: the task is over (run or skipped). True if a killer claimed it while it
    /// ran: a stop is on its way and must be consumed before another task begins.
    pub fn end(self) -> bool {
        self.0.swap(0, Ordering::SeqCst) & KILL_BIT != 0
    }

    /// Killer, K2: claim task `id` if it is running right now. True means "stop the worker
    /// now": it is running `id` and will not begin another task before it learns of this.
    pub fn claim(self, id: u64) -> bool {
        self.0
            .compare_exchange(id, id | KILL_BIT, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The task running now (0: none), without the claim bit.
    pub fn running(self) -> u64 {
        self.0.load(Ordering::SeqCst) & !KILL_BIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_only_the_running_task() {
        let w = AtomicU64::new(0);
        let r = RunWord::new(&w);
        assert!(!r.claim(7), "nothing runs");
        r.begin(7);
        assert!(!r.claim(8), "another task");
        assert!(r.claim(7));
        assert!(!r.claim(7), "claimed once");
        assert_eq!(r.running(), 7);
        assert!(r.end());
        r.begin(9);
        assert!(!r.end());
        assert_eq!(r.running(), 0);
    }
}
