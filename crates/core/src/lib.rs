//! poolrun-core: the API every poolrun pool implements, and what they share.
//!
//! User-facing: [`Executor`] (the `concurrent.futures`-style API), [`TaskFuture`],
//! [`wait`] / [`as_completed`], the lazy [`MapIter`] / [`MapUnordered`], [`TaskError`] /
//! [`PoolError`], [`PoolConfig`] / [`Mode`], and the modules [`gil`] (CPython GIL
//! emulation and the `checkpoint` hook), [`shm`] (shared memory), [`sync`] (cross-process
//! locks and events) and [`codec`].
//!
//! For pool implementations only, hidden from the docs: `backend` (promises, kill routes,
//! the map plumbing and the worker runtime every backend runs its tasks with).
//!
//! This crate knows nothing of fork or of worker threads; the pools live in
//! `poolrun-threadpool` and `poolrun-procpool`, and the `poolrun` facade re-exports all.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod backend;
mod chunking;
pub mod codec;
mod config;
mod context;
mod deadline;
mod error;
mod executor;
mod future;
mod gate;
pub mod gil;
mod map;
mod map_entry;
mod options;
mod runtime;
pub mod shm;
mod stats;
pub mod sync;
mod trace;
mod wait;

pub use config::{Mode, PoolConfig, MAX_WORKERS};
pub use deadline::Deadline;
pub use error::{OsCallError, PoolError, TaskError};
pub use executor::Executor;
pub use future::TaskFuture;
pub use gil::GilMode;
pub use map::{MapIter, MapUnordered};
pub use options::TaskOptions;
pub use stats::PoolStats;
pub use wait::{as_completed, as_completed_ref, wait, AsCompleted, AsCompletedRef, ReturnWhen};

pub(crate) use config::Initializer;

/// What a task argument or result must be: encodable (it may cross a process boundary),
/// sendable, owned. A blanket trait: every such type is a `Payload`.
pub trait Payload: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}
impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Payload for T {}
