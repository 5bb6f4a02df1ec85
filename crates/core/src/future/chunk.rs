//! One completion record for the items of a chunked `map` (issue 11): [`ChunkState`].
//!
//! A `map` chunk of n items used to make n futures — n allocations, n mutexes, n condvars —
//! which was most of what a chunked map of tiny tasks cost. A backend that supports it
//! (`Dispatch::chunk_submitter`) instead makes one `ChunkState` with n *slots*; each item is
//! still its own task to the pool (its own id, promise, start, cancel, requeue after a
//! crash, `WorkerDied` attribution) and yields its own `Result` in order, but completing it
//! is a slot store under the chunk's one lock.
//!
//! Each slot follows [`FutureState`](super::state)'s machine (PENDING → RUNNING →
//! FINISHED, or CANCELLED; every exit from PENDING/RUNNING claims the slot by a
//! compare-exchange to COMPLETING under the lock, so exactly one completer wins). Slots have
//! no done-callbacks (a map's items are never handed out as futures); a `map_unordered`
//! registers one [`DoneSink`] for the whole chunk.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde::de::DeserializeOwned;

use super::state::{DoneSink, CANCELLED, COMPLETING, FINISHED, PENDING, RUNNING};
use crate::stats::TaskCounters;
use crate::{codec, gil, Deadline, TaskError};

/// The completion record of one chunk (see the module docs).
pub struct ChunkState<R> {
    status: Box<[AtomicU8]>,
    counters: Option<Arc<TaskCounters>>,
    inner: Mutex<Inner<R>>,
    cond: Condvar,
}

struct Inner<R> {
    outcomes: Vec<Option<Result<R, TaskError>>>,
    /// Threads blocked in `wait_until` (notify only when someone waits).
    waiters: u32,
    /// A `map_unordered`'s queue and the index of slot 0.
    sink: Option<(Arc<dyn DoneSink>, usize)>,
}

impl<R> ChunkState<R> {
    /// A record of `n` PENDING slots.
    pub fn new(n: usize) -> Arc<Self> {
        Self::counted(n, None)
    }

    /// A record of `n` PENDING slots whose outcomes are counted in `counters`.
    pub fn counted(n: usize, counters: Option<Arc<TaskCounters>>) -> Arc<Self> {
        Arc::new(ChunkState {
            status: (0..n).map(|_| AtomicU8::new(PENDING)).collect(),
            counters,
            inner: Mutex::new(Inner {
                outcomes: (0..n).map(|_| None).collect(),
                waiters: 0,
                sink: None,
            }),
            cond: Condvar::new(),
        })
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.status.len()
    }

