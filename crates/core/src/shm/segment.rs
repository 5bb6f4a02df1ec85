//! One shared-memory segment: a memfd mapped `MAP_SHARED`, with a header page.
//!
//! Layout and lifetime rules are in `README.md` beside this file. In short:
//!
//! - page 0 is the [`Header`] (magic, random id, kind, data length, the `pending` count of
//!   handles in flight) followed by a *state area* that `sync` primitives use for their
//!   futex words; the data starts at page 1 ([`HEADER_SIZE`]).
//! - every process that uses a segment holds one [`Mapping`] for it (an owned fd plus the
//!   mapping), shared by all its handles through an `Arc` and found by id in a per-process
//!   registry, so a handle received twice maps once.
//! - a handle serializes as [`Wire`] `(pid, fd, inode, id, kind, len)` naming *this*
//!   process's fd; the receiver opens `/proc/<pid>/fd/<fd>`, checks the link is a poolrun
//!   memfd, the inode, and the header's magic + id. The sender pins its mapping until a
//!   receiver has attached (header `pending` back to 0) or the pin timeout passed.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use serde::{Deserialize, Serialize};

use super::forksafe::{self, ForkGuard, ForkLock, ForkSafeMutex};
use super::ShmError;

/// Size of the header page; the data area starts here (page aligned).
pub(crate) const HEADER_SIZE: usize = 4096;
/// Offset of the state area inside the header page (for `sync` primitives).
pub(crate) const STATE_OFFSET: usize = 512;
/// Bytes available in the state area.
pub(crate) const STATE_SIZE: usize = HEADER_SIZE - STATE_OFFSET;
/// `"poolrun\x02"`: marks a poolrun segment (version 2 of this layout: creator and
/// released added).
const MAGIC: u64 = u64::from_le_bytes(*b"poolrun\x02");
/// Longest a sender keeps a segment alive for a handle that no receiver attached, in ms
/// (default 300 s; `shm::set_pin_timeout`).
static PIN_MAX_MS: AtomicU64 = AtomicU64::new(300_000);

pub(crate) fn set_pin_max(d: Duration) {
    PIN_MAX_MS.store(
        d.as_millis().min(u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
}

fn pin_max() -> Duration {
    Duration::from_millis(PIN_MAX_MS.load(Ordering::Relaxed))
}
/// Longest site string stored in the header (the creation site of a sync primitive).
const SITE_MAX: usize = 120;

/// What a segment holds; checked when a handle is received, so a `Lock` handle can never be
/// decoded as an `Event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u32)]
pub(crate) enum SegmentKind {
    Bytes = 1,
    Array = 2,
    Lock = 3,
    RLock = 4,
    Condition = 5,
    Event = 6,
    Semaphore = 7,
    Barrier = 8,
    Lockdep = 9,
}

impl SegmentKind {
    fn name(self) -> &'static str {
        match self {
            SegmentKind::Bytes => "SharedBytes",
            SegmentKind::Array => "SharedArray",
            SegmentKind::Lock => "Lock",
            SegmentKind::RLock => "RLock",
            SegmentKind::Condition => "Condition",
            SegmentKind::Event => "Event",
            SegmentKind::Semaphore => "Semaphore",
            SegmentKind::Barrier => "Barrier",
            SegmentKind::Lockdep => "lockdep table",
        }
    }
}

/// The first bytes of page 0. Plain integers are written once by the creator before any
/// other process can see the segment; `pending` is shared and atomic.
#[repr(C)]
struct Header {
    magic: u64,
    id: u64,
    data_len: u64,
    kind: u32,
    /// Handles serialized but not yet attached by a receiver.
    pending: AtomicU32,
    /// Element size (SharedArray) or 0; checked on receive.
    elem_size: u32,
    site_len: u32,
    site: [u8; SITE_MAX],
    /// The pid of the process that created the segment.
    creator: u32,
    /// Set to 1 when the creator dropped its last handle (receivers' caches let go then,
    /// `cache.rs` C2).
    released: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Header>() <= STATE_OFFSET);

/// What may live in a segment's shared areas and be used through `&T` by every process.
///
/// # Safety
/// Implementors are `#[repr(C)]` (or a std atomic), at most 8-aligned, valid when all
/// bytes are zero (a fresh segment), and every field that processes change concurrently
/// is an atomic: a `&T` into shared memory is then as sound as an `&AtomicU64` is.
pub(crate) unsafe trait SharedCell: Sized {}

// SAFETY: std atomics are valid when zero and change only atomically.
unsafe impl SharedCell for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl SharedCell for std::sync::atomic::AtomicU64 {}

/// One process's view of a segment: the owned memfd and its mapping.
///
/// Invariant (M1): `ptr` is the start of a live `MAP_SHARED`, read-write mapping of
/// `map_len` bytes of `fd`, page aligned, at least [`HEADER_SIZE`] long, whose first page
/// holds an initialised [`Header`]; it stays mapped until `Drop`. The memfd is never
/// truncated (it is sealed against shrinking), so every byte of the mapping stays backed.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    map_len: usize,
    fd: OwnedFd,
    ino: u64,
    id: u64,
    kind: SegmentKind,
    data_len: usize,
}

