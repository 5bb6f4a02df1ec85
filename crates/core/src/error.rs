//! Error types: [`TaskError`] for one task's outcome, [`PoolError`] for building a pool.

use std::time::Duration;

/// Why a task did not produce its value.
///
/// Every variant says *when* it happens. The enum is `#[non_exhaustive]`: match with a
/// wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum TaskError {
    /// The task was cancelled before it started: by [`TaskFuture::cancel`](crate::TaskFuture::cancel),
    /// by `shutdown(_, cancel_pending = true)`, by dropping a daemon pool, or by dropping a
    /// [`MapIter`](crate::MapIter) that still had it queued — or it was stopped while
    /// running by [`TaskFuture::kill`](crate::TaskFuture::kill).
    #[error("the task was cancelled before it started")]
    Cancelled,
    /// The task was submitted after `shutdown`, or the pool stopped before it could run it.
    #[error("the pool is shut down: the task was not run")]
    Shutdown,
    /// A bounded wait (`result_timeout`, a `map` deadline, `as_completed` with a timeout)
    /// ran out before the task finished. The task itself may still finish later.
    #[error("timed out waiting for the task's result")]
    WaitTimeout,
    /// The task panicked; `message` is the panic payload when it was a string.
    #[error("the task panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The worker process running the task died (signal, `exit`, OOM kill).
    #[error("worker process {pid} died while running the task ({})", crate::runtime::describe_exit(*signal, *exit_code))]
    WorkerDied {
        /// The worker's process id.
        pid: u32,
        /// The signal that killed it, if it was killed by one.
        signal: Option<i32>,
        /// Its exit status, if it exited.
        exit_code: Option<i32>,
    },
    /// The task ran longer than the pool's `task_timeout` and was stopped.
    #[error("the task exceeded its timeout of {after:?} and was stopped")]
    TimedOut {
        /// The timeout that was exceeded.
        after: Duration,
    },
    /// The argument or the result could not be encoded or decoded. The message names the
    /// type and says why (the type's own serde error text, or that its impl panicked).
    #[error("codec error: {0}")]
    Codec(String),
    /// A shared-memory or sync handle in the argument or the result could not be used by
    /// the receiving process (see [`HandleError`](crate::shm::HandleError)).
    #[error("{0}")]
    Handle(crate::shm::HandleError),
    /// The worker's initializer failed, so the worker could not run tasks.
    #[error("the worker initializer failed: {0}")]
    Initializer(String),
    /// The pool's mode does not support what was asked for this task (a per-task option
    /// a backend cannot honour); the message says what.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The pool gave up on its workers (for example, they kept dying at start-up faster than
    /// the restart-intensity limit allows), so the task could not be run.
    #[error("the pool is broken: {0}")]
    Broken(String),
    /// The cluster job running the task ended before the task finished: it failed, was
    /// cancelled from outside, hit its time limit, lost its node, or could not be submitted.
    /// Names the job, Slurm's state, and the end of the job's log.
    #[error("cluster job {job} ended {state} before the task finished{}", if log.is_empty() { String::new() } else { format!(": {log}") })]
    JobFailed {
        /// The job id as Slurm shows it (`1234_5` for an array task).
        job: String,
        /// Slurm's state (`FAILED`, `CANCELLED`, `TIMEOUT`, `NODE_FAIL`, …).
        state: String,
        /// The last lines of the job's log, and where the log is kept.
        log: String,
    },
    /// The value was already moved out of this future by an earlier successful
    /// `result_timeout`.
    #[error("the result was already taken from this future")]
    ResultTaken,
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A [`PoolConfig`](crate::PoolConfig) value is out of range; the message names it.
    #[error("invalid pool configuration: {0}")]
    InvalidConfig(String),
    /// A worker cannot be started here, for a reason that is not an OS call failing: a
    /// process pool created inside a pool worker process, or in a process forked by someone
    /// else after it used a process pool; for a Slurm pool, no `sbatch` on `PATH` or a
    /// controller that does not answer. The message says which.
    #[error("cannot start a worker: {0}")]
    Spawn(String),
    /// An operating-system call failed while starting the pool (`fork`, a pipe, a socket,
    /// `mmap`, a thread). The error names the call and keeps the OS error:
    /// `io::Error::get_ref` is an [`OsCallError`] whose `source` has the errno
    /// (`raw_os_error`).
    #[error("{0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for PoolError {
    fn from(e: std::io::Error) -> Self {
        PoolError::Io(e)
    }
}

impl PoolError {
    /// `op` failed with `source`: a [`PoolError::Io`] that names the call.
    pub fn os(op: &'static str, source: std::io::Error) -> PoolError {
        PoolError::Io(std::io::Error::new(
            source.kind(),
            OsCallError { op, source },
        ))
    }
}

/// An OS call that failed, with the OS error (inside [`PoolError::Io`]).
#[derive(Debug, thiserror::Error)]
#[error("{op} failed: {source}")]
pub struct OsCallError {
    /// The call (`fork`, `socketpair`, `spawn a thread`, ...).
    pub op: &'static str,
    /// The OS error; `raw_os_error()` is the errno.
    #[source]
    pub source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_keep_the_call_and_errno() {
        let e = PoolError::os("fork", std::io::Error::from_raw_os_error(11));
        let PoolError::Io(io) = &e else {
            panic!("{e:?}")
        };
        let inner = io.get_ref().and_then(|r| r.downcast_ref::<OsCallError>());
        assert_eq!(
            inner.map(|c| (c.op, c.source.raw_os_error())),
            Some(("fork", Some(11)))
        );
        assert!(e.to_string().starts_with("fork failed: "), "{e}");
    }
}
