//! [`Barrier`]: Python's `threading.Barrier`, process-shared.
//!
//! BarrierState under an owner-tracking mutex word: arrivals `count`, a generation number `gen`
//! (the futex word parties sleep on), `broken`, and `broken_gen` (the generation that ended
//! broken, plus one; 0 = none). The last arrival of a generation bumps `gen` and wakes all;
//! a timeout or `abort()` ends the generation broken, so every party of it gets
//! [`SyncError::Broken`], as does every later `wait` until `reset()`.

use std::panic::Location;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::shm::segment::{Mapping, SegmentKind};

use super::futex::{self, my_tid, Deadline, RawMutex};
use super::{handle_impls, state, SharedState, SyncError};

#[repr(C)]
struct BarrierState {
    m: RawMutex,
    parties: AtomicU32,
    count: AtomicU32,
    gen: AtomicU32,
    broken: AtomicU32,
    broken_gen: AtomicU32,
}
// SAFETY: repr(C), AtomicU32s, 28 bytes; `parties` is written by `new` before sharing.
unsafe impl SharedState for BarrierState {}

/// A barrier for a fixed number of parties, usable from threads and forked workers.
///
/// ```
/// use poolrun_core::sync::{Barrier, SyncError};
/// use std::time::Duration;
/// let b = Barrier::new(1).unwrap();
/// assert_eq!(b.wait(None).unwrap(), 0);
/// let b2 = Barrier::new(2).unwrap();
/// // Alone, the wait times out and breaks the barrier.
/// assert!(matches!(b2.wait(Some(Duration::from_millis(5))), Err(SyncError::Broken)));
/// assert!(b2.broken());
/// ```
#[derive(Clone)]
pub struct Barrier {
    map: Arc<Mapping>,
}

handle_impls!(Barrier, SegmentKind::Barrier);

impl Barrier {
    /// A barrier for `parties` (≥ 1) parties.
    #[track_caller]
    pub fn new(parties: usize) -> Result<Barrier, SyncError> {
        let p = u32::try_from(parties)
            .ok()
            .filter(|&p| p >= 1)
            .ok_or_else(|| {
                SyncError::Invalid(format!("barrier parties {parties}: need 1..=u32::MAX"))
            })?;
        let site = format!("created at {}", Location::caller());
        let b = Barrier {
            map: Mapping::create(SegmentKind::Barrier, 0, 0, &site)?,
        };
        b.st().parties.store(p, Ordering::Release);
        Ok(b)
    }

    fn st(&self) -> &BarrierState {
        state::<BarrierState>(&self.map)
    }

    /// Take the internal lock (held for a few instructions; a holder that died there is
    /// recovered and the lock taken).
    fn lock(&self) {
        let tid = my_tid();
        while self.st().m.lock(tid, Deadline::after(None)).is_err() {}
    }

    /// Number of parties.
    pub fn parties(&self) -> usize {
        self.st().parties.load(Ordering::Relaxed) as usize
    }

    /// Parties currently waiting (a snapshot).
    pub fn n_waiting(&self) -> usize {
        self.st().count.load(Ordering::Relaxed) as usize
    }

    /// Is the barrier broken?
    pub fn broken(&self) -> bool {
        self.st().broken.load(Ordering::Acquire) != 0
    }

    /// Wait for every party. Returns this party's arrival index (`0..parties`). A timeout
    /// breaks the barrier: this and every other waiting party get [`SyncError::Broken`].
    pub fn wait(&self, timeout: Option<Duration>) -> Result<usize, SyncError> {
        let st = self.st();
        let deadline = Deadline::after(timeout);
        self.lock();
        if st.broken.load(Ordering::Relaxed) != 0 {
            st.m.unlock();
            return Err(SyncError::Broken);
        }
        let idx = st.count.load(Ordering::Relaxed);
        if idx + 1 >= st.parties.load(Ordering::Relaxed) {
            st.count.store(0, Ordering::Relaxed);
            st.gen.fetch_add(1, Ordering::Release);
            st.m.unlock();
            futex::wake(&st.gen, u32::MAX);
            return Ok(idx as usize);
        }
        st.count.store(idx + 1, Ordering::Relaxed);
        let g = st.gen.load(Ordering::Relaxed);
        st.m.unlock();
        crate::gil::allow_threads(|| loop {
            if st.gen.load(Ordering::Acquire) != g || deadline.passed() {
                break;
            }
            futex::wait(&st.gen, g, deadline.remaining());
        });
        self.lock();
        let r = if st.gen.load(Ordering::Relaxed) != g {
            if st.broken_gen.load(Ordering::Relaxed) == g.wrapping_add(1) {
                Err(SyncError::Broken)
            } else {
                Ok(idx as usize)
            }
        } else {
            // Timed out: break this generation for everyone.
            st.broken.store(1, Ordering::Release);
            self.end_broken();
            Err(SyncError::Broken)
        };
        st.m.unlock();
        r
    }

    /// Under the lock: end the current generation as broken, waking its parties.
    fn end_broken(&self) {
        let st = self.st();
        let g = st.gen.load(Ordering::Relaxed);
        st.broken_gen.store(g.wrapping_add(1), Ordering::Relaxed);
        st.count.store(0, Ordering::Relaxed);
        st.gen.store(g.wrapping_add(1), Ordering::Release);
        futex::wake(&st.gen, u32::MAX);
    }

    /// Break the barrier: waiting parties and later `wait`s get [`SyncError::Broken`].
    pub fn abort(&self) {
        self.lock();
        let st = self.st();
        st.broken.store(1, Ordering::Release);
        if st.count.load(Ordering::Relaxed) > 0 {
            self.end_broken();
        }
        st.m.unlock();
    }

    /// Return to the initial, unbroken state; parties waiting now get [`SyncError::Broken`].
    pub fn reset(&self) {
        self.lock();
        let st = self.st();
        if st.count.load(Ordering::Relaxed) > 0 {
            self.end_broken();
        }
        st.broken.store(0, Ordering::Release);
        st.m.unlock();
    }
}
