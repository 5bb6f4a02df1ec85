//! [`PoolStats`]: what `Executor::stats()` reports, the same struct in every mode, and the
//! task counters every pool keeps for it ([`TaskCounters`], for pool implementations).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::TaskError;

/// A snapshot of a pool: cheap enough to poll (a few atomic loads and one short lock).
///
/// Counters count tasks since the pool started. Every finished task is counted exactly once
/// in `completed`, `failed`, `timed_out` or `cancelled`; `killed` counts the cancelled ones
/// that were already running when `TaskFuture::kill` stopped them (a subset of `cancelled`).
///
/// ```
/// use poolrun_core::{Executor, PoolStats};
/// fn report(pool: &impl Executor) {
///     let s: PoolStats = pool.stats();
///     println!("{} queued, {} running on {} of {} workers", s.queued, s.running, s.workers_alive, s.workers);
/// }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Workers the pool is configured for (`PoolConfig::workers`).
    pub workers: usize,
    /// Workers alive now (threads, worker processes, running Slurm array tasks).
    pub workers_alive: usize,
    /// Alive workers with nothing to run.
    pub idle: usize,
    /// Tasks submitted and not yet started.
    pub queued: usize,
    /// Tasks running now.
    pub running: usize,
    /// Tasks that returned a value.
    pub completed: u64,
    /// Tasks that finished with an error other than a timeout or cancellation (a panic,
    /// a dead worker, a codec error, shutdown, ...).
    pub failed: u64,
    /// Tasks cancelled (before they started, or killed while running).
    pub cancelled: u64,
    /// Of `cancelled`: tasks stopped by `kill()` while running.
    pub killed: u64,
    /// Tasks stopped by `task_timeout`.
    pub timed_out: u64,
    /// Workers replaced after a crash, a kill, a timeout or recycling.
    pub worker_restarts: u64,
    /// Thread mode: threads still running a task that was killed or timed out and has not
    /// reached a checkpoint (detached, replaced). Always 0 in the other modes.
    pub detached_threads: usize,
}

/// The per-pool task counters behind [`PoolStats`] (for pool implementations: attach them
/// to each task's `Route`, or to a chunk record, and every completion is counted).
#[derive(Debug, Default)]
pub struct TaskCounters {
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    killed: AtomicU64,
    timed_out: AtomicU64,
    restarts: AtomicU64,
}

impl TaskCounters {
    /// Count one finished task by its outcome (`cancelled`: it ended CANCELLED).
    pub fn record<R>(&self, outcome: &Result<R, TaskError>, cancelled: bool) {
        let c = match outcome {
            _ if cancelled => &self.cancelled,
            Ok(_) => &self.completed,
            Err(TaskError::TimedOut { .. }) => &self.timed_out,
            Err(TaskError::Cancelled) => &self.cancelled,
            Err(_) => &self.failed,
        };
        c.fetch_add(1, Relaxed);
    }

    /// A running task was stopped by `kill()` (it is also counted as cancelled).
    pub fn killed(&self) {
        self.killed.fetch_add(1, Relaxed);
    }

    /// A worker was replaced.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Relaxed);
    }

    /// Move `other`'s counts into these (a worker's own counters folded into its pool's
    /// when it exits).
    pub fn absorb(&self, other: &TaskCounters) {
        for (a, b) in self.cells().into_iter().zip(other.cells()) {
            a.fetch_add(b.swap(0, Relaxed), Relaxed);
        }
    }

    /// Add `other`'s counts to a snapshot (a pool summing its workers' counters).
    pub fn add_to(&self, s: &mut PoolStats) {
        s.completed += self.completed.load(Relaxed);
        s.failed += self.failed.load(Relaxed);
        s.cancelled += self.cancelled.load(Relaxed);
        s.killed += self.killed.load(Relaxed);
        s.timed_out += self.timed_out.load(Relaxed);
        s.worker_restarts += self.restarts.load(Relaxed);
    }

    fn cells(&self) -> [&AtomicU64; 6] {
        [
            &self.completed,
            &self.failed,
            &self.cancelled,
            &self.killed,
            &self.timed_out,
            &self.restarts,
        ]
    }

    /// A snapshot with the counters filled in and the live figures (workers, queue) zero,
    /// for the pool to complete.
    pub fn snapshot(&self, workers: usize) -> PoolStats {
        PoolStats {
            workers,
            completed: self.completed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            killed: self.killed.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            worker_restarts: self.restarts.load(Relaxed),
            ..PoolStats::default()
        }
    }
}
