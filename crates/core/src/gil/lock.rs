//! The GIL itself: CPython's 3.2+ "new GIL" hand-off (`Python/ceval_gil.c`), re-derived
//! from CPython's `Python/ceval_gil.c` as documented (no code copied). See `README.md` in this
//! directory for the algorithm step by step and how each step maps onto this file.
//!
//! In short:
//! - [`Gil::take`]: if the GIL is free, take it. Otherwise wait on `cond` for one switch
//!   interval at a time; a wait that timed out while the GIL is still held and no switch
//!   happened meanwhile (`switch_number` unchanged) sets `drop_request`.
//! - The holder polls `drop_request` at every [`super::checkpoint`] (one relaxed load) and,
//!   when it is set, drops the GIL and takes it again ([`Gil::yield_now`]).
//! - [`Gil::release`] with a pending drop request is a *forced switch*: the dropper clears the
//!   request and waits on `switch_cond` until another thread has really taken the GIL
//!   (`last_holder` changed), so it cannot win the race to re-take it at once.
//!
//! One deliberate simplification: CPython guards `locked` and `last_holder` with two
//! mutexes (`mutex`, `switch_mutex`) and notes a window between them; here one mutex guards
//! the whole state and both condition variables wait on it, which closes that window and
//! keeps the observable behaviour (who may take the GIL when) the same.

use std::fmt;
use std::time::{Duration, Instant};

use super::shim::{Arc, AtomicBool, AtomicU64, Condvar, Mutex, MutexGuard, Ordering};

/// Counters of one GIL (or, from [`super::stats`], of all GILs in the process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GilStats {
    /// Times a *different* thread took the GIL (CPython's `switch_number`).
    pub switches: u64,
    /// Times a holder dropped it because a waiter had asked (drop requests honoured with a
    /// forced switch).
    pub forced_drops: u64,
    /// Total time threads spent waiting to take it.
    pub wait: Duration,
}

impl GilStats {
    /// The counters accumulated since `earlier` (saturating), e.g. around one experiment.
    pub fn since(&self, earlier: &GilStats) -> GilStats {
        GilStats {
            switches: self.switches.saturating_sub(earlier.switches),
            forced_drops: self.forced_drops.saturating_sub(earlier.forced_drops),
            wait: self.wait.saturating_sub(earlier.wait),
        }
    }
}

static G_SWITCHES: AtomicU64 = AtomicU64::new(0);
static G_FORCED: AtomicU64 = AtomicU64::new(0);
static G_WAIT_NS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn global_stats() -> GilStats {
    GilStats {
        switches: G_SWITCHES.load(Ordering::Relaxed),
        forced_drops: G_FORCED.load(Ordering::Relaxed),
        wait: Duration::from_nanos(G_WAIT_NS.load(Ordering::Relaxed)),
    }
}

/// A small non-zero number naming the calling thread (CPython compares `PyThreadState`
/// pointers; `0` means "nobody").
fn thread_token() -> u64 {
    use std::cell::Cell;
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TOKEN: Cell<u64> = const { Cell::new(0) };
    }
    TOKEN.with(|t| {
        let v = t.get();
        if v != 0 {
            return v;
        }
        let v = NEXT.fetch_add(1, Ordering::Relaxed);
        t.set(v);
        v
    })
}

/// Everything guarded by the one mutex.
struct HandOff {
    /// Someone holds the GIL.
    locked: bool,
    /// Bumped each time a thread other than `last_holder` takes the GIL.
    switch_number: u64,
    /// Token of the thread that held the GIL last (0: nobody yet).
    last_holder: u64,
    /// Threads inside [`Gil::take`] waiting for `locked` to clear.
    waiters: usize,
    /// Threads inside a forced switch waiting on `switch_cond`.
    switch_waiters: usize,
}

struct GilCore {
    interval: Duration,
    /// Set by a waiter whose wait timed out; polled by the holder at every checkpoint. Lives
    /// outside the mutex so the checkpoint's common path is one relaxed load.
    drop_request: AtomicBool,
    state: Mutex<HandOff>,
    /// Signalled (one waiter) when the GIL is released.
    cond: Condvar,
    /// Signalled (all) when a thread takes the GIL, for forced-switch waiters.
    switch_cond: Condvar,
    switches: AtomicU64,
    forced: AtomicU64,
    wait_ns: AtomicU64,
}

/// One emulated GIL, shared by the worker threads of a pool. Cheap to clone (an `Arc`).
///
/// Pools do not call its methods directly: they bind worker threads to it with
/// [`super::WorkerBinding`], and task code meets it through [`super::checkpoint`] and
/// [`super::allow_threads`].
#[derive(Clone)]
pub struct Gil {
    inner: Arc<GilCore>,
}

impl Gil {
    /// A GIL with the given switch interval (CPython's `sys.setswitchinterval`; values
    /// below 1 µs are raised to 1 µs, as CPython does).
    pub fn new(switch_interval: Duration) -> Self {
        Gil {
            inner: Arc::new(GilCore {
                interval: switch_interval.max(Duration::from_micros(1)),
                drop_request: AtomicBool::new(false),
                state: Mutex::new(HandOff {
                    locked: false,
                    switch_number: 0,
                    last_holder: 0,
                    waiters: 0,
                    switch_waiters: 0,
                }),
                cond: Condvar::new(),
                switch_cond: Condvar::new(),
                switches: AtomicU64::new(0),
                forced: AtomicU64::new(0),
                wait_ns: AtomicU64::new(0),
            }),
        }
    }