// SAFETY: the mapping is plain shared memory valid for the lifetime of `Mapping` (M1); all
// access to it goes through atomics or through `&[u8]`/raw reads whose synchronisation the
// typed wrappers (SharedBytes/SharedArray/sync) document. Nothing in it is thread-bound.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out raw pointers and atomics.
unsafe impl Sync for Mapping {}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("kind", &self.kind)
            .field("id", &format_args!("{:016x}", self.id))
            .field("fd", &self.fd.as_raw_fd())
            .field("data_len", &self.data_len)
            .finish()
    }
}

/// How a handle travels: enough for the receiver to find and check the segment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Wire {
    pid: u32,
    fd: i32,
    ino: u64,
    id: u64,
    kind: SegmentKind,
    len: u64,
}

fn page_round(n: usize) -> Option<usize> {
    n.checked_add(HEADER_SIZE - 1)
        .map(|v| v & !(HEADER_SIZE - 1))
}

fn random_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    // Zero is reserved (never a valid id).
    h.finish().max(1)
}

fn os(op: &'static str) -> impl FnOnce(rustix::io::Errno) -> ShmError {
    move |e| ShmError::Os {
        op,
        source: std::io::Error::from(e),
    }
}

type MappingTable = Option<HashMap<u64, Weak<Mapping>>>;

/// Per-process registry: segment id → this process's mapping (fork-safe, see forksafe.rs).
static REGISTRY: ForkSafeMutex<MappingTable> = ForkSafeMutex::new(None);
/// Segments pinned until a receiver attached.
static PINS: ForkSafeMutex<Vec<Pin>> = ForkSafeMutex::new(Vec::new());
/// The receiver's mapping cache (its rules are in `cache.rs`; the list lives here so the
/// fork handlers take it with the registry and the pins, in that order).
pub(crate) static RECEIVED: ForkSafeMutex<Vec<Cached>> = ForkSafeMutex::new(Vec::new());

/// One entry of [`RECEIVED`].
pub(crate) struct Cached {
    pub map: Arc<Mapping>,
    /// The process that cached it.
    pub pid: u32,
    /// Insertion tick (least recently received goes first).
    pub used: u64,
}

fn lock_registry() -> MapGuard {
    static LOCKS: [&(dyn ForkLock + Sync); 3] = [&REGISTRY, &PINS, &RECEIVED];
    forksafe::register(&LOCKS);
    MapGuard(REGISTRY.lock())
}

/// The registry map, created on first use.
struct MapGuard(ForkGuard<'static, MappingTable>);
impl std::ops::Deref for MapGuard {
    type Target = HashMap<u64, Weak<Mapping>>;
    fn deref(&self) -> &Self::Target {
        static EMPTY: std::sync::OnceLock<HashMap<u64, Weak<Mapping>>> = std::sync::OnceLock::new();
        self.0
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(HashMap::new))
    }
}
impl std::ops::DerefMut for MapGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.get_or_insert_with(HashMap::new)
    }
}

