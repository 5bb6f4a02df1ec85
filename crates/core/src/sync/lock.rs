//! [`Lock`]: a non-re-entrant, process-shared mutual-exclusion lock (Python's
//! `threading.Lock` / `multiprocessing.Lock`), built on the owner-tracking futex word of
//! `futex.rs` (Drepper's "mutex 2" with the owner's tid in the word).

use std::panic::Location;
use std::sync::Arc;
use std::time::Duration;

use crate::shm::segment::{Mapping, SegmentKind};

use super::futex::{ids, Deadline, Locked, RawMutex};
use super::{handle_impls, lockdep, state, Guard, Held, SharedState, SyncError};

#[repr(C)]
struct LockState {
    m: RawMutex,
}
// SAFETY: repr(C), two AtomicU32s, valid when zeroed (0 = free), 8 bytes.
unsafe impl SharedState for LockState {}

/// A mutual-exclusion lock usable from threads and forked workers.
///
/// ```
/// use poolrun_core::sync::{Lock, SyncError};
/// use std::time::Duration;
/// let lock = Lock::new().unwrap();
/// let g = lock.acquire(None).unwrap();
/// // Not re-entrant: the same thread asking again is told instead of hanging.
/// assert!(matches!(lock.acquire(Some(Duration::ZERO)), Err(SyncError::WouldDeadlock)));
/// drop(g);
/// assert!(lock.acquire(Some(Duration::ZERO)).is_ok());
/// ```
#[derive(Clone)]
pub struct Lock {
    map: Arc<Mapping>,
}

handle_impls!(Lock, SegmentKind::Lock);

impl Lock {
    /// A new, unlocked lock. Its creation site names it in lockdep reports.
    #[track_caller]
    pub fn new() -> Result<Lock, SyncError> {
        let site = format!("created at {}", Location::caller());
        let map = Mapping::create(SegmentKind::Lock, lockdep::TABLE_BYTES, 0, &site)?;
        Ok(Lock { map })
    }

    /// A new lock with a name for lockdep reports and `Debug` (e.g. `"account A"`).
    #[track_caller]
    pub fn named(name: &str) -> Result<Lock, SyncError> {
        let site = format!("{name:?}, created at {}", Location::caller());
        let map = Mapping::create(SegmentKind::Lock, lockdep::TABLE_BYTES, 0, &site)?;
        Ok(Lock { map })
    }

    fn raw(&self) -> &RawMutex {
        &state::<LockState>(&self.map).m
    }

    /// Take the lock, waiting at most `timeout` (`None`: forever; `Some(ZERO)`: try once).
    ///
    /// Errors: [`SyncError::Timeout`]; [`SyncError::OwnerDied`] (not acquired, but the lock
    /// is free again); [`SyncError::WouldDeadlock`] if this thread already holds it;
    /// [`SyncError::LockOrderInversion`] with [`lockdep`] on.
    #[track_caller]
    #[inline]
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<Guard<'_>, SyncError> {
        let (pid, tid) = ids();
        if !lockdep::is_enabled() && self.raw().try_lock_pid(pid, tid) {
            return Ok(Guard::new(Held::Lock(self)));
        }
        self.acquire_slow(tid, timeout)
    }

    /// Contended, or tracked by lockdep.
    #[track_caller]
    #[inline(never)]
    fn acquire_slow(&self, tid: u32, timeout: Option<Duration>) -> Result<Guard<'_>, SyncError> {
        let site = Location::caller();
        let tracked = lockdep::is_enabled();
        if self.raw().owner() == tid {
            return Err(SyncError::WouldDeadlock);
        }
        if tracked {
            lockdep::before_acquire(&self.map, "Lock", site)?;
        }
        match self.raw().lock(tid, Deadline::after(timeout))? {
            Locked::Yes => {}
            Locked::Mine => return Err(SyncError::WouldDeadlock),
        }
        if tracked {
            lockdep::acquired(&self.map, "Lock", site);
        }
        Ok(Guard::new(Held::Lock(self)))
    }

    /// Is the lock held (by anyone)? A snapshot, like Python's `locked()`.
    pub fn locked(&self) -> bool {
        self.raw().owner() != 0
    }

    #[inline]
    pub(super) fn release(&self) {
        if lockdep::is_enabled() {
            lockdep::released(self.map.id());
        }
        self.raw().unlock();
    }
}
