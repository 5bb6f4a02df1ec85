//! [`PoolShared`]: what the pool handle, its worker threads, its deadline timer and its
//! futures' kill route share — the work queue and its closing, the live workers, and the
//! counters.
//!
//! ## The queue and shutdown
//! Work travels on one unbounded FIFO channel that every worker takes from, so a task is
//! *running* exactly when a worker takes it and everything behind it stays cancellable.
//! Shutdown is not a message in that queue (a second shutdown that cancels the queue would
//! drain such messages with the work, leaving busy workers waiting forever): it is the
//! channel's own closing. The pool holds the only sender, behind a read-write lock that
//! every submit takes for reading; shutdown takes it for writing and drops the sender, so no
//! work can enter after that, and each worker's `recv` reports "disconnected" once the queue
//! is empty — then the worker exits.
//!
//! ## Stopping a task, and detached threads
//! A thread cannot be killed. A task that is killed (`TaskFuture::kill`) or passes its
//! `task_timeout` is stopped at its next `gil::checkpoint()`; its future is already done, so
//! its worker is *retired* at once: a replacement thread starts (the pool keeps its
//! strength) and the retired thread is detached — shutdown and drop no longer wait for it.
//! Code that never reaches a checkpoint (a hash, a regex, a blocking read) keeps its thread
//! busy until it returns; the pool reports such threads once on stderr when it shuts down.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use poolrun_core::backend::{
    KillRoute, Route, RunWord, Stop, TaskCounters, ThreadKey, ThreadSet, WorkerRuntime,
};
use poolrun_core::gil::Gil;
use poolrun_core::{PoolConfig, PoolError, PoolStats, TaskError};

use crate::timer::Timer;

/// What a worker needs to run a task.
pub(crate) struct TaskCtx<'a> {
    pub rt: &'a WorkerRuntime,
    pub state: &'a Arc<WorkerState>,
    pub pool: &'a Arc<PoolShared>,
    /// `(timeout, timer)` when the pool has a `task_timeout`.
    pub timeout: Option<(Duration, &'a Timer)>,
}

/// A unit of work in the queue.
pub(crate) trait Work: Send {
    /// Run it on a worker. Returns how many tasks actually ran (for `max_tasks_per_child`).
    fn run(self: Box<Self>, ctx: &TaskCtx<'_>) -> usize;
    /// It will never run: fail every task not yet started with `err` (`Cancelled` leaves
    /// them in the cancelled state).
    fn abandon(self: Box<Self>, err: TaskError, counts: &TaskCounters);
}

/// One worker thread's state, shared with the timer and the kill route.
pub(crate) struct WorkerState {
    /// Raised to stop the task this worker runs (at its next checkpoint).
    pub stop: Arc<AtomicBool>,
    /// The task running now, for the kill handshake ([`RunWord`]).
    pub run: AtomicU64,
    /// Set once its task was stopped: it takes no more work (a replacement runs already).
    retired: AtomicBool,
    /// Its thread in the pool's [`ThreadSet`].
    pub thread: Mutex<Option<ThreadKey>>,
    /// Outcomes of the tasks it ran (its own cache line: no contention between workers);
    /// folded into the pool's counters when its thread ends.
    pub counts: TaskCounters,
}

impl WorkerState {
    pub(crate) fn new() -> Self {
        WorkerState {
            stop: Arc::new(AtomicBool::new(false)),
            run: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            thread: Mutex::new(None),
            counts: TaskCounters::default(),
        }
    }

    pub(crate) fn run_word(&self) -> RunWord<'_> {
        RunWord::new(&self.run)
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }
}

/// State shared by the pool handle, its threads and its futures' kill route.
pub(crate) struct PoolShared {
    pub id: u64,
    pub cfg: PoolConfig,
    pub gil: Option<Gil>,
    /// The deadline timer: started with the pool when it has a `task_timeout`, else on the
    /// first task with its own timeout (`TaskOptions`).
    timer: std::sync::OnceLock<Timer>,
    /// The queue's only sender; `None` once closed (see the module docs).
    tx: RwLock<Option<Sender<Box<dyn Work>>>>,
    rx: Receiver<Box<dyn Work>>,
    closed: AtomicBool,
    /// Daemon drop: no replacements, running tasks are being stopped.
    killing: AtomicBool,
    /// Workers that take work (started, not exited, not retired).
    live: AtomicUsize,
    next_worker: AtomicUsize,
    next_task: AtomicU64,
    workers: Mutex<Vec<Weak<WorkerState>>>,
    pub threads: ThreadSet,
    pub init_report: poolrun_core::backend::InitReport,
    detached_reported: AtomicBool,
    /// Starts one more worker thread (set by `pool.rs`; a function pointer, so this file
    /// does not depend on the worker loop).
    spawn_fn: fn(&Arc<PoolShared>) -> Result<(), PoolError>,
    /// This very allocation (for the kill route, which is reached through `&self`).
    me: Weak<PoolShared>,
    /// The same, as every future's kill route (cloned per task: one atomic increment).
    route: Weak<dyn KillRoute>,
    /// Outcome counters for `stats()`: what the pool's own paths count (kills, timeouts,
    /// drained tasks, restarts) and what exited workers folded in. Thread mode counts in
    /// its own code paths, not through the futures' routes: a per-task `Arc` clone of the
    /// counters cost 15% of a tiny task's round trip.
    pub counters: Arc<TaskCounters>,
}

