//! `tracing` integration, behind the `tracing` feature (off by default): a span per task
//! run in its worker, and an event when a task's future completes, both with target
//! `poolrun`, so tasks show up in the user's own subscriber.
//!
//! - span `task` (level INFO) around each task's run on its worker, with `worker` = the
//!   process id. Thread mode: the pool's thread, in the user's process. Process mode: the
//!   forked worker, which has a copy of the user's subscriber (e.g. a `fmt` subscriber writes
//!   to the same stderr); Slurm: the array task's worker.
//! - event `task done` (level DEBUG) in the thread that completes the future, with `task`
//!   (the pool's id for it) and `outcome` (`ok`, `cancelled`, `timed out` or the error).
//!
//! Without the feature these are empty functions and `tracing` is not a dependency.

use crate::TaskError;

/// Entered for the duration of one task's run on its worker.
#[cfg(feature = "tracing")]
pub(crate) fn task_span() -> tracing::span::EnteredSpan {
    tracing::info_span!(target: "poolrun", "task", worker = std::process::id()).entered()
}

/// (Without the `tracing` feature: a guard that does nothing.)
#[cfg(not(feature = "tracing"))]
pub(crate) fn task_span() -> NoSpan {
    NoSpan
}

/// The span guard without the `tracing` feature.
#[cfg(not(feature = "tracing"))]
pub(crate) struct NoSpan;

/// A task's future completed with `outcome`.
#[cfg(feature = "tracing")]
pub(crate) fn task_done<R>(task: u64, outcome: &Result<R, TaskError>) {
    let outcome = match outcome {
        Ok(_) => "ok".to_string(),
        Err(TaskError::Cancelled) => "cancelled".to_string(),
        Err(TaskError::TimedOut { .. }) => "timed out".to_string(),
        Err(e) => e.to_string(),
    };
    tracing::debug!(target: "poolrun", task, outcome = %outcome, "task done");
}

/// (Without the `tracing` feature: nothing.)
#[cfg(not(feature = "tracing"))]
pub(crate) fn task_done<R>(_task: u64, _outcome: &Result<R, TaskError>) {}
