//! [`ProcessPool`]: the public handle and its lifecycle (build, submit, shutdown, drop), and
//! [`PoolShared`], what the handle, the collectors and the futures' kill route share: the
//! scheduler behind its lock, the worker set-up, the restart-intensity counters.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use poolrun_core::backend::{
    default_window, task_pair, BatchSubmit, Dispatch, ErasedPromise, InitReport, KillRoute, Route,
    ThreadSet,
};
use poolrun_core::{
    codec, Deadline, Executor, Mode, Payload, PoolConfig, PoolError, TaskError, TaskFuture,
};

use crate::child::WorkerSetup;
use crate::collector;
use crate::item::{self, Batch, Item};
use crate::link::Link;
use crate::scheduler::{Action, Scheduler, WorkerLink};
use crate::spawn;
use crate::sys;
use crate::transport::{self, Arg};

/// More than this many workers in a row dying before they became ready breaks the pool
/// (the restart-intensity limit; an OTP supervisor's `intensity`).
pub(crate) const RESTART_LIMIT: usize = 5;
/// More than this many workers in a row forked while the host was inside a panic hook
/// breaks the pool.
const UNSAFE_FORK_LIMIT: usize = 50;
/// How long a daemon pool's drop waits for its threads after killing the workers.
const DROP_JOIN_LIMIT: Duration = Duration::from_secs(10);

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
    threads: ThreadSet,
    me: Weak<PoolShared>,
}

impl PoolShared {
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
        for a in s.dispatch() {
            match a {
                Action::Send(link, msg) => {
                    link.post(msg);
                    if !links.iter().any(|l| Arc::ptr_eq(l, &link)) {
                        links.push(link);
                    }
                }
                Action::Fail(b, e) => fails.push((b, e)),
            }
        }
        drop(s);
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

    fn route(&self, id: u64) -> Route {
        let weak: Weak<dyn KillRoute> = self.me.clone();
        Route::new(weak, id)
    }

    /// Queue one batch of `f` over `args`; one future per argument.
    fn submit_batch<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        args: Vec<A>,
    ) -> Vec<TaskFuture<R>> {
        let (trampoline, func) = transport::task_addrs(f);
        let mut futures = Vec::with_capacity(args.len());
        let mut items = VecDeque::with_capacity(args.len());
        for a in args {
            let id = item::next_id();
            let (p, fut) = task_pair::<R>(Some(self.route(id)));
            // Encoding (and a big argument's copy into its memfd) happens here, in the
            // submitting thread, outside every lock.
            match codec::encode(&a) {
                Ok(bytes) => {
                    items.push_back(Item::new(id, Arg::new(bytes), ErasedPromise::from(p)))
                }
                Err(e) => p.complete(Err(e)),
            }
            futures.push(fut);
        }
        if !items.is_empty() {
            let batch = Batch {
                trampoline,
                func,
                items,
            };
            if let Err((b, e)) = self.with_sched(|s| s.push(batch)) {
                b.fail_all(&e);
            }
        }
        futures
    }

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

    /// Daemon teardown: cancel what is queued, kill every worker now; running tasks fail
    /// with [`TaskError::Shutdown`] (their collectors do that).
    fn kill(&self) {
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

/// A pool of forked worker processes with the [`Executor`] API.
///
/// Tasks are plain `fn` pointers plus postcard-encoded arguments; each runs in a worker
/// process forked from this one, and its result comes back encoded. A worker that dies (a
/// signal, `abort`, `exit`, the OOM killer) fails only the task it was running with
/// [`TaskError::WorkerDied`]; the pool reaps it by pid, forks a replacement and carries on.
/// Workers die with the parent, even when it is killed with SIGKILL. See the crate's
/// README.md for the fork protocol.
///
/// ```
/// use poolrun_core::{Executor, PoolConfig};
/// use poolrun_procpool::ProcessPool;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let pool = ProcessPool::new(PoolConfig::new().workers(2)).unwrap();
/// assert_eq!(pool.submit(square, 7).result(), Ok(49));
/// let v: Vec<u64> = pool.map(square, 0..10u64).chunksize(4).map(|r| r.unwrap()).collect();
/// assert_eq!(v[9], 81);
/// ```
pub struct ProcessPool {
    shared: Arc<PoolShared>,
    workers: usize,
    daemon: bool,
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.workers)
            .field("daemon", &self.daemon)
            .field("pending", &self.pending())
            .finish()
    }
}

