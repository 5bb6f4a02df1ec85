//! The spawner: one process-global, lazily started, never-exiting thread that performs every
//! `fork()` of every pool (first workers and respawns). See README.md, "Fork protocol".
//!
//! Why one long-lived thread: `PR_SET_PDEATHSIG` fires when the *thread* that forked the
//! child exits, not the process (measured: a worker died ~250 µs after its forking thread
//! ended). A thread that lives as long as the process makes the death signal mean "the parent
//! process died". It also gives one place where fork-time state is consistent: the fd
//! registry, the stdio locks and the signal mask.

use std::collections::BTreeSet;
use std::fmt;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crossbeam_channel::{bounded, unbounded, Sender};
use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use nix::unistd::Pid;

use poolrun_core::PoolError;

use crate::child::{self, WorkerSetup};
use crate::ring::Rings;
use crate::status::StatusPage;
use crate::sys::{self, Forked};
use crate::transport::{FromWorker, ToWorker};

/// The parent's side of one live worker. Dropping it closes the lifeline (the worker, if it
/// is still alive, then exits) and the channels; the pid must have been reaped by then.
pub(crate) struct WorkerHandle {
    /// The worker's pid (= its process group id).
    pub pid: Pid,
    /// Tasks to the worker.
    pub tx: IpcSender<ToWorker>,
    /// Results from the worker.
    pub rx: IpcReceiver<FromWorker>,
    /// What it is running (shared with the slot, for `kill`).
    pub status: Arc<StatusPage>,
    /// Closing it tells the worker the parent is gone.
    pub lifeline: Lifeline,
    /// The shared-memory fast path (jobs and results).
    pub rings: Rings,
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("pid", &self.pid)
            .finish()
    }
}

/// The pool-owned fds that a newly forked worker must close: the lifeline write ends of every
/// other live worker (were one inherited, that worker's lifeline would not break when the
/// parent dies). Only changed under this lock, and the spawner holds it across `fork`, so
/// the snapshot a child closes is exact.
static REGISTRY: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

/// The parent's write end of a lifeline, registered while open.
pub(crate) struct Lifeline(Option<OwnedFd>);

impl Drop for Lifeline {
    fn drop(&mut self) {
        if let Some(fd) = self.0.take() {
            let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
            reg.remove(&sys::raw(&fd));
            drop(fd); // closed under the lock: no fork can see the number half-way
        }
    }
}

struct Request {
    setup: Arc<WorkerSetup>,
    count: usize,
    reply: Sender<Result<WorkerHandle, PoolError>>,
}

/// Set in every worker process: a worker may not start pools of its own (its copy of the
/// spawner's channel leads to a thread that does not exist in it), like CPython's daemonic
/// processes, which may not have children.
static IN_WORKER: AtomicBool = AtomicBool::new(false);

/// The pid of the process whose spawner thread `SPAWNER` talks to.
static SPAWNER_PID: AtomicU32 = AtomicU32::new(0);

