//! The driver: one thread per pool that gathers submissions into job arrays, submits them
//! with `sbatch`, and follows them — results from the work directory, states from one
//! `squeue` call for all the pool's arrays — completing every future exactly once.
//!
//! ```text
//! submit ──▶ pending (cancellable) ──batch window──▶ chunk files + sbatch --array=0-M%N
//!                                                        │ (tasks now count as running)
//!  poll: r-<I>-<N> result files ─▶ complete futures      ▼
//!        done-<I> marker / squeue terminal state ─▶ fail what is left: JobFailed
//!  kill(): a kill-<ID> marker the array task reads
//!  heartbeat: rewritten every timeout/6; array tasks of a dead submitter cancel themselves
//! ```
//!
//! Futures are completed outside the state lock (done-callbacks run in this thread).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

use poolrun_core::backend::{ErasedPromise, KillRoute, ThreadSet};
use poolrun_core::{Deadline, GilMode, PoolConfig, PoolError, TaskError};

use crate::cluster;
use crate::config::SlurmConfig;
use crate::image;
use crate::pool::route_of;
use crate::wire::{ChunkFile, ChunkTask, PoolFile, ResultFile, VERSION};
use crate::workdir::{self, WorkDir};

/// Array tasks per concurrent slot when chunking is automatic.
const CHUNKS_PER_SLOT: usize = 4;
/// A submission this large goes to `sbatch` without waiting for the batch window.
const BATCH_NOW: usize = 100_000;
/// An array that Slurm stopped reporting this long after it was submitted is gone.
const VANISHED_AFTER: Duration = Duration::from_secs(10);

/// A submitted task not yet in a job array.
pub(crate) struct Pending {
    pub id: u64,
    pub trampoline: i64,
    pub func: i64,
    pub arg: Vec<u8>,
    pub promise: ErasedPromise,
}

/// One array task's share, as the driver follows it.
struct Chunk {
    index: usize,
    /// Its tasks without a result yet.
    unfinished: HashMap<u64, ErasedPromise>,
    /// The next result file to read.
    next_file: u64,
    /// Slurm reported it running.
    running: bool,
    ended: bool,
}

/// One submitted job array.
struct Array {
    /// Slurm's job id (empty while `sbatch` runs).
    job: String,
    dir: PathBuf,
    submitted: Instant,
    /// Slurm has listed it at least once.
    seen: bool,
    chunks: Vec<Chunk>,
}

impl Array {
    fn finished(&self) -> bool {
        self.chunks.iter().all(|c| c.ended)
    }
}

#[derive(Default)]
struct State {
    pending: Vec<Pending>,
    first_pending: Option<Instant>,
    arrays: Vec<Array>,
    /// Task ids `kill()`ed after their array was submitted (markers to write).
    kills: Vec<u64>,
    closed: bool,
    killing: bool,
    /// A task failed for a cluster reason: keep the work directory.
    keep_dir: bool,
    next_array: u32,
    done: usize,
}

/// What the pool handle, the driver and the futures' kill route share.
pub(crate) struct Shared {
    cfg: SlurmConfig,
    /// Array tasks allowed to run at once (`%N`).
    workers: usize,
    pub dir: WorkDir,
    state: Mutex<State>,
    wake: Condvar,
    next_task: AtomicU64,
    route: Weak<dyn KillRoute>,
    pub threads: ThreadSet,
}

