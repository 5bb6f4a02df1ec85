//! The raw operating-system operations the pool needs — `fork`, the child's start-up
//! sequence, the shared status page, the lifeline pipe, killing and reaping — each behind a
//! small wrapper with its invariant written next to it. This and `transport.rs` are the only
//! modules with `unsafe` (STYLE: only where the OS demands it).
//!
//! Invariants cited by the `SAFETY` comments below:
//!
//! - **F1 (who forks)**: [`fork`] is only called from the spawner thread (`spawn.rs`), which
//!   holds the fd-registry lock, the stdout and stderr locks and has every signal blocked
//!   while it forks. In the child only `spawn::child_main` runs, which never returns and ends
//!   with [`exit_now`] (`_exit`), so no parent code is ever unwound into in the child.
//! - **F2 (status page)**: a [`StatusPage`] owns one page-aligned `MAP_SHARED | MAP_ANONYMOUS`
//!   mapping of [`PAGE`] bytes for its whole life; it is only accessed through `AtomicU64`s,
//!   so parent and worker may read and write it concurrently.
//! - **F3 (reaping)**: a pid is signalled only by the collector that owns it and only before
//!   that collector reaps it with `waitpid(pid)`, so the pid (and its process group id) can
//!   never have been recycled for another process when we signal it.

#![allow(unsafe_code)]

use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

/// Size of one worker's status page.
pub(crate) const PAGE: usize = 4096;

/// The clock shared by the parent and its forked workers: nanoseconds since a process-wide
/// epoch. A forked child inherits the same epoch, and `Instant` is `CLOCK_MONOTONIC`, which is
/// system-wide, so both sides agree on every value.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Now, in nanoseconds since [`epoch`] (never 0, so 0 can mean "unset").
pub(crate) fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Make sure the epoch exists before the first fork (so the child shares it).
pub(crate) fn init_clock() {
    let _ = epoch();
}

/// One page shared between the parent and one worker: which task the worker is running and
/// since when, and which items it must not run (`TaskFuture::kill`). Lets the parent
/// attribute a crash to the exact item of a batch, enforce `task_timeout` and kill one task
/// without any message to or from the worker.
pub(crate) struct StatusPage {
    /// Invariant F2: points to a live `MAP_SHARED` mapping of `PAGE` bytes owned by `self`.
    ptr: NonNull<AtomicU64>,
}

// SAFETY: the page is only accessed through atomics (invariant F2), so sharing the handle
// between threads is as safe as sharing an `&AtomicU64`.
unsafe impl Send for StatusPage {}
// SAFETY: as above.
unsafe impl Sync for StatusPage {}

