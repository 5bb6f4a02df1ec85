//! poolrun-threadpool: [`ThreadPool`], the thread half of poolrun's one API.
//!
//! Workers take work from one shared FIFO queue, so a task is *running* exactly when a
//! worker takes it and everything behind it stays cancellable. Each worker runs its tasks
//! through poolrun-core's worker runtime (the GIL binding, the initializer once, panics
//! caught, the kill handshake); a task that is killed or passes `task_timeout` is stopped
//! at its next `gil::checkpoint()`, and its thread is retired, replaced and detached.
//!
//! Files: `pool.rs` (the handle and its lifecycle), `shared.rs` (the queue, shutdown,
//! retiring workers, the kill route), `worker.rs` (the worker loop), `work.rs` (one task or
//! a chunk, and how a task runs), `timer.rs` (task deadlines).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod pool;
mod shared;
mod timer;
mod work;
mod worker;

pub use pool::ThreadPool;
