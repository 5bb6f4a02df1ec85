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
use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcReceiver, IpcSender};
use nix::unistd::Pid;

use poolrun_core::{GilMode, Initializer};

use crate::sys::{self, Forked, StatusPage};
use crate::transport::FromWorker;
use crate::worker;

/// What a worker needs to know; shared by every worker of one pool.
#[derive(Debug)]
pub(crate) struct WorkerSetup {
    /// Runs once before the first task.
    pub initializer: Option<Initializer>,
    /// Each worker gets its own GIL when `On`.
    pub gil: GilMode,
    /// Exit cleanly after this many tasks.
    pub max_tasks: Option<usize>,
}

/// The parent's side of one live worker. Dropping it closes the lifeline (the worker, if it
/// is still alive, then exits) and the channels; the pid must have been reaped by then.
pub(crate) struct WorkerHandle {
    /// The worker's pid (= its process group id).
    pub pid: Pid,
    /// Tasks to the worker.
    pub tx: IpcBytesSender,
    /// Results from the worker.
    pub rx: IpcReceiver<FromWorker>,
    /// What it is running (shared with the slot, for `kill`).
    pub status: Arc<StatusPage>,
    _lifeline: Lifeline,
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
struct Lifeline(Option<OwnedFd>);

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
    reply: Sender<Result<WorkerHandle, String>>,
}

/// Set in every worker process: a worker may not start pools of its own (its copy of the
/// spawner's channel leads to a thread that does not exist in it), like CPython's daemonic
/// processes, which may not have children.
static IN_WORKER: AtomicBool = AtomicBool::new(false);

/// The pid of the process whose spawner thread `SPAWNER` talks to.
static SPAWNER_PID: AtomicU32 = AtomicU32::new(0);

fn spawner() -> Result<&'static Sender<Request>, String> {
    static SPAWNER: OnceLock<Result<Sender<Request>, String>> = OnceLock::new();
    if IN_WORKER.load(Ordering::Relaxed) {
        return Err("a process pool cannot be created inside a pool worker process".into());
    }
    let owner = SPAWNER_PID.load(Ordering::SeqCst);
    if owner != 0 && owner != std::process::id() {
        // This process is a fork (made by someone else) of the one that started the
        // spawner thread: the thread does not exist here, and waiting on it would hang.
        return Err(format!(
            "this process was forked from process {owner} after it used a process pool; \
             create process pools before forking, or in the original process"
        ));
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
        .map_err(|e| e.clone())
}

/// Fork `count` workers (through the spawner thread). Each result is one worker or why it
/// could not be made.
pub(crate) fn spawn(setup: &Arc<WorkerSetup>, count: usize) -> Vec<Result<WorkerHandle, String>> {
    let sp = match spawner() {
        Ok(s) => s,
        Err(e) => return (0..count).map(|_| Err(e.clone())).collect(),
    };
    let (reply, results) = bounded(count.max(1));
    let req = Request {
        setup: setup.clone(),
        count,
        reply,
    };
    if sp.send(req).is_err() {
        return (0..count)
            .map(|_| Err("the spawner thread is gone".to_string()))
            .collect();
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        match results.recv() {
            Ok(r) => out.push(r),
            Err(_) => out.push(Err("the spawner thread is gone".to_string())),
        }
    }
    out
}

/// Fork one worker. Runs on the spawner thread only (invariant F1 in `sys.rs`).
fn spawn_one(setup: &Arc<WorkerSetup>) -> Result<WorkerHandle, String> {
    let (task_tx, task_rx) = ipc::bytes_channel().map_err(|e| format!("task channel: {e}"))?;
    let (res_tx, res_rx) =
        ipc::channel::<FromWorker>().map_err(|e| format!("result channel: {e}"))?;
    let status = StatusPage::new().map_err(|e| format!("status page: {e}"))?;
    let (life_r, life_w) = sys::lifeline().map_err(|e| format!("lifeline pipe: {e}"))?;

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
        Err(e) => Err(format!("fork: {e}")),
        Ok(Forked::Child) => {
            drop(reg);
            // Drop the parent's ends of our own channels and lifeline at once (ipc-channel
            // reports a dead peer only when every copy of the sender is closed).
            drop(task_tx);
            drop(res_rx);
            drop(life_w);
            child_main(parent, &foreign, setup, task_rx, res_tx, status, life_r)
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
                _lifeline: Lifeline(Some(life_w)),
            })
        }
    }
}

/// The worker process's entry point: never returns, never unwinds (invariant F1).
fn child_main(
    parent: Pid,
    foreign: &[RawFd],
    setup: &WorkerSetup,
    rx: IpcBytesReceiver,
    tx: IpcSender<FromWorker>,
    status: StatusPage,
    lifeline: OwnedFd,
) -> ! {
    IN_WORKER.store(true, Ordering::Relaxed);
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if !sys::child_setup(parent, foreign) {
            return 1;
        }
        sys::start_watchdog(lifeline);
        worker::install_panic_hook();
        worker::main_loop(setup, &rx, &tx, &status)
    }))
    .unwrap_or(101);
    sys::exit_now(code)
}
