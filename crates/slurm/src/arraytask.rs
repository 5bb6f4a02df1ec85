//! The array task: what the executable copy does when Slurm starts it for a pool.
//!
//! Entering worker mode needs no change to the user's `main`: a constructor that runs before
//! `main` (in test binaries too) sees `POOLRUN_SLURM_TASK` in the environment, runs the
//! array task and exits — `main` never runs. A program whose tasks need what its `main`
//! sets up first (the `poolrun` CLI installs its task registry there) asks the pool to
//! defer (`POOLRUN_SLURM_DEFER`) and calls [`run_if_array_task`] from `main` instead.
//!
//! The array task:
//! 1. reads the pool file; proves it runs the submitter's image (SHA-256 of its own
//!    executable, invariant S1) — on a mismatch every task it claims fails with a clear
//!    error and nothing runs;
//! 2. watches the heartbeat: a submitter silent for longer than the timeout is gone, so it
//!    cancels its whole array (nothing of it stays queued) and exits;
//! 3. claims chunks of its array one by one (`claim.rs`) whenever its local process pool
//!    (`cpus_per_task` workers: a segfault fails one task, not the chunk) runs short of
//!    work, skipping a task whose kill marker exists and killing one whose marker appears
//!    while it runs;
//! 4. writes results as they finish (atomically, a file per flush and chunk), then a done
//!    marker per chunk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_bytes::ByteBuf;

use poolrun_core::backend::Initializer;
use poolrun_core::{Executor, GilMode, PoolConfig, TaskError, TaskFuture};
use poolrun_procpool::ProcessPool;

use crate::claim::{self, Claimer, Reporter};
use crate::image;
use crate::wire::{ChunkFile, ChunkTask, Outcome, PoolFile, VERSION};
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
    start_heartbeat_watch(wd.heartbeat(), pool.heartbeat_timeout, array_job.clone());
    let mut claimer = Claimer::new(array_dir.clone(), index);
    let mut out = Reporter::new(array_dir.clone());
    // Before anything runs: the pool file's version, the image (S1), the local pool. If
    // one fails, this array task claims every chunk it can and fails their tasks with the
    // reason (so they fail at once, not after the other array tasks).
    let fatal = if pool.version != VERSION {
        Some(job_failed(
            &job,
            "VERSION_MISMATCH",
            format!("pool file version {} is not {VERSION}", pool.version),
        ))
    } else {
        match image::hash_self() {
            Ok(h) if h == pool.exe_sha256 => None,
            Ok(h) => Some(job_failed(
                &job,
                "BINARY_MISMATCH",
                format!(
                    "the executable Slurm started (sha256 {}) is not the submitter's (sha256 {}): \
                     no task was run from it",
                    image::hex(&h),
                    image::hex(&pool.exe_sha256)
                ),
            )),
            Err(e) => Some(job_failed(
                &job,
                "BINARY_MISMATCH",
                format!("cannot read its own executable: {e}"),
            )),
        }
    };
    let local = match fatal {
        Some(e) => Err(e),
        None => ProcessPool::new(local_config(&pool)).map_err(|e| {
            job_failed(
                &job,
                "FAILED",
                format!("cannot start the local process pool: {e}"),
            )
        }),
    };
    match local {
        Ok(local) => {
            run_chunks(&local, pool.workers, &mut claimer, &array_dir, &mut out);
            local.shutdown(true, false);
        }
        Err(e) => {
            while let Some((j, chunk)) = claimer.next() {
                for t in chunk.map(|c| c.tasks).unwrap_or_default() {
                    out.push(j, t.id, Err(e.clone()));
                }
                out.finish_chunk(j);
            }
        }
    }
    out.status()
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

/// One task handed to the local pool.
struct Running {
    chunk: usize,
    id: u64,
    fut: TaskFuture<Vec<u8>>,
}

