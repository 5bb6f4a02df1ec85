//! The thread pool and its lifecycle (start, submit, shutdown, drop).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use poolrun_core::gil::{Gil, GilMode, WorkerBinding};
use poolrun_core::{
    task_pair_routed, BatchSubmit, Executor, KillRoute, Mode, Payload, PoolConfig, PoolError,
    Promise, RouteId, TaskError, TaskFuture,
};

use crate::job::{Batch, Job, Task, WorkerCtx};
use crate::timer::Timer;

enum Msg {
    Job(Box<dyn Job>),
    /// Ends the worker that receives it.
    Stop,
}

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
    inner: Arc<Inner>,
}

/// Low bit of [`WorkerShared::current`]: a `kill()` claimed the running task.
pub(crate) const KILLED: usize = 1;

/// What one worker thread shares with the deadline timer and with `TaskFuture::kill`.
pub(crate) struct WorkerShared {
    /// Raised to stop the task this worker runs (at its next checkpoint).
    pub stop: Arc<AtomicBool>,
    /// The [`Promise::key`] of the task running now (0: none), with [`KILLED`] set once a
    /// `kill()` claimed it. Promise keys are addresses of 8-aligned allocations, so the low
    /// bit is free.
    pub current: AtomicUsize,
    /// Set when this worker's task timed out: it retires after the task and a replacement
    /// has already been started, so a task stuck without checkpoints costs no capacity.
    retire: AtomicBool,
    pool: std::sync::Weak<Inner>,
}

impl WorkerShared {
    /// Stop the running task at its next checkpoint and retire this worker after it, with a
    /// replacement started now (a task stuck without checkpoints costs no capacity). Used by
    /// the deadline timer and by `kill()`.
    pub(crate) fn retire_and_replace(&self) {
        if !self.retire.swap(true, Ordering::SeqCst) {
            if let Some(pool) = self.pool.upgrade() {
                if !pool.shutdown.load(Ordering::SeqCst) {
                    let _ = pool.spawn_worker();
                }
            }
        }
    }
}

pub(crate) struct Inner {
    id: u64,
    cfg: PoolConfig,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    shutdown: AtomicBool,
    /// Worker threads alive (started and not yet exited).
    live: AtomicUsize,
    next_worker: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The live workers (for daemon drop and `kill()`).
    workers: Arc<Workers>,
    /// `workers` registered as this pool's kill route.
    route: RouteId,
    gil: Option<Gil>,
    timer: Option<Timer>,
    /// Set once an initializer failed (reported once on stderr).
    init_reported: AtomicBool,
}

impl ThreadPool {
    /// Validate `cfg` and start `cfg.workers` threads.
    pub fn new(cfg: PoolConfig) -> Result<ThreadPool, PoolError> {
        cfg.validate()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let id = POOL_IDS.fetch_add(1, Ordering::Relaxed);
        let gil = match cfg.get_gil() {
            GilMode::Off => None,
            GilMode::On { switch_interval } => Some(Gil::new(switch_interval)),
        };
        let timer = match cfg.get_task_timeout() {
            Some(_) => Some(
                Timer::start(format!("poolrun-timer-{id}"))
                    .map_err(|e| PoolError::Spawn(format!("timer thread: {e}")))?,
            ),
            None => None,
        };
        let workers = Arc::new(Workers::default());
        let inner = Arc::new(Inner {
            id,
            cfg,
            tx,
            rx,
            shutdown: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            next_worker: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
            route: RouteId::register(&(workers.clone() as Arc<dyn KillRoute>)),
            workers,
            gil,
            timer,
            init_reported: AtomicBool::new(false),
        });
        for _ in 0..inner.cfg.get_workers() {
            if let Err(e) = inner.spawn_worker() {
                inner.begin_shutdown(true);
                return Err(e);
            }
        }
        Ok(ThreadPool { inner })
    }

    /// The pool's GIL, when built with `GilMode::On` (for its [`stats`](Gil::stats)).
    pub fn gil(&self) -> Option<&Gil> {
        self.inner.gil.as_ref()
    }

    /// Tasks queued and not yet taken by a worker.
    pub fn queued(&self) -> usize {
        self.inner.rx.len()
    }

