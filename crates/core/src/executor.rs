//! [`Executor`]: the one API every pool implements (`concurrent.futures.Executor`).

use std::time::Duration;

use crate::backend::{Dispatch, IterSource};
use crate::{MapIter, MapUnordered, Mode, Payload, PoolStats, TaskFuture};

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
    /// that fails to encode) surfaces through the returned future.
    fn submit<A: Payload, R: Payload>(&self, f: fn(A) -> R, arg: A) -> TaskFuture<R>;

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
