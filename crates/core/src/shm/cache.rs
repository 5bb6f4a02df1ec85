//! The receiver's mapping cache: O(1) repeat hand-off of a segment.
//!
//! Without it, a worker that receives a 256 MiB `SharedBytes`, uses it and drops its handle
//! unmaps it; the next task with the same buffer maps it again and takes a page fault on
//! every page it touches (27 ms per call for 256 MiB). So a process that *attached* a
//! segment (it did not create it) keeps its mapping here after its last handle is gone,
//! and the next handle to the same segment finds it in the registry: no system call, no
//! page fault.
//!
//! ## Rules
//! - **C1 (only attached segments)**: a process never caches a segment it created, so the
//!   creator's last drop still ends its mapping and marks the segment *released* in the
//!   header (see `segment.rs`).
//! - **C2 (released with the segment)**: an entry is dropped once the segment's creator has
//!   released it or has exited, checked by a sweeper thread every [`SWEEP_EVERY`] while
//!   the cache is not empty, and at every insertion. So the cache keeps memory alive at
//!   most one sweep longer than the creator does (a creator that `_exit`s without dropping
//!   counts as released when its pid is gone).
//! - **C3 (bounded)**: at most [`MAX_ENTRIES`] segments; the least recently received goes.
//! - **C4 (fork)**: entries are per process. A forked child inherits its parent's entries
//!   and drops them at its first sweep (they are valid mappings, but the child's copy of an
//!   `Arc` is not the parent's to manage); the child's own sweeper starts with its first
//!   insertion.
//! - **C5 (lock order)**: the cache lock is taken after the registry and pin locks (the
//!   fork handlers take all three in that order) and no `Mapping` is dropped while it is
//!   held (a drop takes the registry lock).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::forksafe::ForkGuard;
use super::segment::{Cached as Entry, Mapping, RECEIVED};

/// Most segments kept (C3).
pub(crate) const MAX_ENTRIES: usize = 32;
/// How often the sweeper checks for released segments (C2).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(20);

/// pid of the process whose sweeper runs (0: none).
static SWEEPER_PID: AtomicU32 = AtomicU32::new(0);

fn cache() -> ForkGuard<'static, Vec<Entry>> {
    RECEIVED.lock()
}

/// Keep `m` (just received) mapped after its last handle in this process is gone. Called
/// without the registry lock held (C5).
pub(crate) fn keep(m: &Arc<Mapping>) {
    let me = std::process::id();
    if m.creator() == me {
        return; // C1
    }
    static TICK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tick = TICK.fetch_add(1, Ordering::Relaxed);
    let evicted = {
        let mut c = cache();
        if let Some(e) = c.iter_mut().find(|e| e.pid == me && Arc::ptr_eq(&e.map, m)) {
            e.used = tick;
            None
        } else {
            c.push(Entry {
                map: m.clone(),
                pid: me,
                used: tick,
            });
            if c.len() > MAX_ENTRIES {
                let oldest = c
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| (e.pid == me, e.used))
                    .map(|(i, _)| i);
                oldest.map(|i| c.swap_remove(i))
            } else {
                None
            }
        }
    };
    drop(evicted); // outside the lock (C5)
    start_sweeper(me);
}

/// Drop entries that are released, whose creator is gone, or that another process
/// cached (C2, C4). Returns how many are left.
pub(crate) fn sweep() -> usize {
    let me = std::process::id();
    let mut gone = Vec::new();
    let left = {
        let mut c = cache();
        let mut i = 0;
        while i < c.len() {
            if c[i].pid != me || c[i].map.released() {
                gone.push(c.swap_remove(i));
            } else {
                i += 1;
            }
        }
        c.len()
    };
    drop(gone); // outside the lock (C5)
    left
}

/// Segments cached in this process (tests, stats).
pub(crate) fn len() -> usize {
    let me = std::process::id();
    cache().iter().filter(|e| e.pid == me).count()
}

/// Drop every entry of this process now (`shm::release_cached`).
pub(crate) fn clear() {
    let me = std::process::id();
    let mine: Vec<Entry> = {
        let mut c = cache();
        let (mine, rest) = std::mem::take(&mut *c)
            .into_iter()
            .partition(|e| e.pid == me);
        *c = rest;
        mine
    };
    drop(mine); // outside the lock (C5)
}

fn start_sweeper(me: u32) {
    let cur = SWEEPER_PID.load(Ordering::Acquire);
    if cur == me
        || SWEEPER_PID
            .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("poolrun-shm-cache".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            std::thread::sleep(SWEEP_EVERY);
            if sweep() == 0 {
                SWEEPER_PID.store(0, Ordering::Release);
                // An entry may have been added between the sweep and the store.
                if len() == 0
                    || SWEEPER_PID
                        .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
                {
                    return;
                }
            }
        });
    if spawned.is_err() {
        // No thread: the next insertion sweeps instead.
        SWEEPER_PID.store(0, Ordering::Release);
        sweep();
    }
}