    /// True if it has no slots.
    pub fn is_empty(&self) -> bool {
        self.status.is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Inner<R>> {
        // Critical sections are a few stores and never run user code: a poisoned lock still
        // guards consistent state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn st(&self, i: usize) -> u8 {
        self.status
            .get(i)
            .map_or(CANCELLED, |s| s.load(Ordering::Acquire))
    }

    fn claim(&self, i: usize, from: u8) -> bool {
        self.status.get(i).is_some_and(|s| {
            s.compare_exchange(from, COMPLETING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }

    /// PENDING → RUNNING; false if the slot was cancelled (or completed) first.
    pub fn start(&self, i: usize) -> bool {
        matches!(
            self.status.get(i).map(|s| {
                s.compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            }),
            Some(Ok(_)) | Some(Err(RUNNING))
        )
    }

    /// Claimed by a completer (or done).
    pub fn is_done(&self, i: usize) -> bool {
        self.st(i) >= COMPLETING
    }

    /// Done and visible (the outcome can be taken).
    pub fn done(&self, i: usize) -> bool {
        self.st(i) >= FINISHED
    }

    /// Cancel slot `i` if it has not started; true if it is cancelled (now or before).
    pub fn cancel(&self, i: usize) -> bool {
        let g = self.lock();
        if self.claim(i, PENDING) {
            self.finish(i, Err(TaskError::Cancelled), CANCELLED, g);
            true
        } else {
            self.st(i) == CANCELLED
        }
    }

    /// Complete slot `i` with `outcome` unless it is already done.
    pub fn complete(&self, i: usize, outcome: Result<R, TaskError>) {
        let g = self.lock();
        if self.claim(i, RUNNING) || self.claim(i, PENDING) {
            self.finish(i, outcome, FINISHED, g);
        }
    }

    /// Its promise is gone without completing: never started → cancelled, started →
    /// `Shutdown` (never pending forever).
    pub fn abandon(&self, i: usize) {
        let g = self.lock();
        if self.claim(i, PENDING) {
            self.finish(i, Err(TaskError::Cancelled), CANCELLED, g);
        } else if self.claim(i, RUNNING) {
            self.finish(i, Err(TaskError::Shutdown), FINISHED, g);
        }
    }

    fn finish(
        &self,
        i: usize,
        outcome: Result<R, TaskError>,
        terminal: u8,
        mut g: MutexGuard<'_, Inner<R>>,
    ) {
        if let Some(c) = &self.counters {
            c.record(&outcome, terminal == CANCELLED);
        }
        if let Some(o) = g.outcomes.get_mut(i) {
            *o = Some(outcome);
        }
        if let Some(s) = self.status.get(i) {
            s.store(terminal, Ordering::Release);
        }
        let sink = g.sink.clone();
        let waiters = g.waiters;
        drop(g);
        if waiters > 0 {
            self.cond.notify_all();
        }
        if let Some((sink, base)) = sink {
            sink.notify_done(base + i);
        }
    }

    /// Move slot `i`'s outcome out (once; later: `ResultTaken`). Call once it is done.
    pub fn take(&self, i: usize) -> Result<R, TaskError> {
        let out = self.lock().outcomes.get_mut(i).and_then(Option::take);
        out.unwrap_or(Err(TaskError::ResultTaken))
    }

    /// Block until slot `i` is done or `deadline`; true if done. Spins briefly first when
    /// `spin`; releases the GIL while it waits.
    pub fn wait_until(&self, i: usize, deadline: Deadline, spin: bool) -> bool {
        if self.done(i) {
            return true;
        }
        gil::allow_threads(|| {
            if spin {
                for k in 0..16 {
                    if self.done(i) {
                        return true;
                    }
                    if k < 8 {
                        for _ in 0..64 {
                            std::hint::spin_loop();
                        }
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
            let mut g = self.lock();
            g.waiters += 1;
            let done = loop {
                if self.done(i) {
                    break true;
                }
                match deadline.wait_on(&self.cond, g) {
                    Some(next) => g = next,
                    None => {
                        g = self.lock();
                        break false;
                    }
                }
            };
            g.waiters -= 1;
            done
        })
    }

    /// Tell `sink` about each slot as it becomes done, as index `base + slot` (slots done
    /// already are reported now).
    pub(crate) fn watch(&self, sink: &Arc<dyn DoneSink>, base: usize) {
        let done: Vec<usize> = {
            let mut g = self.lock();
            g.sink = Some((sink.clone(), base));
            (0..self.len()).filter(|&i| self.done(i)).collect()
        };
        for i in done {
            sink.notify_done(base + i);
        }
    }

    /// Stop reporting to the sink.
    pub(crate) fn unwatch(&self) {
        self.lock().sink = None;
    }
}

impl<R: DeserializeOwned> ChunkState<R> {
    /// Decode `bytes` as slot `i`'s value and complete it (a decode failure, or a
    /// panicking `Deserialize`, completes it with `Codec`).
    pub fn complete_encoded(&self, i: usize, bytes: &[u8]) {
        if !self.is_done(i) {
            self.complete(i, codec::decode::<R>(bytes));
        }
    }
}

impl<R> std::fmt::Debug for ChunkState<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkState")
            .field("slots", &self.len())
            .field("done", &(0..self.len()).filter(|&i| self.done(i)).count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_slot_completes_once_and_yields_its_own_outcome() {
        let c = ChunkState::<u32>::new(4);
        assert!(c.start(0));
        c.complete(0, Ok(10));
        c.complete(0, Ok(11)); // a second completion is ignored
        assert!(c.cancel(1));
        assert!(c.start(2));
        assert!(!c.cancel(2), "a running slot is not cancelled");
        c.abandon(2);
        c.abandon(3);
        assert_eq!(c.take(0), Ok(10));
        assert_eq!(c.take(0), Err(TaskError::ResultTaken));
        assert_eq!(c.take(1), Err(TaskError::Cancelled));
        assert_eq!(c.take(2), Err(TaskError::Shutdown));
        assert_eq!(c.take(3), Err(TaskError::Cancelled));
        assert!(!c.start(1), "a cancelled slot never starts");
    }

    #[test]
    fn a_waiter_is_woken_and_a_deadline_ends_the_wait() {
        let c = ChunkState::<u32>::new(2);
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.wait_until(1, Deadline::NEVER, false));
        std::thread::sleep(Duration::from_millis(20));
        c.complete(1, Ok(5));
        assert!(t.join().unwrap());
        assert!(!c.wait_until(0, Deadline::after(Some(Duration::from_millis(10))), true));
    }

    #[test]
    fn a_decoder_that_fails_completes_with_codec() {
        let c = ChunkState::<u32>::new(1);
        c.complete_encoded(0, &[0xff, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(c.take(0), Err(TaskError::Codec(_))));
    }
}