/// Build the pool's state and work directory and start its driver thread.
pub(crate) fn start(
    cfg: PoolConfig,
    slurm: SlurmConfig,
    defer: bool,
) -> Result<Arc<Shared>, PoolError> {
    let base = match slurm.get_work_dir() {
        Some(d) => d.to_path_buf(),
        None => default_base(),
    };
    // The errors name the path: a work directory is a setting the user can fix.
    let io_at = |what: &str, path: &Path, e: std::io::Error| {
        PoolError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot {what} {}: {e}", path.display()),
        ))
    };
    let dir = WorkDir::create(&base).map_err(|e| io_at("create a work directory in", &base, e))?;
    let setup = || -> std::io::Result<()> {
        let hash = image::copy_self(&dir.exe())?;
        let pool = PoolFile {
            version: VERSION,
            exe_sha256: hash,
            workers: slurm.get_cpus_per_task(),
            task_timeout: cfg.get_task_timeout(),
            max_tasks_per_child: cfg.get_max_tasks_per_child(),
            gil: match cfg.get_gil() {
                GilMode::On { switch_interval } => Some(switch_interval),
                GilMode::Off => None,
            },
            initializer: cfg.get_initializer().map(|i| {
                let (runner, func, arg) = i.portable();
                (
                    image::to_offset(runner),
                    image::to_offset(func),
                    ByteBuf::from(arg.unwrap_or_default().to_vec()),
                )
            }),
            heartbeat_timeout: slurm.get_heartbeat_timeout(),
        };
        workdir::write_value(&dir.pool_file(), &pool)?;
        write_script(&dir, defer)?;
        workdir::write_atomic(&dir.heartbeat(), b"")
    };
    if let Err(e) = setup() {
        let _ = dir.remove();
        return Err(io_at("write the work directory", dir.root(), e));
    }
    let shared = Arc::new_cyclic(|me| Shared {
        cfg: slurm,
        workers: cfg.get_workers(),
        dir,
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        next_task: AtomicU64::new(1),
        route: route_of(me),
        threads: ThreadSet::new(),
    });
    let s2 = shared.clone();
    if let Err(e) = shared
        .threads
        .spawn("poolrun-slurm".into(), move || drive(&s2))
    {
        let _ = shared.dir.remove();
        return Err(PoolError::os("spawn the driver thread", e));
    }
    Ok(shared)
}

/// `$HOME/.cache/poolrun/slurm` (home is usually shared by every node), else the current
/// directory's `.poolrun-slurm`.
fn default_base() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/poolrun/slurm"),
        None => PathBuf::from(".poolrun-slurm"),
    }
}

/// The batch script: run the executable copy in worker mode for the array directory given
/// as its first argument.
fn write_script(dir: &WorkDir, defer: bool) -> std::io::Result<()> {
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let defer = if defer { "POOLRUN_SLURM_DEFER=1 " } else { "" };
    let script = format!(
        "#!/bin/sh\n# poolrun: one array task of a pool: run the pool's executable in worker mode.\n\
         {}=\"$1\" {defer}exec {}\n",
        crate::arraytask::TASK_ENV,
        q(&dir.exe())
    );
    workdir::write_atomic(&dir.script(), script.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.script(), std::fs::Permissions::from_mode(0o700))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn route(&self) -> Weak<dyn KillRoute> {
        self.route.clone()
    }

    /// `n` fresh task ids: the first (never 0).
    pub(crate) fn task_ids(&self, n: usize) -> u64 {
        self.next_task.fetch_add(n as u64, Ordering::Relaxed)
    }

    /// Queue submitted tasks; given back after shutdown.
    pub(crate) fn push(&self, items: Vec<Pending>) -> Result<(), Vec<Pending>> {
        if items.is_empty() {
            return Ok(());
        }
        let mut st = self.lock();
        if st.closed {
            return Err(items);
        }
        let was_empty = st.pending.is_empty();
        st.pending.extend(items);
        if was_empty {
            st.first_pending = Some(Instant::now());
        }
        drop(st);
        self.wake.notify_all();
        Ok(())
    }

    /// `kill()` of a submitted task: leave a marker for its array task.
    pub(crate) fn request_kill(&self, task: u64) {
        let mut st = self.lock();
        let held = st
            .arrays
            .iter()
            .any(|a| a.chunks.iter().any(|c| c.unfinished.contains_key(&task)));
        if held {
            st.kills.push(task);
            drop(st);
            self.wake.notify_all();
        }
    }

    /// Stop accepting work; with `cancel_pending`, cancel what is not submitted yet.
    pub(crate) fn close(&self, cancel_pending: bool) {
        let mut st = self.lock();
        st.closed = true;
        let taken = if cancel_pending {
            std::mem::take(&mut st.pending)
        } else {
            Vec::new()
        };
        drop(st);
        for p in taken {
            p.promise.cancel();
        }
        self.wake.notify_all();
    }

    /// Daemon drop: close, cancel the queue, `scancel` the pool's arrays.
    pub(crate) fn kill(&self) {
        self.close(true);
        self.lock().killing = true;
        self.wake.notify_all();
    }

    /// Wait for the driver (not from the driver itself).
    pub(crate) fn join(&self, deadline: Deadline) -> bool {
        self.threads.join_until(deadline)
    }

    pub(crate) fn progress(&self) -> (usize, usize, usize) {
        let st = self.lock();
        let mut queued = st.pending.len();
        let mut running = 0;
        for c in st.arrays.iter().flat_map(|a| a.chunks.iter()) {
            if c.running {
                running += c.unfinished.len();
            } else {
                queued += c.unfinished.len();
            }
        }
        (queued, running, st.done)
    }

    pub(crate) fn active_jobs(&self) -> Vec<String> {
        self.lock()
            .arrays
            .iter()
            .filter(|a| !a.finished() && !a.job.is_empty())
            .map(|a| a.job.clone())
            .collect()
    }
}

