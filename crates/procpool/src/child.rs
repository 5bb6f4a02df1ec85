//! The worker process (runs in the forked child only): its entry point and its loop.
//!
//! 1. `child_main`: the OS set-up (`sys::child_setup`), the lifeline watchdog, a panic hook
//!    that takes no lock, then the loop. It never returns or unwinds (invariant F1).
//! 2. Start the worker runtime (poolrun-core): its own GIL when `GilMode::On`, the
//!    initializer once; report `Ready`, or `InitFailed(message)` and exit.
//! 3. For each batch received: begin it unless the parent withdrew it (the status page's
//!    gate); for each item publish "item `id` runs since `t`" (W1), skip it if `kill()`
//!    marked it (W2), run it through its trampoline, end it (W4). Results are sent when the
//!    batch ends, when they add up to a message's worth, and at least every millisecond
//!    while a batch runs — so a crash loses at most that much finished work (which the
//!    parent re-queues) and a long chunk streams its results.
//! 4. If the parent claimed the running item for a kill, a SIGKILL is on its way: flush and
//!    exit rather than begin another item. After `max_tasks` items, flush and exit 0 (the
//!    parent replaces it); on `Exit`, or when the parent is gone, exit 0.

use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipc_channel::ipc::{IpcReceiver, IpcSender};
use nix::unistd::Pid;

use poolrun_core::backend::{Initializer, WorkerRuntime};
use poolrun_core::gil::{Gil, GilMode};
use poolrun_core::{codec, TaskError};

use crate::ring::{send_framed, PopError, Ring, Rings, TAG_MSG, TAG_VIA_CHANNEL};
use crate::status::StatusPage;
use crate::sys;
use crate::transport::{
    self, FromWorker, Outcome, PayloadReader, Payloads, ResultEntry, Results, RunBatch, ToWorker,
    LARGE, MAX_LARGE_PER_MESSAGE,
};

/// How long an idle worker spins on its jobs ring before it sleeps (ring.rs, R3): a stream
/// of tasks then never enters the kernel.
const JOB_SPIN: Duration = Duration::from_micros(50);

/// Send finished results at least this often while a batch runs (ns).
const FLUSH_EVERY_NS: u64 = 1_000_000;
/// A result buffer larger than this is not kept for the next item.
const SCRATCH_KEEP: usize = 1 << 20;

/// Exit status of a worker that found the parent's panic machinery locked at fork time
/// (`EX_TEMPFAIL`); the pool forks another.
pub(crate) const EXIT_UNSAFE_FORK: i32 = 75;
/// How long installing the panic hook may take before the worker gives up.
const HOOK_DEADLINE: Duration = Duration::from_millis(300);

/// What a worker needs to know; shared by every worker of one pool.
#[derive(Debug)]
pub(crate) struct WorkerSetup {
    /// Runs once before the first task.
    pub initializer: Option<Initializer>,
    /// Each worker gets its own GIL when `On`.
    pub gil: GilMode,
    /// Exit cleanly after this many tasks.
    pub max_tasks: Option<usize>,
    /// The pool's context (`PoolConfig::context`): each worker decodes its own copy.
    pub context: Option<poolrun_core::backend::ContextSpec>,
}

/// How a worker talks to its parent: the rings (the fast path) and the channels (big
/// messages, each announced by a marker record in the ring).
pub(crate) struct WorkerIo {
    pub rx: IpcReceiver<ToWorker>,
    pub tx: IpcSender<FromWorker>,
    pub rings: Rings,
}

impl WorkerIo {
    /// The next message from the parent; `None` if the parent is gone or broke the protocol.
    fn next_job(&self, buf: &mut Vec<u8>) -> Option<ToWorker> {
        loop {
            match self.rings.jobs.pop(buf) {
                Ok(TAG_MSG) => return postcard::from_bytes(buf).ok(),
                Ok(TAG_VIA_CHANNEL) => return self.rx.recv().ok(),
                Ok(_) | Err(PopError::Corrupt) => return None,
                Err(PopError::Empty) => self.rings.jobs.wait(JOB_SPIN, None),
            }
        }
    }

