//! The raw operating-system operations the pool needs — `fork`, the child's start-up
//! sequence, the lifeline pipe, killing and reaping — each behind a small wrapper with its
//! invariant written next to it. With `status.rs` (the shared status page) and
//! `transport.rs` (the fn-pointer transport) and `ring.rs` (the shared-memory rings), the
//! only modules with `unsafe`.
//!
//! Syscalls go through `nix` (the one process-control crate here); raw `libc` only where
//! nix has no wrapper: resetting *every* signal disposition, real-time ones included.
//!
//! Invariants cited by the `SAFETY` comments:
//!
//! - **F1 (who forks)**: [`fork`] is only called from the spawner thread (`spawn.rs`), which
//!   holds the fd-registry lock, the stdout and stderr locks and has every signal blocked
//!   while it forks. In the child only `child::child_main` runs, which never returns and
//!   ends with [`exit_now`] (`_exit`), so no parent code is ever unwound into in the child.
//! - **F3 (reaping)**: a pid is signalled only while it is attached to the scheduler or
//!   registered with the exit watcher, and its collector detaches and unregisters it — under
//!   those same locks — before it reaps it with `waitpid(pid)`. So the pid (and its process
//!   group id) can never have been recycled for another process when we signal it.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use poolrun_core::Deadline;

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
/// `child::child_main` may run; it must end with [`exit_now`] and never return.
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
/// 2. `setpgid(0, 0)`: its own process group, so a kill takes whatever the task spawned;
/// 3. arm the parent-death signal (a handler that SIGKILLs the worker's group, G1), then
///    re-check `getppid()` against the parent's pid (the parent may have died before it
///    was armed);
/// 4. close the inherited pool fds that are not its own (other workers' lifeline ends).
///
/// If the parent is already gone, the worker takes its group down and never returns.
pub(crate) fn child_setup(parent: Pid, foreign_fds: &[RawFd]) {
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
    let _ = nix::sys::prctl::set_name(c"poolrun-worker");
    // Own group first: the parent-death handler signals this process's group, which must
    // never be the host's (invariant G1).
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    let death = parent_death_signal();
    // SAFETY: invariant F1 (the only thread of the new child); `on_parent_death` is
    // async-signal-safe (it calls only getpid, getpgrp, kill and _exit).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_parent_death as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigfillset(&mut sa.sa_mask);
        libc::sigaction(death, &sa, std::ptr::null_mut());
    }
    // SAFETY: PR_SET_PDEATHSIG takes a signal number by value; nothing is borrowed.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, death as libc::c_ulong, 0, 0, 0) } != 0 {
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    }
    if nix::unistd::getppid() != parent {
        take_group_down();
    }
    for &fd in foreign_fds {
        // SAFETY: these are pool-owned fds (lifeline write ends of other workers) that were
        // open in the parent at fork time (the registry lock was held); nothing in the child
        // owns them as Rust objects that would use or close them again.
        unsafe {
            libc::close(fd);
        }
    }
}

/// The signal the kernel sends a worker when its parent (the spawner thread) dies: a
/// real-time signal no Rust program uses, caught by [`on_parent_death`]. (nix's `Signal`
/// has no real-time signals, so `prctl` is called directly.)
fn parent_death_signal() -> libc::c_int {
    libc::SIGRTMAX() - 1
}

/// The parent-death signal handler: take the worker's process group down (invariant G1).
extern "C" fn on_parent_death(_: libc::c_int) {
    take_group_down();
}

/// The parent is gone: SIGKILL this worker's whole process group — the worker and every
/// process its tasks started that stayed in the group — so nothing a task started outlives
/// the host. Async-signal-safe (getpid, getpgrp, kill, _exit).
///
/// **G1**: only a process that leads its own group signals the group: `child_setup` makes
/// the worker a group leader before it arms the death signal, and this re-checks it, so
/// the host's process group (the user's shell job) is never signalled. A worker that could
/// not get its own group kills only itself.
pub(crate) fn take_group_down() -> ! {
    // SAFETY: getpid/getpgrp/kill/_exit are async-signal-safe and take plain integers; the
    // group is signalled only when it is this process's own (G1).
    unsafe {
        let me = libc::getpid();
        if libc::getpgrp() == me {
            libc::kill(0, libc::SIGKILL);
        }
        libc::kill(me, libc::SIGKILL);
        libc::_exit(1)
    }
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
    // SAFETY: `_exit` is async-signal-safe, takes a plain integer and never returns.
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
                    Ok(0) => take_group_down(),
                    Ok(_) | Err(Errno::EINTR) => continue,
                    Err(_) => take_group_down(),
                }
            }
        });
}

/// SIGKILL a worker and its whole process group (whatever its task spawned). Invariant F3:
/// only while the pid is attached (or registered with the exit watcher).
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
    let deadline = Deadline::after(Some(grace));
    let mut pause = Duration::from_micros(20);
    while !has_exited(pid) && !deadline.passed() {
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

/// A fresh, zeroed `MAP_SHARED | MAP_ANONYMOUS` read-write mapping of `len` bytes at a
/// kernel-chosen address (a status page, a ring): a worker forked later sees the same
/// memory at the same address. The caller owns it and must `munmap` it.
pub(crate) fn map_shared(len: usize) -> nix::Result<std::ptr::NonNull<std::ffi::c_void>> {
    let len = std::num::NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
    // SAFETY: an anonymous mapping at a kernel-chosen address aliases no Rust object; the
    // caller takes ownership of it.
    unsafe {
        nix::sys::mman::mmap_anonymous(
            None,
            len,
            nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
            nix::sys::mman::MapFlags::MAP_SHARED,
        )
    }
}

/// The raw fd of an owned fd (for the registry).
pub(crate) fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}
