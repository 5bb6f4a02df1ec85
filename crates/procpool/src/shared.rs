//! [`PoolShared`]: what the pool handle, its collectors and its futures' kill route share —
//! the scheduler behind its lock (and [`PoolShared::with_sched`], the one way state
//! changes), the worker set-up, the restart-intensity counters — and submitting, closing
//! and killing, which all go through the scheduler.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use poolrun_core::backend::{
    run_start_callbacks, task_pair, ChunkState, ErasedPromise, InitReport, KillRoute, Route, Stop,
    TaskCounters, ThreadSet,
};
use poolrun_core::{Payload, PoolStats, TaskError, TaskFuture};

use crate::child::WorkerSetup;
use crate::item::{self, Batch, Item};
use crate::link::Link;
use crate::scheduler::{Action, Scheduler, WorkerLink};
use crate::transport::{self, Arg};

/// More than this many workers in a row dying before they became ready breaks the pool
/// (the restart-intensity limit; an OTP supervisor's `intensity`).
pub(crate) const RESTART_LIMIT: usize = 5;
/// More than this many workers in a row forked while the host was inside a panic hook
/// breaks the pool.
const UNSAFE_FORK_LIMIT: usize = 50;

/// State shared by the pool handle, its collectors and its futures' kill route.
pub(crate) struct PoolShared {
    sched: Mutex<Scheduler<Link>>,
    pub setup: Arc<WorkerSetup>,
    pub task_timeout: Option<Duration>,
    /// Workers in a row that died before becoming ready.
    startup_failures: AtomicUsize,
    /// Workers in a row that found the panic machinery locked at fork.
    unsafe_forks: AtomicUsize,
    init_report: InitReport,
    pub threads: ThreadSet,
    /// This very allocation, as every future's kill route (cloned per task).
    route: Weak<dyn KillRoute>,
    /// Outcome counters for `stats()`, attached to every task's route and chunk record.
    pub counters: Arc<TaskCounters>,
    workers: usize,
    /// Set once a task with its own timeout was submitted: collectors then look up the
    /// running item's timeout (`TaskOptions`).
    pub per_task_timeouts: std::sync::atomic::AtomicBool,
}

