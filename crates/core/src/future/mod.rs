//! [`TaskFuture`] and its completing half, [`Promise`].
//!
//! State machine (CPython's `concurrent.futures.Future`, SEMANTICS.md §1.1):
//!
//! ```text
//! PENDING ──start()──▶ RUNNING ──complete()──▶ FINISHED
//!    │                                           ▲
//!    └──cancel()──────────▶ CANCELLED ───────────┘ (both are "done")
//! ```
//!
//! Differences from CPython, on purpose:
//! - a cancelled future is *done* for [`wait`](crate::wait) and
//!   [`as_completed`](crate::as_completed) at once (CPython reports a future cancelled while
//!   queued as not done, and `wait()` hangs: cpython#92001, #109934);
//! - callbacks run *before* waiters are woken, so once `result()` returns every callback
//!   registered before completion has run; a callback receives `&Result` while no lock is
//!   held, so it may block, submit work or panic freely;
//! - [`TaskFuture::kill`] also stops a *running* task (pebble's `cancel()`; CPython cannot):
//!   RUNNING ──kill()──▶ CANCELLED, then the pool's [`KillRoute`] stops the work itself.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::{codec, gil, TaskError};

const PENDING: u8 = 0;
const RUNNING: u8 = 1;
/// Outcome known, callbacks running; not yet visible as done.
const COMPLETING: u8 = 2;
const FINISHED: u8 = 3;
const CANCELLED: u8 = 4;

/// Polls before a blocked `wait` parks: half spinning, half `yield_now`.
const SPIN_ROUNDS: u32 = 16;

type Callback<R> = Box<dyn FnOnce(&Result<R, TaskError>) + Send + 'static>;

/// Something that is told when a future becomes done (used by `wait`, `as_completed`,
/// `map_unordered`).
pub(crate) trait DoneSink: Send + Sync {
    fn notify_done(&self, index: usize);
}

struct State<R> {
    outcome: Option<Result<R, TaskError>>,
    taken: bool,
    callbacks: Vec<Callback<R>>,
    sinks: Vec<(Arc<dyn DoneSink>, usize)>,
    /// Threads blocked in `wait` (std's condvar makes a syscall on every notify, so skip it
    /// when nobody waits: most tiny tasks finish before anyone asks).
    waiters: u32,
}

struct Inner<R> {
    status: AtomicU8,
    /// How the pool stops this task once it runs ([`TaskFuture::kill`]): a [`RouteId`]
    /// (an id, not an `Arc`: cloning one shared `Arc` per task would make every submit and
    /// every completion fight over its reference count; 32 bits fit beside `status`).
    route: Option<RouteId>,
    state: Mutex<State<R>>,
    cond: Condvar,
}

/// A pool's way to stop a *running* task, for [`TaskFuture::kill`].
///
/// When `kill` is called the future is already completed as cancelled (its callbacks may
/// still be running); the route only has to make sure the work itself stops and never
/// touches another task: process mode kills the worker that runs it (or has the worker skip
/// it, if it has not begun it yet), thread mode stops it at its next `gil::checkpoint()`.
pub trait KillRoute: Send + Sync {
    /// Stop the task whose promise has [`Promise::key`] `key`, wherever it is.
    fn kill(&self, key: usize);
}

/// A registered [`KillRoute`] (see [`RouteId::register`]); `Copy`, so futures carry it for
/// free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteId(NonZeroU32);

/// Every registered route, weakly held (a pool's route dies with the pool).
static ROUTES: Mutex<Vec<(NonZeroU32, std::sync::Weak<dyn KillRoute>)>> = Mutex::new(Vec::new());

fn routes() -> MutexGuard<'static, Vec<(NonZeroU32, std::sync::Weak<dyn KillRoute>)>> {
    ROUTES.lock().unwrap_or_else(|p| p.into_inner())
}