fn spawner() -> Result<&'static Sender<Request>, PoolError> {
    static SPAWNER: OnceLock<Result<Sender<Request>, String>> = OnceLock::new();
    if IN_WORKER.load(Ordering::Relaxed) {
        return Err(PoolError::Spawn(
            "a process pool cannot be created inside a pool worker process".into(),
        ));
    }
    let owner = SPAWNER_PID.load(Ordering::SeqCst);
    if owner != 0 && owner != std::process::id() {
        // This process is a fork (made by someone else) of the one that started the
        // spawner thread: the thread does not exist here, and waiting on it would hang.
        return Err(PoolError::Spawn(format!(
            "this process was forked from process {owner} after it used a process pool; \
             create process pools before forking, or in the original process"
        )));
    }
    SPAWNER
        .get_or_init(|| {
            SPAWNER_PID.store(std::process::id(), Ordering::SeqCst);
            sys::init_clock();
            let (tx, rx) = unbounded::<Request>();
            std::thread::Builder::new()
                .name("poolrun-spawner".into())
                .spawn(move || {
                    sys::block_all_signals();
                    // The static keeps a sender alive forever, so this loop never ends: the
                    // thread lives as long as the process (PDEATHSIG is tied to it).
                    while let Ok(req) = rx.recv() {
                        for _ in 0..req.count {
                            let r = spawn_one(&req.setup);
                            if req.reply.send(r).is_err() {
                                break;
                            }
                        }
                    }
                })
                .map(|_| tx)
                .map_err(|e| format!("cannot start the spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| PoolError::Spawn(e.clone()))
}

/// Fork `count` workers (through the spawner thread). Each result is one worker or why it
/// could not be made.
pub(crate) fn spawn(
    setup: &Arc<WorkerSetup>,
    count: usize,
) -> Vec<Result<WorkerHandle, PoolError>> {
    let gone = || PoolError::Spawn("the spawner thread is gone".to_string());
    let sp = match spawner() {
        Ok(s) => s,
        Err(PoolError::Spawn(m)) => {
            return (0..count)
                .map(|_| Err(PoolError::Spawn(m.clone())))
                .collect()
        }
        Err(e) => return vec![Err(e)],
    };
    let (reply, results) = bounded(count.max(1));
    let req = Request {
        setup: setup.clone(),
        count,
        reply,
    };
    if sp.send(req).is_err() {
        return (0..count).map(|_| Err(gone())).collect();
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        match results.recv() {
            Ok(r) => out.push(r),
            Err(_) => out.push(Err(gone())),
        }
    }
    out
}

/// Fork one worker. Runs on the spawner thread only (invariant F1 in `sys.rs`).
fn spawn_one(setup: &Arc<WorkerSetup>) -> Result<WorkerHandle, PoolError> {
    let (task_tx, task_rx) =
        ipc::channel::<ToWorker>().map_err(|e| PoolError::os("socketpair (task channel)", e))?;
    let (res_tx, res_rx) = ipc::channel::<FromWorker>()
        .map_err(|e| PoolError::os("socketpair (result channel)", e))?;
    let status = StatusPage::new().map_err(|e| PoolError::os("mmap (status page)", e.into()))?;
    let rings = Rings::new().map_err(|e| PoolError::os("mmap (rings)", e.into()))?;
    let (life_r, life_w) =
        sys::lifeline().map_err(|e| PoolError::os("pipe (lifeline)", e.into()))?;

    let mut reg = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let foreign: Vec<RawFd> = reg.iter().copied().collect();
    let parent = nix::unistd::getpid();
    // Hold the stdio locks across fork so the child never inherits them held by a host
    // thread that was mid-print (glibc's malloc is fork-safe through its own atfork hooks).
    let out = std::io::stdout().lock();
    let err = std::io::stderr().lock();
    // SAFETY: invariant F1: this is the spawner thread, holding the registry and stdio
    // locks with all signals blocked (since it started); the child branch below only runs
    // `child_main`, which never returns.
    #[allow(unsafe_code)]
    let forked = unsafe { sys::fork() };
    drop(err);
    drop(out);
    match forked {
        Err(e) => Err(PoolError::os("fork", e.into())),
        Ok(Forked::Child) => {
            drop(reg);
            // Drop the parent's ends of our own channels and lifeline at once (ipc-channel
            // reports a dead peer only when every copy of the sender is closed).
            drop(task_tx);
            drop(res_rx);
            drop(life_w);
            IN_WORKER.store(true, Ordering::Relaxed);
            let io = child::WorkerIo {
                rx: task_rx,
                tx: res_tx,
                rings,
            };
            child::child_main(parent, &foreign, setup, io, status, life_r)
        }
        Ok(Forked::Parent(pid)) => {
            sys::set_group(pid);
            // The child's ends: closed here before any later fork can inherit them.
            drop(task_rx);
            drop(res_tx);
            drop(life_r);
            reg.insert(sys::raw(&life_w));
            drop(reg);
            Ok(WorkerHandle {
                pid,
                tx: task_tx,
                rx: res_rx,
                status: Arc::new(status),
                lifeline: Lifeline(Some(life_w)),
                rings,
            })
        }
    }
}
