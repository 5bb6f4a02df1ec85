//! Futex plumbing shared by the primitives: shared (not `FUTEX_PRIVATE`) wait/wake so they
//! work across `fork`, the caller's thread id, owner-liveness checks, and [`RawMutex`], the
//! owner-tracking mutex word that `Lock`, `RLock`, `Condition` and `Barrier` build on.
//!
//! # The mutex word (Drepper, "Futexes Are Tricky", mutex 2, with the robust-futex layout)
//! `0` = free; otherwise the owner's kernel thread id in the low 30 bits, plus
//! [`WAITERS`] when someone may be sleeping on the word. Thread ids are unique among live
//! threads of the whole system (one pid namespace), so the word names its owner across
//! processes, and a waiter can check that owner is still alive.
//!
//! # Owner death
//! We do not use the kernel's robust list (`set_robust_list`): glibc owns that per-thread
//! list head for its robust pthread mutexes, and replacing it would break them. Instead a
//! waiter sleeps in slices ([`SLICE_MIN`] doubling to [`SLICE_MAX`]) and after each slice
//! checks `/proc/<tid>/stat`: a missing entry or a zombie state means the owner died
//! holding the lock. The waiter that wins the CAS from that word to 0 gets
//! `Err(OwnerDied)` (without the lock; the lock is free again) and wakes the others.
//! Limit: if the dead owner's tid is reused by a new thread before a waiter checks, the
//! waiter keeps waiting (Linux allocates ids cyclically up to `pid_max`, so reuse within
//! a slice needs millions of thread creations).

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use rustix::thread::futex;

use super::SyncError;

/// Bit set in a mutex word while a thread may be sleeping on it.
pub(crate) const WAITERS: u32 = 1 << 31;
/// Mask of the owner's thread id.
pub(crate) const TID_MASK: u32 = (1 << 30) - 1;
/// First sleep slice of a waiter before it checks the owner is alive.
pub(crate) const SLICE_MIN: Duration = Duration::from_millis(2);
/// Longest sleep slice (bounds the time to notice a dead owner).
pub(crate) const SLICE_MAX: Duration = Duration::from_millis(50);

static FORK_GEN: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_child() {
    FORK_GEN.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    /// (fork generation, pid, tid) of this thread, cached: gettid is a syscall.
    static IDS: Cell<(u64, u32, u32)> = const { Cell::new((u64::MAX, 0, 0)) };
}

