//! [`Condition`]: Python's `threading.Condition`, process-shared, owning its lock.
//!
//! Algorithm (CPython's `Condition`, with futex words instead of per-waiter locks): each
//! waiter takes a *slot* in the segment — a futex word plus an arrival ticket — while it
//! holds the lock, then releases the lock and sleeps on its slot word. `notify(n)` (under
//! the lock) marks the `n` waiting slots with the oldest tickets as notified and wakes each.
//! So exactly the `n` longest waiters wake (FIFO, as in CPython), a notify before anyone
//! waits is not remembered, and a waiter that times out leaves without consuming a
//! notification meant for another. Limit: a waiter *process* killed mid-wait keeps its
//! slot and may absorb one later notification.
//!
//! Differences from CPython: the condition's lock is a plain (non-re-entrant) lock, where
//! CPython defaults to an `RLock` (taking it twice in one thread is
//! `Err(SyncError::WouldDeadlock)`); `notify` takes the lock itself when the caller does
//! not hold it, where CPython raises `RuntimeError`; notified threads are woken when the
//! notifier releases the lock, not while it still holds it.

use std::marker::PhantomData;
use std::panic::Location;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::shm::segment::{Mapping, SegmentKind};

use super::futex::{self, my_tid, Deadline, Locked, RawMutex};
use super::{handle_impls, lockdep, state, SharedState, SyncError};

#[repr(C)]
struct ConditionState {
    m: RawMutex,
    /// Waiters not yet notified (under the lock).
    nwait: AtomicU32,
    /// One past the highest slot ever used (bounds scans).
    hwm: AtomicU32,
    next_ticket: AtomicU64,
}
// SAFETY: repr(C), atomics only, zero = free lock and no waiters, 24 bytes, 8-aligned.
unsafe impl SharedState for ConditionState {}

const FREE: u32 = 0;
const WAITING: u32 = 1;
const NOTIFIED: u32 = 2;

#[repr(C)]
struct WaiterSlot {
    state: AtomicU32,
    tid: AtomicU32,
    ticket: AtomicU64,
}

// SAFETY: `repr(C)`, only atomics (all-zero is a FREE slot), 8-aligned.
unsafe impl SharedState for WaiterSlot {}

/// A condition variable with its own lock, usable from threads and forked workers.
///
/// ```
/// use poolrun_core::sync::Condition;
/// use std::time::Duration;
/// let c = Condition::new().unwrap();
/// let mut g = c.acquire(None).unwrap();
/// // Nobody notifies: times out, and the lock is held again afterwards.
/// assert_eq!(c.wait(&mut g, Some(Duration::from_millis(5))).unwrap(), false);
/// c.notify(1);
/// ```
#[derive(Clone)]
pub struct Condition {
    map: Arc<Mapping>,
}

handle_impls!(Condition, SegmentKind::Condition);

/// Holds a [`Condition`]'s lock; releases it on drop. Not `Send`.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConditionGuard").field(self.cond).finish()
    }
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        if lockdep::is_enabled() {
            lockdep::released(self.cond.map.id());
        }
        self.cond.st().m.unlock();
        self.cond.flush_wakes();
    }
}