    fn submit_batch<A: Payload, R: Payload>(
        inner: &Arc<Inner>,
        f: fn(A) -> R,
        items: Vec<A>,
    ) -> Vec<TaskFuture<R>> {
        if inner.shutdown.load(Ordering::SeqCst) {
            return items
                .iter()
                .map(|_| TaskFuture::ready(Err(TaskError::Shutdown)))
                .collect();
        }
        let mut futures = Vec::with_capacity(items.len());
        let job: Box<dyn Job> = if items.len() == 1 {
            let (promise, fut) = inner.task_pair();
            futures.push(fut);
            let arg = items.into_iter().next().expect("one item");
            Box::new(Task { f, arg, promise })
        } else {
            let items = items
                .into_iter()
                .map(|a| {
                    let (p, fut) = inner.task_pair();
                    futures.push(fut);
                    (a, p)
                })
                .collect();
            Box::new(Batch { f, items })
        };
        inner.enqueue(job);
        futures
    }
}

/// The pool's live workers; also the [`KillRoute`] of its futures.
#[derive(Default)]
struct Workers {
    list: Mutex<Vec<std::sync::Weak<WorkerShared>>>,
}

impl Workers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<std::sync::Weak<WorkerShared>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl KillRoute for Workers {
    /// Find the worker running task `key` and claim it (`current`: key → key | KILLED):
    /// from then on that worker waits for the stop flag before it moves on, so the flag can
    /// only ever stop this task. A task not running on any worker has nothing to stop: its
    /// worker sees the future done before it begins it (`job::run_one`).
    fn kill(&self, key: usize) {
        let target = self.lock().iter().filter_map(|w| w.upgrade()).find(|w| {
            w.current
                .compare_exchange(key, key | KILLED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if let Some(w) = target {
            w.stop.store(true, Ordering::SeqCst);
            w.retire_and_replace();
        }
    }
}

impl Inner {
    fn task_pair<R>(&self) -> (Promise<R>, TaskFuture<R>) {
        task_pair_routed(Some(self.route))
    }

    fn enqueue(&self, job: Box<dyn Job>) {
        // The channel lives as long as `self`, so send cannot fail; if it ever did, the job
        // (and its promises) would be dropped, which completes the futures.
        let _ = self.tx.send(Msg::Job(job));
        // Shutdown may have raced with this send after every worker left: then nobody will
        // take the job, so fail it here (the last worker drains the queue the same way).
        if self.shutdown.load(Ordering::SeqCst) && self.live.load(Ordering::SeqCst) == 0 {
            self.drain(TaskError::Shutdown);
        }
    }

    fn drain(&self, err: TaskError) {
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Job(job) = msg {
                job.abandon(err.clone());
            }
        }
    }

    /// Start one more worker thread. Refused once shutdown has begun: `begin_shutdown`
    /// sends one stop message per live worker under the same lock, so every worker that
    /// exists gets one.
    pub(crate) fn spawn_worker(self: &Arc<Self>) -> Result<(), PoolError> {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        if self.shutdown.load(Ordering::SeqCst) {
            return Err(PoolError::Spawn("the pool is shutting down".into()));
        }
        let n = self.next_worker.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(WorkerShared {
            stop: Arc::new(AtomicBool::new(false)),
            current: AtomicUsize::new(0),
            retire: AtomicBool::new(false),
            pool: Arc::downgrade(self),
        });
        {
            let mut list = self.workers.lock();
            list.retain(|w| w.strong_count() > 0);
            list.push(Arc::downgrade(&shared));
        }
        self.live.fetch_add(1, Ordering::SeqCst);
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("poolrun-{}-{n}", self.id))
            .spawn(move || worker_main(inner, shared));
        match spawned {
            Ok(h) => {
                threads.retain(|h| !h.is_finished());
                threads.push(h);
                Ok(())
            }
            Err(e) => {
                self.live.fetch_sub(1, Ordering::SeqCst);
                Err(PoolError::Spawn(format!("worker thread: {e}")))
            }
        }
    }

    /// Stop accepting work; optionally cancel what is queued; tell every worker to stop after
    /// the jobs ahead of the stop message.
    fn begin_shutdown(&self, cancel_pending: bool) {
        let threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        let first = !self.shutdown.swap(true, Ordering::SeqCst);
        if cancel_pending {
            self.drain(TaskError::Cancelled);
        }
        if first {
            for _ in 0..self.live.load(Ordering::SeqCst) {
                let _ = self.tx.send(Msg::Stop);
            }
            if self.live.load(Ordering::SeqCst) == 0 {
                self.drain(TaskError::Shutdown);
            }
        }
        drop(threads);
    }

    /// Join every worker thread except the calling one; false if `deadline` passed first.
    fn join_all(&self, deadline: Option<Instant>) -> bool {
        let me = std::thread::current().id();
        loop {
            let handles: Vec<JoinHandle<()>> = {
                let mut t = self.threads.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::take(&mut *t)
            };
            if handles.is_empty() {
                break;
            }
            let mut keep = Vec::new();
            for h in handles {
                if h.thread().id() == me {
                    continue; // shutdown(wait) from inside a task: cannot join ourselves
                }
                match deadline {
                    None => {
                        let _ = h.join();
                    }
                    Some(d) => {
                        while !h.is_finished() && Instant::now() < d {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        if h.is_finished() {
                            let _ = h.join();
                        } else {
                            keep.push(h);
                        }
                    }
                }
            }
            if !keep.is_empty() {
                self.threads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(keep);
                return false;
            }
        }
        if let Some(t) = &self.timer {
            t.stop();
        }
        true
    }
}

fn worker_main(inner: Arc<Inner>, shared: Arc<WorkerShared>) {
    let binding = WorkerBinding::new(inner.gil.clone(), shared.stop.clone());
    let init_error = match inner.cfg.get_initializer() {
        None => None,
        Some(init) => match binding.run_task(|| init.run()) {
            Ok(()) => None,
            Err(msg) => {
                if !inner.init_reported.swap(true, Ordering::SeqCst) {
                    eprintln!(
                        "poolrun: thread pool {}: worker initializer failed: {msg}; tasks given to \
                         that worker fail with TaskError::Initializer (no respawn)",
                        inner.id
                    );
                }
                Some(msg)
            }
        },
    };
    let ctx = WorkerCtx {
        binding: &binding,
        shared: &shared,
        init_error: init_error.as_deref(),
        timeout: inner.cfg.get_task_timeout().zip(inner.timer.as_ref()),
    };
    let limit = inner.cfg.get_max_tasks_per_child();
    let mut ran = 0usize;
    while let Ok(msg) = inner.rx.recv() {
        match msg {
            Msg::Stop => break,
            Msg::Job(job) => {
                ran += job.run(&ctx);
                if shared.retire.load(Ordering::SeqCst) {
                    break; // timed out: the timer already started our replacement
                }
                // After `max_tasks_per_child` tasks a fresh thread takes over (unless the
                // pool is shutting down: then this one stays to take its stop message).
                if limit.is_some_and(|n| ran >= n) && inner.spawn_worker().is_ok() {
                    break;
                }
            }
        }
    }
    drop(binding);
    if inner.live.fetch_sub(1, Ordering::SeqCst) == 1 && inner.shutdown.load(Ordering::SeqCst) {
        inner.drain(TaskError::Shutdown);
    }
}

impl Executor for ThreadPool {
    fn submit<A: Payload, R: Payload>(&self, f: fn(A) -> R, arg: A) -> TaskFuture<R> {
        if self.inner.shutdown.load(Ordering::SeqCst) {
            return TaskFuture::ready(Err(TaskError::Shutdown));
        }
        let (promise, fut) = self.inner.task_pair();
        self.inner.enqueue(Box::new(Task { f, arg, promise }));
        fut
    }

    fn batch_submitter<A: Payload, R: Payload>(&self, f: fn(A) -> R) -> BatchSubmit<A, R> {
        let inner = self.inner.clone();
        Box::new(move |items| ThreadPool::submit_batch(&inner, f, items))
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.inner.begin_shutdown(cancel_pending);
        if wait {
            self.inner.join_all(None);
        }
    }

    fn shutdown_timeout(&self, cancel_pending: bool, timeout: Duration) -> bool {
        self.inner.begin_shutdown(cancel_pending);
        self.inner.join_all(Instant::now().checked_add(timeout))
    }

    fn workers(&self) -> usize {
        self.inner.cfg.get_workers()
    }

    fn mode(&self) -> Mode {
        Mode::Thread
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        if self.inner.cfg.get_daemon() {
            // Daemon: cancel the queue, stop running tasks at their next checkpoint, and do
            // not wait (threads cannot be killed; they exit as soon as their task returns).
            self.inner.begin_shutdown(true);
            let list = self.inner.workers.lock();
            for w in list.iter().filter_map(|w| w.upgrade()) {
                w.stop.store(true, Ordering::SeqCst);
            }
            drop(list);
            if let Some(t) = &self.inner.timer {
                t.stop();
            }
        } else {
            // Non-daemon: like Python's exit for non-daemon threads — finish everything.
            self.inner.begin_shutdown(false);
            self.inner.join_all(None);
        }
    }
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("id", &self.inner.id)
            .field("workers", &self.inner.cfg.get_workers())
            .field("live", &self.inner.live.load(Ordering::Relaxed))
            .field("queued", &self.inner.rx.len())
            .field("shutdown", &self.inner.shutdown.load(Ordering::Relaxed))
            .finish()
    }
}
