//! The state shared by a [`TaskFuture`](super::TaskFuture) and its
//! [`Promise`](super::Promise): CPython's `concurrent.futures.Future` state machine.
//!
//! ```text
//! PENDING ──start()──▶ RUNNING ──complete()──▶ FINISHED
//!    │                    │                       ▲
//!    └──cancel()──────────┴──kill()──▶ CANCELLED ─┘ (both are "done")
//! ```
//!
//! Every transition out of PENDING or RUNNING first *claims* the future (a compare-exchange
//! to COMPLETING), so of two completers — a worker's result, `cancel`, `kill`, a dropped
//! promise — exactly one wins. The winner runs the callbacks outside the lock, then
//! publishes the terminal state and wakes waiters: once `result()` returns, every callback
//! registered before completion has run. `start` is a lock-free compare-exchange (start
//! callbacks: see S1 on `FutureState::start`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use crate::stats::TaskCounters;
use crate::TaskError;

pub(crate) const PENDING: u8 = 0;
pub(crate) const RUNNING: u8 = 1;
/// Outcome known, callbacks running; not yet visible as done.
pub(crate) const COMPLETING: u8 = 2;
pub(crate) const FINISHED: u8 = 3;
pub(crate) const CANCELLED: u8 = 4;

pub(crate) type Callback<R> = Box<dyn FnOnce(&Result<R, TaskError>) + Send + 'static>;

/// A start callback (`TaskFuture::add_start_callback`).
pub type StartCallback = Box<dyn FnOnce() + Send + 'static>;

/// Something that is told when a future becomes done (`wait`, `as_completed`,
/// `map_unordered`).
pub(crate) trait DoneSink: Send + Sync {
    fn notify_done(&self, index: usize);
}

/// A pool's way to stop one of its *running* tasks, for
/// [`TaskFuture::kill`](super::TaskFuture::kill).
///
/// When `kill` is called the future is already claimed as cancelled; the pool only has to
/// make sure the work itself stops and never touches another task: process mode kills the
/// worker that runs it (or has the worker skip it, if it has not begun it yet), thread mode
/// stops it at its next `gil::checkpoint()`.
pub trait KillRoute: Send + Sync {
    /// Stop the task the pool knows as `task`, wherever it is.
    fn kill(&self, task: u64);

    /// The future of `task` ended cancelled (before it started, or killed): for a pool
    /// that counts outcomes in its own paths (`stats()`) rather than through counters on
    /// the route. Called once per cancelled task, on that rare path only.
    fn cancelled(&self, _task: u64) {}
}

/// Where [`TaskFuture::kill`](super::TaskFuture::kill) goes: the pool's [`KillRoute`]
/// (held weakly: a future outliving its pool kills nothing) and the task's id in that pool.
#[derive(Clone)]
pub struct Route {
    target: Weak<dyn KillRoute>,
    task: u64,
    /// The pool's task counters (`Executor::stats`), told how the task ended.
    counters: Option<Arc<TaskCounters>>,
}

impl Route {
    /// Task `task` of the pool behind `target`.
    pub fn new(target: Weak<dyn KillRoute>, task: u64) -> Route {
        Route {
            target,
            task,
            counters: None,
        }
    }

    /// Count the task's outcome in `counters`.
    pub fn counted(mut self, counters: &Arc<TaskCounters>) -> Route {
        self.counters = Some(counters.clone());
        self
    }

    pub(crate) fn counters(&self) -> Option<&TaskCounters> {
        self.counters.as_deref()
    }

    fn cancelled(&self) {
        if let Some(t) = self.target.upgrade() {
            t.cancelled(self.task);
        }
    }

    /// The task's id in its pool.
    pub fn task(&self) -> u64 {
        self.task
    }

    pub(crate) fn kill(&self) {
        if let Some(t) = self.target.upgrade() {
            t.kill(self.task);
        }
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("task", &self.task).finish()
    }
}

pub(crate) struct Slots<R> {
    pub outcome: Option<Result<R, TaskError>>,
    pub taken: bool,
    pub callbacks: Vec<Callback<R>>,
    pub sinks: Vec<(Arc<dyn DoneSink>, usize)>,
    /// Threads blocked in `wait` (a condvar notify is a syscall even when nobody waits: most
    /// tiny tasks finish before anyone asks, so it is skipped then).
    pub waiters: u32,
    /// Start callbacks not yet run (see `FutureState::start`).
    pub on_start: Vec<StartCallback>,
    /// The async task awaiting this future (`impl Future for TaskFuture`), woken on
    /// completion. One: a future has one owner, polled by one task at a time.
    pub waker: Option<std::task::Waker>,
}

/// One future's shared state.
pub(crate) struct FutureState<R> {
    pub status: AtomicU8,
    /// Set once the task started (S1 in `start`).
    pub started: std::sync::atomic::AtomicBool,
    /// Set once a start callback was registered (S1 in `start`).
    pub has_on_start: std::sync::atomic::AtomicBool,
    pub route: Option<Route>,
    slots: Mutex<Slots<R>>,
    pub cond: Condvar,
}

impl<R> FutureState<R> {
    pub fn new(route: Option<Route>) -> Self {
        FutureState {
            status: AtomicU8::new(PENDING),
            started: Default::default(),
            has_on_start: Default::default(),
            route,
            slots: Mutex::new(Slots {
                outcome: None,
                taken: false,
                callbacks: Vec::new(),
                sinks: Vec::new(),
                waiters: 0,
                on_start: Vec::new(),
                waker: None,
            }),
            cond: Condvar::new(),
        }
    }