impl Mapping {
    /// Create a new segment of `kind` with `data_len` bytes of zeroed data (plus the header
    /// page). `site` is stored in the header (creation site of sync primitives).
    pub(crate) fn create(
        kind: SegmentKind,
        data_len: usize,
        elem_size: u32,
        site: &str,
    ) -> Result<Arc<Mapping>, ShmError> {
        let map_len = page_round(data_len)
            .and_then(|d| d.checked_add(HEADER_SIZE))
            .filter(|&l| l <= isize::MAX as usize)
            .ok_or(ShmError::TooLarge { len: data_len })?;
        let id = random_id();
        let name = format!("poolrun-{id:016x}");
        let fd = rustix::fs::memfd_create(
            name.as_str(),
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(os("memfd_create"))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)).map_err(os("fchmod"))?;
        rustix::fs::ftruncate(&fd, map_len as u64).map_err(os("ftruncate"))?;
        // The size is fixed from now on: a shrink would turn accesses into SIGBUS.
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(os("fcntl(F_ADD_SEALS)"))?;
        let ino = rustix::fs::fstat(&fd).map_err(os("fstat"))?.st_ino;
        let ptr = map(&fd, map_len)?;
        // SAFETY: `ptr` is a fresh, exclusive (no other process knows the fd yet), writable
        // mapping of at least HEADER_SIZE bytes, page aligned, so a Header fits at its start.
        unsafe {
            let h = &mut *(ptr.as_ptr() as *mut Header);
            let site = site.as_bytes();
            let n = site.len().min(SITE_MAX);
            h.magic = MAGIC;
            h.id = id;
            h.data_len = data_len as u64;
            h.kind = kind as u32;
            h.elem_size = elem_size;
            h.site_len = n as u32;
            h.site[..n].copy_from_slice(&site[..n]);
            h.creator = std::process::id();
        }
        let m = Arc::new(Mapping {
            ptr,
            map_len,
            fd,
            ino,
            id,
            kind,
            data_len,
        });
        lock_registry().insert(id, Arc::downgrade(&m));
        Ok(m)
    }

    fn header(&self) -> &Header {
        // SAFETY: M1: the first page holds an initialised Header, mapped while self lives.
        unsafe { &*(self.ptr.as_ptr() as *const Header) }
    }

    /// The pid of the process that created the segment.
    pub(crate) fn creator(&self) -> u32 {
        self.header().creator
    }

    /// True once the creator dropped its last handle, or exited (cache rule C2).
    pub(crate) fn released(&self) -> bool {
        let h = self.header();
        if h.released.load(Ordering::Acquire) != 0 {
            return true;
        }
        // A creator that ended without dropping (a worker `_exit`s): its pid is gone. (A
        // recycled pid only keeps the entry longer, bounded by MAX_ENTRIES.)
        let pid = rustix::process::Pid::from_raw(h.creator as i32);
        matches!(
            pid.map(rustix::process::test_kill_process),
            Some(Err(rustix::io::Errno::SRCH)) | None
        )
    }

    /// The segment's random id (equal in every process).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Length of the data area in bytes.
    pub(crate) fn data_len(&self) -> usize {
        self.data_len
    }

    /// Element `index` of an array of `T` that starts `offset` bytes into the data area —
    /// the one place pointer arithmetic on a segment happens. Panics unless the element lies
    /// inside the mapping's data area and is aligned for `T`.
    pub(crate) fn ptr_at<T>(&self, offset: usize, index: usize) -> NonNull<T> {
        let size = std::mem::size_of::<T>();
        let start = index
            .checked_mul(size)
            .and_then(|b| b.checked_add(offset))
            .expect("segment offset overflows");
        let end = start.checked_add(size).expect("segment offset overflows");
        assert!(
            end <= self.map_len - HEADER_SIZE,
            "segment access at {start}..{end} past the data area ({} bytes)",
            self.map_len - HEADER_SIZE
        );
        assert_eq!(
            (HEADER_SIZE + start) % std::mem::align_of::<T>(),
            0,
            "misaligned segment access"
        );
        // SAFETY: M1: the mapping is `map_len` bytes from `ptr`; HEADER_SIZE + end ≤ map_len
        // was just checked, so the element is inside it; the mapping is page aligned and
        // the offset a multiple of T's alignment, so the pointer is aligned and non-null.
        unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(HEADER_SIZE + start).cast()) }
    }

    /// Element `index` of a table of shared cells `offset` bytes into the data area (see
    /// [`ptr_at`](Self::ptr_at) for the checks).
    pub(crate) fn cell<T: SharedCell>(&self, offset: usize, index: usize) -> &T {
        // SAFETY: `ptr_at` checked bounds and alignment; the bytes are mapped for as long as
        // `self` lives (M1); the SharedCell contract makes all-zero (a fresh segment) and
        // any state another process left a valid T, changed only through atomics.
        unsafe { self.ptr_at::<T>(offset, index).as_ref() }
    }

    /// The state area of the header page, typed (a sync primitive's futex words).
    pub(crate) fn state<S: SharedCell>(&self) -> &S {
        const { assert!(std::mem::size_of::<S>() <= STATE_SIZE && std::mem::align_of::<S>() <= 8) };
        // SAFETY: the state area is STATE_SIZE zero-initialised bytes at an 8-aligned offset
        // of a page-aligned mapping that lives as long as `self` (M1); S fits and is valid in
        // any state (SharedCell contract).
        unsafe { &*(self.ptr.as_ptr().add(STATE_OFFSET) as *const S) }
    }

    /// The data area as bytes, for a [`SegmentKind::Bytes`] segment (written once, by
    /// [`write_data`](Self::write_data) before any handle exists, then never again).
    pub(crate) fn bytes(&self) -> &[u8] {
        assert_eq!(
            self.kind,
            SegmentKind::Bytes,
            "only SharedBytes segments are byte views"
        );
        // SAFETY: M1: `data_len` bytes after the header page are mapped while `self` lives;
        // a Bytes segment is never written after creation (SharedBytes has no way to), so
        // the shared borrow cannot see a concurrent write.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(HEADER_SIZE), self.data_len) }
    }

    /// Fill the data area from `data` with `pwrite` on the memfd: the kernel allocates the
    /// pages as it copies, instead of one page fault per 4 KiB page of a copy through the
    /// mapping (about twice as fast for big buffers). `data.len()` must be `data_len`.
    pub(crate) fn write_data(&self, data: &[u8]) -> Result<(), ShmError> {
        debug_assert_eq!(data.len(), self.data_len);
        let mut done = 0;
        while done < data.len() {
            let n = rustix::io::pwrite(&self.fd, &data[done..], (HEADER_SIZE + done) as u64)
                .map_err(os("pwrite"))?;
            if n == 0 {
                return Err(ShmError::Os {
                    op: "pwrite",
                    source: std::io::Error::from(std::io::ErrorKind::WriteZero),
                });
            }
            done += n;
        }
        Ok(())
    }

    /// The site string stored at creation.
    pub(crate) fn site(&self) -> String {
        let h = self.header();
        let n = (h.site_len as usize).min(SITE_MAX);
        String::from_utf8_lossy(&h.site[..n]).into_owned()
    }

    /// Encode a handle to this segment for another process, and pin it here until a
    /// receiver attached (see README, "Lifetime").
    /// Serialize a handle to this segment (`Serialize` of every handle type). A failure is
    /// kept for the codec as a typed [`HandleError`](super::HandleError).
    pub(crate) fn serialize_handle<S: serde::Serializer>(
        self: &Arc<Self>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match self.to_wire() {
            Ok(w) => w.serialize(s),
            Err(e) => Err(serde::ser::Error::custom(super::stash_handle_error(&e))),
        }
    }

    /// Deserialize a handle of `kind` (`Deserialize` of every handle type); see
    /// [`serialize_handle`](Self::serialize_handle).
    pub(crate) fn deserialize_handle<'de, D: serde::Deserializer<'de>>(
        d: D,
        kind: SegmentKind,
        elem_size: u32,
    ) -> Result<Arc<Mapping>, D::Error> {
        let w = Wire::deserialize(d)?;
        Mapping::from_wire(&w, kind, elem_size)
            .map_err(|e| serde::de::Error::custom(super::stash_handle_error(&e)))
    }

    pub(crate) fn to_wire(self: &Arc<Self>) -> Result<Wire, ShmError> {
        // The fd must still be ours: a pool may close inherited fds in a worker.
        match rustix::fs::fstat(&self.fd) {
            Ok(st) if st.st_ino == self.ino => {}
            _ => {
                return Err(ShmError::Gone {
                    detail: format!(
                        "fd {} of segment {:016x} is no longer open in this process",
                        self.fd.as_raw_fd(),
                        self.id
                    ),
                })
            }
        }
        self.header().pending.fetch_add(1, Ordering::AcqRel);
        pin(self.clone());
        Ok(Wire {
            pid: std::process::id(),
            fd: self.fd.as_raw_fd(),
            ino: self.ino,
            id: self.id,
            kind: self.kind,
            len: self.data_len as u64,
        })
    }

    /// Find or map the segment a [`Wire`] names. `kind` and `elem_size` must match.
    pub(crate) fn from_wire(
        w: &Wire,
        kind: SegmentKind,
        elem_size: u32,
    ) -> Result<Arc<Mapping>, ShmError> {
        if w.kind != kind {
            return Err(ShmError::Mismatch(format!(
                "handle is a {}, expected a {}",
                w.kind.name(),
                kind.name()
            )));
        }
        let found = lock_registry().get(&w.id).and_then(Weak::upgrade);
        let m = match found {
            Some(m) => m,
            None => Self::attach(w)?,
        };
        if m.kind != kind || m.data_len as u64 != w.len || m.header().elem_size != elem_size {
            return Err(ShmError::Mismatch(format!(
                "segment {:016x} does not match the handle (kind/length/element size)",
                w.id
            )));
        }
        // One handle in flight has arrived. Saturating: a handle decoded twice (a test
        // re-decoding the same bytes) must not wrap the count.
        let p = &m.header().pending;
        let _ = p.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1));
        Ok(m)
    }

    fn attach(w: &Wire) -> Result<Arc<Mapping>, ShmError> {
        let gone = |why: String| ShmError::Gone {
            detail: format!(
                "segment {:016x} (fd {} of pid {}): {why}; the sender must keep a handle \
                 alive until the receiver has it",
                w.id, w.fd, w.pid
            ),
        };
        let path = format!("/proc/{}/fd/{}", w.pid, w.fd);
        // Check what the fd is before opening it: opening a FIFO or a device through /proc
        // could block or have side effects.
        let link = rustix::fs::readlink(path.as_str(), Vec::new())
            .map_err(|e| gone(format!("readlink {path}: {e}")))?;
        let expect = format!("/memfd:poolrun-{:016x}", w.id);
        if !link.to_bytes().starts_with(expect.as_bytes()) {
            return Err(gone(format!("{path} is no longer that segment")));
        }
        let fd = rustix::fs::open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| gone(format!("open {path}: {e}")))?;
        let st = rustix::fs::fstat(&fd).map_err(os("fstat"))?;
        if st.st_ino != w.ino {
            return Err(gone("inode changed".into()));
        }
        let map_len = page_round(w.len as usize)
            .and_then(|d| d.checked_add(HEADER_SIZE))
            .filter(|&l| l as u64 == st.st_size as u64)
            .ok_or_else(|| ShmError::Mismatch(format!("segment {:016x}: size mismatch", w.id)))?;
        let ptr = map(&fd, map_len)?;
        let m = Mapping {
            ptr,
            map_len,
            fd,
            ino: w.ino,
            id: w.id,
            kind: w.kind,
            data_len: w.len as usize,
        };
        let h = m.header();
        if h.magic != MAGIC || h.id != w.id || h.kind != w.kind as u32 || h.data_len != w.len {
            // `m` unmaps on drop.
            return Err(ShmError::Mismatch(format!(
                "segment {:016x}: header does not match",
                w.id
            )));
        }
        let m = Arc::new(m);
        let mut reg = lock_registry();
        // Another thread may have attached the same segment meanwhile: keep one mapping.
        if let Some(other) = reg.get(&w.id).and_then(Weak::upgrade) {
            return Ok(other);
        }
        reg.insert(w.id, Arc::downgrade(&m));
        Ok(m)
    }
}

