//! The array task: what the executable copy does when Slurm starts it for a pool.
//!
//! Entering worker mode needs no change to the user's `main`: a constructor that runs before
//! `main` (in test binaries too) sees `POOLRUN_SLURM_TASK` in the environment, runs the
//! array task and exits — `main` never runs. A program whose tasks need what its `main`
//! sets up first (the `poolrun` CLI installs its task registry there) asks the pool to
//! defer (`POOLRUN_SLURM_DEFER`) and calls [`run_if_array_task`] from `main` instead.
//!
//! The array task:
//! 1. reads the pool file and its chunk; proves it runs the submitter's image (SHA-256 of
//!    its own executable, invariant S1) — on a mismatch every task fails with a clear
//!    error and nothing runs;
//! 2. watches the heartbeat: a submitter silent for longer than the timeout is gone, so it
//!    cancels its whole array (nothing of it stays queued) and exits;
//! 3. runs its tasks on a local process pool (`cpus_per_task` workers: a segfault fails one
//!    task, not the chunk), skipping a task whose kill marker exists and killing one whose
//!    marker appears while it runs;
//! 4. writes results as they finish (atomically, a file per flush), then a done marker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_bytes::ByteBuf;

use poolrun_core::backend::Initializer;
use poolrun_core::{Executor, GilMode, PoolConfig, TaskError, TaskFuture};
use poolrun_procpool::ProcessPool;

use crate::image;
use crate::wire::{ChunkFile, ChunkTask, PoolFile, ResultFile, VERSION};
use crate::workdir::{self, WorkDir};

/// The array directory an array task serves.
pub(crate) const TASK_ENV: &str = "POOLRUN_SLURM_TASK";
/// Set when `main` runs the array task ([`run_if_array_task`]) instead of the constructor.
pub(crate) const DEFER_ENV: &str = "POOLRUN_SLURM_DEFER";

#[ctor::ctor(unsafe)]
fn enter_before_main() {
    if std::env::var_os(TASK_ENV).is_some() && std::env::var_os(DEFER_ENV).is_none() {
        std::process::exit(run_array_task());
    }
}

/// Keeps the constructor above in any executable that can create a `SlurmPool` (called
/// from `SlurmPool::new`): a linker drops an object file nothing refers to, and with it
/// the constructor.
pub(crate) fn keep_entry() {
    std::hint::black_box(enter_before_main as fn());
}

/// If this process was started by Slurm as an array task of a pool that deferred to
/// `main` (the `poolrun` CLI does), run it and exit; otherwise return at once.
pub fn run_if_array_task() {
    if std::env::var_os(TASK_ENV).is_some() {
        std::process::exit(run_array_task());
    }
}

/// An error every task of this array task fails with.
fn job_failed(job: &str, state: &str, why: String) -> TaskError {
    TaskError::JobFailed {
        job: job.to_string(),
        state: state.to_string(),
        log: why,
    }
}