impl RouteId {
    /// Register a pool's route (held weakly: once the pool drops it, `kill` of a leftover
    /// future finds nothing to stop). Dead registrations are pruned here.
    ///
    /// Ids are 32-bit so that a future's `Option<RouteId>` fits in padding (a future is
    /// allocated per task); after 2³² − 1 registrations ids wrap and skip live ones.
    pub fn register(route: &Arc<dyn KillRoute>) -> RouteId {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let mut all = routes();
        let id = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            if let Some(id) = NonZeroU32::new(n) {
                if !all.iter().any(|(i, w)| *i == id && w.strong_count() > 0) {
                    break id;
                }
            }
        };
        all.retain(|(_, w)| w.strong_count() > 0);
        all.push((id, Arc::downgrade(route)));
        RouteId(id)
    }

    fn get(self) -> Option<Arc<dyn KillRoute>> {
        routes()
            .iter()
            .find(|(id, _)| *id == self.0)
            .and_then(|(_, w)| w.upgrade())
    }
}

impl<R> Inner<R> {
    fn lock(&self) -> MutexGuard<'_, State<R>> {
        // A poisoned lock can only come from a panic inside this module's own short critical
        // sections (callbacks never run under the lock); the state is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claim the right to complete: `from` → COMPLETING. Callers hold the state lock, so
    /// of two completers (or a completer and `cancel`) exactly one wins; `Promise::start`
    /// races with them lock-free through the same compare-exchange.
    fn claim(&self, from: u8) -> bool {
        self.status
            .compare_exchange(from, COMPLETING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// PENDING → CANCELLED (callbacks run in this thread). True if cancelled now or before.
    fn cancel(&self) -> bool {
        let st = self.lock();
        if self.claim(PENDING) {
            self.finish(Err(TaskError::Cancelled), CANCELLED, st);
            true
        } else {
            self.status.load(Ordering::Acquire) == CANCELLED
        }
    }

    /// After a successful [`claim`](Self::claim): run callbacks (outside the lock, in this
    /// thread), then publish `terminal` and wake waiters.
    fn finish<'a>(
        &'a self,
        outcome: Result<R, TaskError>,
        terminal: u8,
        mut st: MutexGuard<'a, State<R>>,
    ) {
        let mut outcome = Some(outcome);
        loop {
            let callbacks = std::mem::take(&mut st.callbacks);
            if callbacks.is_empty() {
                break;
            }
            drop(st);
            let r = outcome.as_ref().expect("outcome present while completing");
            for cb in callbacks {
                run_callback(cb, r);
            }
            st = self.lock();
        }
        st.outcome = outcome.take();
        self.status.store(terminal, Ordering::Release);
        let sinks = std::mem::take(&mut st.sinks);
        let waiters = st.waiters;
        drop(st);
        if waiters > 0 {
            self.cond.notify_all();
        }
        for (sink, idx) in sinks {
            sink.notify_done(idx);
        }
    }
}

fn run_callback<R>(cb: Callback<R>, r: &Result<R, TaskError>) {
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cb(r)));
    if let Err(p) = res {
        eprintln!(
            "poolrun: exception calling a done-callback (ignored): {}",
            crate::panic_message(&*p)
        );
    }
}

/// The caller's handle to a task's eventual result (`concurrent.futures.Future`).
///
/// `Send`, not `Clone`: one owner takes the value out with [`result`](Self::result).
pub struct TaskFuture<R> {
    inner: Arc<Inner<R>>,
}

/// The pool's half: starts and completes one [`TaskFuture`]. Dropping a promise that never
/// completed completes its future with [`TaskError::Shutdown`] (pending) — a task can never
/// be silently lost.
pub struct Promise<R> {
    inner: Option<Arc<Inner<R>>>,
}

/// Make a linked future/promise pair in the PENDING state.
pub fn task_pair<R>() -> (Promise<R>, TaskFuture<R>) {
    task_pair_routed(None)
}

/// Like [`task_pair`], with the route [`TaskFuture::kill`] uses to stop the running task.
pub fn task_pair_routed<R>(route: Option<RouteId>) -> (Promise<R>, TaskFuture<R>) {
    let inner = Arc::new(Inner {
        status: AtomicU8::new(PENDING),
        state: Mutex::new(State {
            outcome: None,
            taken: false,
            callbacks: Vec::new(),
            sinks: Vec::new(),
            waiters: 0,
        }),
        cond: Condvar::new(),
        route,
    });
    (
        Promise {
            inner: Some(inner.clone()),
        },
        TaskFuture { inner },
    )
}