/// The driver thread's loop.
fn drive(s: &Arc<Shared>) {
    let poll_every = s.cfg.get_poll_interval();
    let beat_every = s.cfg.get_heartbeat_timeout() / 6;
    let mut next_poll = Instant::now();
    let mut next_beat = Instant::now() + beat_every;
    loop {
        let mut st = s.lock();
        if st.killing {
            let jobs: Vec<String> = st
                .arrays
                .iter()
                .filter(|a| !a.finished() && !a.job.is_empty())
                .map(|a| a.job.clone())
                .collect();
            let pending = std::mem::take(&mut st.pending);
            let running: Vec<ErasedPromise> = st
                .arrays
                .iter_mut()
                .flat_map(|a| a.chunks.iter_mut())
                .flat_map(|c| c.unfinished.drain().map(|(_, p)| p))
                .collect();
            drop(st);
            cluster::scancel(&jobs);
            for p in pending {
                p.promise.cancel();
            }
            for p in running {
                p.fail(TaskError::Shutdown);
            }
            break;
        }
        let window_over = st
            .first_pending
            .is_some_and(|t| t.elapsed() >= s.cfg.get_batch_window());
        let submit_now =
            !st.pending.is_empty() && (st.closed || window_over || st.pending.len() >= BATCH_NOW);
        let batch = if submit_now {
            st.first_pending = None;
            std::mem::take(&mut st.pending)
        } else {
            Vec::new()
        };
        let kills: Vec<(PathBuf, u64)> = std::mem::take(&mut st.kills)
            .into_iter()
            .filter_map(|id| {
                st.arrays
                    .iter()
                    .find(|a| a.chunks.iter().any(|c| c.unfinished.contains_key(&id)))
                    .map(|a| (a.dir.clone(), id))
            })
            .collect();
        let idle = st.pending.is_empty() && st.arrays.iter().all(Array::finished);
        if st.closed && idle && batch.is_empty() {
            break;
        }
        drop(st);

        if !batch.is_empty() {
            submit_array(s, batch);
        }
        for (dir, id) in kills {
            if let Err(e) = workdir::write_atomic(&workdir::kill_path(&dir, id), b"") {
                eprintln!(
                    "poolrun: cannot write a kill marker in {}: {e}",
                    dir.display()
                );
            }
        }
        let now = Instant::now();
        if now >= next_beat {
            let _ = workdir::write_atomic(&s.dir.heartbeat(), b"");
            next_beat = now + beat_every;
        }
        if now >= next_poll {
            poll(s);
            next_poll = Instant::now() + poll_every;
        }

        let st = s.lock();
        if st.killing || (st.closed && !st.pending.is_empty()) {
            continue;
        }
        let mut until = next_poll.min(next_beat);
        if let Some(t) = st.first_pending {
            until = until.min(t + s.cfg.get_batch_window());
        }
        let wait = until.saturating_duration_since(Instant::now());
        if !wait.is_zero() && st.kills.is_empty() {
            let _ = s
                .wake
                .wait_timeout(st, wait)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
    // Final: the work directory goes unless a task failed for a cluster reason.
    let failed = s.lock().keep_dir;
    if failed {
        eprintln!(
            "poolrun: slurm pool: a task failed on the cluster; its job files and logs are kept in {}",
            s.dir.root().display()
        );
    } else if !s.cfg.get_keep_work_dir() {
        let _ = s.dir.remove();
    }
}

/// How many array tasks `n` tasks become.
fn chunk_count(s: &Shared, n: usize) -> usize {
    let m = match s.cfg.get_tasks_per_array_task() {
        Some(per) => n.div_ceil(per.max(1)),
        None => n.min(s.workers.saturating_mul(CHUNKS_PER_SLOT).max(1)),
    };
    m.clamp(1, s.cfg.get_max_array_size().max(1))
}

/// Write the chunk files for `batch` and submit them as one job array.
fn submit_array(s: &Arc<Shared>, batch: Vec<Pending>) {
    let k = {
        let mut st = s.lock();
        st.next_array += 1;
        st.next_array - 1
    };
    let fail = |promises: Vec<ErasedPromise>, why: String| {
        s.lock().keep_dir = true;
        for p in promises {
            p.fail(TaskError::JobFailed {
                job: "(not submitted)".into(),
                state: "SUBMIT_FAILED".into(),
                log: why.clone(),
            });
        }
    };
    let dir = match s.dir.create_array(k) {
        Ok(d) => d,
        Err(e) => {
            let live = batch.into_iter().filter(|p| p.promise.start());
            let promises = live.map(|p| p.promise).collect();
            return fail(promises, format!("cannot create the array directory: {e}"));
        }
    };
    // The tasks start and the array is followed in one step under the lock: from the
    // moment a future reports `running()`, `kill()` finds its task here (the array has no
    // job id until `sbatch` answers). A task cancelled before this point is dropped.
    let (slot, files) = {
        let mut st = s.lock();
        let live: Vec<Pending> = batch.into_iter().filter(|p| p.promise.start()).collect();
        if live.is_empty() {
            drop(st);
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let m = chunk_count(s, live.len());
        let (chunks, files) = split(live, m);
        st.arrays.push(Array {
            job: String::new(),
            dir: dir.clone(),
            submitted: Instant::now(),
            seen: false,
            chunks,
        });
        (st.arrays.len() - 1, files)
    };
    let take_back = || -> Vec<ErasedPromise> {
        let chunks = std::mem::take(&mut s.lock().arrays[slot].chunks);
        chunks
            .into_iter()
            .flat_map(|c| c.unfinished.into_values())
            .collect()
    };
    let written = files
        .iter()
        .enumerate()
        .try_for_each(|(i, f)| workdir::write_value(&workdir::chunk_path(&dir, i), f));
    if let Err(e) = written {
        let why = format!("cannot write the job files in {}: {e}", dir.display());
        return fail(take_back(), why);
    }
    let mut args = vec![
        format!("--array=0-{}%{}", files.len() - 1, s.workers.max(1)),
        format!("--job-name=poolrun-{}", std::process::id()),
        format!("--output={}/log-%a.txt", dir.display()),
    ];
    args.extend(s.cfg.sbatch_options());
    match cluster::sbatch(&args, &s.dir.script(), &[dir.display().to_string()]) {
        Ok(job) => {
            let mut st = s.lock();
            let a = &mut st.arrays[slot];
            a.job = job;
            a.submitted = Instant::now();
        }
        Err(e) => fail(take_back(), e),
    }
}

/// Split `live` into `m` chunks of near-equal size, in submission order: the driver's
/// view (promises by task id) and the files the array tasks read.
fn split(live: Vec<Pending>, m: usize) -> (Vec<Chunk>, Vec<ChunkFile>) {
    let n = live.len();
    let mut chunks: Vec<Chunk> = Vec::with_capacity(m);
    let mut files: Vec<ChunkFile> = Vec::with_capacity(m);
    let mut it = live.into_iter();
    for i in 0..m {
        let size = n / m + usize::from(i < n % m);
        let mut file = ChunkFile {
            tasks: Vec::with_capacity(size),
        };
        let mut unfinished = HashMap::with_capacity(size);
        for p in it.by_ref().take(size) {
            file.tasks.push(ChunkTask {
                id: p.id,
                trampoline: p.trampoline,
                func: p.func,
                arg: ByteBuf::from(p.arg),
            });
            unfinished.insert(p.id, p.promise);
        }
        chunks.push(Chunk {
            index: i,
            unfinished,
            next_file: 0,
            running: false,
            ended: false,
        });
        files.push(file);
    }
    (chunks, files)
}

/// What one poll found: futures to complete, outside the lock.
type Completions = Vec<(ErasedPromise, Result<ByteBuf, TaskError>)>;

/// Read new results, done markers and Slurm's view of the pool's arrays.
fn poll(s: &Arc<Shared>) {
    let mut done: Completions = Vec::new();
    // 1. Results and done markers (no Slurm call needed).
    let active: Vec<(usize, PathBuf)> = {
        let st = s.lock();
        st.arrays
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.finished())
            .map(|(i, a)| (i, a.dir.clone()))
            .collect()
    };
    for (ai, dir) in &active {
        read_results(s, *ai, dir, &mut done);
    }
    // 2. Slurm's states, one call for every array still going.
    let jobs: Vec<String> = {
        let st = s.lock();
        st.arrays
            .iter()
            .filter(|a| !a.finished() && !a.job.is_empty())
            .map(|a| a.job.clone())
            .collect()
    };
    if !jobs.is_empty() {
        match cluster::squeue(&jobs) {
            Ok(mut rows) => {
                // Arrays squeue no longer knows: ask the completion record.
                let gone: Vec<String> = jobs
                    .iter()
                    .filter(|j| !rows.iter().any(|r| &r.array == *j))
                    .cloned()
                    .collect();
                rows.extend(cluster::sacct(&gone));
                apply_states(s, &rows, &mut done)
            }
            Err(e) => eprintln!("poolrun: slurm pool: squeue failed ({e}); retrying"),
        }
    }
    complete(s, done);
}

/// Read array `ai`'s new result files and done markers.
fn read_results(s: &Shared, ai: usize, dir: &Path, done: &mut Completions) {
    let indices: Vec<(usize, u64)> = {
        let st = s.lock();
        let Some(a) = st.arrays.get(ai) else { return };
        a.chunks
            .iter()
            .filter(|c| !c.ended)
            .map(|c| (c.index, c.next_file))
            .collect()
    };
    for (index, mut next) in indices {
        let results = take_results(dir, index, &mut next);
        let finished = workdir::done_path(dir, index).exists();
        let mut st = s.lock();
        let Some(c) = st.arrays.get_mut(ai).and_then(|a| a.chunks.get_mut(index)) else {
            continue;
        };
        c.next_file = next;
        for (id, r) in results {
            if let Some(p) = c.unfinished.remove(&id) {
                done.push((p, r));
            }
        }
        if finished {
            // Everything it had is reported; whatever is left it never ran (it cannot
            // happen unless a file was lost).
            let job = st.arrays[ai].job.clone();
            let c = &mut st.arrays[ai].chunks[index];
            c.ended = true;
            let left: Vec<ErasedPromise> = c.unfinished.drain().map(|(_, p)| p).collect();
            if !left.is_empty() {
                let e = TaskError::JobFailed {
                    job: format!("{job}_{index}"),
                    state: "COMPLETED".into(),
                    log: "the array task ended without reporting these tasks".into(),
                };
                st.keep_dir = true;
                done.extend(left.into_iter().map(|p| (p, Err(e.clone()))));
            }
        }
    }
}

/// The results of array task `index` in files `next`, `next + 1`, … (each removed once
/// read; a file is complete once visible, being renamed into place).
fn take_results(
    dir: &Path,
    index: usize,
    next: &mut u64,
) -> Vec<(u64, Result<ByteBuf, TaskError>)> {
    let mut results = Vec::new();
    loop {
        let path = workdir::result_path(dir, index, *next);
        match workdir::read_value::<ResultFile>(&path) {
            Ok(f) => {
                results.extend(f.results);
                let _ = std::fs::remove_file(&path);
                *next += 1;
            }
            Err(_) => return results,
        }
    }
}

/// Apply `squeue`'s rows: running flags, and array tasks that ended without finishing.
fn apply_states(s: &Shared, rows: &[cluster::TaskRow], done: &mut Completions) {
    let mut st = s.lock();
    let st = &mut *st;
    for a in st
        .arrays
        .iter_mut()
        .filter(|a| !a.finished() && !a.job.is_empty())
    {
        let mine: Vec<&cluster::TaskRow> = rows.iter().filter(|r| r.array == a.job).collect();
        if !mine.is_empty() {
            a.seen = true;
        }
        let vanished = mine.is_empty() && (a.seen || a.submitted.elapsed() > VANISHED_AFTER);
        for c in a.chunks.iter_mut().filter(|c| !c.ended) {
            let row = mine.iter().find(|r| r.index == Some(c.index));
            c.running = row.is_some_and(|r| r.state == "RUNNING" || r.state == "COMPLETING");
            let ended_as = match row {
                Some(r) if cluster::is_terminal(&r.state) => Some(r.state.clone()),
                // Not listed individually: pending in a grouped line, or gone.
                None if vanished => Some("UNKNOWN (no longer known to Slurm)".to_string()),
                _ => None,
            };
            let Some(state) = ended_as else { continue };
            // Results written just before it ended: read them first (the done marker is
            // written last, so a COMPLETED task that wrote one was handled already).
            for (id, r) in take_results(&a.dir, c.index, &mut c.next_file) {
                if let Some(p) = c.unfinished.remove(&id) {
                    done.push((p, r));
                }
            }
            if state == "COMPLETED" && workdir::done_path(&a.dir, c.index).exists() {
                continue; // the next read of its results finishes it
            }
            c.ended = true;
            if c.unfinished.is_empty() {
                continue;
            }
            st.keep_dir = true;
            let log = workdir::log_path(&a.dir, c.index);
            let tail = workdir::tail(&log, 5);
            let e = TaskError::JobFailed {
                job: format!("{}_{}", a.job, c.index),
                state,
                log: if tail.is_empty() {
                    format!("(log: {})", log.display())
                } else {
                    format!("{tail} (log: {})", log.display())
                },
            };
            done.extend(c.unfinished.drain().map(|(_, p)| (p, Err(e.clone()))));
        }
    }
}

/// Complete futures (outside the lock: callbacks run here).
fn complete(s: &Shared, done: Completions) {
    if done.is_empty() {
        return;
    }
    s.lock().done += done.len();
    for (p, r) in done {
        match r {
            Ok(bytes) => p.complete_encoded(&bytes),
            Err(e) => p.fail(e),
        }
    }
}
