//! [`ProcessPool`]: the public pool, its shared state and its lifecycle (build, submit, map,
//! shutdown, drop).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use poolrun_core::{
    codec, default_window, task_pair_routed, BatchSubmit, Executor, KillRoute, Mode, Payload,
    PoolConfig, PoolError, RouteId, TaskError, TaskFuture,
};

use crate::queue::{Item, Job, Queue, Rejected};
use crate::slot::{self, Slot};
use crate::spawn::{self, WorkerSetup};
use crate::sys;
use crate::transport;

/// More than this many workers in a row dying before they became ready breaks the pool
/// (the restart-intensity limit; an OTP supervisor's `intensity`).
pub(crate) const RESTART_LIMIT: usize = 5;
/// More than this many workers in a row forked while the host was inside a panic hook
/// breaks the pool.
const UNSAFE_FORK_LIMIT: usize = 50;
/// How long a daemon pool's drop waits for its threads after killing the workers.
const DROP_JOIN_LIMIT: Duration = Duration::from_secs(10);

/// How many chunks a process-mode `map` keeps in flight: at least 16, so that with small
/// chunks the queue never runs dry between the consumer's wake-ups (each chunk is a message
/// round trip). Still a fixed bound: an endless input runs in bounded memory.
fn map_window(workers: usize) -> usize {
    default_window(workers).max(16)
}

/// State shared by the pool handle, its slot threads and its `map` iterators.
pub(crate) struct Shared {
    /// Every future's way to `kill` its running task: a [`Killer`] (holding only a weak
    /// reference back, so queued items never keep the pool alive), registered.
    route: RouteId,
    _killer: Arc<dyn KillRoute>,
    pub queue: Arc<Queue>,
    pub slots: Vec<Slot>,
    pub setup: Arc<WorkerSetup>,
    pub task_timeout: Option<Duration>,
    pub max_tasks: Option<usize>,
    /// Workers in a row that died before becoming ready.
    startup_failures: AtomicUsize,
    /// Workers in a row that found the panic machinery locked at fork.
    unsafe_forks: AtomicUsize,
    /// Where the direct-dispatch scan starts (round robin).
    next_slot: AtomicUsize,
    init_reported: AtomicBool,
    live_threads: Mutex<usize>,
    threads_done: Condvar,
}

impl Shared {
    /// The collectors should not fork replacements any more.
    pub(crate) fn stop_spawning(&self) -> bool {
        self.queue.is_killing() || self.queue.is_finished() || self.queue.broken().is_some()
    }

    /// The slot a direct dispatch tries first.
    pub(crate) fn next_slot(&self) -> usize {
        self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len().max(1)
    }

    /// A worker got ready (or finished a task): the restart counter starts over.
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

    /// A worker exited because it was forked while the host was inside a panic hook
    /// (`worker::EXIT_UNSAFE_FORK`). Retried without the restart back-off; only a long run of
    /// these (the host panicking non-stop) breaks the pool.
    pub(crate) fn unsafe_fork(&self) {
        let n = self.unsafe_forks.fetch_add(1, Ordering::SeqCst) + 1;
        if n > UNSAFE_FORK_LIMIT {
            self.break_pool(&format!(
                "{n} workers in a row were forked while the host was inside a panic hook; \
                 not respawning"
            ));
        }
    }

    /// Give up on the pool: fail every queued and future task with `Broken`.
    pub(crate) fn break_pool(&self, msg: &str) {
        let Some(jobs) = self.queue.set_broken(msg) else {
            return;
        };
        eprintln!("poolrun: process pool broken: {msg}");
        let err = TaskError::Broken(msg.to_string());
        for s in &self.slots {
            s.poison(err.clone(), self);
        }
        for j in jobs {
            j.fail_all(&err);
        }
    }

    /// Report an initializer failure once per pool.
    pub(crate) fn report_init_failure(&self, pid: u32, msg: &str) {
        if !self.init_reported.swap(true, Ordering::SeqCst) {
            eprintln!(
                "poolrun: worker initializer failed in worker {pid}: {msg}; tasks given to a \
                 worker whose initializer failed fail with TaskError::Initializer (not respawning)"
            );
        }
    }

    fn thread_exited(&self) {
        let mut n = self.live_threads.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.threads_done.notify_all();
    }

