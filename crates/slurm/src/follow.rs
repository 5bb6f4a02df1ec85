//! Following one submitted job array: which array task claimed which chunk, the results
//! in the array directory, and Slurm's view of its array tasks — until every task of every
//! chunk has exactly one outcome.
//!
//! Outcomes, per chunk (see `claim.rs` for the array task's side):
//! - a result file: those tasks complete with what they returned;
//! - the chunk's `done` marker: the claimer reported all it had; a task without a result
//!   fails (`COMPLETED`, "ended without reporting");
//! - its claimer ended in Slurm without the marker (FAILED, CANCELLED, TIMEOUT,
//!   NODE_FAIL, …): its unfinished tasks fail with `JobFailed` naming that array task, the
//!   state and the end of its log;
//! - every array task ended and nobody claimed it: its tasks fail with `JobFailed` naming
//!   the array and the state the array tasks ended in (they never ran).
//!
//! A claim is read from the directory before the claimer's end is acted on, so a chunk is
//! never failed as unclaimed while its claimer's results are still to come.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

use poolrun_core::backend::ErasedPromise;
use poolrun_core::TaskError;

use crate::cluster::{self, TaskRow};
use crate::wire::ResultFile;
use crate::workdir;

/// An array that Slurm stopped reporting this long after it was submitted is gone.
const VANISHED_AFTER: Duration = Duration::from_secs(10);

/// Futures to complete (outside every lock: callbacks run there).
pub(crate) type Completions = Vec<(ErasedPromise, Result<ByteBuf, TaskError>)>;

/// One chunk of an array, as the driver follows it.
pub(crate) struct Chunk {
    /// Its tasks without an outcome yet.
    pub unfinished: HashMap<u64, ErasedPromise>,
    /// The next result file to read.
    next_file: u64,
    /// The array task that claimed it.
    owner: Option<usize>,
    ended: bool,
}

impl Chunk {
    pub(crate) fn new(unfinished: HashMap<u64, ErasedPromise>) -> Chunk {
        Chunk {
            unfinished,
            next_file: 0,
            owner: None,
            ended: false,
        }
    }
}

/// One submitted job array.
pub(crate) struct Array {
    /// Slurm's job id (empty while `sbatch` runs).
    pub job: String,
    pub dir: PathBuf,
    pub submitted: Instant,
    /// Slurm has listed it at least once.
    seen: bool,
    pub chunks: Vec<Chunk>,
    /// Per array task: the state it ended in, once it has.
    ended: Vec<Option<String>>,
}

impl Array {
    pub(crate) fn new(dir: PathBuf, chunks: Vec<Chunk>, array_tasks: usize) -> Array {
        Array {
            job: String::new(),
            dir,
            submitted: Instant::now(),
            seen: false,
            chunks,
            ended: vec![None; array_tasks],
        }
    }

    /// Every task has its outcome.
    pub(crate) fn finished(&self) -> bool {
        self.chunks.iter().all(|c| c.ended)
    }

    /// Submitted to Slurm and not finished.
    pub(crate) fn active(&self) -> bool {
        !self.job.is_empty() && !self.finished()
    }

    pub(crate) fn holds(&self, task: u64) -> bool {
        self.chunks.iter().any(|c| c.unfinished.contains_key(&task))
    }

