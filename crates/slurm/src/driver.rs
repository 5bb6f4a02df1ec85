//! The driver: one thread per pool that gathers submissions into job arrays, submits them
//! with `sbatch`, and follows them (`follow.rs`) — claims and results from the work
//! directory, states from one `squeue` call for all the pool's arrays — completing every
//! future exactly once.
//!
//! ```text
//! submit ──▶ pending (cancellable) ──batch window──▶ chunk files + sbatch --array=0-(N-1)
//!                                                        │ (tasks now count as running)
//!  array tasks claim chunks one by one (claim.rs)        ▼
//!  poll: claimed-<J>-<I>, r-<J>-<N>, done-<J> ─▶ complete futures
//!        squeue: array task I ended early ─▶ fail its claimed chunks' rest: JobFailed
//!  kill(): a kill-<ID> marker the array task reads
//!  heartbeat: rewritten every timeout/6; array tasks of a dead submitter cancel themselves
//! ```
//!
//! Two locks, never held together: `state` (the submission queue and the driver's flags;
//! what `submit` takes) and `arrays` (the submitted arrays and pending kill markers; held by
//! the driver while it reads the work directory). Futures are completed outside both
//! (done-callbacks run in this thread).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

use poolrun_core::backend::{ErasedPromise, KillRoute, Stop, TaskCounters, ThreadSet};
use poolrun_core::{Deadline, GilMode, PoolConfig, PoolError, PoolStats, TaskError};

use crate::cluster;
use crate::config::SlurmConfig;
use crate::follow::{Array, Chunk, Completions};
use crate::image;
use crate::wire::{ChunkFile, ChunkTask, PoolFile, VERSION};
use crate::workdir::{self, WorkDir};

/// Chunks per array task when chunking is automatic: array tasks claim them one by one,
/// so more chunks balance uneven tasks better, at a file or two per chunk.
const CHUNKS_PER_SLOT: usize = 8;
/// How often the driver reads the work directory for claims and results while arrays
/// are going (`squeue` is asked every `poll_interval`).
const READ_EVERY: Duration = Duration::from_millis(50);
/// A submission this large goes to `sbatch` without waiting for the batch window.
const BATCH_NOW: usize = 100_000;

/// A submitted task not yet in a job array.
pub(crate) struct Pending {
    pub id: u64,
    pub trampoline: i64,
    pub func: i64,
    pub arg: Vec<u8>,
    pub promise: ErasedPromise,
}

#[derive(Default)]
struct State {
    pending: Vec<Pending>,
    first_pending: Option<Instant>,
    closed: bool,
    killing: bool,
    /// Something for the driver to do now (a kill marker to write).
    kicked: bool,
    /// A task failed for a cluster reason: keep the work directory.
    keep_dir: bool,
    next_array: u32,
}

#[derive(Default)]
struct Arrays {
    list: Vec<Array>,
    /// Task ids `kill()`ed after their array was submitted (markers to write).
    kills: Vec<u64>,
    /// Tasks completed so far.
    done: usize,
}

/// See [`Shared::tally`].
#[derive(Default)]
struct Tally {
    queued: usize,
    running: usize,
    done: usize,
    busy: usize,
}

/// What the pool handle, the driver and the futures' kill route share.
pub(crate) struct Shared {
    cfg: SlurmConfig,
    /// Array tasks allowed to run at once.
    workers: usize,
    pub dir: WorkDir,
    state: Mutex<State>,
    arrays: Mutex<Arrays>,
    wake: Condvar,
    next_task: AtomicU64,
    route: Weak<dyn KillRoute>,
    pub threads: ThreadSet,
    /// Outcome counters for `stats()`, attached to every task's route.
    pub counters: Arc<TaskCounters>,
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
        arrays: Mutex::new(Arrays::default()),
        wake: Condvar::new(),
        next_task: AtomicU64::new(1),
        route: me.clone() as Weak<dyn KillRoute>,
        threads: ThreadSet::new(),
        counters: Arc::default(),
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

