//! Error types: [`TaskError`] for one task's outcome, [`PoolError`] for building a pool.

use std::time::Duration;

/// Why a task did not produce its value.
///
/// Every variant says *when* it happens. The enum is `#[non_exhaustive]`: match with a
/// wildcard arm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task was cancelled before it started: by [`TaskFuture::cancel`](crate::TaskFuture::cancel),
    /// by `shutdown(_, cancel_pending = true)`, by dropping a daemon pool, or by dropping a
    /// [`MapIter`](crate::MapIter) that still had it queued.
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
    #[error("worker process {pid} died while running the task ({})", describe_exit(*signal, *exit_code))]
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
    /// The argument or the result could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// The worker's initializer failed, so the worker could not run tasks.
    #[error("the worker initializer failed: {0}")]
    Initializer(String),
    /// The pool gave up on its workers (for example, they kept dying at start-up faster than
    /// the restart-intensity limit allows), so the task could not be run.
    #[error("the pool is broken: {0}")]
    Broken(String),
    /// The value was already moved out of this future by an earlier successful
    /// `result_timeout`.
    #[error("the result was already taken from this future")]
    ResultTaken,
}

fn describe_exit(signal: Option<i32>, exit_code: Option<i32>) -> String {
    match (signal, exit_code) {
        (Some(sig), _) => format!("killed by signal {sig} ({})", signal_name(sig)),
        (None, Some(code)) => format!("exit code {code}"),
        (None, None) => "unknown status".to_string(),
    }
}

/// The conventional name of a Linux signal number, for messages.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => "signal",
    }
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A [`PoolConfig`](crate::PoolConfig) value is out of range; the message names it.
    #[error("invalid pool configuration: {0}")]
    InvalidConfig(String),
    /// A worker thread or process could not be started.
    #[error("could not start a worker: {0}")]
    Spawn(String),
    /// An operating-system call failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The requested mode is not available in this build.
    #[error("{0}")]
    Unsupported(String),
}

/// Turn a panic payload into a message.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}