impl PoolShared {
    pub(crate) fn new(
        id: u64,
        cfg: PoolConfig,
        gil: Option<Gil>,
        timer: Option<Timer>,
        spawn_fn: fn(&Arc<PoolShared>) -> Result<(), PoolError>,
    ) -> Arc<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        Arc::new_cyclic(|me| PoolShared {
            id,
            cfg,
            gil,
            timer: timer.map(std::sync::OnceLock::from).unwrap_or_default(),
            tx: RwLock::new(Some(tx)),
            rx,
            closed: AtomicBool::new(false),
            killing: AtomicBool::new(false),
            live: AtomicUsize::new(0),
            next_worker: AtomicUsize::new(0),
            next_task: AtomicU64::new(1),
            workers: Mutex::new(Vec::new()),
            threads: ThreadSet::new(),
            init_report: Default::default(),
            detached_reported: AtomicBool::new(false),
            spawn_fn,
            me: me.clone(),
            route: me.clone(),
            counters: Arc::default(),
        })
    }

    fn workers(&self) -> MutexGuard<'_, Vec<Weak<WorkerState>>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Kill routes for `n` new tasks (fresh ids, never 0; one atomic step for all of them).
    pub(crate) fn routes(&self, n: usize) -> impl Iterator<Item = Route> + '_ {
        let first = self.next_task.fetch_add(n as u64, Ordering::Relaxed);
        (first..first + n as u64).map(|id| Route::new(self.route.clone(), id))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn queued(&self) -> usize {
        self.rx.len()
    }

    /// The deadline timer, started now if the pool has none yet (`None` if its thread
    /// cannot start: the caller fails the task).
    pub(crate) fn timer(&self) -> Option<&Timer> {
        if let Some(t) = self.timer.get() {
            return Some(t);
        }
        let t = Timer::start(format!("poolrun-timer-{}", self.id)).ok()?;
        if let Err(t) = self.timer.set(t) {
            t.stop(); // another thread started one first
        }
        self.timer.get()
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// `Executor::stats`.
    pub(crate) fn stats(&self) -> PoolStats {
        let mut s = self.counters.snapshot(self.cfg.get_workers());
        let mut running = 0;
        for w in self.workers().iter().filter_map(Weak::upgrade) {
            w.counts.add_to(&mut s);
            if !w.is_retired() && w.run_word().running() != 0 {
                running += 1;
            }
        }
        s.workers_alive = self.live();
        s.running = running;
        s.idle = s.workers_alive.saturating_sub(running);
        s.queued = self.queued();
        s.detached_threads = self.threads.detached_running();
        s
    }

    /// Queue work; after shutdown it is given back (the caller fails it with `Shutdown`).
    pub(crate) fn enqueue(&self, work: Box<dyn Work>) -> Result<(), Box<dyn Work>> {
        let tx = self.tx.read().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            // The receiver lives as long as `self`: a send cannot fail.
            Some(tx) => tx.send(work).map_err(|e| e.into_inner()),
            None => Err(work),
        }
    }

    /// Fail everything queued with `err` (`Cancelled` leaves the futures cancelled).
    pub(crate) fn drain(&self, err: TaskError) {
        while let Ok(w) = self.rx.try_recv() {
            w.abandon(err.clone(), &self.counters);
        }
    }

    /// The next work for a worker; `None` once the pool is closed and the queue is empty.
    pub(crate) fn next_work(&self) -> Option<Box<dyn Work>> {
        self.rx.recv().ok()
    }

    /// Register a new worker (before its thread starts). Refused during a daemon drop.
    pub(crate) fn add_worker(&self, w: &Arc<WorkerState>) -> Result<usize, PoolError> {
        if self.killing.load(Ordering::SeqCst) {
            return Err(PoolError::Spawn("the pool is being dropped".into()));
        }
        let mut list = self.workers();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(w));
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(self.next_worker.fetch_add(1, Ordering::Relaxed))
    }

    /// A worker's thread could not start after [`add_worker`](Self::add_worker).
    pub(crate) fn worker_not_started(&self) {
        self.leave();
    }

    /// Start one more worker thread.
    pub(crate) fn spawn_worker(self: &Arc<Self>) -> Result<(), PoolError> {
        (self.spawn_fn)(self)
    }

    /// A worker leaves (it exits, or retires).
    fn leave(&self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }

    /// A worker's loop ended (not retired).
    pub(crate) fn worker_exited(&self) {
        self.leave();
    }

    /// The task on `w` was stopped (killed, or past its timeout) and its future is done:
    /// retire `w` (it takes no more work; its thread is detached, so shutdown does not wait
    /// for a task that may never reach a checkpoint) and start a replacement now.
    pub(crate) fn retire_and_replace(self: &Arc<Self>, w: &WorkerState) {
        if w.retired.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(key) = *w.thread.lock().unwrap_or_else(|p| p.into_inner()) {
            self.threads.detach(key);
        }
        self.leave();
        if !self.killing.load(Ordering::SeqCst) {
            self.counters.restarted();
            if let Err(e) = self.spawn_worker() {
                eprintln!(
                    "poolrun: thread pool {}: cannot start a replacement worker: {e}",
                    self.id
                );
            }
        }
    }

    /// Daemon drop: close, cancel the queue, stop every running task at its next checkpoint.
    pub(crate) fn kill(&self) {
        self.killing.store(true, Ordering::SeqCst);
        self.close(true);
        for w in self.workers().iter().filter_map(|w| w.upgrade()) {
            w.stop.store(true, Ordering::SeqCst);
        }
        if let Some(t) = self.timer.get() {
            t.stop();
        }
    }
}

