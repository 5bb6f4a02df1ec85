//! The status page: one page of shared memory between the parent and one worker, through
//! which they coordinate without any message.
//!
//! ```text
//! word 0  RUNNING   the item running now (0: none) | KILL_BIT — the kill handshake,
//!                   poolrun-core's `RunWord` (W1–W4 / K1–K2 in its runtime/handshake.rs)
//! word 1  SINCE     when it began (ns on the clock of `sys::now_ns`)  → `task_timeout`
//! word 2  MARKS     how many kill marks are set (a fast "none" check)
//! word 3  GATE      the last batch settled: its sequence number, | WITHDRAWN if the parent
//!                   took it back before the worker began it (see below)
//! word 4  RECEIVED  messages the worker has taken from its channel (the parent bounds
//!                   what it has sent and the worker not yet read)
//! word 8… MARK[256] item ids `kill()` marked: the worker skips a marked item (K1/W2)
//! ```
//!
//! ## The withdraw gate
//! A worker holds at most one batch ahead of the one it runs. When another worker goes idle
//! and the queue is empty, the parent takes that ahead batch back and gives it to the idle
//! worker, so a queued task never waits behind a long one while a worker idles. Batches to
//! one worker carry sequence numbers 1, 2, 3… in the order they are sent, and are begun in
//! that order. For batch `s`, with `prev` = `s-1` or `(s-1) | WITHDRAWN`:
//!
//! - worker, before its first item: `CAS(GATE, prev → s)`; on failure `GATE` is
//!   `s | WITHDRAWN` and the worker skips the whole batch;
//! - parent, to withdraw: `CAS(GATE, prev → s | WITHDRAWN)`; on failure the worker has
//!   begun `s` and keeps it.
//!
//! Exactly one compare-exchange succeeds, so a batch is either run by its worker or re-sent
//! elsewhere, never both and never neither. Checked over every interleaving, one
//! compare-exchange per step, by `gate_model` below.
//!
//! ## Invariant P1 (the mapping)
//! A [`StatusPage`] owns one page-aligned `MAP_SHARED | MAP_ANONYMOUS` mapping of [`PAGE`]
//! bytes for its whole life (a forked worker inherits it at the same address); it is only
//! accessed through `AtomicU64`s, so the parent and the worker may use it concurrently.

#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::mman::munmap;
use poolrun_core::backend::RunWord;

use crate::sys::now_ns;

/// Size of one worker's status page.
pub(crate) const PAGE: usize = 4096;

const RUNNING: usize = 0;
const SINCE: usize = 1;
const MARKS: usize = 2;
const GATE: usize = 3;
const RECEIVED: usize = 4;
const MARK_CELLS_AT: usize = 8;
/// Items a worker can be told to skip at once (it holds at most two batches).
const MARK_CELLS: usize = 256;
const _: () = assert!((MARK_CELLS_AT + MARK_CELLS) * 8 <= PAGE);

/// Set in `GATE` when the parent took the batch back.
const WITHDRAWN: u64 = 1 << 63;

/// One worker's status page (see the module docs).
pub(crate) struct StatusPage {
    /// Invariant P1: points to a live `MAP_SHARED` mapping of `PAGE` bytes owned by `self`.
    ptr: NonNull<AtomicU64>,
}

// SAFETY: the page is only accessed through atomics (invariant P1), so sharing the handle
// between threads is as safe as sharing an `&AtomicU64`.
unsafe impl Send for StatusPage {}
// SAFETY: as above.
unsafe impl Sync for StatusPage {}

impl StatusPage {
    /// Map a fresh zeroed page.
    pub(crate) fn new() -> nix::Result<StatusPage> {
        // We own the mapping until `Drop` unmaps it (invariant P1).
        let p = crate::sys::map_shared(PAGE)?;
        Ok(StatusPage { ptr: p.cast() })
    }