    /// Wait until every slot thread has exited; false on timeout.
    fn wait_threads(&self, deadline: Option<Instant>) -> bool {
        let mut n = self.live_threads.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            match deadline {
                None => n = self.threads_done.wait(n).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    n = self
                        .threads_done
                        .wait_timeout(n, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        true
    }

    /// Queue one job of `f` over `args`; one future per argument.
    fn submit_batch<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        args: Vec<A>,
    ) -> Vec<TaskFuture<R>> {
        let (trampoline, func) = transport::task_addrs(f);
        let mut futures = Vec::with_capacity(args.len());
        let mut items = VecDeque::with_capacity(args.len());
        for a in args {
            let (p, fut) = task_pair_routed::<R>(Some(self.route));
            match codec::encode(&a) {
                Ok(bytes) => items.push_back(Item::new(&self.queue, bytes, p.into())),
                Err(e) => p.complete(Err(e)),
            }
            futures.push(fut);
        }
        if items.is_empty() {
            return futures;
        }
        let mut job = Job {
            trampoline,
            func,
            items,
        };
        if !self.queue.is_closed() {
            match slot::try_direct(self, job) {
                Ok(()) => return futures,
                Err(j) => job = j,
            }
        }
        match self.queue.push(job) {
            Ok(()) => {}
            Err(Rejected::Closed(job)) => job.fail_all(&TaskError::Shutdown),
            Err(Rejected::Broken(job, msg)) => job.fail_all(&TaskError::Broken(msg)),
        }
        futures
    }
}

/// The [`KillRoute`] of a pool's futures.
struct Killer(Weak<Shared>);

impl KillRoute for Killer {
    fn kill(&self, key: usize) {
        if let Some(shared) = self.0.upgrade() {
            for slot in &shared.slots {
                if slot.kill_item(key) {
                    break;
                }
            }
        }
    }
}

thread_local! {
    /// The pool (its `Shared` address) whose slot thread this is, 0 elsewhere. A pool
    /// dropped or shut down from its own thread (a done-callback runs on a collector) must
    /// not wait for that thread to finish.
    static OWN_POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Decrements the live-thread count when a slot thread ends, however it ends.
struct ThreadGuard(Arc<Shared>);
impl Drop for ThreadGuard {
    fn drop(&mut self) {
        self.0.thread_exited();
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
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    workers: usize,
    daemon: bool,
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPool")
            .field("workers", &self.workers)
            .field("daemon", &self.daemon)
            .field("queue", &self.shared.queue)
            .finish()
    }
}

impl ProcessPool {
    /// Fork `cfg.workers` worker processes and start the pool. Returns once every worker
    /// is forked (its initializer may still be running).
    ///
    /// Errors: [`PoolError::InvalidConfig`] for a bad config, [`PoolError::Spawn`] if a
    /// worker or a pool thread could not be started (every worker already forked is then
    /// killed and reaped).
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
            return Err(PoolError::Spawn(e));
        }
        let shared = Arc::new_cyclic(|me| {
            let killer: Arc<dyn KillRoute> = Arc::new(Killer(me.clone()));
            Shared {
                route: RouteId::register(&killer),
                _killer: killer,
                queue: Arc::new(Queue::default()),
                slots: (0..n).map(|_| Slot::default()).collect(),
                setup,
                task_timeout: cfg.get_task_timeout(),
                max_tasks: cfg.get_max_tasks_per_child(),
                startup_failures: AtomicUsize::new(0),
                unsafe_forks: AtomicUsize::new(0),
                next_slot: AtomicUsize::new(0),
                init_reported: AtomicBool::new(false),
                live_threads: Mutex::new(0),
                threads_done: Condvar::new(),
            }
        });
        let pool = ProcessPool {
            shared: shared.clone(),
            threads: Mutex::new(Vec::with_capacity(2 * n)),
            workers: n,
            daemon: cfg.get_daemon(),
        };
        for (slot, h) in shared.slots.iter().zip(&handles) {
            slot.install(h, &shared);
        }
        let mut handles = handles.into_iter();
        for idx in 0..n {
            let first = handles.next();
            let first_pid = first.as_ref().map(|h| h.pid);
            let r = pool
                .start_thread(format!("poolrun-collect-{idx}"), {
                    let shared = shared.clone();
                    move || slot::collector(shared, idx, first)
                })
                .and_then(|()| {
                    pool.start_thread(format!("poolrun-feed-{idx}"), {
                        let shared = shared.clone();
                        move || slot::feeder(shared, idx)
                    })
                });
            if let Err(e) = r {
                // The collector that would own this worker did not start: kill and reap it
                // here; the pool's drop kills the rest.
                if let (Some(pid), true) = (first_pid, pool.threads_len() <= 2 * idx) {
                    sys::kill_worker(pid);
                    sys::reap(pid, Duration::ZERO);
                }
                for h in handles {
                    sys::kill_worker(h.pid);
                    sys::reap(h.pid, Duration::ZERO);
                }
                return Err(PoolError::Spawn(format!("cannot start a pool thread: {e}")));
            }
        }
        Ok(pool)
    }

