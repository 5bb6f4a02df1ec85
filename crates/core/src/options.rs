//! [`TaskOptions`]: per-task settings for `Executor::submit_with`, without a second pool.

use std::time::Duration;

/// Settings for one task ([`Executor::submit_with`](crate::Executor::submit_with)).
///
/// ```
/// use std::time::Duration;
/// use poolrun_core::{Executor, TaskFuture, TaskOptions};
///
/// fn spin(_: ()) -> u64 { loop { poolrun_core::gil::checkpoint(); } }
///
/// // this task alone is stopped after 50 ms (`Err(TaskError::TimedOut { .. })`)
/// fn bounded(pool: &impl Executor) -> TaskFuture<u64> {
///     pool.submit_with(spin, (), TaskOptions::new().timeout(Duration::from_millis(50)))
/// }
/// # assert_eq!(TaskOptions::new().timeout(Duration::from_secs(1)).get_timeout(), Some(Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskOptions {
    timeout: Option<Duration>,
}

impl TaskOptions {
    /// No per-task settings: the pool's apply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop this task if it runs longer than `d` (measured from when its worker begins it,
    /// like [`PoolConfig::task_timeout`](crate::PoolConfig::task_timeout), which it replaces
    /// for this task): it fails with [`TaskError::TimedOut`](crate::TaskError::TimedOut).
    /// Thread and process mode; the Slurm backend refuses it (the future fails
    /// `Unsupported`).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// The per-task timeout, if set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }
}