impl PoolShared {
    /// A pool of `workers` entries; see `ProcessPool::new`.
    pub(crate) fn new(
        workers: usize,
        setup: Arc<WorkerSetup>,
        task_timeout: Option<Duration>,
    ) -> Arc<PoolShared> {
        let max_tasks = setup.max_tasks;
        Arc::new_cyclic(|me| PoolShared {
            sched: Mutex::new(Scheduler::new(workers, max_tasks)),
            setup,
            task_timeout,
            startup_failures: AtomicUsize::new(0),
            unsafe_forks: AtomicUsize::new(0),
            init_report: InitReport::default(),
            threads: ThreadSet::new(),
            route: me.clone() as Weak<dyn KillRoute>,
            counters: Arc::default(),
            workers,
            per_task_timeouts: Default::default(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Scheduler<Link>> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the scheduler, then dispatch, all under its lock; then, with the lock
    /// released, send what the scheduler decided (in its order, see `link.rs`) and fail
    /// what it refused. The one way state changes in this pool.
    pub(crate) fn with_sched<T>(&self, f: impl FnOnce(&mut Scheduler<Link>) -> T) -> T {
        let mut s = self.lock();
        let t = f(&mut s);
        let mut links: Vec<Arc<Link>> = Vec::new();
        let mut fails = Vec::new();
        let mut started = Vec::new();
        for a in s.dispatch() {
            match a {
                Action::Send(link, msg) => {
                    link.post(msg);
                    if !links.iter().any(|l| Arc::ptr_eq(l, &link)) {
                        links.push(link);
                    }
                }
                Action::Fail(b, e) => fails.push((b, e)),
                Action::Started(cbs) => started.extend(cbs),
            }
        }
        drop(s);
        run_start_callbacks(started);
        for l in links {
            if !l.flush() {
                // Gone or broken: kill it (if still attached) so its collector replaces it
                // and re-queues what it held.
                let s = self.lock();
                if s.is_attached(&l) {
                    l.kill();
                }
            }
        }
        for (b, e) in fails {
            b.fail_all(&e);
        }
        t
    }

    /// A worker got ready (or finished a task): the restart counters start over.
    pub(crate) fn startup_succeeded(&self) {
        if self.startup_failures.load(Ordering::Relaxed) != 0 {
            self.startup_failures.store(0, Ordering::Relaxed);
        }
        if self.unsafe_forks.load(Ordering::Relaxed) != 0 {
            self.unsafe_forks.store(0, Ordering::Relaxed);
        }
    }

    /// A worker died before it became ready (or could not be forked). Returns how many in a
    /// row; past [`RESTART_LIMIT`] the pool is broken.
    pub(crate) fn startup_failure(&self, why: &str) -> usize {
        let n = self.startup_failures.fetch_add(1, Ordering::SeqCst) + 1;
        if n > RESTART_LIMIT {
            self.break_pool(&format!(
                "{n} workers in a row failed to start (last: {why}); not respawning"
            ));
        }
        n
    }

    /// A worker exited because it was forked while the host was inside a panic hook.
    /// Retried without the restart back-off; only a long run of these breaks the pool.
    pub(crate) fn unsafe_fork(&self) {
        let n = self.unsafe_forks.fetch_add(1, Ordering::SeqCst) + 1;
        if n > UNSAFE_FORK_LIMIT {
            self.break_pool(&format!(
                "{n} workers in a row were forked while the host was inside a panic hook; \
                 not respawning"
            ));
        }
    }

    /// Give up on the pool: every queued and later task fails with `Broken`.
    pub(crate) fn break_pool(&self, msg: &str) {
        let Some(batches) = self.with_sched(|s| s.set_broken(msg)) else {
            return;
        };
        eprintln!("poolrun: process pool broken: {msg}");
        let err = TaskError::Broken(msg.to_string());
        for b in batches {
            b.fail_all(&err);
        }
    }

    /// Report an initializer failure once per pool.
    pub(crate) fn report_init_failure(&self, pid: u32, msg: &str) {
        self.init_report.once(|| {
            format!(
                "poolrun: worker initializer failed in worker {pid}: {msg}; tasks given to a \
                 worker whose initializer failed fail with TaskError::Initializer (not respawning)"
            )
        });
    }

    /// Queue one batch of `f` over `args`; one future per argument.
    pub(crate) fn submit_batch<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        args: Vec<A>,
    ) -> Vec<TaskFuture<R>> {
        self.submit_batch_with(f, args, None)
    }

    /// [`submit_batch`](Self::submit_batch) with a timeout for each of these tasks
    /// (`TaskOptions`).
    pub(crate) fn submit_batch_with<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        args: Vec<A>,
        timeout: Option<Duration>,
    ) -> Vec<TaskFuture<R>> {
        if timeout.is_some() {
            self.per_task_timeouts.store(true, Ordering::SeqCst);
        }
        let mut futures = Vec::with_capacity(args.len());
        self.submit_items(f, args, timeout, |id| {
            let (p, fut) = task_pair::<R>(Some(
                Route::new(self.route.clone(), id).counted(&self.counters),
            ));
            futures.push(fut);
            ErasedPromise::from(p)
        });
        futures
    }

    /// Queue one `map` chunk of `f` over `args` with one completion record: each argument
    /// is still its own item (own id, start, cancel, requeue, crash attribution),
    /// completed through its slot.
    pub(crate) fn submit_chunk<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        args: Vec<A>,
    ) -> Arc<ChunkState<R>> {
        let chunk = ChunkState::counted(args.len(), Some(self.counters.clone()));
        let mut slot = 0;
        self.submit_items(f, args, None, |_| {
            slot += 1;
            ErasedPromise::slot(&chunk, slot - 1)
        });
        chunk
    }

    /// Encode `args` (outside every lock; small ones share one buffer), give each item the
    /// promise `promise(id)` makes, and queue them as one batch. An argument that fails to
    /// encode completes its promise with the error.
    fn submit_items<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        args: Vec<A>,
        timeout: Option<Duration>,
        mut promise: impl FnMut(u64) -> ErasedPromise,
    ) {
        let (trampoline, func) = transport::task_addrs(f);
        let mut items = VecDeque::with_capacity(args.len());
        let first = item::next_ids(args.len());
        let encoded = Arg::encode_all(&args);
        drop(args);
        for (arg, id) in encoded.into_iter().zip(first..) {
            let p = promise(id);
            match arg {
                Ok(arg) => {
                    let mut it = Item::new(id, arg, p);
                    it.timeout = timeout;
                    items.push_back(it);
                }
                Err(e) => p.fail(e),
            }
        }
        self.push_batch(trampoline, func, items);
    }

