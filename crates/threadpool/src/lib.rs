//! poolrun-threadpool: [`ThreadPool`], the thread half of poolrun's one API.
//!
//! Workers pull jobs from one shared FIFO queue (a crossbeam channel), so a task is *running*
//! exactly when a worker takes it and everything behind it stays cancellable. Each worker
//! thread is bound (see [`poolrun_core::gil::WorkerBinding`]) to the pool's emulated GIL (if
//! `GilMode::On`) and to a stop flag that [`poolrun_core::gil::checkpoint`] watches: that is
//! how a task that overran `task_timeout` is stopped. Panics are caught per task.
//!
//! Files: `pool.rs` (the pool and its lifecycle), `job.rs` (type-erased jobs: one task or a
//! chunk), `timer.rs` (task deadlines).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod job;
mod pool;
mod timer;

pub use pool::ThreadPool;
