//! The [`Executor`] trait: the one API both pools implement.

use std::time::Duration;

use crate::{IterSource, MapIter, MapUnordered, Mode, Payload, TaskFuture};

/// A pool's "submit this chunk of inputs as one job" function for one task `fn`: returns one
/// future per input, in order. `map` and `map_unordered` are built on it.
pub type BatchSubmit<A, R> = Box<dyn FnMut(Vec<A>) -> Vec<TaskFuture<R>> + Send>;

/// What a pool can do, identically for threads and processes (`concurrent.futures.Executor`).
///
/// Tasks are plain `fn` pointers — never capturing closures — so the same call works when the
/// task runs in a forked process:
///
/// ```compile_fail
/// use poolrun_core::{Executor, TaskFuture};
/// fn submit_closure<E: Executor>(pool: &E) {
///     let captured = 5u32;
///     // error: a closure that captures is not a `fn(u32) -> u32`
///     let _f: TaskFuture<u32> = pool.submit(move |x: u32| x + captured, 1);
/// }
/// ```
pub trait Executor: Send + Sync {
    /// Schedule `f(arg)`. Never blocks on the work; every problem (shutdown, an argument
    /// that fails to encode) surfaces through the returned future.
    fn submit<A: Payload, R: Payload>(&self, f: fn(A) -> R, arg: A) -> TaskFuture<R>;

    /// The pool's chunk submitter for `f` (see [`BatchSubmit`]); it keeps the pool's
    /// internals alive, so a `map` iterator outlives nothing it needs. The building block of
    /// [`map`](Self::map) and [`map_unordered`](Self::map_unordered).
    fn batch_submitter<A: Payload, R: Payload>(&self, f: fn(A) -> R) -> BatchSubmit<A, R>;

    /// How many chunks `map` keeps in flight.
    fn map_window(&self) -> usize {
        default_window(self.workers())
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
        let src = IterSource::new(args.into_iter(), self.batch_submitter(f));
        MapIter::new(Box::new(src), self.map_window())
    }

    /// Like [`map`](Self::map) but yields `(input index, result)` in completion order.
    fn map_unordered<A, R, I>(&self, f: fn(A) -> R, args: I) -> MapUnordered<R>
    where
        A: Payload,
        R: Payload,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
    {
        let src = IterSource::new(args.into_iter(), self.batch_submitter(f));
        MapUnordered::new(Box::new(src), self.map_window())
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

    /// Thread or process.
    fn mode(&self) -> Mode;
}

/// How many chunks a pool with `workers` workers keeps in flight for `map`: enough that no
/// worker idles between chunks and the consumer rarely finds its next item unfinished (a
/// small window makes producer and workers ping-pong: 5× slower on tiny tasks), small
/// enough to bound memory (`window × chunksize` inputs).
pub fn default_window(workers: usize) -> usize {
    workers.saturating_mul(8).max(64)
}
