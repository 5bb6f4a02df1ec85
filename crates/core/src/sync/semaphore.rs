//! [`Semaphore`]: Python's `BoundedSemaphore`, process-shared. The count is the futex word.
//! Holders are recorded in a table of `(pid, tid)` slots (one per unit of the initial
//! value, up to [`Semaphore::TRACKED_MAX`]), so a unit held by a thread that died is
//! reclaimed by a waiter, which gets [`SyncError::OwnerDied`] — as for locks.

use std::panic::Location;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shm::segment::{Mapping, SegmentKind};

use super::futex::{self, ids, tid_alive, Deadline, SLICE_MAX, SLICE_MIN};
use super::{handle_impls, state, Guard, Held, SharedState, SyncError};

#[repr(C)]
struct SemaphoreState {
    count: AtomicU32,
    waiters: AtomicU32,
    initial: AtomicU32,
}
// SAFETY: repr(C), AtomicU32s, 12 bytes; written by `new` before the handle is shared.
unsafe impl SharedState for SemaphoreState {}

/// A bounded counting semaphore usable from threads and forked workers: at most `value`
/// guards exist at once.
///
/// ```
/// use poolrun_core::sync::Semaphore;
/// use std::time::Duration;
/// let s = Semaphore::new(2).unwrap();
/// let a = s.acquire(None).unwrap();
/// let b = s.acquire(None).unwrap();
/// assert!(s.acquire(Some(Duration::from_millis(1))).is_err());
/// drop(a);
/// assert!(s.acquire(Some(Duration::ZERO)).is_ok());
/// # drop(b);
/// ```
#[derive(Clone)]
pub struct Semaphore {
    map: Arc<Mapping>,
}

handle_impls!(Semaphore, SegmentKind::Semaphore);

/// Slot index meaning "not tracked".
const UNTRACKED: usize = usize::MAX;

impl Semaphore {
    /// Largest initial value for which holders are tracked (and dead holders reclaimed).
    pub const TRACKED_MAX: usize = 1024;

    /// A semaphore with `value` units (`value` ≤ `u32::MAX`; 0 is allowed: every acquire
    /// waits).
    #[track_caller]
    pub fn new(value: usize) -> Result<Semaphore, SyncError> {
        let v = u32::try_from(value)
            .map_err(|_| SyncError::Invalid(format!("semaphore value {value} > u32::MAX")))?;
        let site = format!("created at {}", Location::caller());
        let slots = value.min(Self::TRACKED_MAX) * 8;
        let map = Mapping::create(SegmentKind::Semaphore, slots, 0, &site)?;
        let s = Semaphore { map };
        s.st().count.store(v, Ordering::Release);
        s.st().initial.store(v, Ordering::Release);
        Ok(s)
    }

    fn st(&self) -> &SemaphoreState {
        state::<SemaphoreState>(&self.map)
    }

    fn tracked(&self) -> usize {
        (self.st().initial.load(Ordering::Relaxed) as usize).min(Self::TRACKED_MAX)
    }

    fn holder(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.tracked());
        self.map.cell::<AtomicU64>(0, i)
    }

    /// Units currently available (a snapshot).
    pub fn value(&self) -> usize {
        self.st().count.load(Ordering::Relaxed) as usize
    }

    /// Take one unit, waiting at most `timeout`. Errors: [`SyncError::Timeout`];
    /// [`SyncError::OwnerDied`] when this call reclaimed a unit from a dead holder (it is
    /// available again; the caller did not take it).
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<Guard<'_>, SyncError> {
        if let Some(g) = self.try_take() {
            return Ok(g);
        }
        let deadline = Deadline::after(timeout);
        crate::gil::allow_threads(|| {
            let st = self.st();
            let mut slice = SLICE_MIN;
            loop {
                if let Some(g) = self.try_take() {
                    return Ok(g);
                }
                if deadline.passed() {
                    return Err(SyncError::Timeout);
                }
                st.waiters.fetch_add(1, Ordering::SeqCst);
                let s = deadline.slice(slice);
                let t0 = Instant::now();
                if st.count.load(Ordering::SeqCst) == 0 {
                    futex::wait(&st.count, 0, Some(s));
                }
                st.waiters.fetch_sub(1, Ordering::SeqCst);
                if t0.elapsed() >= s && st.count.load(Ordering::Relaxed) == 0 {
                    if let Some(pid) = self.reclaim_dead() {
                        return Err(SyncError::OwnerDied { pid });
                    }
                    slice = (slice * 2).min(SLICE_MAX);
                }
            }
        })
    }

    fn try_take(&self) -> Option<Guard<'_>> {
        let st = self.st();
        let mut c = st.count.load(Ordering::Relaxed);
        while c > 0 {
            match st
                .count
                .compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return Some(Guard::new(Held::Semaphore(self, self.record()))),
                Err(v) => c = v,
            }
        }
        None
    }

    /// Record the caller as a holder; returns its slot (or UNTRACKED).
    fn record(&self) -> usize {
        let n = self.tracked();
        if n == 0 {
            return UNTRACKED;
        }
        let (pid, tid) = ids();
        let me = (u64::from(pid) << 32) | u64::from(tid);
        // Holders ≤ initial units, so a free slot exists unless a reclaim is racing.
        for i in 0..n {
            if self
                .holder(i)
                .compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return i;
            }
        }
        UNTRACKED
    }

    /// Find a holder slot whose thread is dead; free it and give its unit back.
    fn reclaim_dead(&self) -> Option<u32> {
        for i in 0..self.tracked() {
            let h = self.holder(i).load(Ordering::Acquire);
            if h == 0 {
                continue;
            }
            let (pid, tid) = ((h >> 32) as u32, h as u32);
            if !tid_alive(tid)
                && self
                    .holder(i)
                    .compare_exchange(h, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                self.give_back();
                return Some(pid);
            }
        }
        None
    }

    fn give_back(&self) {
        let st = self.st();
        st.count.fetch_add(1, Ordering::SeqCst);
        if st.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake(&st.count, 1);
        }
    }

    pub(super) fn release(&self, slot: usize) {
        if slot != UNTRACKED {
            self.holder(slot).store(0, Ordering::Release);
        }
        self.give_back();
    }
}