impl<R> TaskFuture<R> {
    /// A future that is already done with `outcome` (e.g. `Err(Shutdown)` after shutdown).
    pub fn ready(outcome: Result<R, TaskError>) -> Self {
        let (p, f) = task_pair();
        p.complete(outcome);
        f
    }

    fn status(&self) -> u8 {
        self.inner.status.load(Ordering::Acquire)
    }

    /// True once the task finished (with a value or an error) or was cancelled.
    pub fn done(&self) -> bool {
        self.status() >= FINISHED
    }

    /// True while a worker has the task (CPython: RUNNING).
    pub fn running(&self) -> bool {
        matches!(self.status(), RUNNING | COMPLETING)
    }

    /// True if the task was cancelled before it started.
    pub fn cancelled(&self) -> bool {
        self.status() == CANCELLED
    }

    /// Cancel a task that has not started. Returns true if the future is (now) cancelled,
    /// false if it is running or finished (Python's rule). Callbacks run in this thread.
    pub fn cancel(&self) -> bool {
        self.inner.cancel()
    }

    /// Stop the task even if it is already running — what `cancel()` cannot do (CPython's
    /// futures have no equivalent; pebble's `cancel()` does this). Returns true if the future
    /// is (now) cancelled, false if the task had already finished.
    ///
    /// - pending: exactly [`cancel`](Self::cancel);
    /// - running, process mode: the worker running it is killed with its process group
    ///   (commands the task started die too) and replaced; other tasks it held go back to the
    ///   queue and run elsewhere. A task handed to a worker but not yet begun is skipped by
    ///   that worker instead — no other task is ever hit;
    /// - running, thread mode: the task is stopped at its next `gil::checkpoint()` (a thread
    ///   cannot be killed); a replacement thread keeps the pool at full strength meanwhile.
    ///
    /// The future completes at once with `Err(TaskError::Cancelled)` (`cancelled()` is
    /// true) and its callbacks run in this thread, as for `cancel()`. A result the task
    /// produces after this is discarded.
    pub fn kill(&self) -> bool {
        let st = self.inner.lock();
        if self.inner.claim(PENDING) {
            self.inner.finish(Err(TaskError::Cancelled), CANCELLED, st);
            return true;
        }
        if !self.inner.claim(RUNNING) {
            return self.status() == CANCELLED;
        }
        // COMPLETING: nobody else can complete it now. Stop the work first (outside our
        // lock: the route takes pool locks), then run the callbacks.
        drop(st);
        // Pairs with the fence a pool's worker makes between publishing "task `key` runs"
        // and checking `is_done`: either the route sees the task running, or the worker
        // sees it done and skips it.
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Some(route) = self.inner.route.and_then(RouteId::get) {
            route.kill(Arc::as_ptr(&self.inner) as *const () as usize);
        }
        let st = self.inner.lock();
        self.inner.finish(Err(TaskError::Cancelled), CANCELLED, st);
        true
    }