impl KillRoute for PoolShared {
    fn cancelled(&self, _task: u64) {
        self.counters.record::<()>(&Err(TaskError::Cancelled), true);
    }

    /// Find the worker running `task` and claim it (see [`RunWord`]): only a successful
    /// claim raises its stop flag, so the flag can only ever stop this task. A task not
    /// running anywhere has nothing to stop: its worker sees the future done before it
    /// begins it.
    fn kill(&self, task: u64) {
        let target = self
            .workers()
            .iter()
            .filter_map(|w| w.upgrade())
            .find(|w| w.run_word().claim(task));
        // `TaskFuture::kill` calls this once, after claiming the running task (its
        // cancellation is counted by `cancelled`; its own completion then loses).
        self.counters.killed();
        if let Some(w) = target {
            w.stop.store(true, Ordering::SeqCst);
            // `retire_and_replace` needs the `Arc`; the route is only ever reached through
            // one (`ThreadPool` registers `Arc<PoolShared>`).
            if let Some(me) = self.me.upgrade() {
                me.retire_and_replace(&w);
            }
        }
    }
}

impl fmt::Debug for PoolShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolShared")
            .field("id", &self.id)
            .field("live", &self.live())
            .field("queued", &self.queued())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Stop for PoolShared {
    /// Stop accepting work; with `cancel_pending`, cancel what is queued. Idempotent.
    fn close(&self, cancel_pending: bool) {
        self.closed.store(true, Ordering::SeqCst);
        drop(self.tx.write().unwrap_or_else(|p| p.into_inner()).take());
        if cancel_pending {
            self.drain(TaskError::Cancelled);
        }
        if self.live() == 0 {
            // (every worker is gone, e.g. none could start: nobody will take the rest)
            self.drain(TaskError::Shutdown);
        }
    }

    /// Wait for every worker thread (not the caller, not detached ones) until `deadline`.
    fn join(&self, deadline: poolrun_core::Deadline) -> bool {
        let done = self.threads.join_until(deadline);
        let detached = self.threads.detached_running();
        if detached > 0 && !self.detached_reported.swap(true, Ordering::SeqCst) {
            eprintln!(
                "poolrun: thread pool {}: {detached} thread(s) still run a task that was killed \
                 or timed out and has not reached a checkpoint; not waiting for them (a thread \
                 cannot be stopped between checkpoints)",
                self.id
            );
        }
        if done && !self.threads.contains_current() {
            if let Some(t) = self.timer.get() {
                t.stop();
            }
        }
        done
    }
}
