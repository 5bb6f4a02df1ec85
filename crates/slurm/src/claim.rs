//! The array task's side of an array directory: claiming chunks and reporting results.
//!
//! An array of `n` array tasks shares `m ≥ n` chunk files. Each array task claims chunks in
//! index order by renaming `chunk-J` to `claimed-J-I` (`I`: its own array index) — a rename
//! either happens once or fails, on a local or a network file system alike, so every chunk
//! is claimed by exactly one array task (invariant C1). An array task claims its next chunk
//! when its local pool runs short of work, so the array balances itself: one wave of array
//! tasks, however uneven the tasks.
//!
//! Results of chunk `J` go to `r-J-N` (`N` counting up, each written atomically), then a
//! `done-J` marker once all of its tasks are reported. Only the claimer writes these, so
//! the names never collide.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_bytes::ByteBuf;

use poolrun_core::TaskError;

use crate::wire::{ChunkFile, Outcome, ResultFile};
use crate::workdir;

/// Claims the chunks of one array, in index order.
pub(crate) struct Claimer {
    dir: PathBuf,
    me: usize,
    next: usize,
    count: usize,
}

impl Claimer {
    /// The chunks of `dir` (all written before the array was submitted), for array task `me`.
    pub(crate) fn new(dir: PathBuf, me: usize) -> Claimer {
        let count = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| chunk_index(e.file_name().to_str()?))
                    .map(|j| j + 1)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        Claimer {
            dir,
            me,
            next: 0,
            count,
        }
    }

    /// Claim the next unclaimed chunk: its index and contents (`Err`: claimed, unreadable).
    pub(crate) fn next(&mut self) -> Option<(usize, Result<ChunkFile, String>)> {
        while self.next < self.count {
            let j = self.next;
            self.next += 1;
            let to = workdir::claim_path(&self.dir, j, self.me);
            // C1: the rename succeeds for exactly one claimer.
            if std::fs::rename(workdir::chunk_path(&self.dir, j), &to).is_ok() {
                let chunk = workdir::read_value(&to).map_err(|e| e.to_string());
                return Some((j, chunk));
            }
        }
        None
    }
}

/// `J` of `chunk-J` or `claimed-J-I`.
fn chunk_index(name: &str) -> Option<usize> {
    if let Some(j) = name.strip_prefix("chunk-") {
        return j.parse().ok();
    }
    name.strip_prefix("claimed-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Task ids with a kill marker in the array directory.
pub(crate) fn kill_markers(dir: &Path) -> Vec<u64> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("kill-")?.parse().ok())
        .collect()
}

/// Writes an array task's results out as they come, per chunk.
pub(crate) struct Reporter {
    dir: PathBuf,
    /// Per claimed chunk: results not yet written, and result files written so far.
    chunks: BTreeMap<usize, (Vec<Outcome>, u64)>,
    last: Instant,
    write_failed: bool,
}

impl Reporter {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Reporter {
            dir,
            chunks: BTreeMap::new(),
            last: Instant::now(),
            write_failed: false,
        }
    }

    pub(crate) fn push(&mut self, chunk: usize, id: u64, r: Result<ByteBuf, TaskError>) {
        self.chunks.entry(chunk).or_default().0.push((id, r));
    }

    /// Write what gathered, every [`ResultFile::FLUSH_EVERY`].
    pub(crate) fn maybe_flush(&mut self) {
        if self.last.elapsed() >= ResultFile::FLUSH_EVERY {
            self.last = Instant::now();
            let chunks: Vec<usize> = self.chunks.keys().copied().collect();
            for j in chunks {
                self.flush(j);
            }
        }
    }

    fn flush(&mut self, j: usize) {
        let Some((buf, files)) = self.chunks.get_mut(&j) else {
            return;
        };
        if buf.is_empty() {
            return;
        }
        let file = ResultFile {
            results: std::mem::take(buf),
        };
        let path = workdir::result_path(&self.dir, j, *files);
        *files += 1;
        if let Err(e) = workdir::write_value(&path, &file) {
            eprintln!("poolrun array task: cannot write {}: {e}", path.display());
            self.write_failed = true;
        }
    }

    /// Chunk `j` is over: write its last results, then its done marker.
    pub(crate) fn finish_chunk(&mut self, j: usize) {
        self.flush(j);
        self.chunks.remove(&j);
        let done = workdir::done_path(&self.dir, j);
        if let Err(e) = workdir::write_atomic(&done, b"") {
            eprintln!("poolrun array task: cannot write {}: {e}", done.display());
            self.write_failed = true;
        }
    }

    /// The array task's exit status: 1 if a result could not be written.
    pub(crate) fn status(&self) -> i32 {
        i32::from(self.write_failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ChunkTask;

    fn chunk(ids: &[u64]) -> ChunkFile {
        ChunkFile {
            tasks: ids
                .iter()
                .map(|&id| ChunkTask {
                    id,
                    trampoline: 0,
                    func: 0,
                    arg: ByteBuf::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn every_chunk_is_claimed_once_by_racing_claimers() {
        let dir = std::env::temp_dir().join(format!("poolrun-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for j in 0..200usize {
            workdir::write_value(&workdir::chunk_path(&dir, j), &chunk(&[j as u64])).unwrap();
        }
        let claimed: Vec<Vec<usize>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|me| {
                    let dir = dir.clone();
                    s.spawn(move || {
                        let mut c = Claimer::new(dir, me);
                        let mut got = Vec::new();
                        while let Some((j, chunk)) = c.next() {
                            assert_eq!(chunk.unwrap().tasks[0].id, j as u64);
                            got.push(j);
                        }
                        got
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<usize> = claimed.concat();
        all.sort();
        assert_eq!(all, (0..200).collect::<Vec<_>>(), "each chunk exactly once");
        // A late claimer finds nothing, and still counts the chunks from the claims.
        let mut late = Claimer::new(dir.clone(), 9);
        assert_eq!(late.count, 200);
        assert!(late.next().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