fn map(fd: &OwnedFd, len: usize) -> Result<NonNull<u8>, ShmError> {
    // SAFETY: a fresh mapping chosen by the kernel (null hint) of a memfd whose size is
    // `len` (set by ftruncate and sealed, or checked by fstat); nothing aliases it yet.
    let p = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )
    }
    .map_err(os("mmap"))?;
    NonNull::new(p as *mut u8).ok_or_else(|| ShmError::Os {
        op: "mmap",
        source: std::io::Error::other("null mapping"),
    })
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.creator() == std::process::id() {
            // Receivers' caches let go of it now (cache rule C2).
            self.header().released.store(1, Ordering::Release);
        }
        {
            let mut reg = lock_registry();
            // Remove our entry unless it already points at a newer mapping of the same id.
            if reg.get(&self.id).is_some_and(|w| w.strong_count() == 0) {
                reg.remove(&self.id);
            }
        }
        // SAFETY: M1: `ptr`/`map_len` is our mapping; no reference into it outlives the
        // Mapping (typed handles hold the Arc for as long as they lend out slices).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr() as *mut _, self.map_len) };
        // The fd closes when `self.fd` drops; the memfd vanishes with its last fd/mapping.
    }
}

// ---- pins: keep a sent segment alive until a receiver attached -----------------------------

