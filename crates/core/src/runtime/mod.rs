//! The worker runtime every backend runs its tasks with, written once:
//!
//! - [`WorkerRuntime`]: a worker's binding to its GIL and stop flag, its initializer run
//!   once (the failure kept and [reported once per pool](InitReport)), and
//!   [`WorkerRuntime::run`], which runs one task caught (a panic becomes `Panicked`, a
//!   checkpoint stop becomes [`Caught::Stopped`]);
//! - [`RunWord`]: the kill handshake on a worker's "task running now" word, the same for a
//!   thread's word on the heap and a process's word in its shared status page;
//! - [`ThreadSet`]: pool threads that can be joined against a [`Deadline`](crate::Deadline)
//!   and detached;
//! - [`describe_exit`] / [`signal_name`] / [`panic_message`]: the text of exits and panics.
//!
//! A thread pool and a process pool keep only what is theirs: threads versus fork and
//! transport. What a backend implements is described in `ARCHITECTURE.md`.

mod handshake;
mod threads;
mod worker;

pub use handshake::{RunWord, KILL_BIT};
pub use threads::{ThreadKey, ThreadSet};
pub use worker::{run_caught, Caught, InitReport, WorkerRuntime};

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

/// How a process ended, for messages: `killed by signal 9 (SIGKILL)`, `exit code 3`.
pub fn describe_exit(signal: Option<i32>, exit_code: Option<i32>) -> String {
    match (signal, exit_code) {
        (Some(sig), _) => format!("killed by signal {sig} ({})", signal_name(sig)),
        (None, Some(code)) => format!("exit code {code}"),
        (None, None) => "unknown status".to_string(),
    }
}

/// The conventional name of a Linux signal number.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_texts() {
        assert_eq!(describe_exit(Some(9), None), "killed by signal 9 (SIGKILL)");
        assert_eq!(describe_exit(None, Some(3)), "exit code 3");
        assert_eq!(describe_exit(None, None), "unknown status");
        assert_eq!(signal_name(64), "signal");
    }
}
