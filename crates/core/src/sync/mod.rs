//! Cross-process synchronisation primitives with Python's semantics.
//!
//! [`Lock`], [`RLock`], [`Condition`], [`Event`], [`Semaphore`] and [`Barrier`] live in
//! shared memory (one small memfd segment each, see `shm/README.md`), so the *same* value
//! works between threads and between forked workers: each is a `Clone` handle that
//! implements `Serialize`/`Deserialize` and can be passed as a task argument or result.
//!
//! - Every blocking call takes a timeout (`None` = wait forever) and releases the emulated
//!   GIL while it sleeps ([`crate::gil::allow_threads`]), like CPython's `lock.acquire()`.
//! - Locks are taken as RAII guards, released on drop.
//! - A holder that dies (killed, or a thread that exits holding a leaked guard) is noticed
//!   by the next acquirer, which gets [`SyncError::OwnerDied`] *without* the lock; the lock
//!   is free and consistent again, so the next `acquire` succeeds — never a silent hang.
//!   Protected data may be half-updated: that is what the error tells you.
//! - Opt-in lock-order checking: [`lockdep`].
//!
//! The futex protocol and how owner death is detected are described in `futex.rs`.
//!
//! ```
//! use poolrun_core::sync::{Event, Lock};
//! use std::time::Duration;
//!
//! let lock = Lock::new().unwrap();
//! {
//!     let _g = lock.acquire(None).unwrap();
//!     // ... critical section ...
//! }
//! let ev = Event::new().unwrap();
//! assert!(!ev.wait(Some(Duration::from_millis(1))));
//! ev.set();
//! assert!(ev.wait(None));
//! ```

mod barrier;
mod condition;
mod event;
mod futex;
mod lock;
pub mod lockdep;
mod rlock;
mod semaphore;
#[cfg(test)]
mod tests;

use std::fmt;
use std::marker::PhantomData;

pub use barrier::Barrier;
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::Lock;
pub use rlock::RLock;
pub use semaphore::Semaphore;

use crate::shm::segment::Mapping;
use crate::shm::ShmError;

/// Why a synchronisation call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The timeout passed before the primitive could be taken.
    #[error("timed out")]
    Timeout,
    /// The previous holder (process `pid`) died holding the lock. The caller did **not**
    /// get the lock; the lock is free again and the next `acquire` succeeds. Data the lock
    /// protected may be inconsistent.
    #[error("the holder of the lock (pid {pid}) died holding it; the lock is free again")]
    OwnerDied {
        /// The process (thread-group) id of the dead holder.
        pid: u32,
    },
    /// The barrier is broken: a party timed out, or `abort()` was called.
    #[error("the barrier is broken")]
    Broken,
    /// Lock-order checking ([`lockdep`]) found that this thread, holding one lock, is about
    /// to take another that some thread (possibly in another process) once took in the
    /// opposite order: the two can deadlock. The lock was not taken. Details in `report`.
    #[error("{report}")]
    LockOrderInversion {
        /// The two locks, the sites and the threads involved.
        report: Box<lockdep::Inversion>,
    },
    /// The calling thread already holds this (non-re-entrant) lock: waiting would never
    /// end. Python would hang here; use an [`RLock`] to re-enter.
    #[error("the calling thread already holds this Lock (it is not re-entrant)")]
    WouldDeadlock,
    /// The guard passed to `Condition::wait` belongs to another condition.
    #[error("the guard does not belong to this Condition")]
    NotOwner,
    /// More threads wait on one `Condition` at once than it has slots for
    /// ([`Condition::MAX_WAITERS`]).
    #[error("too many concurrent waiters on one Condition")]
    Capacity,
    /// An invalid argument (a barrier of 0 parties, a semaphore value above `u32::MAX`).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The shared memory behind the primitive could not be created.
    #[error(transparent)]
    Shm(#[from] ShmError),
}

/// Plain-old-data state kept in the state area of a primitive's segment (at most
/// `STATE_SIZE` bytes; see [`SharedCell`](crate::shm::segment::SharedCell)).
pub(crate) use crate::shm::segment::SharedCell as SharedState;

/// The state of `map`, typed.
pub(crate) fn state<S: SharedState>(map: &Mapping) -> &S {
    map.state::<S>()
}

/// Serde and Debug for a handle type `$ty { map: Arc<Mapping> }` of segment kind `$kind`.
macro_rules! handle_impls {
    ($ty:ident, $kind:expr) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.map.serialize_handle(s)
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let map = crate::shm::receive(d, $kind, 0)?;
                Ok($ty { map })
            }
        }
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&crate::sync::lockdep::describe(&self.map, stringify!($ty)))
            }
        }
    };
}
pub(crate) use handle_impls;

/// Holds a [`Lock`], [`RLock`] or [`Semaphore`]; releases it on drop. Not `Send`: a lock
/// is released by the thread that took it (that is what makes owner checks sound).
///
/// ```compile_fail
/// use poolrun_core::sync::Lock;
/// let lock = Lock::new().unwrap();
/// let g = lock.acquire(None).unwrap();
/// std::thread::scope(|s| {
///     s.spawn(move || drop(g)); // a guard cannot move to another thread
/// });
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct Guard<'a> {
    inner: Held<'a>,
    _not_send: PhantomData<*const ()>,
}

enum Held<'a> {
    Lock(&'a Lock),
    RLock(&'a RLock),
    Semaphore(&'a Semaphore, usize),
}

impl<'a> Guard<'a> {
    fn new(inner: Held<'a>) -> Guard<'a> {
        Guard {
            inner,
            _not_send: PhantomData,
        }
    }
}

impl Drop for Guard<'_> {
    #[inline]
    fn drop(&mut self) {
        match self.inner {
            Held::Lock(l) => l.release(),
            Held::RLock(l) => l.release(),
            Held::Semaphore(s, slot) => s.release(slot),
        }
    }
}

impl fmt::Debug for Guard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner {
            Held::Lock(l) => f.debug_tuple("Guard").field(l).finish(),
            Held::RLock(l) => f.debug_tuple("Guard").field(l).finish(),
            Held::Semaphore(s, _) => f.debug_tuple("Guard").field(s).finish(),
        }
    }
}