    fn arrays(&self) -> MutexGuard<'_, Arrays> {
        self.arrays.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut a = self.arrays();
        if !a.list.iter().any(|arr| arr.holds(task)) {
            return;
        }
        a.kills.push(task);
        drop(a);
        self.lock().kicked = true;
        self.wake.notify_all();
    }

    /// Daemon drop: close, cancel the queue, `scancel` the pool's arrays.
    pub(crate) fn kill(&self) {
        self.close(true);
        self.lock().killing = true;
        self.wake.notify_all();
    }

    pub(crate) fn progress(&self) -> (usize, usize, usize) {
        let t = self.tally();
        (t.queued, t.running, t.done)
    }

    /// Tasks queued (not yet running on the cluster), running, done, and the array tasks
    /// working on a chunk now.
    fn tally(&self) -> Tally {
        let mut t = Tally {
            queued: self.lock().pending.len(),
            ..Tally::default()
        };
        let a = self.arrays();
        for arr in &a.list {
            let (q, r) = arr.counts();
            t.queued += q;
            t.running += r;
            t.busy += arr.busy_array_tasks();
        }
        t.done = a.done;
        t
    }

    /// `Executor::stats`: queued = not yet running on the cluster (waiting to be submitted
    /// or in an array task Slurm has not started), running = in an array task that claimed
    /// its chunk; a "worker" is an array task working on a chunk now.
    pub(crate) fn stats(&self) -> PoolStats {
        let t = self.tally();
        let mut s = self.counters.snapshot(self.workers);
        s.queued = t.queued;
        s.running = t.running;
        s.workers_alive = t.busy;
        s
    }

    pub(crate) fn active_jobs(&self) -> Vec<String> {
        jobs(&self.arrays())
    }
}

impl KillRoute for Shared {
    fn kill(&self, task: u64) {
        self.request_kill(task);
    }
}

/// The job ids of the arrays still going.
fn jobs(a: &Arrays) -> Vec<String> {
    a.list
        .iter()
        .filter(|arr| arr.active())
        .map(|arr| arr.job.clone())
        .collect()
}

/// The driver thread's loop.
fn drive(s: &Arc<Shared>) {
    let poll_every = s.cfg.get_poll_interval();
    let read_every = poll_every.min(READ_EVERY);
    let beat_every = s.cfg.get_heartbeat_timeout() / 6;
    let mut next_poll = Instant::now();
    let mut next_read = Instant::now();
    let mut next_beat = Instant::now() + beat_every;
    loop {
        let mut st = s.lock();
        if st.killing {
            let pending = std::mem::take(&mut st.pending);
            drop(st);
            let (jobs, running) = {
                let mut a = s.arrays();
                let jobs = jobs(&a);
                let running: Vec<ErasedPromise> =
                    a.list.iter_mut().flat_map(Array::drain).collect();
                (jobs, running)
            };
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
        st.kicked = false;
        let closed = st.closed;
        let queue_empty = st.pending.is_empty();
        drop(st);

        let (kills, idle) = {
            let mut a = s.arrays();
            let kills: Vec<(PathBuf, u64)> = std::mem::take(&mut a.kills)
                .into_iter()
                .filter_map(|id| {
                    let arr = a.list.iter().find(|arr| arr.holds(id))?;
                    Some((arr.dir.clone(), id))
                })
                .collect();
            (kills, a.list.iter().all(Array::finished))
        };
        if closed && queue_empty && idle && batch.is_empty() {
            break;
        }
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
        if now >= next_read {
            // Squeue at its own pace; the directory (cheap) more often, so a result waits
            // at most `read_every` for its future.
            let ask_slurm = now >= next_poll;
            poll(s, ask_slurm);
            next_read = Instant::now() + read_every;
            if ask_slurm {
                next_poll = Instant::now() + poll_every;
            }
        }

        let st = s.lock();
        if st.killing || st.kicked || (st.closed && !st.pending.is_empty()) {
            continue;
        }
        let mut until = next_read.min(next_beat);
        if let Some(t) = st.first_pending {
            until = until.min(t + s.cfg.get_batch_window());
        }
        let wait = until.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
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

/// How many chunks `n` tasks become, and how many array tasks claim them.
fn chunking(s: &Shared, n: usize) -> (usize, usize) {
    let m = match s.cfg.get_chunk_size() {
        Some(per) => n.div_ceil(per.max(1)),
        None => n.min(s.workers.saturating_mul(CHUNKS_PER_SLOT)),
    }
    .max(1);
    let tasks = m.min(s.workers).min(s.cfg.get_max_array_size()).max(1);
    (m, tasks)
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
            // Started only to fail: their start callbacks never run (they never ran).
            let mut never = Vec::new();
            let live = batch
                .into_iter()
                .filter(|p| p.promise.start_deferred(&mut never));
            let promises = live.map(|p| p.promise).collect();
            return fail(promises, format!("cannot create the array directory: {e}"));
        }
    };
    // The tasks start and the array is followed in one step under the arrays lock: from
    // the moment a future reports `running()`, `kill()` finds its task here (the array has
    // no job id until `sbatch` answers). A task cancelled before this point is dropped.
    let mut started = Vec::new();
    let (slot, files, array_tasks) = {
        let mut a = s.arrays();
        let live: Vec<Pending> = batch
            .into_iter()
            .filter(|p| p.promise.start_deferred(&mut started))
            .collect();
        if live.is_empty() {
            drop(a);
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        let (m, array_tasks) = chunking(s, live.len());
        let (chunks, files) = split(live, m);
        a.list.push(Array::new(dir.clone(), chunks, array_tasks));
        (a.list.len() - 1, files, array_tasks)
    };
    // (outside the lock; "started" here means handed to the cluster, as `running()` says)
    poolrun_core::backend::run_start_callbacks(started);
    let take_back = || -> Vec<ErasedPromise> { s.arrays().list[slot].drain() };
    let written = files
        .iter()
        .enumerate()
        .try_for_each(|(i, f)| workdir::write_value(&workdir::chunk_path(&dir, i), f));
    if let Err(e) = written {
        let why = format!("cannot write the job files in {}: {e}", dir.display());
        return fail(take_back(), why);
    }
    let mut args = vec![
        format!("--array=0-{}", array_tasks - 1),
        format!("--job-name=poolrun-{}", std::process::id()),
        format!("--output={}/log-%a.txt", dir.display()),
    ];
    args.extend(s.cfg.sbatch_options());
    match cluster::sbatch(&args, &s.dir.script(), &[dir.display().to_string()]) {
        Ok(job) => {
            let mut a = s.arrays();
            let arr = &mut a.list[slot];
            arr.job = job;
            arr.submitted = Instant::now();
        }
        Err(e) => fail(take_back(), e),
    }
}

/// Split `live` into `m` chunks of near-equal size, in submission order: the driver's
/// view (promises by task id) and the files the array tasks claim.
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
        chunks.push(Chunk::new(unfinished));
        files.push(file);
    }
    (chunks, files)
}