    /// Send a message up: through the results ring when it fits, else on the channel with a
    /// marker in the ring. False if the parent is gone.
    fn send(&self, msg: FromWorker, buf: &mut Vec<u8>) -> bool {
        send_via(&self.rings.results, &self.tx, msg, buf)
    }
}

/// See [`WorkerIo::send`].
fn send_via(ring: &Ring, tx: &IpcSender<FromWorker>, msg: FromWorker, buf: &mut Vec<u8>) -> bool {
    let ok = msg.ring_ok();
    send_framed(
        msg,
        ok,
        buf,
        |tag, rec| ring.push_wait(tag, rec),
        |m| tx.send(m).is_ok(),
    )
}

/// The worker process's entry point: never returns, never unwinds (invariant F1).
pub(crate) fn child_main(
    parent: Pid,
    foreign: &[RawFd],
    setup: &WorkerSetup,
    io: WorkerIo,
    status: StatusPage,
    lifeline: OwnedFd,
) -> ! {
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sys::child_setup(parent, foreign);
        sys::start_watchdog(lifeline);
        install_panic_hook();
        main_loop(setup, &io, &status)
    }))
    .unwrap_or(101);
    sys::exit_now(code)
}

/// Give this worker process its own panic hook, before any user code runs.
///
/// Why: std's default hook takes global locks (the hook lock, and the backtrace lock for the
/// whole message). If a host thread was inside a panic hook at the instant of `fork`, the
/// child inherits those locks held by a thread that does not exist in it, and its first
/// panic would hang forever. Our hook takes no lock (formats, then one `write(2)`).
/// `set_hook` itself needs the hook lock: if that was inherited held, a deadman thread ends
/// the worker with [`EXIT_UNSAFE_FORK`] and the pool forks a fresh one.
fn install_panic_hook() {
    let installed = Arc::new(AtomicBool::new(false));
    let flag = installed.clone();
    let _ = std::thread::Builder::new()
        .name("poolrun-hook-deadman".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            std::thread::sleep(HOOK_DEADLINE);
            if !flag.load(Ordering::SeqCst) {
                sys::exit_now(EXIT_UNSAFE_FORK);
            }
        });
    std::panic::set_hook(Box::new(|info| {
        let line = format!("poolrun worker {}: {info}\n", std::process::id());
        sys::write_stderr(line.as_bytes());
    }));
    installed.store(true, Ordering::SeqCst);
}

/// Results not yet sent.
#[derive(Default)]
struct Pending {
    entries: Vec<ResultEntry>,
    payloads: Payloads,
}

impl Pending {
    fn push(&mut self, id: u64, outcome: Outcome, bytes: &[u8]) {
        let data = self.payloads.push(bytes);
        self.entries.push(ResultEntry { id, outcome, data });
    }

    /// A message's worth (transport invariant T2).
    fn full(&self) -> bool {
        self.payloads.inline_len() >= LARGE || self.payloads.large_count() >= MAX_LARGE_PER_MESSAGE
    }

    /// Send what is pending; false if the parent is gone.
    fn flush(&mut self, io: &WorkerIo, buf: &mut Vec<u8>) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        let (body, large) = std::mem::take(&mut self.payloads).finish();
        let msg = FromWorker::Results(Results {
            entries: std::mem::take(&mut self.entries),
            body,
            large,
        });
        io.send(msg, buf)
    }
}