impl StatusPage {
    /// Map a fresh zeroed page.
    pub(crate) fn new() -> nix::Result<StatusPage> {
        let len = NonZeroUsize::new(PAGE).ok_or(Errno::EINVAL)?;
        // SAFETY: an anonymous mapping at a kernel-chosen address aliases no Rust object; we
        // own it until `Drop` unmaps it (invariant F2).
        let p = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )?
        };
        Ok(StatusPage { ptr: p.cast() })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < PAGE / 8);
        // SAFETY: invariant F2: the mapping is live for `&self`'s lifetime, page-aligned
        // (so 8-byte aligned), zero-initialised by the kernel and only accessed atomically;
        // `i < PAGE / 8` keeps the pointer inside it.
        unsafe { &*self.ptr.as_ptr().add(i) }
    }

    /// Worker: item `id` starts now. Returns "now" (ns since the epoch).
    pub(crate) fn begin(&self, id: u64) -> u64 {
        let now = now_ns();
        self.word(SINCE).store(now, Ordering::Relaxed);
        // SeqCst: half of the kill handshake (see `doom`).
        self.word(RUNNING).store(id, Ordering::SeqCst);
        now
    }

    /// Worker: the item is over (run or skipped); no item is running. True if the parent
    /// claimed it for a kill while it was running (`doom`): the SIGKILL is on its way, so
    /// the worker must not begin another item.
    pub(crate) fn end(&self) -> bool {
        self.word(RUNNING).swap(0, Ordering::SeqCst) & KILL != 0
    }

    /// Parent: the item running now (0: none) and when it started (ns since the epoch).
    pub(crate) fn running(&self) -> (u64, u64) {
        let id = self.word(RUNNING).load(Ordering::Acquire) & !KILL;
        (id, self.word(SINCE).load(Ordering::Relaxed))
    }

    /// Parent (under the slot lock, `TaskFuture::kill`): item `id` was sent to this worker
    /// and must not run. Marks it (so a worker that has not begun it skips it), then claims
    /// it if it is running right now (`running`: id → id | KILL); true means "claimed: kill
    /// the worker". The handshake, with the worker's [`begin`](Self::begin) /
    /// [`take_doomed`](Self::take_doomed) / [`end`](Self::end), all SeqCst:
    ///
    /// - parent: mark; claim.  worker: publish `running = id`; look for the mark; …;
    ///   `running := 0`, learning whether it was claimed.
    /// - If the claim fails, `running` was not `id` yet (then the worker, publishing after
    ///   the claim, finds the mark and skips the item) or no longer (it is over): no kill.
    /// - If it succeeds, the worker learns so when the item ends and exits instead of
    ///   beginning another: the SIGKILL can only ever hit item `id`.
    ///
    /// False also when no mark cell is free (the item then runs, its result discarded;
    /// `DOOMED_CELLS` far exceeds what a worker holds in practice).
    pub(crate) fn doom(&self, id: u64) -> bool {
        let cells = DOOMED..DOOMED + DOOMED_CELLS;
        if cells
            .clone()
            .any(|i| self.word(i).load(Ordering::SeqCst) == id)
        {
            // (already marked: the feeder and `kill` may both get here)
        } else if cells.clone().any(|i| {
            self.word(i)
                .compare_exchange(0, id, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        }) {
            self.word(COUNT).fetch_add(1, Ordering::SeqCst);
        } else {
            return false;
        }
        self.word(RUNNING)
            .compare_exchange(id, id | KILL, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Worker (after `begin(id)`, and after the item ran) or parent (once `id`'s result is
    /// in): true if `id` was marked by [`doom`](Self::doom); the mark is removed (by exactly
    /// one caller). One load when nothing is marked.
    pub(crate) fn take_doomed(&self, id: u64) -> bool {
        if self.word(COUNT).load(Ordering::SeqCst) == 0 {
            return false;
        }
        let hit = (DOOMED..DOOMED + DOOMED_CELLS).any(|i| {
            self.word(i)
                .compare_exchange(id, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
        if hit {
            self.word(COUNT).fetch_sub(1, Ordering::SeqCst);
        }
        hit
    }
}

// Status page layout (in `AtomicU64` words).
const RUNNING: usize = 0;
const SINCE: usize = 1;
const COUNT: usize = 2;
/// Set in `RUNNING` by a successful [`StatusPage::doom`] claim (task ids stay far below).
const KILL: u64 = 1 << 63;
const DOOMED: usize = 8;
/// Items a worker can be told to skip at once (it holds at most two jobs).
const DOOMED_CELLS: usize = 256;
const _: () = assert!((DOOMED + DOOMED_CELLS) * 8 <= PAGE);

impl Drop for StatusPage {
    fn drop(&mut self) {
        // SAFETY: invariant F2: we own the mapping and nothing borrows it past `&mut self`.
        let _ = unsafe { munmap(self.ptr.cast(), PAGE) };
    }
}

impl std::fmt::Debug for StatusPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (id, _) = self.running();
        f.debug_struct("StatusPage").field("running", &id).finish()
    }
}

/// Block every signal in the calling thread (the spawner thread keeps them blocked for its
/// whole life, so a signal sent to the host is never delivered to it and a child it forks
/// never runs an inherited handler before it has reset them).
pub(crate) fn block_all_signals() {
    let _ = signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None);
}

/// Which side of a fork we are on.
pub(crate) enum Forked {
    /// The parent; the child's pid.
    Parent(Pid),
    /// The new process.
    Child,
}

/// `fork()`.
///
/// # Safety
/// Invariant F1: only the spawner thread may call this, and in the child only
/// `spawn::child_main` may run; it must end with [`exit_now`] and never return.
pub(crate) unsafe fn fork() -> nix::Result<Forked> {
    // SAFETY: the caller upholds invariant F1.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        ForkResult::Child => Ok(Forked::Child),
    }
}

/// The first thing a new worker does (single-threaded, right after `fork`):
/// 1. reset every signal disposition to the default (SIGPIPE: ignored, as Rust programs
///    expect) and unblock all signals;
/// 2. `PR_SET_PDEATHSIG(SIGKILL)`, then re-check `getppid()` against the parent's pid (the
///    parent may have died before the death signal was armed);
/// 3. `setpgid(0, 0)`: its own process group, so a kill takes whatever the task spawned;
/// 4. close the inherited pool fds that are not its own (other workers' lifeline ends).
///
/// Returns false if the parent is already gone (the caller then exits at once).
pub(crate) fn child_setup(parent: Pid, foreign_fds: &[RawFd]) -> bool {
    let max = libc::SIGRTMAX();
    for sig in 1..=max {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let handler = if sig == libc::SIGPIPE {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        // SAFETY: invariant F1 (we are the only thread of the new child); installing
        // SIG_DFL/SIG_IGN with an empty mask runs no code. Errors (EINVAL for signals the
        // C library reserves) are harmless and ignored.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let _ = signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // Name the worker (`ps`, /proc/<pid>/comm, thread names seen by tasks): a fork keeps
    // the forking thread's name, which would be "poolrun-spawner".
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from a static.
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            c"poolrun-worker".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    if nix::unistd::getppid() != parent {
        return false;
    }
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    for &fd in foreign_fds {
        // SAFETY: these are pool-owned fds (lifeline write ends of other workers) that were
        // open in the parent at fork time (the registry lock was held); nothing in the child
        // owns them as Rust objects that would use or close them again.
        unsafe {
            libc::close(fd);
        }
    }
    true
}

/// Write `bytes` to fd 2 without taking std's stderr lock (worker panic messages).
pub(crate) fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(std::io::stderr(), bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n.min(bytes.len())..],
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// End the current (worker) process at once: no destructors, no atexit handlers, no
/// unwinding into the parent's code (invariant F1).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// A lifeline pipe: the parent keeps the write end, the worker blocks reading the read end
/// and exits on EOF (the parent is gone, however it died).
pub(crate) fn lifeline() -> nix::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
}

/// Worker: start the lifeline watchdog thread. If the thread cannot start, the worker still
/// has `PR_SET_PDEATHSIG`.
pub(crate) fn start_watchdog(read_end: OwnedFd) {
    let _ = std::thread::Builder::new()
        .name("poolrun-lifeline".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut buf = [0u8; 16];
            loop {
                match nix::unistd::read(&read_end, &mut buf) {
                    Ok(0) => exit_now(0),
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(_) => exit_now(0),
                }
            }
        });
}

/// SIGKILL a worker and its whole process group (whatever its task spawned). Invariant F3:
/// only the owner of an unreaped pid calls this.
pub(crate) fn kill_worker(pid: Pid) {
    let _ = signal::killpg(pid, Signal::SIGKILL);
    let _ = signal::kill(pid, Signal::SIGKILL);
}

/// Make the child its own process-group leader from the parent side too (closes the race
/// where the parent kills the group before the child ran `setpgid`).
pub(crate) fn set_group(pid: Pid) {
    let _ = nix::unistd::setpgid(pid, pid);
}

/// How a reaped worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitInfo {
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// Its exit status.
    pub code: Option<i32>,
}

fn exit_info(ws: WaitStatus) -> Option<ExitInfo> {
    match ws {
        WaitStatus::Exited(_, code) => Some(ExitInfo {
            signal: None,
            code: Some(code),
        }),
        WaitStatus::Signaled(_, sig, _) => Some(ExitInfo {
            signal: Some(sig as i32),
            code: None,
        }),
        _ => None,
    }
}

/// True once `pid` has exited (it may be a zombie: this does not reap it, so its pid and
/// process group stay reserved and it can still be signalled safely, invariant F3).
pub(crate) fn has_exited(pid: Pid) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => return false,
            Ok(_) => return true,
            Err(Errno::EINTR) => continue,
            // ECHILD cannot happen for a pid we own and have not reaped; treat as gone.
            Err(_) => return true,
        }
    }
}