    /// Block until done or until `timeout` passes (`None`: no limit). True if done.
    /// Releases the GIL while it waits.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        if self.done() {
            return true;
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        gil::allow_threads(|| {
            // Tiny tasks usually finish within a few microseconds: spin and yield briefly
            // before parking, which saves a futex wait/wake pair and two context switches
            // per result when the caller consumes results as fast as workers produce them.
            if timeout.is_none_or(|t| !t.is_zero()) {
                for i in 0..SPIN_ROUNDS {
                    if self.done() {
                        return true;
                    }
                    if i < SPIN_ROUNDS / 2 {
                        for _ in 0..64 {
                            std::hint::spin_loop();
                        }
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
            let mut st = self.inner.lock();
            st.waiters += 1;
            let done = loop {
                if self.done() {
                    break true;
                }
                match deadline {
                    None => {
                        st = self.inner.cond.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            break false;
                        }
                        st = self
                            .inner
                            .cond
                            .wait_timeout(st, d - now)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
            };
            st.waiters -= 1;
            done
        })
    }

    /// Block until done and move the outcome out.
    pub fn result(self) -> Result<R, TaskError> {
        self.wait(None);
        self.take_outcome()
    }

    /// Like [`result`](Self::result) but gives up after `d` with
    /// `Err(TaskError::WaitTimeout)`; the future stays usable. A value taken by a successful
    /// call is gone: later calls give `Err(TaskError::ResultTaken)`.
    pub fn result_timeout(&self, d: Duration) -> Result<R, TaskError> {
        if !self.wait(Some(d)) {
            return Err(TaskError::WaitTimeout);
        }
        self.take_outcome()
    }

    /// The outcome, if done, without blocking (an error outcome is cloned; a value is moved).
    pub fn try_result(&self) -> Option<Result<R, TaskError>> {
        if self.done() {
            Some(self.take_outcome())
        } else {
            None
        }
    }

    /// The error of a finished task without taking anything (`exception()` in Python):
    /// `None` while pending/running or on success.
    pub fn error(&self) -> Option<TaskError> {
        if !self.done() {
            return None;
        }
        match self.inner.lock().outcome.as_ref() {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }

    fn take_outcome(&self) -> Result<R, TaskError> {
        let mut st = self.inner.lock();
        match st.outcome.take() {
            Some(Ok(v)) => {
                st.taken = true;
                Ok(v)
            }
            Some(Err(e)) => {
                st.outcome = Some(Err(e.clone()));
                Err(e)
            }
            None if st.taken => Err(TaskError::ResultTaken),
            None => Err(TaskError::Shutdown),
        }
    }

    /// Run `cb` exactly once with the outcome: now, in this thread, if already done; else in
    /// the thread that completes the future (a worker thread in thread mode, a pool thread of
    /// the parent in process mode, the cancelling thread on cancel). Callbacks run in
    /// registration order; a panicking callback is reported on stderr and ignored.
    ///
    /// If the value was already taken with `result_timeout`, `cb` sees
    /// `Err(TaskError::ResultTaken)`.
    pub fn add_done_callback(&self, cb: impl FnOnce(&Result<R, TaskError>) + Send + 'static) {
        let mut st = self.inner.lock();
        if self.done() {
            let outcome = st.outcome.take();
            drop(st);
            match outcome {
                Some(r) => {
                    run_callback(Box::new(cb), &r);
                    self.inner.lock().outcome = Some(r);
                }
                None => run_callback(Box::new(cb), &Err(TaskError::ResultTaken)),
            }
        } else {
            st.callbacks.push(Box::new(cb));
        }
    }

    /// Register `sink` to hear `index` when this future is done; if already done, notify now.
    pub(crate) fn watch(&self, sink: &Arc<dyn DoneSink>, index: usize) {
        let mut st = self.inner.lock();
        if self.done() {
            drop(st);
            sink.notify_done(index);
        } else {
            st.sinks.push((sink.clone(), index));
        }
    }

    /// Remove a registration made by [`watch`](Self::watch).
    pub(crate) fn unwatch(&self, sink: &Arc<dyn DoneSink>) {
        let mut st = self.inner.lock();
        st.sinks.retain(|(s, _)| !Arc::ptr_eq(s, sink));
    }

    /// True if this future finished with an error (not cancelled).
    pub(crate) fn failed(&self) -> bool {
        self.status() == FINISHED && matches!(self.inner.lock().outcome, Some(Err(_)))
    }
}

impl<R> fmt::Debug for TaskFuture<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.status() {
            PENDING => "pending",
            RUNNING | COMPLETING => "running",
            FINISHED => "finished",
            _ => "cancelled",
        };
        f.debug_struct("TaskFuture").field("state", &state).finish()
    }
}

impl<R> Inner<R> {
    /// PENDING → RUNNING; false if it was cancelled (or completed) first. Lock-free: the
    /// compare-exchange orders it against `claim` in cancel/complete.
    fn start(&self) -> bool {
        match self
            .status
            .compare_exchange(PENDING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) | Err(RUNNING) => true,
            Err(_) => false,
        }
    }

    fn is_done(&self) -> bool {
        self.status.load(Ordering::Acquire) >= COMPLETING
    }

    /// Complete with `outcome` unless already done (e.g. cancelled or killed).
    fn complete(&self, outcome: Result<R, TaskError>) {
        let st = self.lock();
        if self.claim(RUNNING) || self.claim(PENDING) {
            self.finish(outcome, FINISHED, st);
        }
    }

    /// The promise is gone without completing: a task that never started is cancelled, one
    /// that started fails `Shutdown` — never left pending forever.
    fn abandon(&self) {
        let st = self.lock();
        if self.claim(PENDING) {
            self.finish(Err(TaskError::Cancelled), CANCELLED, st);
        } else if self.claim(RUNNING) {
            self.finish(Err(TaskError::Shutdown), FINISHED, st);
        }
    }
}

fn key_of<T: ?Sized>(inner: &Arc<T>) -> usize {
    Arc::as_ptr(inner) as *const () as usize
}

impl<R> Promise<R> {
    /// PENDING → RUNNING. Returns false if the future was cancelled (then the task must not
    /// run; the promise may simply be dropped).
    pub fn start(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.start())
    }