fn run_array_task() -> i32 {
    let Some(array_dir) = std::env::var_os(TASK_ENV).map(PathBuf::from) else {
        return 2;
    };
    // A task that starts this executable again must not become an array task itself.
    std::env::remove_var(TASK_ENV);
    std::env::remove_var(DEFER_ENV);
    let index: usize = match std::env::var("SLURM_ARRAY_TASK_ID").map(|v| v.parse()) {
        Ok(Ok(i)) => i,
        _ => {
            eprintln!("poolrun array task: SLURM_ARRAY_TASK_ID is missing or not a number");
            return 2;
        }
    };
    let array_job = std::env::var("SLURM_ARRAY_JOB_ID").unwrap_or_default();
    let job = format!("{array_job}_{index}");
    let Some(root) = array_dir.parent().map(Path::to_path_buf) else {
        return 2;
    };
    let wd = WorkDir::open(root);
    let pool: PoolFile = match workdir::read_value(&wd.pool_file()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("poolrun array task {job}: cannot read the pool file: {e}");
            return 2;
        }
    };
    let chunk: ChunkFile = match workdir::read_value(&workdir::chunk_path(&array_dir, index)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("poolrun array task {job}: cannot read its chunk: {e}");
            return 2;
        }
    };
    start_heartbeat_watch(wd.heartbeat(), pool.heartbeat_timeout, array_job.clone());
    let mut out = Reporter::new(array_dir.clone(), index);
    if pool.version != VERSION {
        let e = job_failed(
            &job,
            "VERSION_MISMATCH",
            format!("pool file version {} is not {VERSION}", pool.version),
        );
        out.fail_all(&chunk.tasks, &e);
        return out.finish();
    }
    match image::hash_self() {
        Ok(h) if h == pool.exe_sha256 => {}
        Ok(h) => {
            let e = job_failed(
                &job,
                "BINARY_MISMATCH",
                format!(
                    "the executable Slurm started (sha256 {}) is not the submitter's (sha256 {}): \
                     no task was run from it",
                    image::hex(&h),
                    image::hex(&pool.exe_sha256)
                ),
            );
            out.fail_all(&chunk.tasks, &e);
            return out.finish();
        }
        Err(e) => {
            let e = job_failed(
                &job,
                "BINARY_MISMATCH",
                format!("cannot read its own executable: {e}"),
            );
            out.fail_all(&chunk.tasks, &e);
            return out.finish();
        }
    }
    let local = match ProcessPool::new(local_config(&pool)) {
        Ok(p) => p,
        Err(e) => {
            let e = job_failed(
                &job,
                "FAILED",
                format!("cannot start the local process pool: {e}"),
            );
            out.fail_all(&chunk.tasks, &e);
            return out.finish();
        }
    };
    run_chunk(&local, chunk, &array_dir, &mut out);
    local.shutdown(true, false);
    out.finish()
}

/// The local pool the pool file describes.
fn local_config(pool: &PoolFile) -> PoolConfig {
    let mut cfg = PoolConfig::new()
        .workers(pool.workers)
        .daemon(true)
        .task_timeout(pool.task_timeout)
        .max_tasks_per_child(pool.max_tasks_per_child)
        .gil(match pool.gil {
            Some(switch_interval) => GilMode::On { switch_interval },
            None => GilMode::Off,
        });
    if let Some((runner, func, arg)) = &pool.initializer {
        // SAFETY: invariant S1: this process runs the submitter's image (hash checked
        // above), and the offsets were taken there from `Initializer::portable`.
        let init = unsafe {
            Initializer::from_portable(
                image::from_offset(*runner),
                image::from_offset(*func),
                arg.to_vec(),
            )
        };
        cfg = cfg.initializer_from(init);
    }
    cfg
}

/// Run the chunk's tasks on `local`, reporting results as they finish.
fn run_chunk(local: &ProcessPool, chunk: ChunkFile, array_dir: &Path, out: &mut Reporter) {
    let mut ids: Vec<u64> = Vec::new();
    let mut pending: Vec<Option<TaskFuture<Vec<u8>>>> = Vec::new();
    // Consecutive tasks of one function travel to the local pool as one batch.
    let mut group: Vec<ChunkTask> = Vec::new();
    let mut flush_group = |group: &mut Vec<ChunkTask>| {
        let Some(first) = group.first() else { return };
        let (t, f) = (first.trampoline, first.func);
        ids.extend(group.iter().map(|c| c.id));
        let args = group.drain(..).map(|c| c.arg.into_vec()).collect();
        // SAFETY: invariant S1: this process runs the submitter's image (hash checked), and
        // the offsets were taken there from `poolrun_procpool::task_addrs`, so transport
        // invariant T1 holds for the translated addresses.
        let futs =
            unsafe { local.submit_encoded(image::from_offset(t), image::from_offset(f), args) };
        pending.extend(futs.into_iter().map(Some));
    };
    for task in chunk.tasks {
        if workdir::kill_path(array_dir, task.id).exists() {
            out.push(task.id, Err(TaskError::Cancelled));
            continue;
        }
        if group
            .first()
            .is_some_and(|g| (g.trampoline, g.func) != (task.trampoline, task.func))
        {
            flush_group(&mut group);
        }
        group.push(task);
    }
    flush_group(&mut group);
    let by_id: HashMap<u64, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut left = pending.len();
    let mut next = 0usize;
    let mut last_kill_scan = Instant::now();
    while left > 0 {
        // Wait a little for the oldest unfinished task, then collect whatever is done.
        while next < pending.len() && pending[next].is_none() {
            next += 1;
        }
        if let Some(Some(f)) = pending.get(next) {
            f.wait(Some(Duration::from_millis(20)));
        }
        for (i, slot) in pending.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|f| f.done()) {
                if let Some(f) = slot.take() {
                    out.push(ids[i], f.result().map(ByteBuf::from));
                    left -= 1;
                }
            }
        }
        if last_kill_scan.elapsed() >= Duration::from_millis(50) {
            last_kill_scan = Instant::now();
            for id in kill_markers(array_dir) {
                if let Some(Some(f)) = by_id.get(&id).and_then(|&i| pending.get(i)) {
                    f.kill();
                }
            }
        }
        out.maybe_flush();
    }
}

