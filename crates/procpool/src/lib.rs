//! poolrun's process pool: forked worker processes behind the same
//! [`Executor`](poolrun_core::Executor) API as the thread pool.
//!
//! - Tasks travel as a plain `fn` pointer (valid in a forked child of the same image) plus a
//!   postcard-encoded argument through a shared-memory ring per worker and direction (a
//!   futex wake only when the other side sleeps); messages with big payloads (in memfds)
//!   go over `ipc-channel`, announced in the ring. Results come back the same way and
//!   complete the futures in a parent thread.
//! - One scheduler owns all dispatch state; an idle worker takes back a batch handed ahead
//!   to a busy one, so no task waits behind a long one while a worker idles.
//! - Crash isolation: a worker that dies fails only the task it was running
//!   ([`TaskError::WorkerDied`](poolrun_core::TaskError::WorkerDied)); the pool reaps it by
//!   pid and forks a replacement. A respawn storm is stopped by a restart-intensity limit.
//! - No zombies, no orphans: every worker is reaped by its owner (never `waitpid(-1)`),
//!   and dies with the parent, even on SIGKILL (`PR_SET_PDEATHSIG` from a long-lived
//!   spawner thread plus a lifeline pipe).
//!
//! The fork protocol, the fork-safety rules, the dispatch rules and what happens on each
//! kind of death are in this crate's `README.md`. Files: `pool.rs` (the handle), `shared.rs` (the
//! state the handle and the collectors share), `scheduler.rs` (dispatch, no I/O), `link.rs` (sending to one worker),
//! `collector.rs` (one worker's life in the parent), `item.rs` (tasks and batches),
//! `transport.rs` (messages, fn-pointer transport), `ring.rs` (the shared-memory rings), `spawn.rs` (the spawner thread, fork),
//! `child.rs` (the worker process), `status.rs` (the shared status page), `exitwatch.rs`
//! (pidfd exit watcher), `sys.rs` (raw OS calls).

#![warn(missing_docs)]
#![deny(unsafe_code)]

mod child;
mod collector;
mod exitwatch;
mod item;
mod link;
mod pool;
mod ring;
mod scheduler;
mod shared;
mod spawn;
mod status;
mod sys;
mod transport;

pub use pool::{task_addrs, ProcessPool};