    pub fn status(&self) -> u8 {
        self.status.load(Ordering::Acquire)
    }

    pub fn lock(&self) -> MutexGuard<'_, Slots<R>> {
        // A poisoned lock can only come from a panic inside this module's own short critical
        // sections (callbacks never run under the lock); the state is still consistent.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim the right to complete: `from` → COMPLETING. Callers hold the lock, so of two
    /// completers exactly one wins; [`start`](Self::start) races with them lock-free through
    /// the same compare-exchange.
    pub fn claim(&self, from: u8) -> bool {
        self.status
            .compare_exchange(from, COMPLETING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// PENDING → RUNNING; false if it was cancelled (or completed) first. Start callbacks
    /// registered so far are moved to `deferred`, for the caller to run once it holds no
    /// lock ([`run_start_callbacks`]).
    ///
    /// Lock-free unless a start callback was ever registered (S1, Dekker with
    /// `TaskFuture::add_start_callback`): the starter stores `started` then loads
    /// `has_on_start`; a registrar (under the lock) stores `has_on_start` then loads
    /// `started`, and pushes its callback unless it saw `started` (then it runs it itself).
    /// All `SeqCst`: either the registrar sees `started`, or the starter sees
    /// `has_on_start` and takes the lock to drain — never both miss.
    pub fn start(&self, deferred: &mut Vec<StartCallback>) -> bool {
        match self
            .status
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                self.started.store(true, Ordering::SeqCst);
                if self.has_on_start.load(Ordering::SeqCst) {
                    deferred.append(&mut self.lock().on_start);
                }
                true
            }
            Err(RUNNING) => true,
            Err(_) => false,
        }
    }

    /// True once claimed by a completer (or done).
    pub fn is_done(&self) -> bool {
        self.status() >= COMPLETING
    }

    /// PENDING → CANCELLED (callbacks run in this thread). True if cancelled now or before.
    pub fn cancel(&self) -> bool {
        let st = self.lock();
        if self.claim(PENDING) {
            self.finish(Err(TaskError::Cancelled), CANCELLED, st);
            true
        } else {
            self.status() == CANCELLED
        }
    }

    /// Complete with `outcome` unless already done (e.g. cancelled or killed); true if this
    /// completion won.
    pub fn complete(&self, outcome: Result<R, TaskError>) -> bool {
        self.complete_counted(outcome, None)
    }

    /// [`complete`](Self::complete), counting the outcome in `counts` if this completion
    /// wins (before anyone can see the future done).
    pub fn complete_counted(
        &self,
        outcome: Result<R, TaskError>,
        counts: Option<&TaskCounters>,
    ) -> bool {
        let st = self.lock();
        if self.claim(RUNNING) || self.claim(PENDING) {
            if let Some(c) = counts {
                c.record(&outcome, false);
            }
            self.finish(outcome, FINISHED, st);
            true
        } else {
            false
        }
    }

    /// The promise is gone without completing: a task that never started is cancelled, one
    /// that started fails `Shutdown` — never left pending forever.
    pub fn abandon(&self) {
        let st = self.lock();
        if self.claim(PENDING) {
            self.finish(Err(TaskError::Cancelled), CANCELLED, st);
        } else if self.claim(RUNNING) {
            self.finish(Err(TaskError::Shutdown), FINISHED, st);
        }
    }

    /// After a successful [`claim`](Self::claim): run callbacks (outside the lock, in this
    /// thread), then publish `terminal` and wake waiters.
    pub fn finish<'a>(
        &'a self,
        outcome: Result<R, TaskError>,
        terminal: u8,
        mut st: MutexGuard<'a, Slots<R>>,
    ) {
        match (
            self.route.as_ref(),
            self.route.as_ref().and_then(Route::counters),
        ) {
            (_, Some(c)) => c.record(&outcome, terminal == CANCELLED),
            (Some(r), None) if terminal == CANCELLED => r.cancelled(),
            _ => {}
        }
        crate::trace::task_done(self.route.as_ref().map_or(0, Route::task), &outcome);
        let mut outcome = Some(outcome);
        loop {
            let callbacks = std::mem::take(&mut st.callbacks);
            if callbacks.is_empty() {
                break;
            }
            drop(st);
            if let Some(r) = outcome.as_ref() {
                for cb in callbacks {
                    run_callback(cb, r);
                }
            }
            st = self.lock();
        }
        st.outcome = outcome.take();
        self.status.store(terminal, Ordering::Release);
        let sinks = std::mem::take(&mut st.sinks);
        let waiters = st.waiters;
        let waker = st.waker.take();
        drop(st);
        if waiters > 0 {
            self.cond.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
        for (sink, idx) in sinks {
            sink.notify_done(idx);
        }
    }
}

/// Run start callbacks (each caught: a panic is reported on stderr and ignored).
pub fn run_start_callbacks(cbs: Vec<StartCallback>) {
    for cb in cbs {
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(cb)) {
            eprintln!(
                "poolrun: exception calling a start callback (ignored): {}",
                crate::runtime::panic_message(&*p)
            );
        }
    }
}

/// Run one done-callback; a panic is reported on stderr and ignored (CPython logs it).
pub(crate) fn run_callback<R>(cb: Callback<R>, r: &Result<R, TaskError>) {
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cb(r)));
    if let Err(p) = res {
        eprintln!(
            "poolrun: exception calling a done-callback (ignored): {}",
            crate::runtime::panic_message(&*p)
        );
    }
}
