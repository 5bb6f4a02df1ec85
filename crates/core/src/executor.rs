//! [`Executor`]: the one API every pool implements (`concurrent.futures.Executor`).

use std::time::Duration;

use crate::backend::{Dispatch, IterSource};
use crate::Deadline;
use crate::{MapIter, MapUnordered, Mode, Payload, PoolStats, TaskFuture, TaskOptions};

/// What a pool can do, identically for threads, processes and a cluster.
///
/// Tasks are plain `fn` pointers — never capturing closures — so the same call works when the
/// task runs in another process:
///
/// ```compile_fail
/// use poolrun_core::{Executor, TaskFuture};
/// fn submit_closure<E: Executor>(pool: &E) {
///     let captured = 5u32;
///     // error: a closure that captures is not a `fn(u32) -> u32`
///     let _f: TaskFuture<u32> = pool.submit(move |x: u32| x + captured, 1);
/// }
/// ```
///
/// (The supertrait `Dispatch` is how a pool plugs into [`map`](Self::map); it is not part of
/// the user-facing API.)
pub trait Executor: Dispatch + Send + Sync {
    /// Schedule `f(arg)`. Never blocks on the work; every problem (shutdown, an argument
    /// that fails to encode) surfaces through the returned future. With
    /// [`PoolConfig::max_queued`](crate::PoolConfig::max_queued) set, it waits while the pool
    /// is full (see [`try_submit`](Self::try_submit) and
    /// [`submit_timeout`](Self::submit_timeout) for the non-blocking and bounded forms).
    fn submit<A: Payload, R: Payload>(&self, f: fn(A) -> R, arg: A) -> TaskFuture<R> {
        match gated_submit(self, f, arg, Deadline::NEVER) {
            Ok(fut) => fut,
            // (a gate never refuses a wait without a deadline)
            Err(_) => TaskFuture::ready(Err(crate::TaskError::Shutdown)),
        }
    }

    /// Schedule `f(&context, arg)`: `f` borrows the pool's context
    /// ([`PoolConfig::context`](crate::PoolConfig::context)), built once per worker. Thread
    /// and process mode; a pool without a context of type `C` (or the Slurm backend) fails
    /// the future at once with [`TaskError::Unsupported`](crate::TaskError::Unsupported).
    ///
    /// ```
    /// use poolrun_core::{Executor, TaskFuture};
    /// fn scaled(scale: &u64, x: u64) -> u64 { scale * x }
    /// // pool built with `PoolConfig::new().context(10u64)`
    /// fn run(pool: &impl Executor) -> TaskFuture<u64> { pool.submit_ctx(scaled, 4) }
    /// ```
    fn submit_ctx<C, A, R>(&self, f: fn(&C, A) -> R, arg: A) -> TaskFuture<R>
    where
        C: Payload + Sync,
        A: Payload,
        R: Payload,
    {
        if self.context_type() != Some(std::any::TypeId::of::<C>()) {
            return TaskFuture::ready(Err(crate::TaskError::Unsupported(format!(
                "submit_ctx: this pool has no context of type {} (PoolConfig::context; \
                 thread and process mode)",
                std::any::type_name::<C>()
            ))));
        }
        self.submit(crate::context::ctx_task::<C, A, R>, (f as usize, arg))
    }

