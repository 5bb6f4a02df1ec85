//! The worker process's loop (runs in the forked child only).
//!
//! 1. Bind the thread to its own GIL (`GilMode::On`) through `gil::WorkerBinding`.
//! 2. Run the initializer; report `Ready` or `InitFailed(message)` (and exit).
//! 3. Receive jobs; for each item: publish "item `id` runs since `t`" in the status page,
//!    run it through its trampoline, clear the page. Results are sent per job, and sooner
//!    when a job runs long (every millisecond), so a crash loses at most that much finished
//!    work (which the parent re-queues) and a long chunk streams its results.
//! 4. After `max_tasks` items, flush and exit 0 (the parent replaces it); on `Exit`, or when
//!    the parent is gone, exit 0.
//! 5. An item the parent marked as killed (`StatusPage::doom`) is skipped if it has not
//!    begun; if the parent claimed it while it ran, the parent is killing this process, so
//!    it flushes and exits 0 rather than begin another item.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ipc_channel::ipc::{IpcBytesReceiver, IpcSender};

use poolrun_core::gil::{Gil, WorkerBinding};
use poolrun_core::GilMode;

use crate::spawn::WorkerSetup;
use serde_bytes::ByteBuf;

use crate::sys::{self, StatusPage};
use crate::transport::{self, FromWorker, Outcome, ResultEntry, ToWorker};

/// Send finished results at least this often while a job runs (ns).
const FLUSH_EVERY_NS: u64 = 1_000_000;
/// A result buffer larger than this is not kept for the next item.
const SCRATCH_KEEP: usize = 1 << 20;

/// Exit status of a worker that found the parent's panic machinery locked at fork time
/// (`EX_TEMPFAIL`); the pool counts it as a start-up failure and forks another.
pub(crate) const EXIT_UNSAFE_FORK: i32 = 75;
/// How long installing the panic hook may take before the worker gives up.
const HOOK_DEADLINE: Duration = Duration::from_millis(300);

/// Give this worker process its own panic hook, before any user code runs.
///
/// Why: std's default hook takes global locks (the hook lock, and the backtrace lock for the
/// whole message). If a host thread was inside a panic hook at the instant of `fork`, the
/// child inherits those locks held by a thread that does not exist in it, and its first
/// panic — a panicking initializer or task — would hang forever. Our hook takes no lock
/// (formats, then one `write(2)`); the parent's hook never runs in a worker.
/// `set_hook` itself needs the hook lock: if that was inherited held, a deadman thread ends
/// the worker with [`EXIT_UNSAFE_FORK`] and the pool forks a fresh one.
pub(crate) fn install_panic_hook() {
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

/// Run the worker; returns the exit code.
pub(crate) fn main_loop(
    setup: &WorkerSetup,
    rx: &IpcBytesReceiver,
    tx: &IpcSender<FromWorker>,
    status: &StatusPage,
) -> i32 {
    let gil = match setup.gil {
        GilMode::On { switch_interval } => Some(Gil::new(switch_interval)),
        GilMode::Off => None,
    };
    let binding = WorkerBinding::new(gil, Arc::new(AtomicBool::new(false)));
    if let Some(init) = &setup.initializer {
        if let Err(msg) = binding.run_task(|| init.run()) {
            let _ = tx.send(FromWorker::InitFailed(msg));
            return 0;
        }
    }
    if tx.send(FromWorker::Ready).is_err() {
        return 0;
    }
    let mut done: usize = 0;
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        let bytes = match rx.recv() {
            Ok(b) => b,
            Err(_) => return 0, // the parent is gone
        };
        let msg: ToWorker<'_> = match postcard::from_bytes(&bytes) {
            Ok(m) => m,
            Err(e) => {
                eprintln!(
                    "poolrun worker {}: undecodable message from the pool: {e}",
                    std::process::id()
                );
                return 2;
            }
        };
        let (trampoline, func, items) = match msg {
            ToWorker::Exit => {
                poolrun_core::shm::wait_pins_released(std::time::Duration::from_secs(5));
                return 0;
            }
            ToWorker::Job {
                trampoline,
                func,
                items,
            } => (trampoline, func, items),
        };
        // SAFETY: invariant T1 (transport.rs): the address was made by `task_addrs` in the
        // parent this process was forked from, and arrived over the pool's private channel.
        #[allow(unsafe_code)]
        let call = unsafe { transport::trampoline_at(trampoline) };
        let n = items.len();
        let mut entries = Vec::with_capacity(n.min(1024));
        let mut data: Vec<u8> = Vec::new();
        let mut last_flush = sys::now_ns();
        for (k, item) in items.into_iter().enumerate() {
            let now = status.begin(item.id);
            // Killed before it began (`StatusPage::doom`): skip it. Claimed for a kill while
            // it ran (or as it began): the SIGKILL is on its way, so begin no other item.
            let (outcome, killed) = if status.take_doomed(item.id) {
                scratch.clear();
                (Outcome::Skipped, status.end())
            } else {
                let outcome = binding.run_task(|| call(func, item.arg, &mut scratch));
                let killed = status.end();
                status.take_doomed(item.id); // (a mark that came too late: drop it)
                (outcome, killed)
            };
            data.extend_from_slice(&scratch);
            entries.push(ResultEntry {
                id: item.id,
                outcome,
                len: scratch.len(),
            });
            if scratch.capacity() > SCRATCH_KEEP {
                scratch = Vec::new(); // do not keep a huge result's buffer around
            }
            done += 1;
            let quota_hit = setup.max_tasks.is_some_and(|m| done >= m);
            if k + 1 == n || quota_hit || killed || now.saturating_sub(last_flush) >= FLUSH_EVERY_NS
            {
                let msg = FromWorker::Results {
                    entries: std::mem::take(&mut entries),
                    data: ByteBuf::from(std::mem::take(&mut data)),
                };
                if tx.send(msg).is_err() {
                    return 0;
                }
                last_flush = sys::now_ns();
            }
            if quota_hit || killed {
                // (killed: the parent re-queues the items after this one.)
                // Shared-memory handles in the results name this process's fds: stay until
                // the parent has mapped them (at once when there are none).
                poolrun_core::shm::wait_pins_released(std::time::Duration::from_secs(5));
                return 0;
            }
        }
    }
}