/// Run the worker; returns the exit code.
fn main_loop(setup: &WorkerSetup, io: &WorkerIo, status: &StatusPage) -> i32 {
    let gil = match setup.gil {
        GilMode::On { switch_interval } => Some(Gil::new(switch_interval)),
        GilMode::Off => None,
    };
    let rt = WorkerRuntime::start(
        gil,
        Arc::new(AtomicBool::new(false)),
        setup.initializer.as_ref(),
    )
    .with_context(setup.context.as_ref().map(|c| c.decode_copy()));
    let mut wire: Vec<u8> = Vec::new();
    if let Some(msg) = rt.init_error() {
        let _ = io.send(FromWorker::InitFailed(msg.to_string()), &mut wire);
        return 0;
    }
    if !io.send(FromWorker::Ready, &mut wire) {
        return 0;
    }
    let mut done: usize = 0;
    let mut scratch: Vec<u8> = Vec::new();
    let mut pending = Pending::default();
    loop {
        let msg = match io.next_job(&mut wire) {
            Some(m) => m,
            None => return 0, // the parent is gone
        };
        status.mark_received();
        let batch = match msg {
            ToWorker::Exit => {
                poolrun_core::shm::wait_pins_released(Duration::from_secs(5));
                return 0;
            }
            ToWorker::Run(b) => b,
        };
        if !status.gate_begin(batch.seq) {
            continue; // withdrawn by the parent: another worker runs it
        }
        match run_batch(
            &rt,
            setup,
            &batch,
            status,
            &mut done,
            &mut scratch,
            &mut pending,
            io,
            &mut wire,
        ) {
            BatchEnd::Continue => {}
            BatchEnd::Exit => {
                // Shared-memory handles in the results name this process's fds: stay until
                // the parent has mapped them (at once when there are none).
                poolrun_core::shm::wait_pins_released(Duration::from_secs(5));
                return 0;
            }
            BatchEnd::ParentGone => return 0,
        }
    }
}

enum BatchEnd {
    Continue,
    Exit,
    ParentGone,
}

#[allow(clippy::too_many_arguments)]
fn run_batch(
    rt: &WorkerRuntime,
    setup: &WorkerSetup,
    batch: &RunBatch,
    status: &StatusPage,
    done: &mut usize,
    scratch: &mut Vec<u8>,
    pending: &mut Pending,
    io: &WorkerIo,
    wire: &mut Vec<u8>,
) -> BatchEnd {
    // SAFETY: invariant T1 (transport.rs): the address was made by `task_addrs` in the
    // parent this process was forked from, and arrived over the pool's private channel.
    #[allow(unsafe_code)]
    let call = unsafe { transport::trampoline_at(batch.trampoline) };
    let n = batch.items.len();
    let mut last_flush = sys::now_ns();
    let mut payloads = PayloadReader::new(&batch.body, &batch.large);
    for (k, &(id, data)) in batch.items.iter().enumerate() {
        let arg = payloads.next(data);
        let now = status.begin(id); // W1
        let (outcome, killed) = if status.take_mark(id) {
            // W2: killed before it began.
            scratch.clear();
            (Outcome::Skipped, status.end())
        } else {
            let outcome = match arg {
                Some(arg) => call(rt, batch.func, arg, scratch),
                None => {
                    let e = TaskError::Codec("the argument's bytes are missing".into());
                    *scratch = codec::encode(&e).unwrap_or_default();
                    Outcome::Err
                }
            };
            let killed = status.end(); // W4
            status.take_mark(id); // (a mark that came too late: drop it)
            (outcome, killed)
        };
        pending.push(id, outcome, scratch);
        if scratch.capacity() > SCRATCH_KEEP {
            *scratch = Vec::new(); // do not keep a huge result's buffer around
        }
        *done += 1;
        let quota_hit = setup.max_tasks.is_some_and(|m| *done >= m);
        if k + 1 == n
            || quota_hit
            || killed
            || pending.full()
            || now.saturating_sub(last_flush) >= FLUSH_EVERY_NS
        {
            if !pending.flush(io, wire) {
                return BatchEnd::ParentGone;
            }
            last_flush = sys::now_ns();
        }
        if quota_hit || killed {
            // (killed: the parent re-queues the items after this one.)
            return BatchEnd::Exit;
        }
    }
    BatchEnd::Continue
}
