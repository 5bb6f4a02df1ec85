//! poolrun's process pool: forked worker processes behind the same
//! [`Executor`](poolrun_core::Executor) API as the thread pool.
//!
//! - Tasks travel as a plain `fn` pointer (valid in a forked child of the same image) plus a
//!   postcard-encoded argument over `ipc-channel`; results come back the same way and
//!   complete the futures in a parent thread.
//! - Crash isolation: a worker that dies fails only the task it was running
//!   ([`TaskError::WorkerDied`](poolrun_core::TaskError::WorkerDied)); the pool reaps it by
//!   pid and forks a replacement. A respawn storm is stopped by a restart-intensity limit.
//! - No zombies, no orphans: every worker is reaped by its owner (never `waitpid(-1)`),
//!   and dies with the parent, even on SIGKILL (`PR_SET_PDEATHSIG` from a long-lived
//!   spawner thread plus a lifeline pipe).
//!
//! The fork protocol, the fork-safety rules and what happens on each kind of death are in
//! this crate's `README.md`.

#![warn(missing_docs)]
#![deny(unsafe_code)]

mod pool;
mod queue;
mod slot;
mod spawn;
mod sys;
mod transport;
mod worker;

pub use pool::ProcessPool;