/// Task ids with a kill marker in the array directory.
fn kill_markers(array_dir: &Path) -> Vec<u64> {
    let Ok(rd) = std::fs::read_dir(array_dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("kill-")?.parse().ok())
        .collect()
}

/// Writes this array task's results out as they come (see `wire.rs`).
struct Reporter {
    array_dir: PathBuf,
    index: usize,
    buf: Vec<(u64, Result<ByteBuf, TaskError>)>,
    files: u64,
    last: Instant,
    write_failed: bool,
}

impl Reporter {
    fn new(array_dir: PathBuf, index: usize) -> Self {
        Reporter {
            array_dir,
            index,
            buf: Vec::new(),
            files: 0,
            last: Instant::now(),
            write_failed: false,
        }
    }

    fn push(&mut self, id: u64, r: Result<ByteBuf, TaskError>) {
        self.buf.push((id, r));
    }

    fn fail_all(&mut self, tasks: &[ChunkTask], e: &TaskError) {
        for t in tasks {
            self.push(t.id, Err(e.clone()));
        }
    }

    fn maybe_flush(&mut self) {
        if !self.buf.is_empty() && self.last.elapsed() >= ResultFile::FLUSH_EVERY {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.last = Instant::now();
        if self.buf.is_empty() {
            return;
        }
        let file = ResultFile {
            results: std::mem::take(&mut self.buf),
        };
        let path = workdir::result_path(&self.array_dir, self.index, self.files);
        self.files += 1;
        if let Err(e) = workdir::write_value(&path, &file) {
            eprintln!("poolrun array task: cannot write {}: {e}", path.display());
            self.write_failed = true;
        }
    }

    /// Write what is left and the done marker; the exit status.
    fn finish(mut self) -> i32 {
        self.flush();
        let done = workdir::done_path(&self.array_dir, self.index);
        if let Err(e) = workdir::write_atomic(&done, b"") {
            eprintln!("poolrun array task: cannot write {}: {e}", done.display());
            self.write_failed = true;
        }
        i32::from(self.write_failed)
    }
}

/// Exit (cancelling the whole array) once the submitter has been silent for `timeout`.
fn start_heartbeat_watch(path: PathBuf, timeout: Duration, array_job: String) {
    let _ = std::thread::Builder::new()
        .name("poolrun-heartbeat".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            // A heartbeat that is gone (the work directory removed) is as silent as it gets.
            let age = match std::fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(t) => SystemTime::now().duration_since(t).ok(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Duration::MAX),
                Err(_) => None,
            };
            if age.is_some_and(|a| a > timeout) {
                eprintln!(
                    "poolrun array task: the submitter has been silent for more than {timeout:?}: \
                     cancelling array {array_job} and exiting"
                );
                crate::cluster::scancel(std::slice::from_ref(&array_job));
                std::process::exit(3);
            }
        });
}