struct Pin {
    map: Arc<Mapping>,
    since: Instant,
    /// The process that pinned it. A forked child inherits a copy of its parent's pins;
    /// they are the parent's business (the parent's fd is the one handles name), so the
    /// child drops them at its first sweep and never waits for them.
    pid: u32,
}

fn pins() -> ForkGuard<'static, Vec<Pin>> {
    PINS.lock()
}

/// pid of the process whose sweeper thread is running (0: none).
static SWEEPER_PID: AtomicU32 = AtomicU32::new(0);

fn pin(map: Arc<Mapping>) {
    let me = std::process::id();
    pins().push(Pin {
        map,
        since: Instant::now(),
        pid: me,
    });
    // In a forked child the parent's sweeper does not exist: SWEEPER_PID names the parent.
    let cur = SWEEPER_PID.load(Ordering::Acquire);
    if cur != me
        && SWEEPER_PID
            .compare_exchange(cur, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    {
        let spawned = std::thread::Builder::new()
            .name("poolrun-shm-pins".into())
            .spawn(sweeper);
        if spawned.is_err() {
            // No thread: pins are swept by the next pin() instead.
            SWEEPER_PID.store(0, Ordering::Release);
            sweep();
        }
    }
}

/// Drop pins whose segment has been attached (pending 0) or that are older than the pin
/// timeout.
/// Returns how many remain and the age of the youngest.
fn sweep() -> (usize, Duration) {
    let now = Instant::now();
    let me = std::process::id();
    let mut dropped = Vec::new();
    let max = pin_max();
    let mut youngest = max;
    let left = {
        let mut p = pins();
        let mut i = 0;
        while i < p.len() {
            let age = now.duration_since(p[i].since);
            let done = p[i].pid != me
                || p[i].map.header().pending.load(Ordering::Acquire) == 0
                || age > max;
            if done {
                dropped.push(p.swap_remove(i));
            } else {
                youngest = youngest.min(age);
                i += 1;
            }
        }
        p.len()
    };
    // Unmap outside the pins lock.
    drop(dropped);
    (left, youngest)
}

fn sweeper() {
    let me = std::process::id();
    let mut nap = Duration::from_millis(2);
    loop {
        std::thread::sleep(nap);
        let (left, youngest) = sweep();
        // Receivers normally attach within milliseconds; a pin that is still there after
        // 200 ms is probably never coming back (a cancelled task): poll it less often.
        nap = if youngest < Duration::from_millis(200) {
            Duration::from_millis(2)
        } else {
            Duration::from_millis(50)
        };
        if left == 0 {
            SWEEPER_PID.store(0, Ordering::Release);
            // A pin may have been added between sweep() and the store: take over again.
            if pins().is_empty()
                || SWEEPER_PID
                    .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                return;
            }
        }
    }
}

/// Wait until every pin of this process is released (its handles were received) or
/// `timeout` passes. Returns true if none is left.
pub(crate) fn wait_pins_released(timeout: Duration) -> bool {
    let end = crate::Deadline::after(Some(timeout));
    loop {
        if sweep().0 == 0 {
            return true;
        }
        if end.passed() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Number of segments pinned in this process (for tests).
pub(crate) fn pinned_count() -> usize {
    pins().len()
}
