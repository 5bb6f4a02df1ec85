//! The units of queued work — one task ([`Single`]) or a `map` chunk ([`Chunk`]) — and how
//! one task runs on a worker ([`run_one`]).

use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poolrun_core::backend::{Promise, TaskCounters};
use poolrun_core::{Deadline, TaskError};

use crate::shared::{PoolShared, TaskCtx, Work, WorkerState};
use crate::timer::Expire;

/// One task.
pub(crate) struct Single<A, R> {
    pub f: fn(A) -> R,
    pub arg: A,
    pub id: u64,
    pub promise: Promise<R>,
    /// Its own timeout (`TaskOptions`), replacing the pool's.
    pub timeout: Option<Duration>,
}

/// A chunk of tasks from `map`, run in order on one worker; each has its own future.
pub(crate) struct Chunk<A, R> {
    pub f: fn(A) -> R,
    pub items: Vec<(u64, A, Promise<R>)>,
}

impl<A: Send + 'static, R: Send + 'static> Work for Single<A, R> {
    fn run(self: Box<Self>, ctx: &TaskCtx<'_>) -> usize {
        let Single {
            f,
            arg,
            id,
            promise,
            timeout,
        } = *self;
        let Some(t) = timeout else {
            return usize::from(run_one(f, arg, id, promise, ctx));
        };
        let Some(timer) = ctx.pool.timer() else {
            if promise.start() {
                promise.complete(Err(TaskError::Unsupported(
                    "a task timeout: the timer thread could not start".into(),
                )));
            }
            return 0;
        };
        let own = TaskCtx {
            rt: ctx.rt,
            state: ctx.state,
            pool: ctx.pool,
            timeout: Some((t, timer)),
        };
        usize::from(run_one(f, arg, id, promise, &own))
    }

    fn abandon(self: Box<Self>, err: TaskError, counts: &TaskCounters) {
        abandon_one(self.promise, err, counts);
    }
}

impl<A: Send + 'static, R: Send + 'static> Work for Chunk<A, R> {
    fn run(self: Box<Self>, ctx: &TaskCtx<'_>) -> usize {
        let f = self.f;
        let mut ran = 0;
        for (id, arg, promise) in self.items {
            ran += usize::from(run_one(f, arg, id, promise, ctx));
        }
        ran
    }

    fn abandon(self: Box<Self>, err: TaskError, counts: &TaskCounters) {
        for (_, _, promise) in self.items {
            abandon_one(promise, err.clone(), counts);
        }
    }
}

/// A queued task that will never run (a drained queue); a failure is counted in `counts`
/// (the pool's), a cancellation through its route.
fn abandon_one<R>(promise: Promise<R>, err: TaskError, counts: &TaskCounters) {
    if err == TaskError::Cancelled {
        promise.cancel(); // (counted by the route's `cancelled`)
    } else {
        // Started only to fail: its start callbacks never run (it never ran).
        let mut never = Vec::new();
        if promise.start_deferred(&mut never) {
            promise.complete_counted(Err(err), Some(counts));
        }
    }
}

/// A running task's promise, shared between its worker and the deadline timer: the timer
/// takes it only together with a successful kill claim on the worker's run word, so
/// "claimed" and "the timer completed the future" are the same event.
struct Watched<R> {
    promise: Mutex<Option<Promise<R>>>,
    task: u64,
    worker: Arc<WorkerState>,
    pool: Arc<PoolShared>,
}

impl<R> Watched<R> {
    fn take(&self) -> Option<Promise<R>> {
        self.promise
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl<R: Send + 'static> Expire for Watched<R> {
    fn expire(&self, after: Duration) {
        let taken = {
            let mut g = self.promise.lock().unwrap_or_else(|p| p.into_inner());
            if g.is_some() && self.worker.run_word().claim(self.task) {
                self.worker.stop.store(true, Ordering::SeqCst);
                g.take()
            } else {
                None
            }
        };
        if let Some(p) = taken {
            p.complete_counted(
                Err(TaskError::TimedOut { after }),
                Some(&self.pool.counters),
            );
            self.pool.retire_and_replace(&self.worker);
        }
    }
}

/// Run one task on the calling worker; false if it was cancelled before it started.
///
/// The kill handshake (`RunWord`, W1–W4 in poolrun-core's `runtime/handshake.rs`): publish
/// the task as running, then look whether it was killed meanwhile; when it is over, learn
/// whether a kill (or the timer) claimed it, and if so consume the stop that claim raised
/// before anything else runs here.
fn run_one<A, R: Send + 'static>(
    f: fn(A) -> R,
    arg: A,
    id: u64,
    promise: Promise<R>,
    ctx: &TaskCtx<'_>,
) -> bool {
    if !promise.start() {
        return false; // cancelled while queued (counted when it was cancelled)
    }
    let run = ctx.state.run_word();
    run.begin(id); // W1
    fence(Ordering::SeqCst); // pairs with the fence in `TaskFuture::kill`
    if promise.is_done() {
        // W2: killed before it began.
        consume_stop(ctx, run.end());
        return true;
    }
    let (outcome, promise) = match ctx.timeout {
        None => {
            let out = ctx.rt.run_caught(move || f(arg));
            (out, Some(promise))
        }
        Some((after, timer)) => {
            let watched = Arc::new(Watched {
                promise: Mutex::new(Some(promise)),
                task: id,
                worker: ctx.state.clone(),
                pool: ctx.pool.clone(),
            });
            let mut key = None;
            let w2 = watched.clone();
            // The deadline is armed once the task really starts, i.e. after `run_caught`
            // took the GIL: waiting for the GIL is not the task's running time.
            let out = ctx.rt.run_caught(|| {
                if let Some(at) = Deadline::after_from(Instant::now(), Some(after)).instant() {
                    key = Some(timer.schedule(at, after, w2));
                }
                f(arg)
            });
            if let Some(k) = key {
                timer.cancel(k);
            }
            (out, watched.take())
        }
    };
    consume_stop(ctx, run.end()); // W4
    if let Some(p) = promise {
        let outcome = outcome.map_err(|e| match e {
            Err(init_msg) => TaskError::Initializer(init_msg),
            // Stopped without a claim: the pool is being dropped (daemon).
            Ok(c) => c.into_task_error(TaskError::Shutdown),
        });
        // Counted only if this completion wins (a killed task is counted by the kill), and
        // before the future reads as done.
        p.complete_counted(outcome, Some(&ctx.state.counts));
    }
    true
}

/// After a claimed task (killed, or timed out): the claimer raises the stop flag right after
/// its claim. Wait for it, then lower it, so it can never stop the next task. Keeps a
/// daemon drop's stop (no claim) raised.
fn consume_stop(ctx: &TaskCtx<'_>, claimed: bool) {
    if claimed {
        while !ctx.state.stop.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        ctx.rt.clear_stop();
    }
}
