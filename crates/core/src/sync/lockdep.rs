//! Lock-order checking ("lockdep"), opt-in: [`enable`] or `POOLRUN_LOCKDEP=1`.
//!
//! The idea is the Linux kernel's lockdep (Documentation/locking/lockdep-design.rst),
//! reduced to lock *instances* and two-lock cycles, and made to work across processes:
//!
//! - every thread keeps a stack of the poolrun locks it holds (`Lock`, `RLock`, the lock of
//!   a `Condition`), each with the `#[track_caller]` site that took it;
//! - when a thread that holds `A` starts to acquire `B`, it records the edge `A → B` (with
//!   both sites, its pid and tid) **in `A`'s own shared memory** — the lock's segment has an
//!   edge table after its state, so every process that can use `A` sees the edge, whenever
//!   it was forked and whichever process recorded it. Only the holder of `A` appends to
//!   `A`'s table, so appends need no extra lock (an entry is written, then published by a
//!   release-store of the count);
//! - then, before it blocks on `B`, it looks for `B → A` in `B`'s table (a refused attempt
//!   takes its edge back, so the order taken first stays the allowed one). If some thread,
//!   in any process, ever took `A` while holding `B`, the two orders can deadlock: `acquire`
//!   returns `Err(SyncError::LockOrderInversion { .. })` without blocking (and without the
//!   lock), and the report goes to stderr once per pair and process.
//!
//! So an inversion is reported the first time the inverted order is *attempted*, also on
//! a run whose timing happened not to deadlock, and the thread that would close a deadlock
//! is told instead of hanging.
//!
//! Limits: cycles through three or more locks are not
//! found; each lock records at most [`MAX_EDGES`] distinct successors (further ones are
//! ignored, with one warning); `Semaphore`, `Event` and `Barrier` are not tracked (they have
//! no owner); a `Condition::wait` keeps its lock on the held stack while it sleeps.

use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::Location;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::shm::segment::Mapping;

use super::futex::ids;
use super::SyncError;

/// Bytes of the edge table that follows a tracked lock's state (its segment's data area).
pub(crate) const TABLE_BYTES: usize = 16 * 1024;
const SITE: usize = 116;
const ENTRY: usize = 256;
/// Most successors recorded per lock.
pub const MAX_EDGES: usize = TABLE_BYTES / ENTRY - 1;

#[repr(C)]
struct Edge {
    to: u64,
    pid: u32,
    tid: u32,
    from_len: u16,
    to_len: u16,
    _pad: u32,
    from_site: [u8; SITE],
    to_site: [u8; SITE],
}
const _: () = assert!(std::mem::size_of::<Edge>() == ENTRY);

/// 0: not decided yet (the environment is read on first use); 1: off; 2: on.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Turn lock-order checking on for this process (and the processes it forks after this
/// call; a pool's workers forked earlier keep their own setting — enable it before creating
/// the pool, or set `POOLRUN_LOCKDEP=1` in the environment).
pub fn enable() {
    STATE.store(2, Ordering::Relaxed);
}

/// Turn lock-order checking off for this process.
pub fn disable() {
    STATE.store(1, Ordering::Relaxed);
}

/// Is lock-order checking on? The first call reads `POOLRUN_LOCKDEP` (`1`, `true`, `on`,
/// `yes`) unless [`enable`] or [`disable`] was called before.
#[inline]
pub fn is_enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        2 => true,
        1 => false,
        _ => from_env(),
    }
}