fn register_atfork() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn` with no captured state as a child
        // fork handler; it only touches an atomic, which is async-signal-safe.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_child));
        }
    });
}

/// (pid, tid) of the calling thread. Cheap after the first call; correct in a forked
/// child (a `pthread_atfork` handler invalidates the cache).
#[inline]
pub(crate) fn ids() -> (u32, u32) {
    let gen = FORK_GEN.load(Ordering::Relaxed);
    let (g, pid, tid) = IDS.with(|c| c.get());
    if g == gen {
        return (pid, tid);
    }
    register_atfork();
    let gen = FORK_GEN.load(Ordering::Relaxed);
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
    IDS.with(|c| c.set((gen, pid, tid)));
    (pid, tid)
}

/// The calling thread's kernel thread id.
#[inline]
pub(crate) fn my_tid() -> u32 {
    ids().1
}

/// Is the thread `tid` alive (not gone, not a zombie)? Unknown → alive (never a false
/// OwnerDied).
pub(crate) fn tid_alive(tid: u32) -> bool {
    if tid == 0 {
        return true;
    }
    match std::fs::read(format!("/proc/{tid}/stat")) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => false,
        Err(_) => true,
        Ok(s) => {
            // "pid (comm) S ..." — comm may contain ')' so split at the last one.
            let state = s
                .iter()
                .rposition(|&b| b == b')')
                .and_then(|i| s.get(i + 2).copied());
            !matches!(state, Some(b'Z') | Some(b'X') | Some(b'x'))
        }
    }
}

/// `FUTEX_WAIT` (shared) on `word` while it equals `val`, for at most `d`.
/// Returns when woken, on a value mismatch, on a signal, or on timeout (callers re-check).
pub(crate) fn wait(word: &AtomicU32, val: u32, d: Option<Duration>) {
    let ts = d.map(|d| rustix::thread::futex::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    let _ = futex::wait(word, futex::Flags::empty(), val, ts.as_ref());
}

/// `FUTEX_WAKE` (shared): wake up to `n` waiters on `word`.
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    // The kernel reads the count as an `int`: u32::MAX would be -1, which wakes one.
    let _ = futex::wake(word, futex::Flags::empty(), n.min(i32::MAX as u32));
}

pub(crate) use crate::Deadline;

/// An owner-tracking, process-shared mutex word (see the module docs), with the owner's
/// pid kept beside it for error reports.
#[repr(C)]
pub(crate) struct RawMutex {
    pub(crate) word: AtomicU32,
    owner_pid: AtomicU32,
}

/// What [`RawMutex::lock`] found.
pub(crate) enum Locked {
    /// Acquired.
    Yes,
    /// The caller already owns it.
    Mine,
}

impl RawMutex {
    /// Try once without blocking.
    #[inline]
    pub(crate) fn try_lock(&self, tid: u32) -> bool {
        self.try_lock_pid(ids().0, tid)
    }

    /// [`Self::try_lock`] with the caller's pid already at hand.
    #[inline]
    pub(crate) fn try_lock_pid(&self, pid: u32, tid: u32) -> bool {
        if self
            .word
            .compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            self.owner_pid.store(pid, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// The owner's thread id (0 = free).
    #[inline]
    pub(crate) fn owner(&self) -> u32 {
        self.word.load(Ordering::Relaxed) & TID_MASK
    }

    /// Acquire, waiting until `deadline`. `Ok(Mine)` if the caller already owns it
    /// (the caller decides: re-entry or a would-deadlock error). Releases the emulated GIL
    /// while it sleeps.
    pub(crate) fn lock(&self, tid: u32, deadline: Deadline) -> Result<Locked, SyncError> {
        if self.try_lock(tid) {
            return Ok(Locked::Yes);
        }
        // Spin a little: critical sections between pool workers are often tiny.
        for _ in 0..64 {
            std::hint::spin_loop();
            let w = self.word.load(Ordering::Relaxed);
            if w == 0 && self.try_lock(tid) {
                return Ok(Locked::Yes);
            }
            if w & TID_MASK == tid {
                return Ok(Locked::Mine);
            }
        }
        crate::gil::allow_threads(|| self.lock_slow(tid, deadline))
    }

    fn lock_slow(&self, tid: u32, deadline: Deadline) -> Result<Locked, SyncError> {
        let mut slice = SLICE_MIN;
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w == 0 {
                // After sleeping we must assume others sleep too: take it with WAITERS.
                if self
                    .word
                    .compare_exchange(0, tid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    self.owner_pid.store(ids().0, Ordering::Relaxed);
                    return Ok(Locked::Yes);
                }
                continue;
            }
            if w & TID_MASK == tid {
                return Ok(Locked::Mine);
            }
            if deadline.passed() {
                return Err(SyncError::Timeout);
            }
            if w & WAITERS == 0
                && self
                    .word
                    .compare_exchange(w, w | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let t0 = Instant::now();
            let s = deadline.slice(slice);
            wait(&self.word, w | WAITERS, Some(s));
            if t0.elapsed() >= s && self.word.load(Ordering::Relaxed) == w | WAITERS {
                // A whole slice without a change: is the owner still there?
                let owner = w & TID_MASK;
                if !tid_alive(owner) {
                    if let Some(pid) = self.recover(w | WAITERS) {
                        return Err(SyncError::OwnerDied { pid });
                    }
                    continue;
                }
                slice = (slice * 2).min(SLICE_MAX);
            }
        }
    }

    /// The owner of `seen` is dead: free the word if it is still `seen`. Returns the dead
    /// owner's pid if this caller did it (and so must report OwnerDied).
    fn recover(&self, seen: u32) -> Option<u32> {
        let pid = self.owner_pid.load(Ordering::Relaxed);
        if self
            .word
            .compare_exchange(seen, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            wake(&self.word, u32::MAX);
            let tid = seen & TID_MASK;
            Some(if pid != 0 { pid } else { tid })
        } else {
            None
        }
    }

    /// Release. The caller must own the word.
    #[inline]
    pub(crate) fn unlock(&self) {
        if self.word.swap(0, Ordering::Release) & WAITERS != 0 {
            wake(&self.word, 1);
        }
    }
}
