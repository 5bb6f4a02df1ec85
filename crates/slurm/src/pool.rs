//! [`SlurmPool`]: the handle, its `Executor` implementation and its lifecycle. The driver
//! thread that submits arrays and follows them is in `driver.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use poolrun_core::backend::{
    task_pair, BatchSubmit, Dispatch, ErasedPromise, Route, Stop, SubmitGate,
};
use poolrun_core::{
    codec, Deadline, Executor, Mode, Payload, PoolConfig, PoolError, PoolStats, TaskError,
    TaskFuture,
};

use crate::arraytask;
use crate::config::SlurmConfig;
use crate::driver::{self, Pending, Shared};
use crate::image;

/// How long a daemon pool's drop waits for its driver thread after cancelling its jobs.
const DROP_JOIN_LIMIT: Duration = Duration::from_secs(30);

/// A pool whose workers are array tasks of a real Slurm cluster, with the [`Executor`] API.
///
/// Submissions are gathered for a short window and go to `sbatch` as one job array; each
/// array task runs its share on a local process pool of `cpus_per_task` workers (a crash
/// fails one task, not its array task) and writes results back through the work
/// directory, which the pool polls together with `squeue`. Every way an array task can end
/// — failed, cancelled from outside, time limit, node failure — fails its unfinished tasks
/// with [`TaskError::JobFailed`], naming the job, the state and the end of its log.
///
/// A task counts as running once its array is submitted: `cancel()` works until then,
/// `kill()` at any time (the array task skips it, or kills the local worker running it).
/// Array tasks run a copy of this executable, made at pool start; they enter worker mode
/// before `main` runs, so a program needs no change to be a worker (see the crate docs).
///
/// ```no_run
/// use poolrun_core::{Executor, PoolConfig};
/// use poolrun_slurm::{SlurmConfig, SlurmPool};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = SlurmPool::new(PoolConfig::new().workers(4), SlurmConfig::new()).unwrap();
/// assert_eq!(pool.submit(square, 7).result(), Ok(49));
/// ```
pub struct SlurmPool {
    shared: Arc<Shared>,
    workers: usize,
    daemon: bool,
    gate: Option<Arc<SubmitGate>>,
}

impl SlurmPool {
    /// Check both configurations and that Slurm is there, make the work directory (with a
    /// copy of this executable) and start the driver thread.
    ///
    /// Errors: [`PoolError::InvalidConfig`] for a bad value, or options Slurm refuses
    /// (`sbatch --test-only`: an unknown partition, a bad time limit, more CPUs than a node
    /// has); [`PoolError::Spawn`] if `sbatch` cannot be run or the controller does not
    /// answer; [`PoolError::Io`] if the work directory cannot be made or
    /// written.
    pub fn new(cfg: PoolConfig, slurm: SlurmConfig) -> Result<SlurmPool, PoolError> {
        Self::build(cfg, slurm, false)
    }

    /// Like [`new`](Self::new), for a program whose tasks need what its `main` sets up
    /// (the `poolrun` CLI): array tasks then wait for `main`, which must call
    /// [`run_if_array_task`](crate::run_if_array_task) first thing.
    pub fn new_deferred(cfg: PoolConfig, slurm: SlurmConfig) -> Result<SlurmPool, PoolError> {
        Self::build(cfg, slurm, true)
    }

    fn build(cfg: PoolConfig, slurm: SlurmConfig, defer: bool) -> Result<SlurmPool, PoolError> {
        arraytask::keep_entry();
        cfg.validate()?;
        if cfg.get_context().is_some() {
            return Err(PoolError::InvalidConfig(
                "PoolConfig::context is not supported by the Slurm backend (thread and \
                 process mode only): pass the value in each task's argument"
                    .into(),
            ));
        }
        slurm.validate()?;
        crate::cluster::check_available().map_err(PoolError::Spawn)?;
        crate::cluster::test_only(&slurm.sbatch_options()).map_err(|e| {
            if e.to_ascii_lowercase()
                .contains("unable to contact slurm controller")
            {
                PoolError::Spawn(format!("the Slurm controller does not answer: {e}"))
            } else {
                PoolError::InvalidConfig(format!("Slurm refuses the pool's sbatch options: {e}"))
            }
        })?;
        let workers = cfg.get_workers();
        let daemon = cfg.get_daemon();
        let gate = SubmitGate::for_config(&cfg).map(Arc::new);
        let shared = driver::start(cfg, slurm, defer)?;
        Ok(SlurmPool {
            shared,
            workers,
            daemon,
            gate,
        })
    }

