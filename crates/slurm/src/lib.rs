//! poolrun-slurm: the cluster backend. [`SlurmPool`] runs tasks as job arrays of a real
//! Slurm cluster behind the same [`Executor`](poolrun_core::Executor) API as the thread
//! and process pools — no scheduler, transport or daemon of poolrun's own between nodes.
//!
//! - Submissions are gathered for a short window and submitted as one `sbatch --array`
//!   (many small tasks become few array tasks: Slurm schedules about one tick a second).
//! - Each array task runs a copy of the submitting executable. It enters worker mode before
//!   `main` (a constructor), so programs and `cargo test` binaries need no change; function
//!   addresses travel as offsets from a known symbol and are honoured only once the array
//!   task has proved it runs the identical image (`image.rs`).
//! - An array is split into chunks; at most `workers` array tasks claim them one by one
//!   (an atomic rename), so the array balances itself in one wave of array tasks. Each
//!   array task runs its chunks on a local `ProcessPool` of `cpus_per_task` workers and
//!   streams results back through files written atomically into the work directory.
//! - The pool follows its arrays with one `squeue` call per poll; any way an array task ends
//!   early becomes a per-task [`TaskError::JobFailed`](poolrun_core::TaskError::JobFailed)
//!   naming the job, Slurm's state and the end of its log.
//! - A submitter that dies (even by SIGKILL) stops touching its heartbeat file; its array
//!   tasks cancel their arrays and exit within the heartbeat timeout (30 s by default).
//!
//! Files: `pool.rs` (the handle), `driver.rs` (batching, submitting, polling), `follow.rs`
//! (one array's outcomes), `config.rs`, `arraytask.rs` (the worker side), `claim.rs`
//! (claiming chunks, writing results), `cluster.rs` (sbatch/squeue/sacct/scancel),
//! `image.rs` (executable copy, hash, offsets), `wire.rs` (file formats), `workdir.rs` (the
//! directory). The design note is `README.md` beside this crate's `Cargo.toml`.

#![warn(missing_docs)]
#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod arraytask;
mod claim;
mod cluster;
mod config;
mod driver;
mod follow;
mod image;
mod pool;
mod wire;
mod workdir;

pub use arraytask::run_if_array_task;
pub use config::{SlurmConfig, DEFAULT_MAX_ARRAY_SIZE};
pub use pool::SlurmPool;

/// Is a Slurm client (`sbatch`) available here? `Err` says why not, in one line.
pub fn available() -> Result<(), String> {
    cluster::check_available()
}
