//! Type-erased units of work: a single task or a `map` chunk.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poolrun_core::gil::{TaskStopped, WorkerBinding};
use poolrun_core::{panic_message, Promise, TaskError};

use crate::pool::{WorkerShared, KILLED};
use crate::timer::{Expire, Timer};

/// What a worker needs to run a job.
pub(crate) struct WorkerCtx<'a> {
    pub binding: &'a WorkerBinding,
    pub shared: &'a Arc<WorkerShared>,
    /// The initializer's error, if it failed in this worker.
    pub init_error: Option<&'a str>,
    /// `(timeout, timer)` when the pool has a `task_timeout`.
    pub timeout: Option<(Duration, &'a Timer)>,
}

/// A unit of work in the queue.
pub(crate) trait Job: Send {
    /// Run it on a worker. Returns how many tasks actually ran (for `max_tasks_per_child`).
    fn run(self: Box<Self>, ctx: &WorkerCtx<'_>) -> usize;
    /// It will never run: fail every task not yet started with `err` (`Cancelled` leaves
    /// them in the cancelled state).
    fn abandon(self: Box<Self>, err: TaskError);
}

/// One task.
pub(crate) struct Task<A, R> {
    pub f: fn(A) -> R,
    pub arg: A,
    pub promise: Promise<R>,
}

/// A chunk of tasks from `map` (run in order on one worker; each has its own future).
pub(crate) struct Batch<A, R> {
    pub f: fn(A) -> R,
    pub items: Vec<(A, Promise<R>)>,
}

impl<A: Send + 'static, R: Send + 'static> Job for Task<A, R> {
    fn run(self: Box<Self>, ctx: &WorkerCtx<'_>) -> usize {
        let Task { f, arg, promise } = *self;
        run_one(f, arg, promise, ctx) as usize
    }

    fn abandon(self: Box<Self>, err: TaskError) {
        abandon_one(self.promise, err);
    }
}

impl<A: Send + 'static, R: Send + 'static> Job for Batch<A, R> {
    fn run(self: Box<Self>, ctx: &WorkerCtx<'_>) -> usize {
        let f = self.f;
        let mut ran = 0;
        for (arg, promise) in self.items {
            ran += run_one(f, arg, promise, ctx) as usize;
        }
        ran
    }

    fn abandon(self: Box<Self>, err: TaskError) {
        for (_, promise) in self.items {
            abandon_one(promise, err.clone());
        }
    }
}

fn abandon_one<R>(promise: Promise<R>, err: TaskError) {
    if err == TaskError::Cancelled {
        promise.cancel();
    } else if promise.start() {
        promise.complete(Err(err));
    }
}

/// Run one task; false if it was cancelled before it started.
fn run_one<A, R: Send + 'static>(
    f: fn(A) -> R,
    arg: A,
    promise: Promise<R>,
    ctx: &WorkerCtx<'_>,
) -> bool {
    if !promise.start() {
        return false;
    }
    if let Some(msg) = ctx.init_error {
        promise.complete(Err(TaskError::Initializer(msg.to_string())));
        return true;
    }
    // Publish "this task runs here" for `kill()`, then check it was not killed meanwhile
    // (the fence pairs with the one in `TaskFuture::kill`: one side sees the other).
    ctx.shared.current.store(promise.key(), Ordering::SeqCst);
    std::sync::atomic::fence(Ordering::SeqCst);
    if promise.is_done() {
        end_task(ctx.shared);
        return true;
    }
    match ctx.timeout {
        None => {
            let out = ctx
                .binding
                .run_task(|| catch_unwind(AssertUnwindSafe(move || f(arg))));
            end_task(ctx.shared);
            promise.complete(outcome(out));
        }
        Some((after, timer)) => {
            let slot = Arc::new(Slot {
                promise: Mutex::new(Some(promise)),
                worker: ctx.shared.clone(),
            });
            // The deadline is armed once the task really starts, i.e. after `run_task` took
            // the GIL: waiting for the GIL is not the task's running time.
            let out = ctx.binding.run_task(|| {
                timer.schedule(Instant::now() + after, after, slot.clone());
                catch_unwind(AssertUnwindSafe(move || f(arg)))
            });
            let promise = slot
                .promise
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            end_task(ctx.shared);
            // Whoever took the promise first completed it; if the timer did, it also raised
            // the stop flag, which must not leak into the next task.
            ctx.binding.stop_flag().store(false, Ordering::SeqCst);
            if let Some(p) = promise {
                // Still ours, so the timer did not fire: a stop here came from a daemon drop.
                p.complete(outcome(out));
            }
        }
    }
    true
}

/// The task is over: withdraw it from `kill()`. If a kill claimed it, the killer raises the
/// stop flag right after its claim: wait for that, then lower the flag so it cannot stop
/// the next task.
fn end_task(shared: &WorkerShared) {
    if shared.current.swap(0, Ordering::SeqCst) & KILLED != 0 {
        while !shared.stop.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        shared.stop.store(false, Ordering::SeqCst);
    }
}

fn outcome<R>(out: Result<R, Box<dyn std::any::Any + Send>>) -> Result<R, TaskError> {
    match out {
        Ok(v) => Ok(v),
        Err(payload) if payload.is::<TaskStopped>() => Err(TaskError::Shutdown),
        Err(payload) => Err(TaskError::Panicked {
            message: panic_message(&*payload),
        }),
    }
}

/// A running task's promise, shared between its worker and the deadline timer: whoever takes
/// it first completes the future.
struct Slot<R> {
    promise: Mutex<Option<Promise<R>>>,
    worker: Arc<WorkerShared>,
}

impl<R: Send + 'static> Expire for Slot<R> {
    fn expire(&self, after: Duration) {
        let taken = {
            let mut g = self.promise.lock().unwrap_or_else(|p| p.into_inner());
            let p = g.take();
            if p.is_some() {
                // Under the slot lock, so the worker cannot have moved on to another task.
                self.worker.stop.store(true, Ordering::SeqCst);
            }
            p
        };
        if let Some(p) = taken {
            p.complete(Err(TaskError::TimedOut { after }));
            self.worker.retire_and_replace();
        }
    }
}
