//! The files a pool and its array tasks exchange, postcard-encoded through poolrun's codec.
//!
//! - [`PoolFile`] (`pool`): written once at pool start: the executable's hash, the local
//!   pool each array task runs, the heartbeat timeout.
//! - [`ChunkFile`] (`a<K>/chunk-<J>`): the tasks of chunk `J` of array `K`: task id, the
//!   task's trampoline and `fn` as offsets (invariant S1 in `image.rs`), the encoded
//!   argument. An array task claims it by renaming it (`claim.rs`).
//! - [`ResultFile`] (`a<K>/r-<J>-<N>`): results of chunk `J`, written atomically (a
//!   temporary name, then `rename`) by its claimer as they finish, `N` counting up.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use poolrun_core::TaskError;

/// Version of these formats (an array task refuses a pool file of another version).
pub(crate) const VERSION: u32 = 1;

/// The local pool every array task runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PoolFile {
    pub version: u32,
    /// SHA-256 of the executable copy the array tasks run (invariant S1).
    pub exe_sha256: [u8; 32],
    /// Local worker processes per array task.
    pub workers: usize,
    pub task_timeout: Option<Duration>,
    pub max_tasks_per_child: Option<usize>,
    /// The GIL switch interval of each local worker (`None`: no GIL).
    pub gil: Option<Duration>,
    /// The initializer: runner and `fn` offsets, encoded argument.
    pub initializer: Option<(i64, i64, ByteBuf)>,
    /// An array task whose submitter has been silent this long cancels its array.
    pub heartbeat_timeout: Duration,
}

/// One task of a chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChunkTask {
    pub id: u64,
    /// Offset of the process pool's trampoline for the task (S1).
    pub trampoline: i64,
    /// Offset of the task's `fn` (S1).
    pub func: i64,
    pub arg: ByteBuf,
}

/// The tasks of one chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChunkFile {
    pub tasks: Vec<ChunkTask>,
}

/// One finished task: its id, and its encoded value or the error.
pub(crate) type Outcome = (u64, Result<ByteBuf, TaskError>);

/// Finished tasks of one chunk.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ResultFile {
    pub results: Vec<Outcome>,
}

impl ResultFile {
    /// How long an array task lets results gather before it writes them out.
    pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
}
