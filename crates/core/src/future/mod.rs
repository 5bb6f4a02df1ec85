//! [`TaskFuture`]: the caller's handle to a task's eventual result
//! (`concurrent.futures.Future`), and, for pool implementations, its completing half
//! ([`Promise`], [`ErasedPromise`], made by [`task_pair`]) and the [`KillRoute`] that
//! [`TaskFuture::kill`] goes through. The state machine is in `state.rs`.
//!
//! Differences from CPython, on purpose:
//! - a cancelled future is *done* for [`wait`](crate::wait) and
//!   [`as_completed`](crate::as_completed) at once (CPython reports a future cancelled while
//!   queued as not done, and `wait()` hangs: cpython#92001, #109934);
//! - callbacks run *before* waiters are woken, so once `result()` returns every callback
//!   registered before completion has run; a callback receives `&Result` while no lock is
//!   held, so it may block, submit work or panic freely;
//! - [`TaskFuture::kill`] also stops a *running* task (pebble's `cancel()`; CPython cannot).

mod chunk;
mod poll;
mod promise;
mod state;

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::{gil, Deadline, TaskError};

pub use chunk::ChunkState;
pub use promise::{task_pair, ErasedPromise, Promise};
pub(crate) use state::DoneSink;
use state::{run_callback, FutureState, CANCELLED, COMPLETING, FINISHED, PENDING, RUNNING};
pub use state::{run_start_callbacks, KillRoute, Route, StartCallback};

/// Polls before a blocked `wait` parks: half spinning, half `yield_now`.
const SPIN_ROUNDS: u32 = 16;

/// The caller's handle to a task's eventual result (`concurrent.futures.Future`).
///
/// `Send`, not `Clone`: one owner takes the value out with [`result`](Self::result).
pub struct TaskFuture<R> {
    pub(super) state: Arc<FutureState<R>>,
}

impl<R> TaskFuture<R> {
    /// A future that is already done with `outcome` (e.g. `Err(Shutdown)` after shutdown).
    pub fn ready(outcome: Result<R, TaskError>) -> Self {
        let (p, f) = task_pair(None);
        p.complete(outcome);
        f
    }

    fn status(&self) -> u8 {
        self.state.status.load(Ordering::Acquire)
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
        self.state.cancel()
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
        let st = self.state.lock();
        if self.state.claim(PENDING) {
            self.state.finish(Err(TaskError::Cancelled), CANCELLED, st);
            return true;
        }
        if !self.state.claim(RUNNING) {
            return self.status() == CANCELLED;
        }
        // COMPLETING: nobody else can complete it now. Stop the work first (outside our
        // lock: the route takes pool locks), then run the callbacks.
        drop(st);
        // Pairs with the fence a pool's worker makes between publishing "task `key` runs"
        // and checking `is_done`: either the route sees the task running, or the worker
        // sees it done and skips it.
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Some(route) = &self.state.route {
            route.kill();
            if let Some(c) = route.counters() {
                c.killed();
            }
        }
        let st = self.state.lock();
        self.state.finish(Err(TaskError::Cancelled), CANCELLED, st);
        true
    }

