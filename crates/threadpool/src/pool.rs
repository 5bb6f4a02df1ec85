//! [`ThreadPool`]: the handle, its `Executor` implementation and its lifecycle (start,
//! submit, shutdown, drop). The shared state is in `shared.rs`, the worker loop in
//! `worker.rs`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use poolrun_core::backend::{default_window, task_pair, BatchSubmit, Dispatch, Stop, SubmitGate};
use poolrun_core::gil::{Gil, GilMode};
use poolrun_core::{
    Deadline, Executor, Mode, Payload, PoolConfig, PoolError, PoolStats, TaskError, TaskFuture,
    TaskOptions,
};

use crate::shared::PoolShared;
use crate::shared::Work;
use crate::timer::Timer;
use crate::work::{Chunk, Single};
use crate::worker;

static POOL_IDS: AtomicU64 = AtomicU64::new(1);

/// A pool of worker threads implementing [`Executor`].
///
/// ```
/// use poolrun_core::{Executor, PoolConfig};
/// use poolrun_threadpool::ThreadPool;
///
/// fn double(x: i32) -> i32 { x * 2 }
/// let pool = ThreadPool::new(PoolConfig::new().workers(2)).unwrap();
/// assert_eq!(pool.submit(double, 21).result(), Ok(42));
/// ```
pub struct ThreadPool {
    shared: Arc<PoolShared>,
    gate: Option<Arc<SubmitGate>>,
}

impl ThreadPool {
    /// Validate `cfg` and start `cfg.workers` threads.
    pub fn new(cfg: PoolConfig) -> Result<ThreadPool, PoolError> {
        cfg.validate()?;
        let id = POOL_IDS.fetch_add(1, Ordering::Relaxed);
        let gil = match cfg.get_gil() {
            GilMode::Off => None,
            GilMode::On { switch_interval } => Some(Gil::new(switch_interval)),
        };
        let timer = match cfg.get_task_timeout() {
            Some(_) => Some(
                Timer::start(format!("poolrun-timer-{id}"))
                    .map_err(|e| PoolError::os("spawn the timer thread", e))?,
            ),
            None => None,
        };
        let n = cfg.get_workers();
        let gate = SubmitGate::for_config(&cfg).map(Arc::new);
        let shared = PoolShared::new(id, cfg, gil, timer, worker::spawn);
        let pool = ThreadPool { shared, gate };
        for _ in 0..n {
            pool.shared.spawn_worker()?; // on error, dropping `pool` stops what started
        }
        Ok(pool)
    }

    /// The pool's GIL, when built with `GilMode::On` (for its [`stats`](Gil::stats)).
    pub fn gil(&self) -> Option<&Gil> {
        self.shared.gil.as_ref()
    }

    /// Tasks queued and not yet taken by a worker.
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    fn submit_batch<A: Payload, R: Payload>(
        shared: &Arc<PoolShared>,
        f: fn(A) -> R,
        items: Vec<A>,
    ) -> Vec<TaskFuture<R>> {
        if shared.is_closed() {
            return items
                .iter()
                .map(|_| TaskFuture::ready(Err(TaskError::Shutdown)))
                .collect();
        }
        let mut futures = Vec::with_capacity(items.len());
        let mut work = Vec::with_capacity(items.len());
        let n = items.len();
        for (arg, route) in items.into_iter().zip(shared.routes(n)) {
            let id = route.task();
            let (promise, fut) = task_pair(Some(route));
            futures.push(fut);
            work.push((id, arg, promise));
        }
        let job: Box<dyn Work> = if work.len() == 1 {
            let (id, arg, promise) = work.pop().expect("one item");
            Box::new(Single {
                f,
                arg,
                id,
                promise,
                timeout: None,
            })
        } else {
            Box::new(Chunk { f, items: work })
        };
        if let Err(job) = shared.enqueue(job) {
            job.abandon(TaskError::Shutdown, &shared.counters);
        }
        futures
    }
}

impl Dispatch for ThreadPool {
    fn submit_now<A: Payload, R: Payload>(&self, f: fn(A) -> R, arg: A) -> TaskFuture<R> {
        self.submit_now_with(f, arg, &TaskOptions::default())
    }

    fn submit_now_with<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        arg: A,
        opts: &TaskOptions,
    ) -> TaskFuture<R> {
        if self.shared.is_closed() {
            return TaskFuture::ready(Err(TaskError::Shutdown));
        }
        let Some(route) = self.shared.routes(1).next() else {
            return TaskFuture::ready(Err(TaskError::Shutdown));
        };
        let id = route.task();
        let (promise, fut) = task_pair(Some(route));
        let job = Box::new(Single {
            f,
            arg,
            id,
            promise,
            timeout: opts.get_timeout(),
        });
        if let Err(job) = self.shared.enqueue(job) {
            job.abandon(TaskError::Shutdown, &self.shared.counters);
        }
        fut
    }

    fn context_type(&self) -> Option<std::any::TypeId> {
        self.shared.cfg.get_context().map(|c| c.type_id())
    }

    fn submit_gate(&self) -> Option<&Arc<SubmitGate>> {
        self.gate.as_ref()
    }

    fn batch_submitter<A: Payload, R: Payload>(&self, f: fn(A) -> R) -> BatchSubmit<A, R> {
        let shared = self.shared.clone();
        Box::new(move |items| ThreadPool::submit_batch(&shared, f, items))
    }

    fn map_window(&self) -> usize {
        default_window(self.workers())
    }
}

impl Executor for ThreadPool {
    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.shared.shutdown_steps(wait, cancel_pending);
    }

    fn shutdown_timeout(&self, cancel_pending: bool, timeout: Duration) -> bool {
        self.shared.shutdown_timeout_steps(cancel_pending, timeout)
    }

    fn workers(&self) -> usize {
        self.shared.cfg.get_workers()
    }

    fn mode(&self) -> Mode {
        Mode::Thread
    }

    fn stats(&self) -> PoolStats {
        self.shared.stats()
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        if self.shared.cfg.get_daemon() {
            // Daemon: cancel the queue, stop running tasks at their next checkpoint, and do
            // not wait (threads cannot be killed; they exit as soon as their task returns).
            self.shared.kill();
        } else {
            // Non-daemon: like Python's exit for non-daemon threads — finish everything
            // (except tasks already stopped, whose threads are detached).
            self.shared.close(false);
            self.shared.join(Deadline::NEVER);
        }
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("shared", &self.shared)
            .finish()
    }
}