    /// Where this pool keeps its job files, results and logs.
    pub fn work_dir(&self) -> &std::path::Path {
        self.shared.dir.root()
    }

    /// `(queued, running, done)`: tasks not yet running on the cluster (waiting to be
    /// submitted, or in an array task Slurm has not started), running in an array task,
    /// and finished — for a progress display.
    pub fn progress(&self) -> (usize, usize, usize) {
        self.shared.progress()
    }

    /// The job ids of this pool's arrays that may still have tasks in Slurm's queue.
    pub fn active_jobs(&self) -> Vec<String> {
        self.shared.active_jobs()
    }

    fn submit_batch<A: Payload, R: Payload>(
        shared: &Arc<Shared>,
        f: fn(A) -> R,
        args: Vec<A>,
    ) -> Vec<TaskFuture<R>> {
        let (t, func) = poolrun_procpool::task_addrs(f);
        let (t, func) = (image::to_offset(t), image::to_offset(func));
        let first = shared.task_ids(args.len());
        let mut futures = Vec::with_capacity(args.len());
        let mut items = Vec::with_capacity(args.len());
        for (a, id) in args.into_iter().zip(first..) {
            let (p, fut) = task_pair::<R>(Some(
                Route::new(shared.route(), id).counted(&shared.counters),
            ));
            match codec::encode(&a) {
                Ok(arg) => items.push(Pending {
                    id,
                    trampoline: t,
                    func,
                    arg,
                    promise: ErasedPromise::from(p),
                }),
                Err(e) => p.complete(Err(e)),
            }
            futures.push(fut);
        }
        if let Err(items) = shared.push(items) {
            for it in items {
                it.promise.fail(TaskError::Shutdown);
            }
        }
        futures
    }
}

impl Dispatch for SlurmPool {
    fn submit_now<A: Payload, R: Payload>(&self, f: fn(A) -> R, arg: A) -> TaskFuture<R> {
        match SlurmPool::submit_batch(&self.shared, f, vec![arg]).pop() {
            Some(fut) => fut,
            None => TaskFuture::ready(Err(TaskError::Shutdown)),
        }
    }

    fn submit_gate(&self) -> Option<&Arc<SubmitGate>> {
        self.gate.as_ref()
    }

    fn batch_submitter<A: Payload, R: Payload>(&self, f: fn(A) -> R) -> BatchSubmit<A, R> {
        let shared = self.shared.clone();
        Box::new(move |items| SlurmPool::submit_batch(&shared, f, items))
    }

    /// Large: a cluster needs many tasks in flight to be worth its scheduling tick.
    fn map_window(&self) -> usize {
        10_000
    }
}

impl Executor for SlurmPool {
    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.shared.shutdown_steps(wait, cancel_pending);
    }

    fn shutdown_timeout(&self, cancel_pending: bool, timeout: Duration) -> bool {
        self.shared.shutdown_timeout_steps(cancel_pending, timeout)
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn mode(&self) -> Mode {
        Mode::Slurm
    }

    fn stats(&self) -> PoolStats {
        self.shared.stats()
    }
}

impl Drop for SlurmPool {
    fn drop(&mut self) {
        if self.daemon {
            // Cancel what is queued, `scancel` this pool's arrays (and nothing else), fail
            // what was running with `Shutdown`.
            self.shared.kill();
            if !self.shared.join(Deadline::after(Some(DROP_JOIN_LIMIT)))
                && !self.shared.threads.contains_current()
            {
                eprintln!(
                    "poolrun: slurm pool driver did not finish within {DROP_JOIN_LIMIT:?}; \
                     leaving it to finish"
                );
            }
        } else {
            self.shutdown(true, false);
        }
    }
}

impl fmt::Debug for SlurmPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlurmPool")
            .field("workers", &self.workers)
            .field("work_dir", &self.shared.dir.root())
            .finish()
    }
}