#[cold]
fn from_env() -> bool {
    let on = std::env::var("POOLRUN_LOCKDEP")
        .map(|v| matches!(v.trim(), "1" | "true" | "on" | "yes"))
        .unwrap_or(false);
    // Keep an enable()/disable() that raced with us.
    let _ = STATE.compare_exchange(
        0,
        if on { 2 } else { 1 },
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    STATE.load(Ordering::Relaxed) == 2
}

/// Number of inversions this process has detected (each pair counted once).
pub fn inversions_detected() -> u64 {
    DETECTED.load(Ordering::Relaxed)
}

static DETECTED: AtomicU64 = AtomicU64::new(0);

/// A lock-order inversion: this thread (`pid`/`tid`) holds `held` and tried to take
/// `acquiring`; thread `other_tid` of process `other_pid` earlier took `acquiring` and then
/// `held`. Displayed as the multi-line report lockdep prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inversion {
    /// The lock the caller holds.
    pub held: String,
    /// The lock the caller was about to take.
    pub acquiring: String,
    /// Where the caller took `held`.
    pub held_at: String,
    /// Where the caller tried to take `acquiring`.
    pub acquiring_at: String,
    /// The caller's process id.
    pub pid: u32,
    /// The caller's thread id.
    pub tid: u32,
    /// Where the other thread took `acquiring` (first).
    pub other_held_at: String,
    /// Where the other thread then took `held`.
    pub other_acquiring_at: String,
    /// The other thread's process id.
    pub other_pid: u32,
    /// The other thread's thread id.
    pub other_tid: u32,
}

impl std::fmt::Display for Inversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "poolrun lockdep: lock order inversion (possible deadlock)\n  \
             pid {} tid {}: holds {} (taken at {})\n    \
             and is acquiring {} at {};\n  \
             pid {} tid {} earlier took them in the opposite order:\n    \
             {} at {}, then {} at {}",
            self.pid,
            self.tid,
            self.held,
            self.held_at,
            self.acquiring,
            self.acquiring_at,
            self.other_pid,
            self.other_tid,
            self.acquiring,
            self.other_held_at,
            self.held,
            self.other_acquiring_at
        )
    }
}

struct Held {
    map: Arc<Mapping>,
    kind: &'static str,
    site: &'static Location<'static>,
}

thread_local! {
    static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
}

fn reported() -> std::sync::MutexGuard<'static, HashSet<(u64, u64)>> {
    static R: OnceLock<Mutex<HashSet<(u64, u64)>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The table's published-entry count: its first 4 bytes (tracked locks are created with a
/// data area of TABLE_BYTES: lock.rs, rlock.rs, condition.rs).
fn count(map: &Mapping) -> &AtomicU32 {
    map.cell::<AtomicU32>(0, 0)
}

/// Entry `i`, after the count's own ENTRY-sized slot.
fn entry(map: &Mapping, i: usize) -> *mut Edge {
    assert!(i < MAX_EDGES);
    map.ptr_at::<Edge>(ENTRY, i).as_ptr()
}

fn put_site(dst: &mut [u8; SITE], s: &str) -> u16 {
    // Keep the tail (file name and line) when a path is too long.
    let b = s.as_bytes();
    let b = &b[b.len().saturating_sub(SITE)..];
    dst[..b.len()].copy_from_slice(b);
    b.len() as u16
}

fn site_str(b: &[u8; SITE], n: u16) -> String {
    String::from_utf8_lossy(&b[..(n as usize).min(SITE)]).into_owned()
}

/// Published edges of `map`, as (to, pid, tid, from_site, to_site). Entries are immutable
/// once published.
fn find_edge(map: &Mapping, to: u64) -> Option<(u32, u32, String, String)> {
    let n = (count(map).load(Ordering::Acquire) as usize).min(MAX_EDGES);
    for i in 0..n {
        // SAFETY: i < published count: the entry was fully written before the count's
        // release-store and is never written again.
        let e = unsafe { &*entry(map, i) };
        if e.to == to {
            return Some((
                e.pid,
                e.tid,
                site_str(&e.from_site, e.from_len),
                site_str(&e.to_site, e.to_len),
            ));
        }
    }
    None
}