/// Read new claims and results; with `ask_slurm`, Slurm's view of the pool's arrays too
/// (one `squeue` call; the completion record for arrays `squeue` no longer lists).
fn poll(s: &Arc<Shared>, ask_slurm: bool) {
    let mut done: Completions = Vec::new();
    let mut failed = false;
    let jobs = {
        let mut a = s.arrays();
        for arr in a.list.iter_mut().filter(|arr| !arr.finished()) {
            failed |= arr.read(&mut done);
        }
        jobs(&a)
    };
    if ask_slurm && !jobs.is_empty() {
        match cluster::squeue(&jobs) {
            Ok(mut rows) => {
                let gone: Vec<String> = jobs
                    .iter()
                    .filter(|j| !rows.iter().any(|r| &r.array == *j))
                    .cloned()
                    .collect();
                rows.extend(cluster::sacct(&gone));
                let mut a = s.arrays();
                for arr in a.list.iter_mut().filter(|arr| arr.active()) {
                    failed |= arr.apply(&rows, &mut done);
                }
            }
            Err(e) => eprintln!("poolrun: slurm pool: squeue failed ({e}); retrying"),
        }
    }
    if failed {
        s.lock().keep_dir = true;
    }
    complete(s, done);
}

/// Complete futures (outside the locks: callbacks run here).
fn complete(s: &Shared, done: Completions) {
    if done.is_empty() {
        return;
    }
    s.arrays().done += done.len();
    for (p, r) in done {
        match r {
            Ok(bytes) => p.complete_encoded(&bytes),
            Err(e) => p.fail(e),
        }
    }
}

impl Stop for Shared {
    /// Stop accepting work; with `cancel_pending`, cancel what is not submitted yet.
    fn close(&self, cancel_pending: bool) {
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

    /// Wait for the driver (not from the driver itself).
    fn join(&self, deadline: Deadline) -> bool {
        self.threads.join_until(deadline)
    }
}
