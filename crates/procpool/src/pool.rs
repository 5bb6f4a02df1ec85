//! [`ProcessPool`]: the public handle and its lifecycle (build, submit, shutdown, drop). The
//! state it shares with its collectors is in `shared.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use poolrun_core::backend::{default_window, BatchSubmit, ChunkSubmit, Dispatch, Stop, SubmitGate};
use poolrun_core::{
    Deadline, Executor, Mode, Payload, PoolConfig, PoolError, PoolStats, TaskError, TaskFuture,
    TaskOptions,
};

use crate::child::WorkerSetup;
use crate::collector;
use crate::shared::PoolShared;
use crate::spawn;
use crate::sys;

/// How long a daemon pool's drop waits for its threads after killing the workers.
const DROP_JOIN_LIMIT: Duration = Duration::from_secs(10);

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
///
/// # Fork hazards: what a worker inherits
///
/// A worker is a `fork()` of this process, made by a dedicated spawner thread when the pool
/// starts and whenever a worker is replaced. It starts as a copy-on-write snapshot of the
/// host *at that instant*, with one thread. From that follow four rules:
///
/// - **A lock held by another host thread at fork time stays locked in the worker.** Only
///   the forking thread exists in the child, so a `Mutex` (or `RwLock`, or a C library's
///   internal lock) that some other host thread held at that instant is never released
///   there, and a task that takes it blocks forever (it then fails `TimedOut` if the pool
///   has a `task_timeout`, else it hangs). poolrun makes its own locks safe (stdio and the
///   panic hook are held or replaced across the fork, the allocator is fork-safe), but it
///   cannot know your globals. *Do*: give tasks what they need through their arguments, the
///   pool's `initializer`, or [`SharedBytes`](poolrun_core::shm::SharedBytes); do not let tasks
///   lock host-global state that other host threads use.
/// - **Globals set after the pool started are not seen by workers already forked** — but
///   are seen by replacements forked later, so two workers of one pool can disagree. *Do*:
///   set up global state before [`ProcessPool::new`], or pass it as an argument.
/// - **No host thread runs in a worker**: an async runtime, a connection pool's background
///   thread, a logger's flush thread — their handles are copied but dead. *Do*: create such
///   things in the worker (an `initializer`, or lazily in a `thread_local!`/`OnceLock` the
///   host never initialized).
/// - **Open file descriptors are shared.** A worker holds every fd the host had open at fork
///   time (sockets, files; `O_CLOEXEC` does not apply without `exec`): a listening socket is
///   not closed while a worker lives, and a file offset is shared. poolrun closes its own
///   pool fds in each worker; open the host's sockets after the pool, or close them in the
///   `initializer`.
///
/// What a worker does *not* inherit is safe too: signal handlers are reset to the
/// defaults, and a worker dies — with every process its tasks started, unless they left its
/// process group with `setsid`/`setpgid` — when the host exits or is SIGKILLed.
pub struct ProcessPool {
    shared: Arc<PoolShared>,
    workers: usize,
    daemon: bool,
    gate: Option<Arc<SubmitGate>>,
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
            context: cfg.get_context().cloned(),
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
        let shared = PoolShared::new(n, setup, cfg.get_task_timeout());
        let pool = ProcessPool {
            shared: shared.clone(),
            workers: n,
            daemon: cfg.get_daemon(),
            gate: SubmitGate::for_config(&cfg).map(Arc::new),
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

    /// For backends that relay tasks from another process of the same executable (the
    /// cluster backend): run the task at `(trampoline, func)` — addresses made by
    /// [`task_addrs`] in this image — on each encoded argument; each future yields the
    /// task's encoded result, undecoded.
    ///
    /// # Safety
    /// `(trampoline, func)` must be addresses [`task_addrs`] returned in this process, or in
    /// a process running the identical executable image and translated to this one's
    /// addresses (transport invariant T1: the worker calls them).
    #[doc(hidden)]
    #[allow(unsafe_code)]
    pub unsafe fn submit_encoded(
        &self,
        trampoline: usize,
        func: usize,
        args: Vec<Vec<u8>>,
    ) -> Vec<TaskFuture<Vec<u8>>> {
        self.shared.submit_encoded(trampoline, func, args)
    }
}

/// The `(trampoline, func)` addresses of task `f` in this executable image (see
/// [`ProcessPool::submit_encoded`]).
#[doc(hidden)]
pub fn task_addrs<A: Payload, R: Payload>(f: fn(A) -> R) -> (usize, usize) {
    crate::transport::task_addrs(f)
}

impl Dispatch for ProcessPool {
    fn submit_now<A: Payload, R: Payload>(&self, f: fn(A) -> R, arg: A) -> TaskFuture<R> {
        self.submit_now_with(f, arg, &TaskOptions::default())
    }

    fn submit_now_with<A: Payload, R: Payload>(
        &self,
        f: fn(A) -> R,
        arg: A,
        opts: &TaskOptions,
    ) -> TaskFuture<R> {
        match self
            .shared
            .submit_batch_with(f, vec![arg], opts.get_timeout())
            .pop()
        {
            Some(fut) => fut,
            None => TaskFuture::ready(Err(TaskError::Shutdown)),
        }
    }

    fn context_type(&self) -> Option<std::any::TypeId> {
        self.shared.setup.context.as_ref().map(|c| c.type_id())
    }

    fn submit_gate(&self) -> Option<&Arc<SubmitGate>> {
        self.gate.as_ref()
    }

    fn batch_submitter<A: Payload, R: Payload>(&self, f: fn(A) -> R) -> BatchSubmit<A, R> {
        let shared = self.shared.clone();
        Box::new(move |items| shared.submit_batch(f, items))
    }

    /// At least 16 chunks: with small chunks the queue never runs dry between the
    /// consumer's wake-ups. Still a fixed bound: an endless input runs in bounded memory.
    fn map_window(&self) -> usize {
        default_window(self.workers).max(16)
    }

    /// Map chunks complete one record per chunk, not one future per item.
    fn chunk_submitter<A: Payload, R: Payload>(&self, f: fn(A) -> R) -> Option<ChunkSubmit<A, R>> {
        let shared = self.shared.clone();
        Some(Box::new(move |items| shared.submit_chunk(f, items)))
    }
}

impl Executor for ProcessPool {
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
        Mode::Process
    }

    fn stats(&self) -> PoolStats {
        self.shared.stats()
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        if self.daemon {
            self.shared.kill();
            let own = self.shared.threads.contains_current();
            if !self.shared.join(Deadline::after(Some(DROP_JOIN_LIMIT))) && !own {
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
