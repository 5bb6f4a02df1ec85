//! [`Event`]: Python's `Event` — a flag that threads and processes wait on. The flag word
//! is the futex word: `set` stores 1 and wakes every waiter.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::shm::segment::{Mapping, SegmentKind};

use super::futex::{self, Deadline};
use super::{handle_impls, state, SharedState, SyncError};

#[repr(C)]
struct EventState {
    flag: AtomicU32,
    /// Threads that may be sleeping (saves the wake syscall when there are none).
    waiters: AtomicU32,
}
// SAFETY: repr(C), AtomicU32s, zero = unset with no waiters, 8 bytes.
unsafe impl SharedState for EventState {}

/// A flag that can be set, cleared and waited for, from threads and forked workers.
///
/// ```
/// use poolrun_core::sync::Event;
/// let e = Event::new().unwrap();
/// assert!(!e.is_set());
/// e.set();
/// assert!(e.is_set() && e.wait(None));
/// e.clear();
/// assert!(!e.wait(Some(std::time::Duration::from_millis(1))));
/// ```
#[derive(Clone)]
pub struct Event {
    map: Arc<Mapping>,
}

handle_impls!(Event, SegmentKind::Event);

impl Event {
    /// A new event, not set.
    #[track_caller]
    pub fn new() -> Result<Event, SyncError> {
        let site = format!("created at {}", std::panic::Location::caller());
        Ok(Event {
            map: Mapping::create(SegmentKind::Event, 0, 0, &site)?,
        })
    }

    fn st(&self) -> &EventState {
        state::<EventState>(&self.map)
    }

    /// Set the flag and wake every waiter.
    pub fn set(&self) {
        let st = self.st();
        if st.flag.swap(1, Ordering::SeqCst) == 0 && st.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake(&st.flag, u32::MAX);
        }
    }

    /// Reset the flag.
    pub fn clear(&self) {
        self.st().flag.store(0, Ordering::Release);
    }

    /// Is the flag set?
    pub fn is_set(&self) -> bool {
        self.st().flag.load(Ordering::Acquire) != 0
    }

    /// Wait until the flag is set or `timeout` passes (`None`: forever). Returns the flag:
    /// true if set, false on timeout. Releases the GIL while waiting.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        if self.is_set() {
            return true;
        }
        let st = self.st();
        let deadline = Deadline::after(timeout);
        crate::gil::allow_threads(|| loop {
            if st.flag.load(Ordering::Acquire) != 0 {
                return true;
            }
            if deadline.passed() {
                return false;
            }
            st.waiters.fetch_add(1, Ordering::SeqCst);
            // Re-check after announcing ourselves: `set` reads `waiters` after the swap.
            if st.flag.load(Ordering::SeqCst) == 0 {
                futex::wait(&st.flag, 0, deadline.remaining());
            }
            st.waiters.fetch_sub(1, Ordering::AcqRel);
        })
    }
}
