//! The work directory of one pool: its layout and atomic file writes.
//!
//! ```text
//! <work dir>/poolrun-<pid>-<n>-<rand>/   mode 0700, made by the pool
//!   exe            a copy of the submitter's executable (what array tasks run)
//!   pool           the PoolFile (wire.rs)
//!   run.sh         the batch script: exec the copy
//!   heartbeat      rewritten by the pool every heartbeat-timeout/6
//!   a<K>/          job array K (0, 1, 2, …)
//!     chunk-<I>    array task I's tasks
//!     r-<I>-<N>    its results, N counting up (rename makes each appear whole)
//!     kill-<ID>    TaskFuture::kill of task ID: the array task skips or kills it
//!     done-<I>     array task I reported everything
//!     log-<I>.txt  its stdout and stderr (Slurm's --output)
//! ```
//!
//! The directory must be on a file system the nodes share. It is removed after a clean
//! shutdown, and kept — logs included — when a task failed (the error says where).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{de::DeserializeOwned, Serialize};

use poolrun_core::codec;

/// One pool's directory.
#[derive(Debug, Clone)]
pub(crate) struct WorkDir {
    root: PathBuf,
}

impl WorkDir {
    /// Make a fresh, private directory under `base` (created too, if missing).
    pub(crate) fn create(base: &Path) -> io::Result<WorkDir> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)?;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let rand = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let root = base.join(format!("poolrun-{}-{n}-{rand:08x}", std::process::id()));
        fs::DirBuilder::new().mode(0o700).create(&root)?;
        Ok(WorkDir { root })
    }

    /// An existing directory (an array task's view).
    pub(crate) fn open(root: PathBuf) -> WorkDir {
        WorkDir { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
    pub(crate) fn exe(&self) -> PathBuf {
        self.root.join("exe")
    }
    pub(crate) fn pool_file(&self) -> PathBuf {
        self.root.join("pool")
    }
    pub(crate) fn script(&self) -> PathBuf {
        self.root.join("run.sh")
    }
    pub(crate) fn heartbeat(&self) -> PathBuf {
        self.root.join("heartbeat")
    }
    pub(crate) fn array(&self, k: u32) -> PathBuf {
        self.root.join(format!("a{k}"))
    }

    /// Make array `k`'s directory.
    pub(crate) fn create_array(&self, k: u32) -> io::Result<PathBuf> {
        let d = self.array(k);
        fs::DirBuilder::new().mode(0o700).create(&d)?;
        Ok(d)
    }

    /// Remove the whole directory.
    pub(crate) fn remove(&self) -> io::Result<()> {
        fs::remove_dir_all(&self.root)
    }
}

/// Paths inside one array's directory.
pub(crate) fn chunk_path(array: &Path, i: usize) -> PathBuf {
    array.join(format!("chunk-{i}"))
}
pub(crate) fn claim_path(array: &Path, j: usize, by: usize) -> PathBuf {
    array.join(format!("claimed-{j}-{by}"))
}
pub(crate) fn result_path(array: &Path, i: usize, n: u64) -> PathBuf {
    array.join(format!("r-{i}-{n}"))
}
pub(crate) fn kill_path(array: &Path, id: u64) -> PathBuf {
    array.join(format!("kill-{id}"))
}
pub(crate) fn done_path(array: &Path, i: usize) -> PathBuf {
    array.join(format!("done-{i}"))
}
pub(crate) fn log_path(array: &Path, i: usize) -> PathBuf {
    array.join(format!("log-{i}.txt"))
}

/// Write `bytes` to `path` atomically: a temporary file in the same directory, flushed,
/// then renamed over `path`, so a reader sees all of it or nothing.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_data()?;
    }
    fs::rename(&tmp, path)
}

/// Encode `value` and write it atomically.
pub(crate) fn write_value<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = codec::encode(value).map_err(|e| io::Error::other(e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Read and decode a file written by [`write_value`].
pub(crate) fn read_value<T: DeserializeOwned>(path: &Path) -> io::Result<T> {
    let bytes = fs::read(path)?;
    codec::decode(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}

/// The last `lines` lines of a text file (for error messages), empty if unreadable.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dirs_and_atomic_files() {
        let base = std::env::temp_dir().join(format!("poolrun-wd-{}", std::process::id()));
        let w = WorkDir::create(&base).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(w.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let a = w.create_array(0).unwrap();
        write_value(&chunk_path(&a, 3), &vec![1u32, 2, 3]).unwrap();
        assert_eq!(
            read_value::<Vec<u32>>(&chunk_path(&a, 3)).unwrap(),
            vec![1, 2, 3]
        );
        fs::write(log_path(&a, 0), "one\n\ntwo\nthree\n").unwrap();
        assert_eq!(tail(&log_path(&a, 0), 2), "two | three");
        w.remove().unwrap();
        fs::remove_dir_all(&base).unwrap();
    }
}