/// Record `from → to` in `from`'s table unless present. The caller holds `from`, which makes
/// it the only writer of that table. Returns the previous count if it appended.
fn add_edge(from: &Held, to: u64, to_site: &Location<'_>, pid: u32, tid: u32) -> Option<usize> {
    let map = &from.map;
    let c = count(map);
    let n = c.load(Ordering::Acquire) as usize;
    if find_edge(map, to).is_some() {
        return None;
    }
    if n >= MAX_EDGES {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            eprintln!(
                "poolrun lockdep: {} has more than {MAX_EDGES} successors; ignoring more",
                describe(map, from.kind)
            );
        }
        return None;
    }
    let p = entry(map, n);
    // SAFETY: entry n is unpublished (n == count) and only the holder of `from` — this
    // thread — writes unpublished entries; it lies inside the table (n < MAX_EDGES).
    unsafe {
        (*p).to = to;
        (*p).pid = pid;
        (*p).tid = tid;
        (*p).from_len = put_site(&mut (*p).from_site, &from.site.to_string());
        (*p).to_len = put_site(&mut (*p).to_site, &to_site.to_string());
    }
    c.store(n as u32 + 1, Ordering::SeqCst);
    Some(n)
}

pub(crate) fn describe(map: &Mapping, kind: &str) -> String {
    let site = map.site();
    if site.is_empty() {
        format!("{kind} #{:08x}", map.id() >> 32)
    } else {
        format!("{kind} #{:08x} ({site})", map.id() >> 32)
    }
}

/// Called before blocking on the lock in `map`. Records edges from every held lock and
/// fails if the opposite order was ever taken.
pub(crate) fn before_acquire(
    map: &Mapping,
    kind: &'static str,
    site: &'static Location<'static>,
) -> Result<(), SyncError> {
    let (pid, tid) = ids();
    HELD.with(|h| {
        let held = h.borrow();
        // Record first, then look for the opposite edge, with a SeqCst fence between: of
        // two threads taking A→B and B→A at the same moment, at least one sees the other's
        // edge (the store-load pattern of Dekker's algorithm), so a race cannot hide it.
        let mut added = Vec::new();
        for a in held.iter() {
            if a.map.id() != map.id() {
                if let Some(n) = add_edge(a, map.id(), site, pid, tid) {
                    added.push((a, n));
                }
            }
        }
        fence(Ordering::SeqCst);
        for a in held.iter().rev() {
            if a.map.id() == map.id() {
                continue;
            }
            if let Some((opid, otid, osite_b, osite_a)) = find_edge(map, a.map.id()) {
                // A refused attempt leaves no edge behind (so the order taken first stays
                // the allowed one): un-publish what we just appended. We still hold those
                // locks, so nobody appended after us.
                for (x, n) in added.iter().rev() {
                    count(&x.map).store(*n as u32, Ordering::Release);
                }
                let report = Box::new(Inversion {
                    held: describe(&a.map, a.kind),
                    acquiring: describe(map, kind),
                    held_at: a.site.to_string(),
                    acquiring_at: site.to_string(),
                    pid,
                    tid,
                    other_acquiring_at: osite_a,
                    other_held_at: osite_b,
                    other_pid: opid,
                    other_tid: otid,
                });
                let err = SyncError::LockOrderInversion { report };
                if reported().insert((a.map.id(), map.id())) {
                    DETECTED.fetch_add(1, Ordering::Relaxed);
                    // One write, so reports from several processes do not interleave.
                    let msg = format!("{err}\n");
                    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
                }
                return Err(err);
            }
        }
        Ok(())
    })
}

/// Called once the lock in `map` is held.
pub(crate) fn acquired(map: &Arc<Mapping>, kind: &'static str, site: &'static Location<'static>) {
    HELD.with(|h| {
        h.borrow_mut().push(Held {
            map: map.clone(),
            kind,
            site,
        })
    });
}

/// Called when the lock with `id` is released (in any order).
pub(crate) fn released(id: u64) {
    // try_with: a guard dropped during thread teardown must not panic.
    let _ = HELD.try_with(|h| {
        let mut h = h.borrow_mut();
        if let Some(i) = h.iter().rposition(|x| x.map.id() == id) {
            h.remove(i);
        }
    });
}
