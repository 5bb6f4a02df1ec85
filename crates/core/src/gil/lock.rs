//! The GIL itself. Interim implementation: a fair-enough lock with drop requests; the
//! CPython 3.2+ hand-off (switch interval, forced switching) lands with the GIL issue.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Counters of one GIL (or, from [`super::stats`], of all GILs in the process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GilStats {
    /// Times a different thread took the GIL.
    pub switches: u64,
    /// Times a holder dropped it because a waiter asked (drop requests honoured).
    pub forced_drops: u64,
    /// Total time threads spent waiting to take it.
    pub wait: Duration,
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

struct State {
    locked: bool,
}

struct Inner {
    interval: Duration,
    drop_request: AtomicBool,
    state: Mutex<State>,
    cond: Condvar,
    switches: AtomicU64,
    forced: AtomicU64,
    wait_ns: AtomicU64,
}

/// One emulated GIL, shared by the worker threads of a pool. Cheap to clone.
#[derive(Clone)]
pub struct Gil {
    inner: Arc<Inner>,
}

impl Gil {
    /// A GIL with the given switch interval.
    pub fn new(switch_interval: Duration) -> Self {
        Gil {
            inner: Arc::new(Inner {
                interval: switch_interval.max(Duration::from_micros(1)),
                drop_request: AtomicBool::new(false),
                state: Mutex::new(State { locked: false }),
                cond: Condvar::new(),
                switches: AtomicU64::new(0),
                forced: AtomicU64::new(0),
                wait_ns: AtomicU64::new(0),
            }),
        }
    }

    /// This GIL's counters.
    pub fn stats(&self) -> GilStats {
        GilStats {
            switches: self.inner.switches.load(Ordering::Relaxed),
            forced_drops: self.inner.forced.load(Ordering::Relaxed),
            wait: Duration::from_nanos(self.inner.wait_ns.load(Ordering::Relaxed)),
        }
    }

    pub(crate) fn drop_requested(&self) -> bool {
        self.inner.drop_request.load(Ordering::Relaxed)
    }

    pub(crate) fn acquire(&self) {
        let t0 = Instant::now();
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.locked {
            let (g, to) = self
                .inner
                .cond
                .wait_timeout(st, self.inner.interval)
                .unwrap_or_else(|p| p.into_inner());
            st = g;
            if to.timed_out() && st.locked {
                self.inner.drop_request.store(true, Ordering::Relaxed);
            }
        }
        st.locked = true;
        self.inner.drop_request.store(false, Ordering::Relaxed);
        drop(st);
        let ns = t0.elapsed().as_nanos() as u64;
        self.inner.wait_ns.fetch_add(ns, Ordering::Relaxed);
        G_WAIT_NS.fetch_add(ns, Ordering::Relaxed);
        self.inner.switches.fetch_add(1, Ordering::Relaxed);
        G_SWITCHES.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn release(&self) {
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        st.locked = false;
        drop(st);
        self.inner.cond.notify_one();
    }

    /// Drop on request, let another thread take it, take it back.
    pub(crate) fn yield_now(&self) {
        self.inner.forced.fetch_add(1, Ordering::Relaxed);
        G_FORCED.fetch_add(1, Ordering::Relaxed);
        self.release();
        std::thread::yield_now();
        self.acquire();
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