    /// The switch interval this GIL uses.
    pub fn switch_interval(&self) -> Duration {
        self.inner.interval
    }

    /// This GIL's counters.
    pub fn stats(&self) -> GilStats {
        GilStats {
            switches: self.inner.switches.load(Ordering::Relaxed),
            forced_drops: self.inner.forced.load(Ordering::Relaxed),
            wait: Duration::from_nanos(self.inner.wait_ns.load(Ordering::Relaxed)),
        }
    }

    /// Whether a waiter has asked the holder to drop the GIL (the checkpoint's fast path).
    #[inline]
    pub(crate) fn drop_requested(&self) -> bool {
        self.inner.drop_request.load(Ordering::Relaxed)
    }

    fn lock_state(&self) -> MutexGuard<'_, HandOff> {
        // The state is a handful of plain fields updated without panicking code in between,
        // so a poisoned mutex (a panic elsewhere while holding it) still guards valid data.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the GIL, blocking until it is ours (CPython's `take_gil`).
    pub(crate) fn take(&self) {
        let me = thread_token();
        let mut st = self.lock_state();
        if st.locked {
            let t0 = Instant::now();
            st.waiters += 1;
            while st.locked {
                let saved = st.switch_number;
                let (g, res) = self
                    .inner
                    .cond
                    .wait_timeout(st, self.inner.interval)
                    .unwrap_or_else(|p| p.into_inner());
                st = g;
                // Waited a whole interval, the GIL is still held, and nobody else got it
                // meanwhile: ask the holder to drop it.
                if res.timed_out() && st.locked && st.switch_number == saved {
                    self.inner.drop_request.store(true, Ordering::Relaxed);
                }
            }
            st.waiters -= 1;
            let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.inner.wait_ns.fetch_add(ns, Ordering::Relaxed);
            G_WAIT_NS.fetch_add(ns, Ordering::Relaxed);
        }
        st.locked = true;
        if st.last_holder != me {
            st.last_holder = me;
            st.switch_number += 1;
            self.inner.switches.fetch_add(1, Ordering::Relaxed);
            G_SWITCHES.fetch_add(1, Ordering::Relaxed);
        }
        // FORCE_SWITCHING: a dropper may be waiting to see someone else take over.
        if st.switch_waiters > 0 {
            self.inner.switch_cond.notify_all();
        }
        // Whoever asked for the drop has been served (or it was us).
        if self.inner.drop_request.load(Ordering::Relaxed) {
            self.inner.drop_request.store(false, Ordering::Relaxed);
        }
    }

    /// Release the GIL (CPython's `drop_gil`). With a drop request pending this is a forced
    /// switch: clear the request and wait until another thread has taken the GIL.
    pub(crate) fn release(&self) {
        let me = thread_token();
        let mut st = self.lock_state();
        st.last_holder = me;
        st.locked = false;
        // `waiters` is only changed under this mutex, so nobody can start waiting unseen.
        if st.waiters > 0 {
            self.inner.cond.notify_one();
        }
        if self.inner.drop_request.load(Ordering::Relaxed) {
            self.inner.drop_request.store(false, Ordering::Relaxed);
            self.inner.forced.fetch_add(1, Ordering::Relaxed);
            G_FORCED.fetch_add(1, Ordering::Relaxed);
            st.switch_waiters += 1;
            // `waiters > 0` guards against a stale request with nobody left to take over
            // (CPython cannot have one; a waiter only leaves `take` by taking the GIL, which
            // changes `last_holder` under this same mutex and notifies `switch_cond`).
            while st.last_holder == me && st.waiters > 0 {
                st = self
                    .inner
                    .switch_cond
                    .wait(st)
                    .unwrap_or_else(|p| p.into_inner());
            }
            st.switch_waiters -= 1;
        }
    }

    /// The eval-breaker action: drop the GIL (a forced switch, since a drop was requested)
    /// and take it again.
    pub(crate) fn yield_now(&self) {
        self.release();
        self.take();
    }
}

impl fmt::Debug for Gil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gil")
            .field("switch_interval", &self.inner.interval)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::thread;

    #[test]
    fn uncontended_take_release_counts_one_switch() {
        let g = Gil::new(Duration::from_millis(5));
        g.take();
        g.release();
        g.take();
        g.release();
        let s = g.stats();
        assert_eq!(s.switches, 1, "same thread re-taking is not a switch");
        assert_eq!(s.forced_drops, 0);
    }

    #[test]
    fn waiter_sets_drop_request_after_one_interval() {
        let g = Gil::new(Duration::from_millis(2));
        g.take();
        let g2 = g.clone();
        let t = thread::spawn(move || {
            g2.take();
            g2.release();
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !g.drop_requested() {
            assert!(Instant::now() < deadline, "no drop request after 10 s");
            thread::sleep(Duration::from_micros(200));
        }
        g.yield_now();
        g.release();
        t.join().expect("waiter thread panicked");
        let s = g.stats();
        assert_eq!(s.forced_drops, 1);
        assert!(s.switches >= 3, "{s:?}");
        assert!(s.wait >= Duration::from_millis(2), "{s:?}");
    }

    #[test]
    fn never_two_holders() {
        let g = Gil::new(Duration::from_micros(50));
        let inside = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                let inside = inside.clone();
                thread::spawn(move || {
                    for _ in 0..2000 {
                        g.take();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        std::hint::spin_loop();
                        assert_eq!(inside.fetch_sub(1, Ordering::SeqCst), 1);
                        if g.drop_requested() {
                            g.yield_now();
                        }
                        g.release();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("a holder saw another holder");
        }
    }
}