    /// Like [`submit`](Self::submit), with per-task settings ([`TaskOptions`]: a timeout
    /// for this task alone), without a second pool.
    fn submit_with<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        arg: A,
        opts: TaskOptions,
    ) -> TaskFuture<R> {
        match gated(self, Deadline::NEVER, || {
            self.submit_now_with(f, arg, &opts)
        }) {
            Some(fut) => fut,
            None => TaskFuture::ready(Err(crate::TaskError::Shutdown)),
        }
    }

    /// Like [`submit`](Self::submit), but when the pool is full
    /// ([`PoolConfig::max_queued`](crate::PoolConfig::max_queued)) hand the argument back
    /// at once instead of waiting.
    ///
    /// ```
    /// use poolrun_core::{Executor, PoolConfig};
    /// # fn demo(pool: &impl Executor) {
    /// fn work(x: u64) -> u64 { x }
    /// match pool.try_submit(work, 7) {
    ///     Ok(fut) => { let _ = fut.result(); }
    ///     Err(x) => println!("pool full, {x} not submitted: try later"),
    /// }
    /// # }
    /// ```
    fn try_submit<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        arg: A,
    ) -> Result<TaskFuture<R>, A> {
        gated_submit(self, f, arg, Deadline::after(Some(Duration::ZERO)))
    }

    /// Like [`submit`](Self::submit), but wait at most `timeout` for room; the argument
    /// comes back if none was made.
    fn submit_timeout<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        arg: A,
        timeout: Duration,
    ) -> Result<TaskFuture<R>, A> {
        gated_submit(self, f, arg, Deadline::after(Some(timeout)))
    }

    /// Apply `f` to every input, yielding results in input order, lazily, with a bounded
    /// window in flight. See [`MapIter`].
    fn map<A, R, I>(&self, f: fn(A) -> R, args: I) -> MapIter<R>
    where
        A: Payload,
        R: Payload,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        let src = IterSource::new(args.into_iter(), self.batch_submitter(f))
            .with_chunks(self.chunk_submitter(f));
        MapIter::new(Box::new(src), self.map_window()).for_workers(self.workers())
    }

    /// Like [`map`](Self::map) but yields `(input index, result)` in completion order.
    fn map_unordered<A, R, I>(&self, f: fn(A) -> R, args: I) -> MapUnordered<R>
    where
        A: Payload,
        R: Payload,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        let src = IterSource::new(args.into_iter(), self.batch_submitter(f))
            .with_chunks(self.chunk_submitter(f));
        MapUnordered::new(Box::new(src), self.map_window()).for_workers(self.workers())
    }

    /// Stop accepting work. With `cancel_pending`, every queued task is cancelled. With
    /// `wait`, return only once running (and, without `cancel_pending`, queued) tasks are
    /// finished and every worker is joined/reaped. Idempotent.
    fn shutdown(&self, wait: bool, cancel_pending: bool);

    /// `shutdown(true, cancel_pending)` bounded by `timeout`: true if everything finished
    /// and every worker was joined/reaped in time. On false the pool keeps shutting down in
    /// the background (process workers are then killed when the pool is dropped).
    fn shutdown_timeout(&self, cancel_pending: bool, timeout: Duration) -> bool;

    /// The number of workers.
    fn workers(&self) -> usize;

    /// Thread, process or cluster.
    fn mode(&self) -> Mode;

    /// A snapshot of the pool: workers alive and idle, tasks queued and running, and how
    /// many tasks completed, failed, were cancelled, killed or timed out, worker restarts —
    /// the same struct in every mode, cheap enough to poll. See [`PoolStats`].
    fn stats(&self) -> PoolStats;
}

/// `submit` through the pool's gate: take a slot (until `deadline`), queue the task, give
/// the slot back when the task ends.
fn gated_submit<E: Executor + ?Sized, A: Payload, R: Payload>(
    pool: &E,
    f: fn(A) -> R,
    arg: A,
    deadline: Deadline,
) -> Result<TaskFuture<R>, A> {
    let mut arg = Some(arg);
    let fut = gated(pool, deadline, || match arg.take() {
        Some(a) => pool.submit_now(f, a),
        None => TaskFuture::ready(Err(crate::TaskError::Shutdown)),
    });
    match (fut, arg) {
        (Some(fut), _) => Ok(fut),
        (None, Some(a)) => Err(a),
        (None, None) => Ok(TaskFuture::ready(Err(crate::TaskError::Shutdown))),
    }
}

/// Run `submit` under the pool's gate: `None` if no slot freed by `deadline`.
fn gated<E: Executor + ?Sized, R>(
    pool: &E,
    deadline: Deadline,
    submit: impl FnOnce() -> TaskFuture<R>,
) -> Option<TaskFuture<R>> {
    let Some(gate) = pool.submit_gate() else {
        return Some(submit());
    };
    if !gate.acquire(deadline) {
        return None;
    }
    let fut = submit();
    let gate = gate.clone();
    fut.add_done_callback(move |_| gate.release());
    Some(fut)
}