    /// Queue one batch of already-encoded arguments for the task at `(trampoline, func)`
    /// (addresses made by [`transport::task_addrs`] in this image); each future yields the
    /// task's encoded result, undecoded. For a backend that relays tasks from another
    /// process of the same executable.
    pub(crate) fn submit_encoded(
        &self,
        trampoline: usize,
        func: usize,
        args: Vec<Vec<u8>>,
    ) -> Vec<TaskFuture<Vec<u8>>> {
        let first = item::next_ids(args.len());
        let mut futures = Vec::with_capacity(args.len());
        let mut items = VecDeque::with_capacity(args.len());
        for (bytes, id) in args.into_iter().zip(first..) {
            let (p, fut) = task_pair::<Vec<u8>>(Some(
                Route::new(self.route.clone(), id).counted(&self.counters),
            ));
            items.push_back(Item::new(id, Arg::new(&bytes), ErasedPromise::raw(p)));
            futures.push(fut);
        }
        self.push_batch(trampoline, func, items);
        futures
    }

    /// Hand a batch to the scheduler (failing its items if the pool is closed).
    fn push_batch(&self, trampoline: usize, func: usize, items: VecDeque<Item>) {
        if items.is_empty() {
            return;
        }
        let batch = Batch {
            trampoline,
            func,
            items,
        };
        if let Err((b, e)) = self.with_sched(|s| s.push(batch)) {
            b.fail_all(&e);
        }
    }

    /// `Executor::stats`: the counters, and under the scheduler lock the queue and the
    /// attached workers (busy when their status page shows an item running).
    pub(crate) fn stats(&self) -> PoolStats {
        let mut st = self.counters.snapshot(self.workers);
        let s = self.lock();
        let links = s.attached_links();
        st.queued = s.queued();
        drop(s);
        st.workers_alive = links.len();
        st.running = links.iter().filter(|l| l.status.running().0 != 0).count();
        st.idle = st.workers_alive - st.running;
        st
    }

    /// Daemon teardown: cancel what is queued, kill every worker now; running tasks fail
    /// with [`TaskError::Shutdown`] (their collectors do that).
    pub(crate) fn kill(&self) {
        let batches = self.with_sched(|s| s.kill_all());
        for b in batches {
            for it in b.items {
                if !it.cancel() {
                    it.fail(TaskError::Shutdown);
                }
            }
        }
    }
}

impl KillRoute for PoolShared {
    fn kill(&self, task: u64) {
        // Under the scheduler lock: the worker found holding it is attached, so its pid is
        // not reaped (F3) when `kill_item` signals it.
        self.lock().kill_item(task);
    }
}

impl Stop for PoolShared {
    /// Stop accepting work; with `cancel_pending`, cancel what has not started (items put
    /// back after a crash have started: they stay queued and run).
    fn close(&self, cancel_pending: bool) {
        let batches = self.with_sched(|s| s.close(cancel_pending));
        let mut keep = Vec::new();
        for mut b in batches {
            let items = std::mem::take(&mut b.items);
            b.items = items.into_iter().filter(|it| !it.cancel()).collect();
            if !b.items.is_empty() {
                keep.push(b);
            }
        }
        if !keep.is_empty() {
            for (b, e) in self.with_sched(|s| s.requeue_front(keep)) {
                b.fail_all(&e);
            }
        }
    }

    fn join(&self, deadline: poolrun_core::Deadline) -> bool {
        self.threads.join_until(deadline)
    }
}
