//! An emulation of CPython's global interpreter lock (the 3.2+ "new GIL"), and the
//! per-thread hooks every worker shares: [`checkpoint`] (the eval breaker) and
//! [`allow_threads`] (`Py_BEGIN_ALLOW_THREADS`).
//!
//! The hand-off follows CPython's `Python/ceval_gil.c` (3.2 and later):
//! a thread waiting for the GIL sets a *drop request* after one switch interval with no
//! switch; the holder drops at its next [`checkpoint`] and, with *forced switching*, does not
//! take it back before another thread had it. See `README.md` in this directory for the
//! algorithm as implemented (in `lock.rs`), and `shim.rs` for the primitives it is built on.
//!
//! ```
//! use std::sync::{atomic::AtomicBool, Arc};
//! use std::time::Duration;
//! use poolrun_core::gil::{self, Gil, WorkerBinding};
//!
//! let g = Gil::new(Duration::from_millis(5));
//! let binding = WorkerBinding::new(Some(g.clone()), Arc::new(AtomicBool::new(false)));
//! binding.run_task(|| {
//!     assert!(gil::holds_gil());
//!     gil::checkpoint(); // nobody waits: one relaxed load
//!     gil::allow_threads(|| assert!(!gil::holds_gil())); // released around blocking work
//!     assert!(gil::holds_gil());
//! });
//! assert!(!gil::holds_gil());
//! assert_eq!(g.stats().switches, 1);
//! ```

mod lock;
mod shim;

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use lock::{Gil, GilStats};

/// Whether thread-mode workers run under an emulated GIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GilMode {
    /// Free-threaded: workers run truly in parallel.
    #[default]
    Off,
    /// One worker at a time holds the GIL; a waiter asks the holder to drop it after
    /// `switch_interval`.
    On {
        /// CPython's `sys.getswitchinterval()`; default 5 ms.
        switch_interval: Duration,
    },
}

impl GilMode {
    /// CPython's default: `On` with a 5 ms switch interval.
    pub fn cpython() -> Self {
        GilMode::On {
            switch_interval: Duration::from_millis(5),
        }
    }
}

/// The unwinding payload [`checkpoint`] raises to stop a task that its pool has given up on
/// (it passed its `task_timeout`, or the pool is being dropped). Pools catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskStopped;

/// What a worker thread is bound to while it runs tasks.
struct WorkerCtx {
    gil: Option<Gil>,
    /// Set by the pool to stop the current task at its next checkpoint.
    stop: Arc<AtomicBool>,
    /// True while this thread holds `gil`.
    holding: Cell<bool>,
}

thread_local! {
    /// The innermost live binding of this thread (null: none) — what `checkpoint` reads.
    static CTX: Cell<*const WorkerCtx> = const { Cell::new(std::ptr::null()) };
    /// Every live binding of this thread, innermost last (bindings may nest, and may be
    /// dropped in any order); `CTX` is always its last element or null.
    static STACK: std::cell::RefCell<Vec<*const WorkerCtx>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Run `f` with the current thread's worker context, if any.
#[inline]
fn with_ctx<T>(f: impl FnOnce(Option<&WorkerCtx>) -> T) -> T {
    let p = CTX.with(|c| c.get());
    // SAFETY: CTX is only ever set (by `WorkerBinding::new` and `Drop`) to null or to the
    // last element of this thread's STACK, which holds pointers into the `Box`es of the
    // thread's live bindings: each binding pushes its pointer when created and removes it
    // in its `Drop`, on the same thread (a binding is `!Send`). So a non-null pointer
    // always refers to a live `WorkerCtx`.
    let ctx = unsafe { p.as_ref() };
    f(ctx)
}

/// The "eval breaker": call it in the loops of CPU-heavy task code.
///
/// - Off a pool thread, or in a pool without a GIL and without a pending stop: a thread-local
///   read and an atomic load (a few ns).
/// - If the pool asked to stop the current task (its `task_timeout` passed), unwinds with
///   [`TaskStopped`]; the pool has already failed the future with `TimedOut`.
/// - If another thread has asked for the GIL, drops it, lets that thread run, and takes it
///   back (forced switching).
#[inline]
pub fn checkpoint() {
    with_ctx(|ctx| {
        let Some(ctx) = ctx else { return };
        if ctx.stop.load(Ordering::Relaxed) {
            std::panic::resume_unwind(Box::new(TaskStopped));
        }
        if let Some(g) = &ctx.gil {
            if ctx.holding.get() && g.drop_requested() {
                g.yield_now();
            }
        }
    })
}

/// Run blocking work without the GIL (`Py_BEGIN_ALLOW_THREADS` … `Py_END_ALLOW_THREADS`).
/// Without a GIL bound to this thread it just calls `f`.
pub fn allow_threads<T>(f: impl FnOnce() -> T) -> T {
    let gil = with_ctx(|ctx| match ctx {
        Some(c) if c.holding.get() => c.gil.clone(),
        _ => None,
    });
    match gil {
        None => f(),
        Some(g) => {
            with_ctx(|c| c.map(|c| c.holding.set(false)));
            g.release();
            let _retake = Retake(&g);
            f()
        }
    }
}

/// Takes the GIL back when dropped, even if `f` unwinds.
struct Retake<'a>(&'a Gil);
impl Drop for Retake<'_> {
    fn drop(&mut self) {
        self.0.take();
        with_ctx(|c| c.map(|c| c.holding.set(true)));
    }
}

