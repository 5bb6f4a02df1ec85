//! A worker thread: start it ([`spawn`]) and its loop.
//!
//! The thread binds itself through the shared worker runtime (GIL, stop flag, the
//! initializer once), then takes work until the pool is closed and the queue is empty. It
//! leaves early when its task was stopped (it was retired and replaced already) or after
//! `max_tasks_per_child` tasks (it starts its replacement first).

use std::sync::Arc;

use poolrun_core::backend::WorkerRuntime;
use poolrun_core::PoolError;

use crate::shared::{PoolShared, TaskCtx, WorkerState};

/// Start one more worker thread for `pool`.
pub(crate) fn spawn(pool: &Arc<PoolShared>) -> Result<(), PoolError> {
    let state = Arc::new(WorkerState::new());
    let n = pool.add_worker(&state)?;
    let (p2, s2) = (pool.clone(), state.clone());
    match pool
        .threads
        .spawn(format!("poolrun-{}-{n}", pool.id), move || main(p2, s2))
    {
        Ok(key) => {
            *state.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
            Ok(())
        }
        Err(e) => {
            pool.worker_not_started();
            Err(PoolError::os("spawn a worker thread", e))
        }
    }
}

fn main(pool: Arc<PoolShared>, state: Arc<WorkerState>) {
    let rt = WorkerRuntime::start(
        pool.gil.clone(),
        state.stop.clone(),
        pool.cfg.get_initializer(),
    )
    .with_context(pool.cfg.get_context().map(|c| Ok(c.shared())));
    if let Some(msg) = rt.init_error() {
        pool.init_report.once(|| {
            format!(
                "poolrun: thread pool {}: worker initializer failed: {msg}; tasks given to \
                 that worker fail with TaskError::Initializer (no respawn)",
                pool.id
            )
        });
    }
    let ctx = TaskCtx {
        rt: &rt,
        state: &state,
        pool: &pool,
        timeout: pool
            .cfg
            .get_task_timeout()
            .and_then(|t| pool.timer().map(|tm| (t, tm))),
    };
    // However this thread ends, its task counts move to the pool's (stats()).
    let _fold = FoldCounts(&pool, &state);
    let limit = pool.cfg.get_max_tasks_per_child();
    let mut ran = 0usize;
    while let Some(work) = pool.next_work() {
        ran += work.run(&ctx);
        if state.is_retired() {
            return; // its task was stopped: a replacement already runs
        }
        // After `max_tasks_per_child` tasks a fresh thread takes over. If none can start,
        // this one carries on rather than leave queued work without a worker.
        if limit.is_some_and(|n| ran >= n) && pool.spawn_worker().is_ok() {
            break;
        }
    }
    drop(rt);
    pool.worker_exited();
}

/// Folds a worker's own task counters into its pool's when the worker's thread ends.
struct FoldCounts<'a>(&'a PoolShared, &'a WorkerState);

impl Drop for FoldCounts<'_> {
    fn drop(&mut self) {
        self.0.counters.absorb(&self.1.counts);
    }
}
