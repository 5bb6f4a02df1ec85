//! [`RLock`]: a re-entrant lock (Python's `RLock`): the owning thread — identified by its
//! kernel thread id, unique across the processes of the pool — may take it again; it is
//! released when every guard is dropped.

use std::panic::Location;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::shm::segment::{Mapping, SegmentKind};

use super::futex::{my_tid, Deadline, Locked, RawMutex};
use super::{handle_impls, lockdep, state, Guard, Held, SharedState, SyncError};

#[repr(C)]
struct RLockState {
    m: RawMutex,
    /// Recursion depth; only the owner reads or writes it.
    depth: AtomicU32,
}
// SAFETY: repr(C), AtomicU32s only, valid when zeroed (free, depth 0), 12 bytes.
unsafe impl SharedState for RLockState {}

/// A re-entrant lock usable from threads and forked workers.
///
/// ```
/// use poolrun_core::sync::RLock;
/// let l = RLock::new().unwrap();
/// let a = l.acquire(None).unwrap();
/// let b = l.acquire(None).unwrap(); // same thread: fine
/// drop(b);
/// drop(a);
/// ```
#[derive(Clone)]
pub struct RLock {
    map: Arc<Mapping>,
}

handle_impls!(RLock, SegmentKind::RLock);

impl RLock {
    /// A new, unlocked re-entrant lock.
    #[track_caller]
    pub fn new() -> Result<RLock, SyncError> {
        let site = format!("created at {}", Location::caller());
        let map = Mapping::create(SegmentKind::RLock, lockdep::TABLE_BYTES, 0, &site)?;
        Ok(RLock { map })
    }

    /// A new re-entrant lock with a name for lockdep reports and `Debug`.
    #[track_caller]
    pub fn named(name: &str) -> Result<RLock, SyncError> {
        let site = format!("{name:?}, created at {}", Location::caller());
        let map = Mapping::create(SegmentKind::RLock, lockdep::TABLE_BYTES, 0, &site)?;
        Ok(RLock { map })
    }

    fn st(&self) -> &RLockState {
        state::<RLockState>(&self.map)
    }

    /// Take the lock (again, if this thread holds it), waiting at most `timeout`.
    ///
    /// Errors: [`SyncError::Timeout`], [`SyncError::OwnerDied`] (not acquired; free again),
    /// [`SyncError::LockOrderInversion`] with [`lockdep`] on.
    #[track_caller]
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<Guard<'_>, SyncError> {
        let site = Location::caller();
        let tid = my_tid();
        let st = self.st();
        if st.m.owner() == tid {
            // Only we write depth while we own the lock.
            let d = st.depth.load(Ordering::Relaxed);
            st.depth.store(d.saturating_add(1), Ordering::Relaxed);
            return Ok(Guard::new(Held::RLock(self)));
        }
        let tracked = lockdep::is_enabled();
        if tracked {
            lockdep::before_acquire(&self.map, "RLock", site)?;
        }
        match st.m.lock(tid, Deadline::after(timeout))? {
            Locked::Yes => st.depth.store(1, Ordering::Relaxed),
            // Unreachable in practice (checked above); treat as re-entry.
            Locked::Mine => {
                let d = st.depth.load(Ordering::Relaxed);
                st.depth.store(d.saturating_add(1), Ordering::Relaxed);
                return Ok(Guard::new(Held::RLock(self)));
            }
        }
        if tracked {
            lockdep::acquired(&self.map, "RLock", site);
        }
        Ok(Guard::new(Held::RLock(self)))
    }

    /// Is the lock held by the calling thread?
    pub fn is_owned(&self) -> bool {
        self.st().m.owner() == my_tid()
    }

    pub(super) fn release(&self) {
        let st = self.st();
        let d = st.depth.load(Ordering::Relaxed);
        if d > 1 {
            st.depth.store(d - 1, Ordering::Relaxed);
            return;
        }
        st.depth.store(0, Ordering::Relaxed);
        if lockdep::is_enabled() {
            lockdep::released(self.map.id());
        }
        st.m.unlock();
    }
}