/// Process-wide totals over every GIL in this process (take differences with
/// [`GilStats::since`] around an experiment). A single pool's counters: [`Gil::stats`].
pub fn stats() -> GilStats {
    lock::global_stats()
}

/// Whether the calling thread holds an emulated GIL right now (false off-pool, in a pool
/// without a GIL, and inside [`allow_threads`]).
pub fn holds_gil() -> bool {
    with_ctx(|ctx| ctx.is_some_and(|c| c.gil.is_some() && c.holding.get()))
}

/// Binds the current thread as a pool worker: makes [`checkpoint`] see the pool's GIL and
/// stop flag. For pool implementations; dropping it unbinds the thread.
///
/// Bindings may nest (the innermost live one is in effect; dropping it restores the one
/// before). Do not run a task of a binding inside a task of another binding of the *same*
/// GIL: the thread would wait for a GIL it holds itself.
pub struct WorkerBinding {
    ctx: Box<WorkerCtx>,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl WorkerBinding {
    /// Bind this thread to `gil` (None: no GIL). `stop` is the flag the pool sets to stop the
    /// current task.
    pub fn new(gil: Option<Gil>, stop: Arc<AtomicBool>) -> Self {
        let ctx = Box::new(WorkerCtx {
            gil,
            stop,
            holding: Cell::new(false),
        });
        let p = &*ctx as *const WorkerCtx;
        STACK.with(|s| s.borrow_mut().push(p));
        CTX.with(|c| c.set(p));
        WorkerBinding {
            ctx,
            _not_send: std::marker::PhantomData,
        }
    }

    /// Run one task: take the GIL (if any), run `f`, release it — also if `f` unwinds.
    pub fn run_task<T>(&self, f: impl FnOnce() -> T) -> T {
        struct Release<'a>(&'a WorkerCtx);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                if let Some(g) = &self.0.gil {
                    if self.0.holding.get() {
                        self.0.holding.set(false);
                        g.release();
                    }
                }
            }
        }
        if let Some(g) = &self.ctx.gil {
            g.take();
            self.ctx.holding.set(true);
        }
        let _release = Release(&self.ctx);
        f()
    }

    /// The stop flag this binding watches.
    pub fn stop_flag(&self) -> &Arc<AtomicBool> {
        &self.ctx.stop
    }
}

impl Drop for WorkerBinding {
    fn drop(&mut self) {
        let me = &*self.ctx as *const WorkerCtx;
        let top = STACK.with(|s| {
            let mut s = s.borrow_mut();
            s.retain(|&p| p != me);
            s.last().copied().unwrap_or(std::ptr::null())
        });
        CTX.with(|c| c.set(top));
    }
}

impl fmt::Debug for WorkerBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBinding")
            .field("gil", &self.ctx.gil.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }

    #[test]
    fn bindings_nest_and_unbind_in_any_order() {
        let g1 = Gil::new(Duration::from_millis(5));
        let g2 = Gil::new(Duration::from_millis(5));
        let outer = WorkerBinding::new(Some(g1.clone()), flag());
        outer.run_task(|| {
            assert!(holds_gil());
            // An inner binding to another GIL, e.g. a nested pool's worker on this thread.
            let inner = WorkerBinding::new(Some(g2.clone()), flag());
            inner.run_task(|| assert!(holds_gil()));
            drop(inner);
            // The outer binding is in effect again, still holding g1.
            assert!(holds_gil());
            checkpoint();
        });
        // Dropped out of order: the outer first, then the inner.
        let a = WorkerBinding::new(None, flag());
        let b = WorkerBinding::new(Some(g1.clone()), flag());
        drop(a);
        b.run_task(|| assert!(holds_gil()));
        drop(b);
        drop(outer);
        assert!(!holds_gil());
        checkpoint(); // unbound again: a no-op
        assert_eq!(g1.stats().switches, 1);
        assert_eq!(g2.stats().switches, 1);
    }

    #[test]
    fn stop_flag_of_the_innermost_binding_applies() {
        let stop = flag();
        let b = WorkerBinding::new(None, stop.clone());
        stop.store(true, Ordering::SeqCst);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.run_task(checkpoint)));
        assert!(r.is_err_and(|p| p.is::<TaskStopped>()));
        drop(b);
        checkpoint(); // off-pool: the stop flag is no longer seen
    }
}