    fn threads_len(&self) -> usize {
        self.threads.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn start_thread(
        &self,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        {
            let mut n = self
                .shared
                .live_threads
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *n += 1;
        }
        let guard = ThreadGuard(self.shared.clone());
        let me = Arc::as_ptr(&self.shared) as usize;
        let r = std::thread::Builder::new().name(name).spawn(move || {
            let _guard = guard;
            OWN_POOL.with(|p| p.set(me));
            body();
        });
        match r {
            Ok(h) => {
                self.threads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(h);
                Ok(())
            }
            // The closure (and the guard inside it) was dropped: the count is back.
            Err(e) => Err(e),
        }
    }

    /// The pids of the worker processes alive right now (for diagnostics and tests).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared
            .slots
            .iter()
            .filter_map(|s| s.lock().conn.as_ref().map(|c| c.pid.as_raw()))
            .filter_map(|p| u32::try_from(p).ok())
            .collect()
    }

    /// Tasks submitted and not yet finished (queued or running).
    pub fn pending(&self) -> usize {
        self.shared.queue.outstanding()
    }

    fn close(&self, cancel_pending: bool) {
        let jobs = self.shared.queue.close(cancel_pending);
        // Cancel what has not started; items already started (put back after a crash)
        // stay queued and run.
        let mut keep = Vec::new();
        for mut job in jobs {
            let items = std::mem::take(&mut job.items);
            for it in items {
                if !it.cancel() {
                    job.items.push_back(it);
                }
            }
            if !job.items.is_empty() {
                keep.push(job);
            }
        }
        if let Some((jobs, msg)) = self.shared.queue.push_front(keep) {
            for j in jobs {
                j.fail_all(&TaskError::Broken(msg.clone()));
            }
        }
        self.shared.queue.wake_all();
    }

    /// Daemon teardown: cancel queued work, kill every worker now; running tasks fail with
    /// [`TaskError::Shutdown`].
    fn kill(&self) {
        let jobs = self.shared.queue.kill();
        for job in jobs {
            for it in job.items {
                if !it.cancel() {
                    it.fail(TaskError::Shutdown);
                }
            }
        }
        for s in &self.shared.slots {
            s.kill_worker();
            s.notify();
        }
    }

    fn join(&self, deadline: Option<Instant>) -> bool {
        if OWN_POOL.with(|p| p.get()) == Arc::as_ptr(&self.shared) as usize {
            // Called from one of this pool's own threads (a done-callback): it cannot wait
            // for itself. The threads finish on their own; nothing is left unreaped.
            return false;
        }
        if !self.shared.wait_threads(deadline) {
            return false;
        }
        let handles = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
        true
    }
}

impl Executor for ProcessPool {
    fn submit<A: Payload, R: Payload>(&self, f: fn(A) -> R, arg: A) -> TaskFuture<R> {
        match self.shared.submit_batch(f, vec![arg]).pop() {
            Some(fut) => fut,
            None => TaskFuture::ready(Err(TaskError::Shutdown)),
        }
    }

    fn batch_submitter<A: Payload, R: Payload>(&self, f: fn(A) -> R) -> BatchSubmit<A, R> {
        let shared = self.shared.clone();
        Box::new(move |items| shared.submit_batch(f, items))
    }

    fn map_window(&self) -> usize {
        map_window(self.workers)
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.close(cancel_pending);
        if wait {
            self.join(None);
        }
    }

    fn shutdown_timeout(&self, cancel_pending: bool, timeout: Duration) -> bool {
        self.close(cancel_pending);
        self.join(Instant::now().checked_add(timeout))
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
            self.kill();
            let own_thread = OWN_POOL.with(|p| p.get()) == Arc::as_ptr(&self.shared) as usize;
            if !self.join(Instant::now().checked_add(DROP_JOIN_LIMIT)) && !own_thread {
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