/// End and reap `pid`: wait up to `grace` for it to exit by itself, then SIGKILL its process
/// group (whatever its task spawned dies with it; the leader, if still running, too) while
/// the pid is still unreaped (invariant F3), then `waitpid(pid)`. Reaps only this pid.
pub(crate) fn reap(pid: Pid, grace: Duration) -> ExitInfo {
    let deadline = Instant::now() + grace;
    let mut pause = Duration::from_micros(20);
    while !has_exited(pid) && Instant::now() < deadline {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    kill_worker(pid);
    loop {
        match waitpid(pid, None) {
            Ok(ws) => {
                if let Some(info) = exit_info(ws) {
                    return info;
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => {
                return ExitInfo {
                    signal: None,
                    code: None,
                }
            }
        }
    }
}

/// The raw fd of an owned fd (for the registry).
pub(crate) fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// The kill handshake of [`StatusPage::doom`], with a thread playing the worker: when
    /// `doom(k)` says "running, kill now", the worker must stop right after item `k` — it
    /// must never begin another item, which a real kill arriving a moment later would hit.
    #[test]
    fn doom_handshake_never_lets_the_worker_begin_another_item() {
        let mut claimed = 0;
        for round in 0..300u64 {
            let page = Arc::new(StatusPage::new().expect("page"));
            let over = Arc::new(AtomicBool::new(false));
            let (p2, o2) = (page.clone(), over.clone());
            // The worker's loop, as in `worker::main_loop`.
            let worker = std::thread::spawn(move || {
                let mut stopped_after = None;
                let t = Instant::now();
                for id in 1.. {
                    if t.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                    p2.begin(id);
                    let killed = if p2.take_doomed(id) {
                        p2.end() // skipped, never run
                    } else {
                        for _ in 0..(id * 7 + round) % 64 {
                            std::hint::spin_loop();
                        }
                        let killed = p2.end();
                        p2.take_doomed(id);
                        killed
                    };
                    if killed {
                        stopped_after = Some(id);
                        break;
                    }
                }
                o2.store(true, Ordering::SeqCst);
                stopped_after
            });
            let mut kill_now = None;
            let mut n = 0u64;
            while !over.load(Ordering::SeqCst) {
                n += 1;
                let (running, _) = page.running();
                let target = running + n % 2;
                if running != 0 && page.doom(target) {
                    kill_now = Some(target);
                    break;
                }
            }
            let stopped_after = worker.join().expect("worker");
            assert_eq!(stopped_after, kill_now, "round {round}");
            claimed += usize::from(kill_now.is_some());
        }
        assert!(claimed > 150, "only {claimed} of 300 rounds got to a kill");
    }

    #[test]
    fn doom_is_idempotent_and_marks_are_taken_once() {
        let page = StatusPage::new().expect("page");
        assert!(!page.doom(7), "7 is not running");
        assert!(!page.doom(7));
        assert!(page.take_doomed(7));
        assert!(!page.take_doomed(7), "one mark, taken once");
        page.begin(9);
        assert!(page.doom(9));
        assert_eq!(page.running().0, 9, "the claim bit is not part of the id");
        assert!(page.end(), "the worker learns of the claim");
        assert!(page.take_doomed(9));
        page.begin(10);
        assert!(!page.end());
        assert_eq!(page.word(COUNT).load(Ordering::SeqCst), 0);
    }
}
