#![doc = include_str!("guide.md")]
#![warn(missing_docs)]
#![forbid(unsafe_code)]

use std::time::Duration;

pub use poolrun_core::{
    as_completed, as_completed_ref, codec, gil, shm, sync, wait, AsCompleted, AsCompletedRef,
    Executor, GilMode, MapIter, MapUnordered, Mode, Payload, PoolConfig, PoolError, PoolStats,
    ReturnWhen, TaskError, TaskFuture, TaskOptions, MAX_WORKERS,
};

/// For pool implementations and the `poolrun` command line, not for users (see
/// `poolrun_core::backend`).
#[doc(hidden)]
pub use poolrun_core::backend;
use poolrun_core::backend::{BatchSubmit, Dispatch};
pub use poolrun_procpool::ProcessPool;
pub use poolrun_threadpool::ThreadPool;

/// The cluster backend: job arrays on a real Slurm cluster behind the same API.
///
/// ```no_run
/// use poolrun::slurm::{SlurmConfig, SlurmPool};
/// use poolrun::{Executor, PoolConfig};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let slurm = SlurmConfig::new().partition("debug").cpus_per_task(2);
/// let pool = SlurmPool::new(PoolConfig::new().workers(4), slurm).unwrap();
/// let squares: Vec<u64> = pool.map(square, 0..1000u64).map(|r| r.unwrap()).collect();
/// assert_eq!(squares[999], 998_001);
/// ```
pub mod slurm {
    pub use poolrun_slurm::{available, run_if_array_task, SlurmConfig, SlurmPool};
}

/// Any pool, chosen at run time (e.g. from `--mode`). Implements [`Executor`] by
/// delegating.
#[derive(Debug)]
pub enum Pool {
    /// A thread pool.
    Thread(ThreadPool),
    /// A process pool.
    Process(ProcessPool),
    /// Job arrays on a Slurm cluster.
    Slurm(slurm::SlurmPool),
}

impl Pool {
    /// Build a pool of the given mode. `Mode::Slurm` takes its cluster settings from the
    /// `POOLRUN_SLURM_*` environment variables ([`slurm::SlurmConfig::from_env`]).
    pub fn new(mode: Mode, cfg: PoolConfig) -> Result<Pool, PoolError> {
        Ok(match mode {
            Mode::Thread => Pool::Thread(ThreadPool::new(cfg)?),
            Mode::Process => Pool::Process(ProcessPool::new(cfg)?),
            Mode::Slurm => {
                Pool::Slurm(slurm::SlurmPool::new(cfg, slurm::SlurmConfig::from_env()?)?)
            }
        })
    }
}

macro_rules! delegate {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Pool::Thread($p) => $e,
            Pool::Process($p) => $e,
            Pool::Slurm($p) => $e,
        }
    };
}

impl Dispatch for Pool {
    fn submit_now<A: Payload, R: Payload>(&self, f: fn(A) -> R, arg: A) -> TaskFuture<R> {
        delegate!(self, p => p.submit_now(f, arg))
    }

    fn submit_now_with<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        arg: A,
        opts: &TaskOptions,
    ) -> TaskFuture<R> {
        delegate!(self, p => p.submit_now_with(f, arg, opts))
    }

    fn context_type(&self) -> Option<std::any::TypeId> {
        delegate!(self, p => p.context_type())
    }

    fn submit_gate(&self) -> Option<&std::sync::Arc<poolrun_core::backend::SubmitGate>> {
        delegate!(self, p => p.submit_gate())
    }

    fn batch_submitter<A: Payload, R: Payload>(&self, f: fn(A) -> R) -> BatchSubmit<A, R> {
        delegate!(self, p => p.batch_submitter(f))
    }

    fn map_window(&self) -> usize {
        delegate!(self, p => p.map_window())
    }

    fn chunk_submitter<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
    ) -> Option<poolrun_core::backend::ChunkSubmit<A, R>> {
        delegate!(self, p => p.chunk_submitter(f))
    }
}

impl Executor for Pool {
    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        delegate!(self, p => p.shutdown(wait, cancel_pending))
    }

    fn shutdown_timeout(&self, cancel_pending: bool, timeout: Duration) -> bool {
        delegate!(self, p => p.shutdown_timeout(cancel_pending, timeout))
    }

    fn workers(&self) -> usize {
        delegate!(self, p => p.workers())
    }

    fn mode(&self) -> Mode {
        delegate!(self, p => p.mode())
    }

    fn stats(&self) -> PoolStats {
        delegate!(self, p => p.stats())
    }
}

/// The README's Rust examples, compiled and run as doctests so they cannot drift from the
/// API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
