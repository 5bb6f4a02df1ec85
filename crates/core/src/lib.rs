//! poolrun-core: everything the thread pool and the process pool share.
//!
//! - [`Executor`], the API both pools implement; [`TaskFuture`] and [`Promise`], the
//!   futures state machine; [`wait`] / [`as_completed`]; the lazy [`MapIter`] /
//!   [`MapUnordered`];
//! - [`TaskError`] / [`PoolError`]; [`PoolConfig`] and [`Mode`];
//! - [`gil`] (CPython GIL emulation and the `checkpoint` hook), [`shm`], [`sync`], [`codec`].
//!
//! This crate knows nothing of fork or of worker threads; the pools live in
//! `poolrun-threadpool` and `poolrun-procpool`, and the `poolrun` facade re-exports all.

#![warn(missing_docs)]

pub mod codec;
mod config;
mod error;
mod executor;
mod future;
pub mod gil;
mod map;
pub mod shm;
pub mod sync;
mod wait;

pub use config::{Initializer, Mode, PoolConfig, MAX_WORKERS};
pub use error::{panic_message, signal_name, PoolError, TaskError};
pub use executor::{default_window, BatchSubmit, Executor};
pub use future::{
    task_pair, task_pair_routed, ErasedPromise, KillRoute, Promise, RouteId, TaskFuture,
};
pub use gil::GilMode;
pub use map::{ChunkSource, IterSource, MapIter, MapUnordered};
pub use wait::{as_completed, wait, AsCompleted, ReturnWhen};

/// What a task argument or result must be: encodable (it may cross a process boundary),
/// sendable, owned. A blanket trait: every such type is a `Payload`.
pub trait Payload: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}
impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Payload for T {}