    /// This task's identity for its pool's [`KillRoute`] (stable while the promise lives).
    pub fn key(&self) -> usize {
        self.inner.as_ref().map_or(0, key_of)
    }

    /// True if the future was cancelled (or otherwise completed) already.
    pub fn is_done(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.is_done())
    }

    /// Cancel the future if it has not started (used by `shutdown(cancel_pending)`).
    pub fn cancel(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.cancel())
    }

    /// Complete the future with `outcome` (ignored if it is already done, e.g. cancelled).
    /// Callbacks run in this thread.
    pub fn complete(mut self, outcome: Result<R, TaskError>) {
        if let Some(inner) = self.inner.take() {
            inner.complete(outcome);
        }
    }
}

impl<R> Drop for Promise<R> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.abandon();
        }
    }
}

impl<R> fmt::Debug for Promise<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise")
            .field("done", &self.is_done())
            .finish()
    }
}

/// What [`ErasedPromise`] needs of a future's shared state, whatever its value type.
trait EncodedInner: Send + Sync {
    fn start(&self) -> bool;
    fn is_done(&self) -> bool;
    fn cancel(&self) -> bool;
    fn complete_encoded(&self, bytes: &[u8]);
    fn fail(&self, err: TaskError);
    fn abandon(&self);
}

impl<R: DeserializeOwned + Send + 'static> EncodedInner for Inner<R> {
    fn start(&self) -> bool {
        Inner::start(self)
    }
    fn is_done(&self) -> bool {
        Inner::is_done(self)
    }
    fn cancel(&self) -> bool {
        Inner::cancel(self)
    }
    fn complete_encoded(&self, bytes: &[u8]) {
        self.complete(codec::decode::<R>(bytes));
    }
    fn fail(&self, err: TaskError) {
        self.complete(Err(err));
    }
    fn abandon(&self) {
        Inner::abandon(self)
    }
}

/// A [`Promise`] with its value type erased, completed from encoded bytes (process mode).
///
/// It is the future's own shared state behind a trait object — converting a `Promise`
/// allocates nothing — and it keeps the promise's guarantee: dropped without completing, it
/// completes its future (`Cancelled` if never started, else `Shutdown`).
pub struct ErasedPromise {
    inner: Option<Arc<dyn EncodedInner>>,
}

impl<R: DeserializeOwned + Send + 'static> From<Promise<R>> for ErasedPromise {
    fn from(mut p: Promise<R>) -> Self {
        ErasedPromise {
            inner: p.inner.take().map(|i| i as Arc<dyn EncodedInner>),
        }
    }
}

impl ErasedPromise {
    /// See [`Promise::start`].
    pub fn start(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.start())
    }

    /// See [`Promise::key`].
    pub fn key(&self) -> usize {
        self.inner.as_ref().map_or(0, key_of)
    }

    /// See [`Promise::is_done`].
    pub fn is_done(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.is_done())
    }

    /// See [`Promise::cancel`].
    pub fn cancel(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.cancel())
    }

    /// Decode `bytes` as the task's value and complete; a decode failure completes with
    /// [`TaskError::Codec`].
    pub fn complete_encoded(mut self, bytes: &[u8]) {
        if let Some(i) = self.inner.take() {
            i.complete_encoded(bytes);
        }
    }

    /// Complete with an error.
    pub fn fail(mut self, err: TaskError) {
        if let Some(i) = self.inner.take() {
            i.fail(err);
        }
    }
}