impl ProcessPool {
    /// Fork `cfg.workers` worker processes and start the pool. Returns once every worker
    /// is forked (its initializer may still be running).
    ///
    /// Errors: [`PoolError::InvalidConfig`] for a bad config; [`PoolError::Io`] if a fork,
    /// a channel or a pool thread could not be made; [`PoolError::Spawn`] inside a pool
    /// worker or a foreign fork. Every worker already forked is then killed and reaped.
    pub fn new(cfg: PoolConfig) -> Result<ProcessPool, PoolError> {
        cfg.validate()?;
        let n = cfg.get_workers();
        let setup = Arc::new(WorkerSetup {
            initializer: cfg.get_initializer().cloned(),
            gil: cfg.get_gil(),
            max_tasks: cfg.get_max_tasks_per_child(),
        });
        let mut handles = Vec::with_capacity(n);
        let mut first_err = None;
        for r in spawn::spawn(&setup, n) {
            match r {
                Ok(h) => handles.push(h),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            for h in handles {
                sys::kill_worker(h.pid);
                sys::reap(h.pid, Duration::ZERO);
            }
            return Err(e);
        }
        let shared = Arc::new_cyclic(|me| PoolShared {
            sched: Mutex::new(Scheduler::new(n, cfg.get_max_tasks_per_child())),
            setup,
            task_timeout: cfg.get_task_timeout(),
            startup_failures: AtomicUsize::new(0),
            unsafe_forks: AtomicUsize::new(0),
            init_report: InitReport::default(),
            threads: ThreadSet::new(),
            me: me.clone(),
        });
        let pool = ProcessPool {
            shared: shared.clone(),
            workers: n,
            daemon: cfg.get_daemon(),
        };
        // Attach every first worker before returning (so `worker_pids` and dispatch see them
        // at once), then give each its collector.
        let mut started = handles
            .into_iter()
            .enumerate()
            .map(|(idx, h)| collector::attach(&shared, idx, h))
            .collect::<Vec<_>>()
            .into_iter();
        for idx in 0..n {
            // The worker is handed over only once the thread runs: if it cannot start, the
            // worker is still ours to kill and reap here.
            let (give, take) = crossbeam_channel::bounded(1);
            let s2 = shared.clone();
            let r = shared
                .threads
                .spawn(format!("poolrun-collect-{idx}"), move || {
                    collector::collector(s2, idx, take.recv().ok().flatten())
                });
            if let Err(e) = r {
                for w in started {
                    w.abandon(&shared);
                }
                drop(pool); // kills the attached workers; their collectors reap them
                return Err(PoolError::os("spawn a collector thread", e));
            }
            let _ = give.send(started.next());
        }
        Ok(pool)
    }

    /// The pids of the worker processes alive right now (for diagnostics and tests).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.lock().pids()
    }

    /// Tasks submitted and not yet finished (queued or running).
    pub fn pending(&self) -> usize {
        self.shared.lock().pending()
    }

    /// Tasks queued and not yet handed to a worker.
    pub fn queued(&self) -> usize {
        self.shared.lock().queued()
    }

    fn join(&self, deadline: Deadline) -> bool {
        self.shared.threads.join_until(deadline)
    }
}

impl Dispatch for ProcessPool {
    fn batch_submitter<A: Payload, R: Payload>(&self, f: fn(A) -> R) -> BatchSubmit<A, R> {
        let shared = self.shared.clone();
        Box::new(move |items| shared.submit_batch(f, items))
    }

    /// At least 16 chunks: with small chunks the queue never runs dry between the
    /// consumer's wake-ups. Still a fixed bound: an endless input runs in bounded memory.
    fn map_window(&self) -> usize {
        default_window(self.workers).max(16)
    }
}

impl Executor for ProcessPool {
    fn submit<A: Payload, R: Payload>(&self, f: fn(A) -> R, arg: A) -> TaskFuture<R> {
        match self.shared.submit_batch(f, vec![arg]).pop() {
            Some(fut) => fut,
            None => TaskFuture::ready(Err(TaskError::Shutdown)),
        }
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.shared.close(cancel_pending);
        if wait {
            self.join(Deadline::NEVER);
        }
    }

    fn shutdown_timeout(&self, cancel_pending: bool, timeout: Duration) -> bool {
        self.shared.close(cancel_pending);
        self.join(Deadline::after(Some(timeout)))
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn mode(&self) -> Mode {
        Mode::Process
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        if self.daemon {
            self.shared.kill();
            let own = self.shared.threads.contains_current();
            if !self.join(Deadline::after(Some(DROP_JOIN_LIMIT))) && !own {
                eprintln!(
                    "poolrun: process pool threads did not finish within {DROP_JOIN_LIMIT:?} \
                     (a done-callback still running?); leaving them to finish"
                );
            }
        } else {
            self.shutdown(true, false);
        }
    }
}