    /// `(queued, running)`: tasks in unclaimed chunks, and in claimed ones.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let mut n = (0, 0);
        for c in self.chunks.iter().filter(|c| !c.ended) {
            match c.owner {
                Some(_) => n.1 += c.unfinished.len(),
                None => n.0 += c.unfinished.len(),
            }
        }
        n
    }

    /// Array tasks working on a chunk of this array now.
    pub(crate) fn busy_array_tasks(&self) -> usize {
        let mut owners: Vec<usize> = self
            .chunks
            .iter()
            .filter(|c| !c.ended && !c.unfinished.is_empty())
            .filter_map(|c| c.owner)
            .collect();
        owners.sort_unstable();
        owners.dedup();
        owners.len()
    }

    /// Every unfinished task's promise (the pool is going away).
    pub(crate) fn drain(&mut self) -> Vec<ErasedPromise> {
        self.chunks
            .iter_mut()
            .flat_map(|c| {
                c.ended = true;
                c.unfinished.drain().map(|(_, p)| p)
            })
            .collect()
    }

    /// Read new claims, results and done markers. True if a task failed for a cluster
    /// reason.
    pub(crate) fn read(&mut self, done: &mut Completions) -> bool {
        self.read_claims();
        let mut failed = false;
        for (j, c) in self.chunks.iter_mut().enumerate() {
            if c.ended || c.owner.is_none() {
                continue;
            }
            take_results(&self.dir, j, c, done);
            if workdir::done_path(&self.dir, j).exists() {
                // Written after its last result file: everything it had is read.
                take_results(&self.dir, j, c, done);
                c.ended = true;
                if !c.unfinished.is_empty() {
                    failed = true;
                    let e = TaskError::JobFailed {
                        job: format!("{}_{}", self.job, c.owner.unwrap_or(0)),
                        state: "COMPLETED".into(),
                        log: "the array task ended without reporting these tasks".into(),
                    };
                    done.extend(c.unfinished.drain().map(|(_, p)| (p, Err(e.clone()))));
                }
            }
        }
        failed
    }

    fn read_claims(&mut self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("claimed-")) else {
                continue;
            };
            let mut f = rest.split('-').map(str::parse::<usize>);
            if let (Some(Ok(j)), Some(Ok(by))) = (f.next(), f.next()) {
                if let Some(c) = self.chunks.get_mut(j) {
                    c.owner = Some(by);
                }
            }
        }
    }

    /// Apply Slurm's rows about this array. True if a task failed for a cluster reason.
    pub(crate) fn apply(&mut self, rows: &[TaskRow], done: &mut Completions) -> bool {
        let mine: Vec<&TaskRow> = rows.iter().filter(|r| r.array == self.job).collect();
        if !mine.is_empty() {
            self.seen = true;
        }
        let vanished = mine.is_empty() && (self.seen || self.submitted.elapsed() > VANISHED_AFTER);
        // Array tasks that ended since the last look.
        let mut newly = Vec::new();
        for (i, end) in self.ended.iter_mut().enumerate() {
            if end.is_some() {
                continue;
            }
            let row = mine.iter().find(|r| r.index == Some(i));
            // Not listed by index: pending in a grouped line (`123_[4-9]`), whose state
            // applies to all of them, or gone.
            let grouped = || mine.iter().find(|r| r.index.is_none());
            let state = match row.or_else(grouped) {
                Some(r) if cluster::is_terminal(&r.state) => Some(r.state.clone()),
                Some(_) => None,
                None if vanished => Some("UNKNOWN (no longer known to Slurm)".to_string()),
                None => None,
            };
            if let Some(s) = state {
                *end = Some(s);
                newly.push(i);
            }
        }
        if newly.is_empty() {
            return false;
        }
        // Claims and results written just before they ended count.
        self.read(done);
        let mut failed = false;
        for (j, c) in self.chunks.iter_mut().enumerate() {
            if c.ended {
                continue;
            }
            let (job, state) = match c.owner {
                Some(i) if newly.contains(&i) => (
                    format!("{}_{i}", self.job),
                    self.ended[i].clone().unwrap_or_default(),
                ),
                Some(_) => continue,
                None if self.ended.iter().all(Option::is_some) => {
                    (self.job.clone(), worst(&self.ended).to_string())
                }
                None => continue,
            };
            take_results(&self.dir, j, c, done);
            c.ended = true;
            if c.unfinished.is_empty() {
                continue;
            }
            failed = true;
            let log = match c.owner {
                Some(i) => {
                    let path = workdir::log_path(&self.dir, i);
                    let tail = workdir::tail(&path, 5);
                    if tail.is_empty() {
                        format!("(log: {})", path.display())
                    } else {
                        format!("{tail} (log: {})", path.display())
                    }
                }
                None => format!(
                    "no array task ran these tasks: all of them ended first (logs: {})",
                    self.dir.display()
                ),
            };
            let e = TaskError::JobFailed { job, state, log };
            done.extend(c.unfinished.drain().map(|(_, p)| (p, Err(e.clone()))));
        }
        failed
    }
}

/// The state to report for tasks no array task ran: the first that is not `COMPLETED`.
fn worst(ended: &[Option<String>]) -> &str {
    ended
        .iter()
        .flatten()
        .find(|s| s.as_str() != "COMPLETED")
        .or_else(|| ended.iter().flatten().next())
        .map_or("UNKNOWN", String::as_str)
}

/// Complete what chunk `j`'s new result files report (each file removed once read; a file
/// is complete once visible, being renamed into place).
fn take_results(dir: &Path, j: usize, c: &mut Chunk, done: &mut Completions) {
    loop {
        let path = workdir::result_path(dir, j, c.next_file);
        let Ok(f) = workdir::read_value::<ResultFile>(&path) else {
            return;
        };
        let _ = std::fs::remove_file(&path);
        c.next_file += 1;
        for (id, r) in f.results {
            if let Some(p) = c.unfinished.remove(&id) {
                done.push((p, r));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_end_names_unclaimed_failures() {
        let s = |v: &[&str]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        assert_eq!(
            worst(&s(&["COMPLETED", "CANCELLED", "TIMEOUT"])),
            "CANCELLED"
        );
        assert_eq!(worst(&s(&["COMPLETED"])), "COMPLETED");
        assert_eq!(worst(&[]), "UNKNOWN");
    }
}