/// Claim chunks and run their tasks on `local` (`workers` processes), keeping it busy,
/// until no chunk is left; results are reported as they finish.
fn run_chunks(
    local: &ProcessPool,
    workers: usize,
    claimer: &mut Claimer,
    dir: &Path,
    out: &mut Reporter,
) {
    // Claim more while fewer than this many tasks are in the local pool: each worker busy
    // and one task ahead, so a claim never waits for the last task of the previous chunk.
    let low_water = workers.saturating_mul(2).max(2);
    let mut running: Vec<Running> = Vec::new();
    // Per claimed chunk: its tasks not reported yet.
    let mut open: HashMap<usize, usize> = HashMap::new();
    let mut more = true;
    let mut last_kill_scan = Instant::now();
    loop {
        while more && running.len() < low_water {
            match claimer.next() {
                Some((j, Ok(chunk))) => {
                    let n = chunk.tasks.len();
                    open.insert(j, n);
                    for (id, r) in start_chunk(local, j, chunk, dir, &mut running) {
                        report(out, &mut open, j, id, r);
                    }
                    if n == 0 {
                        report_none(out, &mut open, j);
                    }
                }
                Some((j, Err(e))) => {
                    // Its tasks are unknown here: the driver fails them when it sees the
                    // done marker without their results.
                    eprintln!("poolrun array task: cannot read chunk {j}: {e}");
                    out.finish_chunk(j);
                }
                None => more = false,
            }
        }
        if running.is_empty() {
            if more {
                continue;
            }
            break;
        }
        // Wait a little for the oldest task, then collect whatever is done.
        running[0].fut.wait(Some(Duration::from_millis(20)));
        let mut i = 0;
        while i < running.len() {
            if running[i].fut.done() {
                let r = running.swap_remove(i);
                let res = r.fut.result().map(ByteBuf::from);
                report(out, &mut open, r.chunk, r.id, res);
            } else {
                i += 1;
            }
        }
        if last_kill_scan.elapsed() >= Duration::from_millis(50) {
            last_kill_scan = Instant::now();
            let kills = claim::kill_markers(dir);
            for r in running.iter().filter(|r| kills.contains(&r.id)) {
                r.fut.kill();
            }
        }
        out.maybe_flush();
    }
}

/// Record one result; a chunk whose last task reported is finished.
fn report(
    out: &mut Reporter,
    open: &mut HashMap<usize, usize>,
    j: usize,
    id: u64,
    r: Result<ByteBuf, TaskError>,
) {
    out.push(j, id, r);
    if let Some(left) = open.get_mut(&j) {
        *left = left.saturating_sub(1);
        if *left == 0 {
            report_none(out, open, j);
        }
    }
}

fn report_none(out: &mut Reporter, open: &mut HashMap<usize, usize>, j: usize) {
    open.remove(&j);
    out.finish_chunk(j);
}

/// Hand chunk `j`'s tasks to `local` (consecutive tasks of one function as one batch);
/// a task whose kill marker exists is not run. Returns the results known at once.
fn start_chunk(
    local: &ProcessPool,
    j: usize,
    chunk: ChunkFile,
    dir: &Path,
    running: &mut Vec<Running>,
) -> Vec<Outcome> {
    let mut now = Vec::new();
    let mut group: Vec<ChunkTask> = Vec::new();
    let flush = |group: &mut Vec<ChunkTask>, running: &mut Vec<Running>| {
        let Some(first) = group.first() else { return };
        let (t, f) = (first.trampoline, first.func);
        let ids: Vec<u64> = group.iter().map(|c| c.id).collect();
        let args = group.drain(..).map(|c| c.arg.into_vec()).collect();
        // SAFETY: invariant S1: this process runs the submitter's image (hash checked), and
        // the offsets were taken there from `poolrun_procpool::task_addrs`, so transport
        // invariant T1 holds for the translated addresses.
        let futs =
            unsafe { local.submit_encoded(image::from_offset(t), image::from_offset(f), args) };
        running.extend(
            ids.into_iter()
                .zip(futs)
                .map(|(id, fut)| Running { chunk: j, id, fut }),
        );
    };
    for task in chunk.tasks {
        if workdir::kill_path(dir, task.id).exists() {
            now.push((task.id, Err(TaskError::Cancelled)));
            continue;
        }
        if group
            .first()
            .is_some_and(|g| (g.trampoline, g.func) != (task.trampoline, task.func))
        {
            flush(&mut group, running);
        }
        group.push(task);
    }
    flush(&mut group, running);
    now
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