    /// Block until done or until `timeout` passes (`None`: no limit). True if done.
    /// Releases the GIL while it waits.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        if self.done() {
            return true;
        }
        let spin = timeout.is_none_or(|t| !t.is_zero());
        self.wait_until(Deadline::after(timeout), spin)
    }

    /// Block until done or `deadline`; true if done. `spin`: poll briefly before parking.
    pub(crate) fn wait_until(&self, deadline: Deadline, spin: bool) -> bool {
        gil::allow_threads(|| {
            // Tiny tasks usually finish within a few microseconds: spin and yield briefly
            // before parking, which saves a futex wait/wake pair and two context switches
            // per result when the caller consumes results as fast as workers produce them.
            if spin {
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
            let mut st = self.state.lock();
            st.waiters += 1;
            let done = loop {
                if self.done() {
                    break true;
                }
                match deadline.wait_on(&self.state.cond, st) {
                    Some(next) => st = next,
                    None => {
                        st = self.state.lock();
                        break false;
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
        match self.state.lock().outcome.as_ref() {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }

    fn take_outcome(&self) -> Result<R, TaskError> {
        let mut st = self.state.lock();
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
        let mut st = self.state.lock();
        if self.done() {
            let outcome = st.outcome.take();
            drop(st);
            match outcome {
                Some(r) => {
                    run_callback(Box::new(cb), &r);
                    self.state.lock().outcome = Some(r);
                }
                None => run_callback(Box::new(cb), &Err(TaskError::ResultTaken)),
            }
        } else {
            st.callbacks.push(Box::new(cb));
        }
    }

    /// Run `cb` once when the task starts (a worker takes it: process mode counts a task
    /// handed to its worker, like [`running`](Self::running)); now, in this thread, if it
    /// has started already; never if it is cancelled before it starts. In the thread that
    /// starts it (a worker thread in thread mode, a parent pool thread in process mode, the
    /// cluster driver in Slurm mode), outside any pool lock; a panic is reported on stderr
    /// and ignored.
    ///
    /// ```
    /// # use poolrun_core::backend::task_pair;
    /// # use std::sync::atomic::{AtomicBool, Ordering};
    /// # use std::sync::Arc;
    /// # let (promise, fut) = task_pair::<u32>(None);
    /// let began = Arc::new(AtomicBool::new(false));
    /// let b = began.clone();
    /// fut.add_start_callback(move || b.store(true, Ordering::SeqCst));
    /// # promise.start();
    /// # promise.complete(Ok(1));
    /// assert_eq!(fut.result(), Ok(1));
    /// assert!(began.load(Ordering::SeqCst));
    /// ```
    pub fn add_start_callback(&self, cb: impl FnOnce() + Send + 'static) {
        let mut st = self.state.lock();
        // S1 (see `FutureState::start`): announce, then look whether it started.
        self.state.has_on_start.store(true, Ordering::SeqCst);
        if self.state.started.load(Ordering::SeqCst) {
            drop(st);
            run_start_callbacks(vec![Box::new(cb)]);
        } else {
            // The starter (if it ever starts) sees `has_on_start` and runs it; a task
            // cancelled or failed before it starts never does.
            st.on_start.push(Box::new(cb));
        }
    }

    /// Register `sink` to hear `index` when this future is done; if already done, notify now.
    pub(crate) fn watch(&self, sink: &Arc<dyn DoneSink>, index: usize) {
        let mut st = self.state.lock();
        if self.done() {
            drop(st);
            sink.notify_done(index);
        } else {
            st.sinks.push((sink.clone(), index));
        }
    }

    /// Remove a registration made by [`watch`](Self::watch).
    pub(crate) fn unwatch(&self, sink: &Arc<dyn DoneSink>) {
        let mut st = self.state.lock();
        st.sinks.retain(|(s, _)| !Arc::ptr_eq(s, sink));
    }

    /// True if this future finished with an error (not cancelled).
    pub(crate) fn failed(&self) -> bool {
        self.status() == FINISHED && matches!(self.state.lock().outcome, Some(Err(_)))
    }
}

impl<T, E: From<TaskError>> TaskFuture<Result<T, E>> {
    /// For a task that returns a `Result`: wait, and flatten
    /// `Result<Result<T, E>, TaskError>` into `Result<T, E>`, the pool's error converted
    /// with `E: From<TaskError>` (`anyhow::Error` and any `thiserror` enum with a
    /// `#[from] TaskError` variant qualify), so `?` works on it.
    ///
    /// ```
    /// # use poolrun_core::{backend::task_pair, TaskError};
    /// #[derive(Debug, PartialEq)]
    /// enum MyError { Parse(String), Pool(TaskError) }
    /// impl From<TaskError> for MyError {
    ///     fn from(e: TaskError) -> Self { MyError::Pool(e) }
    /// }
    /// # let (p, fut) = task_pair::<Result<u32, MyError>>(None);
    /// # p.complete(Err(TaskError::Cancelled));
    /// // fut = pool.submit(parse, line)   — a task returning Result<u32, MyError>
    /// assert_eq!(fut.result_flat(), Err(MyError::Pool(TaskError::Cancelled)));
    /// ```
    pub fn result_flat(self) -> Result<T, E> {
        self.result()?
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    #[test]
    fn result_flat_flattens_both_layers() {
        #[derive(Debug, PartialEq)]
        enum E {
            Mine(u8),
            Pool(TaskError),
        }
        impl From<TaskError> for E {
            fn from(e: TaskError) -> Self {
                E::Pool(e)
            }
        }
        let (p, f) = task_pair::<Result<u32, E>>(None);
        p.complete(Ok(Ok(5)));
        assert_eq!(f.result_flat(), Ok(5));
        let (p, f) = task_pair::<Result<u32, E>>(None);
        p.complete(Ok(Err(E::Mine(1))));
        assert_eq!(f.result_flat(), Err(E::Mine(1)));
        let (p, f) = task_pair::<Result<u32, E>>(None);
        p.complete(Err(TaskError::Shutdown));
        assert_eq!(f.result_flat(), Err(E::Pool(TaskError::Shutdown)));
    }

    #[test]
    fn states() {
        let (p, f) = task_pair::<u32>(None);
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
        let (p, f) = task_pair::<u32>(None);
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
        let (p, f) = task_pair::<u32>(None);
        p.start();
        drop(p);
        assert_eq!(f.result(), Err(TaskError::Shutdown));
        let (p, f) = task_pair::<u32>(None);
        drop(p);
        assert_eq!(f.result(), Err(TaskError::Cancelled));
    }

    #[test]
    fn huge_wait_timeouts_do_not_overflow() {
        let (p, f) = task_pair::<u32>(None);
        p.complete(Ok(3));
        assert!(f.wait(Some(Duration::MAX)));
        assert_eq!(f.result_timeout(Duration::MAX), Ok(3));
    }

    #[test]
    fn callback_order_and_panics() {
        let (p, f) = task_pair::<u32>(None);
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
        struct Target {
            killed: Mutex<Vec<(u64, bool)>>,
            probe: Mutex<Option<Arc<dyn Fn() -> bool + Send + Sync>>>,
        }
        impl KillRoute for Target {
            fn kill(&self, task: u64) {
                // The future is already claimed when the pool is asked: no result can win.
                let done = self.probe.lock().unwrap().as_ref().is_some_and(|p| p());
                self.killed.lock().unwrap().push((task, done));
            }
        }
        let target = Arc::new(Target {
            killed: Mutex::new(Vec::new()),
            probe: Mutex::new(None),
        });
        let weak = Arc::downgrade(&(target.clone() as Arc<dyn KillRoute>));
        let (p, f) = task_pair::<u32>(Some(Route::new(weak.clone(), 41)));
        let p = Arc::new(p);
        let p2 = p.clone();
        *target.probe.lock().unwrap() = Some(Arc::new(move || p2.is_done()));
        assert!(p.start());
        assert!(f.kill());
        assert!(f.cancelled() && f.done());
        assert_eq!(*target.killed.lock().unwrap(), vec![(41, true)]);
        *target.probe.lock().unwrap() = None;
        Arc::try_unwrap(p).expect("one owner").complete(Ok(5)); // a late result is discarded
        assert_eq!(f.result(), Err(TaskError::Cancelled));
        // Pending: a plain cancel, the pool is not asked; finished: false.
        let (p2, f2) = task_pair::<u32>(Some(Route::new(weak.clone(), 42)));
        assert!(f2.kill());
        assert!(!p2.start());
        let (p3, f3) = task_pair::<u32>(Some(Route::new(weak.clone(), 43)));
        p3.complete(Ok(1));
        assert!(!f3.kill());
        assert_eq!(f3.result(), Ok(1));
        assert_eq!(target.killed.lock().unwrap().len(), 1);
        // A pool that is gone is simply not asked.
        drop(target);
        let (p4, f4) = task_pair::<u32>(Some(Route::new(weak, 44)));
        assert!(p4.start());
        assert!(f4.kill());
        assert_eq!(f4.result(), Err(TaskError::Cancelled));
    }

    #[test]
    fn erased_decode_error_is_codec() {
        let (p, f) = task_pair::<Vec<String>>(None);
        let b = ErasedPromise::from(p);
        b.complete_encoded(&[0xff, 0xff]);
        assert!(matches!(f.result(), Err(TaskError::Codec(_))));
    }
}
