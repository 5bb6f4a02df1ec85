//! Shared memory between the processes (and threads) of a pool.
//!
//! [`SharedBytes`] (read-only after creation) and [`SharedArray`] (writable, element-wise)
//! are `Clone` handles to a memfd mapped `MAP_SHARED`. They serialize as *handles*, so
//! passing one as a task argument or result costs the same for 1 KiB as for 1 GiB, and a
//! worker may create one and return it. Thread mode uses the very same types.
//!
//! Nothing is ever named in `/dev/shm`: a memfd disappears with its last fd and mapping,
//! also when every process holding it is killed by SIGKILL. See `README.md` in this
//! directory for the layout, how a handle crosses a process boundary, and lifetime rules.
//!
//! ```
//! use poolrun_core::shm::{SharedArray, SharedBytes};
//!
//! let b = SharedBytes::from_slice(b"hello").unwrap();
//! assert_eq!(&b[..], b"hello");
//! let a = SharedArray::<u64>::new(4).unwrap();
//! a.set(2, 7);
//! assert_eq!(a.get(2), 7);
//! ```

mod array;
mod array_atomic;
mod bytes;
mod cache;
mod forksafe;
pub(crate) mod segment;
#[cfg(test)]
mod tests;

pub use array::{Plain, SharedArray};
pub use array_atomic::AtomicElem;
pub use bytes::SharedBytes;

/// Why a shared-memory operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// A system call failed (`memfd_create`, `ftruncate`, `mmap`, ...): out of memory,
    /// out of file descriptors, or a sandbox that forbids it.
    #[error("shared memory: {op} failed: {source}")]
    Os {
        /// The call that failed.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The requested size does not fit the address space.
    #[error("shared memory: {len} bytes is too large")]
    TooLarge {
        /// The requested length in bytes.
        len: usize,
    },
    /// A received handle names a segment that can no longer be reached: the sending
    /// process dropped its last handle (or exited) before this one attached, or this
    /// process closed the segment's fd.
    #[error("shared memory: segment gone: {detail}")]
    Gone {
        /// What was found instead.
        detail: String,
    },
    /// A received handle does not match what it is decoded as (another kind, another
    /// element type, another length), or the memory is not a poolrun segment.
    #[error("shared memory: handle mismatch: {0}")]
    Mismatch(String),
}

/// Why a shared-memory or sync handle could not cross a process boundary, as a task's
/// [`TaskError::Handle`](crate::TaskError::Handle): a copyable summary of the [`ShmError`]
/// the handle's encoding or decoding met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum HandleError {
    /// [`ShmError::Gone`]: the segment can no longer be reached (its sender dropped its last
    /// handle, or died, before this process attached).
    #[error("shared memory: segment gone: {0}")]
    Gone(String),
    /// [`ShmError::Mismatch`]: the handle is not what it is decoded as.
    #[error("shared memory: handle mismatch: {0}")]
    Mismatch(String),
    /// [`ShmError::Os`]: a system call failed.
    #[error("shared memory: {op} failed: {message}")]
    Os {
        /// The call.
        op: String,
        /// The errno, if the OS gave one.
        errno: Option<i32>,
        /// The OS error's text.
        message: String,
    },
    /// [`ShmError::TooLarge`].
    #[error("shared memory: {len} bytes is too large")]
    TooLarge {
        /// The requested length in bytes.
        len: usize,
    },
}

impl From<&ShmError> for HandleError {
    fn from(e: &ShmError) -> Self {
        match e {
            ShmError::Gone { detail } => HandleError::Gone(detail.clone()),
            ShmError::Mismatch(m) => HandleError::Mismatch(m.clone()),
            ShmError::Os { op, source } => HandleError::Os {
                op: (*op).to_string(),
                errno: source.raw_os_error(),
                message: source.to_string(),
            },
            ShmError::TooLarge { len } => HandleError::TooLarge { len: *len },
        }
    }
}

thread_local! {
    /// The last handle error met by a handle's serde impl on this thread, for the codec
    /// (serde errors only carry text, and postcard drops even that).
    static LAST_HANDLE_ERROR: std::cell::RefCell<Option<HandleError>> =
        const { std::cell::RefCell::new(None) };
}

/// Keep `e` for [`take_handle_error`]; returns it as the serde error's text.
pub(crate) fn stash_handle_error(e: &ShmError) -> String {
    LAST_HANDLE_ERROR.with(|c| *c.borrow_mut() = Some(HandleError::from(e)));
    e.to_string()
}

/// The handle error stashed on this thread since the last call, if any (the codec calls it
/// around every encode and decode).
pub(crate) fn take_handle_error() -> Option<HandleError> {
    LAST_HANDLE_ERROR.with(|c| c.borrow_mut().take())
}

/// Decode a handle of `kind` (the `Deserialize` of every handle type) and keep its mapping
/// for a repeat hand-off (`cache.rs`).
pub(crate) fn receive<'de, D: serde::Deserializer<'de>>(
    d: D,
    kind: segment::SegmentKind,
    elem_size: u32,
) -> Result<std::sync::Arc<segment::Mapping>, D::Error> {
    let m = segment::Mapping::deserialize_handle(d, kind, elem_size)?;
    cache::keep(&m);
    Ok(m)
}

/// Number of segments this process keeps alive only because a handle to them was sent and
/// not yet received (see README, "Lifetime"). For tests and diagnostics.
pub fn pinned_segments() -> usize {
    segment::pinned_count()
}

/// How long a process keeps a segment alive after sending a handle to it that no receiver
/// has decoded yet — a task queued that long, or cancelled, or lost with a dead worker
/// (default 5 minutes). A handle decoded later than this, after the sender dropped all its
/// own handles, fails with [`ShmError::Gone`]. See README, "Lifetime".
pub fn set_pin_timeout(timeout: std::time::Duration) {
    segment::set_pin_max(timeout)
}

/// Block until every handle this process sent has been received (so the receivers could
/// map the segments), or `timeout` passes; true if none is pending. A process that sent
/// handles — e.g. a pool worker returning a `SharedArray` it created — must call this
/// before it exits on purpose, or the receiver may find the segment gone. Returns at once
/// when nothing is pending.
pub fn wait_pins_released(timeout: std::time::Duration) -> bool {
    segment::wait_pins_released(timeout)
}

/// Number of segments this process keeps mapped after its last handle to them was dropped,
/// so that receiving them again costs no `mmap` and no page fault (a process caches only
/// segments it received, never ones it created; at most 32; each is let go once its creator
/// dropped it or exited). See README, "Repeat hand-off".
pub fn cached_segments() -> usize {
    cache::len()
}

/// Unmap every segment this process keeps only for repeat hand-off (see
/// [`cached_segments`]) now, instead of when their creators let go of them.
pub fn release_cached() {
    cache::clear()
}