thread_local! {
    /// Wakes owed by this thread: (condition, slot), marked NOTIFIED under the lock and
    /// woken once the lock is released.
    static DEFERRED: std::cell::RefCell<Vec<(Condition, usize)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Condition {
    /// Most threads that can wait on one condition at the same time.
    pub const MAX_WAITERS: usize = 512;
    const SLOTS_AT: usize = lockdep::TABLE_BYTES;

    /// A new condition with its own (non-re-entrant) lock.
    #[track_caller]
    pub fn new() -> Result<Condition, SyncError> {
        let site = format!("created at {}", Location::caller());
        let len = Self::SLOTS_AT + Self::MAX_WAITERS * std::mem::size_of::<WaiterSlot>();
        let map = Mapping::create(SegmentKind::Condition, len, 0, &site)?;
        Ok(Condition { map })
    }

    fn st(&self) -> &ConditionState {
        state::<ConditionState>(&self.map)
    }

    /// Threads currently waiting and not yet notified (a snapshot).
    pub fn n_waiting(&self) -> usize {
        self.st().nwait.load(Ordering::Relaxed) as usize
    }

    fn slot(&self, i: usize) -> &WaiterSlot {
        assert!(i < Self::MAX_WAITERS);
        self.map.cell::<WaiterSlot>(Self::SLOTS_AT, i)
    }

    /// Take the condition's lock, waiting at most `timeout`. Errors as [`super::Lock::acquire`].
    #[track_caller]
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<ConditionGuard<'_>, SyncError> {
        let site = Location::caller();
        let tid = my_tid();
        let m = &self.st().m;
        if m.owner() == tid {
            return Err(SyncError::WouldDeadlock);
        }
        let tracked = lockdep::is_enabled();
        if tracked {
            lockdep::before_acquire(&self.map, "Condition", site)?;
        }
        match m.lock(tid, Deadline::after(timeout))? {
            Locked::Yes => {}
            Locked::Mine => return Err(SyncError::WouldDeadlock),
        }
        if tracked {
            lockdep::acquired(&self.map, "Condition", site);
        }
        Ok(ConditionGuard {
            cond: self,
            _not_send: PhantomData,
        })
    }

    /// Take the lock back after a wait, whatever happens to previous owners. Returns the pid
    /// of a holder found dead on the way.
    fn relock(&self, tid: u32) -> Option<u32> {
        let mut died = None;
        loop {
            match self.st().m.lock(tid, Deadline::after(None)) {
                Ok(_) => return died,
                Err(SyncError::OwnerDied { pid }) => died = Some(pid),
                // Only OwnerDied can come back from a wait without deadline; retry anyway.
                Err(_) => std::thread::yield_now(),
            }
        }
    }

    /// Release the lock, sleep until notified or `timeout` passes, take the lock back.
    /// Returns `Ok(true)` if notified, `Ok(false)` on timeout; the guard holds the lock
    /// again in every case, including `Err(OwnerDied)` (a thread died holding the lock
    /// while this one waited: the lock was recovered and re-taken, the state it protects
    /// may be inconsistent). Releases the GIL while it sleeps.
    pub fn wait(
        &self,
        guard: &mut ConditionGuard<'_>,
        timeout: Option<Duration>,
    ) -> Result<bool, SyncError> {
        if guard.cond.map.id() != self.map.id() {
            return Err(SyncError::NotOwner);
        }
        let st = self.st();
        let tid = my_tid();
        // Claim a free slot (we hold the lock, so slot states only change under it, except
        // a waiter's own NOTIFIED read).
        let i = (0..Self::MAX_WAITERS)
            .find(|&i| self.slot(i).state.load(Ordering::Acquire) == FREE)
            .ok_or(SyncError::Capacity)?;
        let slot = self.slot(i);
        slot.tid.store(tid, Ordering::Relaxed);
        slot.ticket.store(
            st.next_ticket.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        slot.state.store(WAITING, Ordering::Release);
        st.hwm.fetch_max(i as u32 + 1, Ordering::Relaxed);
        st.nwait.fetch_add(1, Ordering::Relaxed);
        st.m.unlock();
        self.flush_wakes();

        let deadline = Deadline::after(timeout);
        crate::gil::allow_threads(|| loop {
            if slot.state.load(Ordering::Acquire) != WAITING || deadline.passed() {
                break;
            }
            futex::wait(&slot.state, WAITING, deadline.remaining());
        });
        let died = self.relock(tid);
        let notified = slot.state.load(Ordering::Acquire) == NOTIFIED;
        if !notified {
            st.nwait.fetch_sub(1, Ordering::Relaxed);
        }
        slot.state.store(FREE, Ordering::Release);
        match died {
            Some(pid) => Err(SyncError::OwnerDied { pid }),
            None => Ok(notified),
        }
    }

    /// Wait until `predicate()` is true (checked under the lock, first before any wait) or
    /// `timeout` passes. Returns the last value of the predicate.
    pub fn wait_for(
        &self,
        guard: &mut ConditionGuard<'_>,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool, SyncError> {
        let deadline = Deadline::after(timeout);
        loop {
            if predicate() {
                return Ok(true);
            }
            let rem = deadline.remaining();
            if rem.is_some_and(|d| d.is_zero()) {
                return Ok(false);
            }
            self.wait(guard, rem)?;
        }
    }

    /// Wake up to `n` waiters (the longest-waiting first). Python requires the lock to be
    /// held; here it is taken for the call if the calling thread does not hold it.
    pub fn notify(&self, n: usize) {
        self.with_lock(|| {
            let st = self.st();
            let hwm = (st.hwm.load(Ordering::Relaxed) as usize).min(Self::MAX_WAITERS);
            for _ in 0..n.min(st.nwait.load(Ordering::Relaxed) as usize) {
                let oldest = (0..hwm)
                    .filter(|&i| self.slot(i).state.load(Ordering::Acquire) == WAITING)
                    .min_by_key(|&i| self.slot(i).ticket.load(Ordering::Relaxed));
                let Some(i) = oldest else { break };
                self.mark_notified(i);
            }
        })
    }

    /// Wake every waiter.
    pub fn notify_all(&self) {
        self.with_lock(|| {
            let hwm = (self.st().hwm.load(Ordering::Relaxed) as usize).min(Self::MAX_WAITERS);
            for i in 0..hwm {
                if self.slot(i).state.load(Ordering::Acquire) == WAITING {
                    self.mark_notified(i);
                }
            }
        })
    }

    /// Under the lock: mark slot `i` notified. The futex wake is deferred until this thread
    /// releases the lock (guard drop, or `wait`), so the woken thread does not wake up only
    /// to block on the lock its notifier still holds.
    fn mark_notified(&self, i: usize) {
        self.slot(i).state.store(NOTIFIED, Ordering::Release);
        self.st().nwait.fetch_sub(1, Ordering::Relaxed);
        DEFERRED.with(|d| d.borrow_mut().push((self.clone(), i)));
    }

    /// Wake the slots this thread marked on this condition (call after releasing the lock).
    fn flush_wakes(&self) {
        let mine: Vec<(Condition, usize)> = DEFERRED
            .try_with(|d| {
                let mut d = d.borrow_mut();
                if d.is_empty() {
                    return Vec::new();
                }
                let id = self.map.id();
                let (mine, rest): (Vec<_>, Vec<_>) =
                    d.drain(..).partition(|(c, _)| c.map.id() == id);
                *d = rest;
                mine
            })
            .unwrap_or_default();
        for (c, i) in mine {
            futex::wake(&c.slot(i).state, 1);
        }
    }

    fn with_lock(&self, f: impl FnOnce()) {
        let tid = my_tid();
        if self.st().m.owner() == tid {
            f();
        } else {
            self.relock(tid);
            f();
            self.st().m.unlock();
            self.flush_wakes();
        }
    }
}
