//! For pool implementations (the thread pool, the process pool, the cluster backend), not
//! for users: hidden from the docs, and not covered by the API's stability promise.
//!
//! What a new backend implements is described in `ARCHITECTURE.md`: [`Dispatch`] plus
//! `Executor`'s required methods, completing each task through a [`Promise`] (or an
//! [`ErasedPromise`] for encoded results) made by [`task_pair`] with a [`Route`] for
//! `TaskFuture::kill`, and running tasks on a worker through [`WorkerRuntime`].

pub use crate::config::Initializer;
pub use crate::context::{ContextSpec, SharedContext};
pub use crate::future::ChunkState;
pub use crate::future::{
    run_start_callbacks, task_pair, ErasedPromise, KillRoute, Promise, Route, StartCallback,
};
pub use crate::gate::SubmitGate;
pub use crate::map::{ChunkSource, ChunkSubmit, IterSource, Submitted};
pub use crate::runtime::{
    describe_exit, panic_message, run_caught, signal_name, Caught, InitReport, RunWord, ThreadKey,
    ThreadSet, WorkerRuntime, KILL_BIT,
};
pub use crate::stats::TaskCounters;

use crate::{Payload, TaskFuture};

/// A pool's "submit this chunk of inputs as one job" function for one task `fn`: returns one
/// future per input, in order. `map` and `map_unordered` are built on it.
pub type BatchSubmit<A, R> = Box<dyn FnMut(Vec<A>) -> Vec<TaskFuture<R>> + Send>;

/// How a pool plugs into `Executor::map` / `map_unordered`: a supertrait of `Executor`.
pub trait Dispatch {
    /// Queue `f(arg)` now (no backpressure: `Executor::submit` applies the pool's
    /// [`SubmitGate`] first). Never blocks on the work; every problem surfaces through the
    /// future.
    fn submit_now<A: Payload, R: Payload>(&self, f: fn(A) -> R, arg: A) -> TaskFuture<R>;

    /// Queue `f(arg)` now with per-task settings. The default handles the default options
    /// and refuses the rest (the future fails `Unsupported`): a backend that supports a
    /// setting overrides this.
    fn submit_now_with<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        arg: A,
        opts: &crate::TaskOptions,
    ) -> TaskFuture<R> {
        if *opts == crate::TaskOptions::default() {
            self.submit_now(f, arg)
        } else {
            TaskFuture::ready(Err(crate::TaskError::Unsupported(
                "per-task options (TaskOptions) in this mode".into(),
            )))
        }
    }

    /// The type of the pool's context (`PoolConfig::context`), in a backend that lends it
    /// to `submit_ctx` tasks (thread and process pools).
    fn context_type(&self) -> Option<std::any::TypeId> {
        None
    }

    /// The pool's backpressure gate (`PoolConfig::max_queued`), if it has one.
    fn submit_gate(&self) -> Option<&std::sync::Arc<SubmitGate>> {
        None
    }

    /// The pool's chunk submitter for `f` (see [`BatchSubmit`]); it keeps the pool's
    /// internals alive, so a `map` iterator outlives nothing it needs.
    fn batch_submitter<A: Payload, R: Payload>(&self, f: fn(A) -> R) -> BatchSubmit<A, R>;

    /// How many chunks `map` keeps in flight.
    fn map_window(&self) -> usize;

    /// The pool's submitter of map chunks with one completion record per chunk (see
    /// [`ChunkState`]), if it has one; `map` then uses it for chunks of more than one
    /// input. Each input must still be its own task (own id, start, cancel, crash
    /// attribution), completed through its slot.
    fn chunk_submitter<A: Payload, R: Payload>(&self, _f: fn(A) -> R) -> Option<ChunkSubmit<A, R>> {
        None
    }
}

/// How many chunks a pool with `workers` workers keeps in flight for `map`: enough that no
/// worker idles between chunks and the consumer rarely finds its next item unfinished (a
/// small window makes producer and workers ping-pong: 5× slower on tiny tasks), small
/// enough to bound memory (`window × chunksize` inputs).
pub fn default_window(workers: usize) -> usize {
    workers.saturating_mul(8).max(64)
}

/// The two steps every pool's shutdown is made of, so `Executor::shutdown` and
/// `shutdown_timeout` mean the same in every backend: stop taking work (cancelling what is
/// queued on request), then wait for the pool's threads.
pub trait Stop {
    /// Refuse new work; with `cancel_pending`, cancel what has not started.
    fn close(&self, cancel_pending: bool);

    /// Wait until `deadline` for the pool's threads; true if they all finished.
    fn join(&self, deadline: crate::Deadline) -> bool;

    /// `Executor::shutdown`.
    fn shutdown_steps(&self, wait: bool, cancel_pending: bool) {
        self.close(cancel_pending);
        if wait {
            self.join(crate::Deadline::NEVER);
        }
    }

    /// `Executor::shutdown_timeout`.
    fn shutdown_timeout_steps(&self, cancel_pending: bool, timeout: std::time::Duration) -> bool {
        self.close(cancel_pending);
        self.join(crate::Deadline::after(Some(timeout)))
    }
}