impl Drop for ErasedPromise {
    fn drop(&mut self) {
        if let Some(i) = self.inner.take() {
            i.abandon();
        }
    }
}

impl fmt::Debug for ErasedPromise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErasedPromise")
            .field("done", &self.is_done())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn states() {
        let (p, f) = task_pair::<u32>();
        assert!(!f.done() && !f.running() && !f.cancelled());
        assert!(p.start());
        assert!(f.running());
        assert!(!f.cancel());
        p.complete(Ok(7));
        assert!(f.done() && !f.running());
        assert_eq!(f.result_timeout(Duration::from_millis(1)), Ok(7));
        assert_eq!(
            f.result_timeout(Duration::from_millis(1)),
            Err(TaskError::ResultTaken)
        );
    }

    #[test]
    fn cancel_pending_runs_callbacks_once() {
        let (p, f) = task_pair::<u32>();
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        f.add_done_callback(move |r| {
            assert_eq!(r, &Err(TaskError::Cancelled));
            n2.fetch_add(1, Ordering::SeqCst);
        });
        assert!(f.cancel());
        assert!(f.cancel());
        assert!(f.done() && f.cancelled());
        assert!(!p.start());
        p.complete(Ok(1));
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert_eq!(f.result(), Err(TaskError::Cancelled));
    }

    #[test]
    fn dropped_promise_never_hangs() {
        let (p, f) = task_pair::<u32>();
        p.start();
        drop(p);
        assert_eq!(f.result(), Err(TaskError::Shutdown));
    }

    #[test]
    fn callback_order_and_panics() {
        let (p, f) = task_pair::<u32>();
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..3 {
            let log = log.clone();
            f.add_done_callback(move |_| {
                log.lock().unwrap().push(i);
                if i == 1 {
                    panic!("callback boom");
                }
            });
        }
        p.complete(Ok(1));
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2]);
        let l2 = log.clone();
        f.add_done_callback(move |r| {
            assert_eq!(r, &Ok(1));
            l2.lock().unwrap().push(9);
        });
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 9]);
        assert_eq!(f.result(), Ok(1));
    }

    #[test]
    fn kill_running_completes_first_then_routes() {
        struct Route(Mutex<Vec<(usize, bool)>>);
        static DONE_AT_KILL: AtomicUsize = AtomicUsize::new(0);
        impl KillRoute for Route {
            fn kill(&self, key: usize) {
                self.0.lock().unwrap().push((key, true));
                DONE_AT_KILL.fetch_add(1, Ordering::SeqCst);
            }
        }
        let route = Arc::new(Route(Mutex::new(Vec::new())));
        let erased: Arc<dyn KillRoute> = route.clone();
        let id = RouteId::register(&erased);
        let (p, f) = task_pair_routed::<u32>(Some(id));
        assert!(p.start());
        let key = p.key();
        assert!(f.kill());
        assert!(p.is_done(), "the worker sees the task done");
        assert!(f.cancelled() && f.done());
        assert_eq!(*route.0.lock().unwrap(), vec![(key, true)]);
        p.complete(Ok(5)); // the task's late result is discarded
        assert_eq!(f.result(), Err(TaskError::Cancelled));
        // Pending: plain cancel, the route is not asked; finished: false.
        let (p2, f2) = task_pair_routed::<u32>(Some(id));
        assert!(f2.kill());
        assert!(!p2.start());
        let (p3, f3) = task_pair_routed::<u32>(Some(id));
        p3.complete(Ok(1));
        assert!(!f3.kill());
        assert_eq!(f3.result(), Ok(1));
        assert_eq!(DONE_AT_KILL.load(Ordering::SeqCst), 1);
        // A route that is gone (its pool dropped) is simply not asked.
        drop(erased);
        drop(route);
        let (p4, f4) = task_pair_routed::<u32>(Some(id));
        assert!(p4.start());
        assert!(f4.kill());
    }

    #[test]
    fn erased_decode_error_is_codec() {
        let (p, f) = task_pair::<Vec<String>>();
        let b = ErasedPromise::from(p);
        b.complete_encoded(&[0xff, 0xff]);
        assert!(matches!(f.result(), Err(TaskError::Codec(_))));
    }
}