    /// The typed accessor every other method goes through.
    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < PAGE / 8, "status page word {i} out of range");
        // SAFETY: invariant P1: the mapping is live for `&self`'s lifetime, page-aligned (so
        // 8-byte aligned), zero-initialised by the kernel and only accessed atomically; the
        // assertion keeps the pointer inside it.
        unsafe { &*self.ptr.as_ptr().add(i) }
    }

    /// The kill handshake's word.
    pub(crate) fn run_word(&self) -> RunWord<'_> {
        RunWord::new(self.word(RUNNING))
    }

    /// Worker: item `id` begins now (W1). Returns "now" (ns since the epoch).
    pub(crate) fn begin(&self, id: u64) -> u64 {
        let now = now_ns();
        self.word(SINCE).store(now, Ordering::Relaxed);
        self.run_word().begin(id);
        now
    }

    /// Worker: the item is over (W4). True if the parent claimed it for a kill while it ran:
    /// a SIGKILL is on its way, so the worker must not begin another item.
    pub(crate) fn end(&self) -> bool {
        self.run_word().end()
    }

    /// Parent: the item running now (0: none) and when it began.
    pub(crate) fn running(&self) -> (u64, u64) {
        (
            self.run_word().running(),
            self.word(SINCE).load(Ordering::Relaxed),
        )
    }

    /// Parent (under the scheduler lock, `TaskFuture::kill`): item `id` was sent to this
    /// worker and must not run. Marks it (K1: a worker that has not begun it skips it), then
    /// claims it if it runs right now (K2); true means "claimed: kill the worker".
    ///
    /// False also when no mark cell is free (the item then runs, its result discarded;
    /// `MARK_CELLS` far exceeds what a worker holds in practice).
    pub(crate) fn doom(&self, id: u64) -> bool {
        let cells = MARK_CELLS_AT..MARK_CELLS_AT + MARK_CELLS;
        if cells
            .clone()
            .any(|i| self.word(i).load(Ordering::SeqCst) == id)
        {
            // (already marked)
        } else if cells.clone().any(|i| {
            self.word(i)
                .compare_exchange(0, id, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        }) {
            self.word(MARKS).fetch_add(1, Ordering::SeqCst);
        } else {
            return false;
        }
        self.run_word().claim(id)
    }

    /// Worker (W2, after `begin(id)`; and after the item ran) or parent (once `id`'s result
    /// is in): true if `id` was marked; the mark is removed by exactly one caller. One load
    /// when nothing is marked.
    pub(crate) fn take_mark(&self, id: u64) -> bool {
        if self.word(MARKS).load(Ordering::SeqCst) == 0 {
            return false;
        }
        let hit = (MARK_CELLS_AT..MARK_CELLS_AT + MARK_CELLS).any(|i| {
            self.word(i)
                .compare_exchange(id, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if hit {
            self.word(MARKS).fetch_sub(1, Ordering::SeqCst);
        }
        hit
    }

    /// Worker: begin batch `seq` unless the parent withdrew it (then false: skip it).
    pub(crate) fn gate_begin(&self, seq: u64) -> bool {
        gate_step(self.word(GATE), seq, seq)
    }

    /// Parent: take batch `seq` back if the worker has not begun it; true on success.
    pub(crate) fn gate_withdraw(&self, seq: u64) -> bool {
        gate_step(self.word(GATE), seq, seq | WITHDRAWN)
    }

    /// Worker: one more message taken from the channel.
    pub(crate) fn mark_received(&self) {
        self.word(RECEIVED).fetch_add(1, Ordering::SeqCst);
    }

    /// Parent: messages the worker has taken from its channel.
    pub(crate) fn received(&self) -> u64 {
        self.word(RECEIVED).load(Ordering::SeqCst)
    }
}

/// Move `gate` from batch `seq - 1` (run or withdrawn) to `to`; false if it is elsewhere.
pub(crate) fn gate_step(gate: &AtomicU64, seq: u64, to: u64) -> bool {
    gate_froms(seq)
        .into_iter()
        .any(|from| gate_cas(gate, from, to))
}

/// The two values the gate may hold when batch `seq` is next: `seq - 1`, run or withdrawn.
pub(crate) fn gate_froms(seq: u64) -> [u64; 2] {
    let prev = seq.wrapping_sub(1);
    [prev, prev | WITHDRAWN]
}

/// One step of [`gate_step`]: a single compare-exchange.
pub(crate) fn gate_cas(gate: &AtomicU64, from: u64, to: u64) -> bool {
    gate.compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        // SAFETY: invariant P1: we own the mapping and nothing borrows it past `&mut self`.
        let _ = unsafe { munmap(self.ptr.cast(), PAGE) };
    }
}

impl std::fmt::Debug for StatusPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (id, _) = self.running();
        f.debug_struct("StatusPage").field("running", &id).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// The kill handshake with a thread playing the worker: when `doom(k)` says "running,
    /// kill now", the worker must stop right after item `k` — it must never begin another
    /// item, which a real kill arriving a moment later would hit.
    #[test]
    fn doom_handshake_never_lets_the_worker_begin_another_item() {
        let mut claimed = 0;
        for round in 0..300u64 {
            let page = Arc::new(StatusPage::new().expect("page"));
            let over = Arc::new(AtomicBool::new(false));
            let (p2, o2) = (page.clone(), over.clone());
            let worker = std::thread::spawn(move || {
                let mut stopped_after = None;
                let t = Instant::now();
                for id in 1.. {
                    if t.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                    p2.begin(id);
                    let killed = if p2.take_mark(id) {
                        p2.end()
                    } else {
                        for _ in 0..(id * 7 + round) % 64 {
                            std::hint::spin_loop();
                        }
                        let killed = p2.end();
                        p2.take_mark(id);
                        killed
                    };
                    if killed {
                        stopped_after = Some(id);
                        break;
                    }
                }
                o2.store(true, Ordering::SeqCst);
                stopped_after
            });
            let mut kill_now = None;
            let mut n = 0u64;
            while !over.load(Ordering::SeqCst) {
                n += 1;
                let (running, _) = page.running();
                let target = running + n % 2;
                if running != 0 && page.doom(target) {
                    kill_now = Some(target);
                    break;
                }
            }
            let stopped_after = worker.join().expect("worker");
            assert_eq!(stopped_after, kill_now, "round {round}");
            claimed += usize::from(kill_now.is_some());
        }
        assert!(claimed > 150, "only {claimed} of 300 rounds got to a kill");
    }

    #[test]
    fn marks_and_claims() {
        let page = StatusPage::new().expect("page");
        assert!(!page.doom(7), "7 is not running");
        assert!(!page.doom(7));
        assert!(page.take_mark(7));
        assert!(!page.take_mark(7), "one mark, taken once");
        page.begin(9);
        assert!(page.doom(9));
        assert_eq!(page.running().0, 9, "the claim bit is not part of the id");
        assert!(page.end(), "the worker learns of the claim");
        assert!(page.take_mark(9));
        page.begin(10);
        assert!(!page.end());
    }

    /// Every interleaving of a worker beginning batches 1, 2, 3 and the parent trying to
    /// withdraw batch 2, one compare-exchange per step: batch 2 is run or withdrawn, never
    /// both and never neither, and batch 3 always follows.
    #[test]
    fn gate_model() {
        use poolrun_testkit::model::{explore, Actor, Step};
        use std::cell::RefCell;

        #[derive(Default)]
        struct S {
            gate: AtomicU64,
            ran: RefCell<Vec<u64>>,
            withdrew: RefCell<Option<bool>>,
        }
        struct Worker {
            seq: u64,
            attempt: usize,
        }
        impl Actor<S> for Worker {
            fn step(&mut self, s: &S) -> Step {
                let from = gate_froms(self.seq)[self.attempt];
                if gate_cas(&s.gate, from, self.seq) {
                    s.ran.borrow_mut().push(self.seq);
                } else if self.attempt == 0 {
                    self.attempt = 1;
                    return Step::Ran;
                } // else: withdrawn, skip it
                self.seq += 1;
                self.attempt = 0;
                if self.seq > 3 {
                    Step::Finished
                } else {
                    Step::Ran
                }
            }
        }
        struct Parent {
            attempt: usize,
        }
        impl Actor<S> for Parent {
            fn step(&mut self, s: &S) -> Step {
                let from = gate_froms(2)[self.attempt];
                if gate_cas(&s.gate, from, 2 | WITHDRAWN) {
                    *s.withdrew.borrow_mut() = Some(true);
                    return Step::Finished;
                }
                if self.attempt == 0 {
                    self.attempt = 1;
                    return Step::Ran;
                }
                *s.withdrew.borrow_mut() = Some(false);
                Step::Finished
            }
        }
        let e = explore(
            || {
                (
                    S::default(),
                    vec![
                        Box::new(Worker { seq: 1, attempt: 0 }) as Box<dyn Actor<S>>,
                        Box::new(Parent { attempt: 0 }),
                    ],
                )
            },
            |s, schedule| {
                let ran = s.ran.borrow();
                let withdrew = s.withdrew.borrow().expect("the parent finished");
                assert_eq!(
                    ran.contains(&2),
                    !withdrew,
                    "batch 2 run and withdrawn, or neither: {schedule:?} {ran:?}"
                );
                assert!(ran.contains(&1) && ran.contains(&3), "{schedule:?} {ran:?}");
            },
            10_000,
        );
        assert!(e.schedules > 5, "{e:?}");
    }

    #[test]
    fn gate_runs_or_withdraws_each_batch_once() {
        let page = StatusPage::new().expect("page");
        assert!(page.gate_begin(1));
        assert!(!page.gate_withdraw(1), "begun: cannot be taken back");
        assert!(page.gate_withdraw(2));
        assert!(!page.gate_begin(2), "withdrawn: skipped");
        assert!(page.gate_begin(3), "the next batch follows a withdrawn one");
        assert!(!page.gate_withdraw(5), "not the next batch");
        page.mark_received();
        assert_eq!(page.received(), 1);
    }
}
