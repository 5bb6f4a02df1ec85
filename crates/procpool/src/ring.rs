//! The shared-memory fast path: a single-producer, single-consumer byte ring in a shared
//! mapping, one per direction per worker (jobs: parent → worker; results: worker → parent).
//!
//! ipc-channel stays for what a ring cannot carry — messages with memfds beside them (big
//! payloads), messages larger than a quarter of the ring — and for `Ready`/`InitFailed`; a
//! one-word *marker* record in the ring then says "the next message is on the channel", so
//! the ring alone orders everything a side sends.
//!
//! ## Layout
//! ```text
//! page 0   header: TAIL (u64, bytes published, producer-owned), HEAD (u64, bytes consumed,
//!          consumer-owned, on its own cache line), and four futex words: C_WAITING /
//!          C_SIGNAL (the consumer sleeps), P_WAITING / P_SIGNAL (the producer waits for
//!          space), CLOSED (the peer is gone: set by the exit watcher)
//! page 1…  CAP bytes of records: [len: u32][tag: u32][len bytes][pad to 8]
//! ```
//! `TAIL` and `HEAD` only grow; a position `p` lives at byte `p % CAP`. A record never
//! wraps: when it does not fit before the end, the producer first writes a `PAD` record
//! that covers the rest of the buffer.
//!
//! ## Protocol (R1–R4)
//! - **R1 (publish)**: the producer writes a record's bytes, then stores `TAIL` past it
//!   (`SeqCst`, so a release): the consumer, which loads `TAIL` (`SeqCst`, an acquire)
//!   before reading, sees only whole records. A producer that dies half-way through a record
//!   never published it: the consumer never sees a torn message.
//! - **R2 (consume)**: the consumer copies a record out, then stores `HEAD` past it; the
//!   producer loads `HEAD` before reusing bytes. Each record is consumed exactly once.
//! - **R3 (sleep and wake, no lost wake-up)**: a consumer with nothing to read spins for a
//!   while, then reads `C_SIGNAL` (s), stores `C_WAITING = 1`, re-checks `TAIL` (and
//!   `CLOSED`), and only then `futex_wait(C_SIGNAL, s)`. A producer, after publishing, loads
//!   `C_WAITING`; if set, it increments `C_SIGNAL` and wakes. All four accesses are `SeqCst`
//!   (Dekker): either the consumer's re-check sees the new `TAIL`, or the producer sees
//!   `C_WAITING` and changes `C_SIGNAL`, so the wait returns at once. A stream of messages
//!   to a consumer that is busy or spinning never enters the kernel. The producer's wait for
//!   space is the mirror image (`P_WAITING`/`P_SIGNAL`, `HEAD`).
//! - **R4 (what a crash leaves)**: published records of a dead producer are valid and are
//!   drained by the consumer (the parent delivers a dead worker's finished results, then
//!   re-queues the rest from its own records: nothing lost, nothing run twice). A consumer
//!   that dies leaves unconsumed records, which the parent re-queues by the scheduler's
//!   records. A corrupt header (a task scribbling over the mapping) fails its bounds
//!   checks and reads as a broken peer, never as an out-of-bounds access.
//!
//! `ring_model` below checks R1–R3 over every interleaving of a producer, a consumer and
//! the exit watcher (`poolrun_testkit::model`), including a producer killed mid-record.
//!
//! ## Invariant G1 (the mapping)
//! A [`Ring`] owns one `MAP_SHARED | MAP_ANONYMOUS` mapping of `PAGE + CAP` bytes for its
//! whole life (a forked worker inherits it at the same address). The header is only
//! accessed through atomics; the data area only by the producer between its load of `HEAD`
//! and its store of `TAIL` (bytes the consumer has released), and by the consumer between
//! its load of `TAIL` and its store of `HEAD` (bytes the producer has published).

#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use nix::sys::mman::munmap;

/// Bytes of records per ring (a power of two).
pub(crate) const CAP: usize = 256 * 1024;
/// The largest record a ring carries; bigger messages travel on the channel (with a
/// marker). With at most `scheduler::MAX_UNREAD` (3) unread batches plus an `Exit` per
/// worker, a jobs ring never holds more than 4 × CAP/8 bytes plus one padding record, so a
/// push to a live worker always finds room.
pub(crate) const MAX_RECORD: usize = CAP / 8;
const PAGE: usize = 4096;
const HDR: usize = 8;

/// Record tags.
pub(crate) const TAG_PAD: u32 = 0;
/// A postcard-encoded message.
pub(crate) const TAG_MSG: u32 = 1;
/// The next message is on the ipc channel.
pub(crate) const TAG_VIA_CHANNEL: u32 = 2;

/// The shared header (page 0).
#[repr(C)]
pub(crate) struct Header {
    tail: AtomicU64,
    _pad1: [u64; 7],
    head: AtomicU64,
    _pad2: [u64; 7],
    c_waiting: AtomicU32,
    c_signal: AtomicU32,
    p_waiting: AtomicU32,
    p_signal: AtomicU32,
    closed: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Header>() <= PAGE);

/// Why a pop failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PopError {
    /// Nothing published yet.
    Empty,
    /// A record header is out of bounds: the peer scribbled over the ring.
    Corrupt,
}

/// The ring's algorithm over a header and a data area (the mapping in the pool; plain
/// memory in the model check).
pub(crate) struct Core<'a> {
    h: &'a Header,
    data: NonNull<u8>,
}

impl Core<'_> {
    fn write(&self, at: u64, bytes: &[u8]) {
        let off = (at % CAP as u64) as usize;
        assert!(off + bytes.len() <= CAP, "ring write past the end");
        // SAFETY: G1: `data` is CAP bytes; the range was just checked; the producer owns
        // these bytes (released by the consumer, not yet published).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data.as_ptr().add(off), bytes.len())
        }
    }

    fn read(&self, at: u64, out: &mut [u8]) {
        let off = (at % CAP as u64) as usize;
        assert!(off + out.len() <= CAP, "ring read past the end");
        // SAFETY: G1: in bounds (checked); the consumer owns these bytes (published, not
        // yet released).
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.as_ptr().add(off), out.as_mut_ptr(), out.len())
        }
    }

    fn header_at(&self, at: u64) -> (u32, u32) {
        let mut b = [0u8; HDR];
        self.read(at, &mut b);
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let tag = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        (len, tag)
    }

    /// Producer, step 1: write a record (not yet visible); returns the new tail to publish,
    /// or `None` when it does not fit now.
    pub(crate) fn stage(&self, tag: u32, payload: &[u8]) -> Option<u64> {
        let need = record_size(payload.len())?;
        let tail = self.h.tail.load(SeqCst);
        let head = self.h.head.load(SeqCst);
        let used = tail.checked_sub(head).filter(|&u| u <= CAP as u64)?;
        let free = CAP as u64 - used;
        let off = tail % CAP as u64;
        let to_end = CAP as u64 - off;
        let mut at = tail;
        if need > to_end {
            if free < to_end + need {
                return None;
            }
            // Pad to the end of the buffer (to_end ≥ 8: records are 8-aligned).
            let len = u32::try_from(to_end - HDR as u64).ok()?;
            self.write(at, &header_bytes(len, TAG_PAD));
            at += to_end;
        } else if free < need {
            return None;
        }
        let len = u32::try_from(payload.len()).ok()?;
        self.write(at, &header_bytes(len, tag));
        self.write(at + HDR as u64, payload);
        Some(at + need)
    }

    /// Producer, step 2 (R1): make what [`stage`](Self::stage) wrote visible.
    pub(crate) fn publish(&self, tail: u64) {
        self.h.tail.store(tail, SeqCst);
    }

    /// Producer, step 3 (R3): does the consumer need a wake-up? (If so, the caller bumps the
    /// signal and wakes.)
    pub(crate) fn consumer_waiting(&self) -> bool {
        self.h.c_waiting.load(SeqCst) != 0
    }

    /// Bump the consumer's futex word (before a `futex_wake` on it).
    pub(crate) fn signal_consumer(&self) {
        self.h.c_signal.fetch_add(1, SeqCst);
    }

    /// Consumer: is a record published?
    pub(crate) fn has_data(&self) -> bool {
        self.h.tail.load(SeqCst) != self.h.head.load(SeqCst)
    }

    /// Consumer (R2): copy the next record's payload into `out`; returns its tag.
    pub(crate) fn pop(&self, out: &mut Vec<u8>) -> Result<u32, PopError> {
        let mut head = self.h.head.load(SeqCst);
        loop {
            let tail = self.h.tail.load(SeqCst);
            if tail == head {
                return Err(PopError::Empty);
            }
            let avail = tail
                .checked_sub(head)
                .filter(|&a| a <= CAP as u64)
                .ok_or(PopError::Corrupt)?;
            if avail < HDR as u64 {
                return Err(PopError::Corrupt);
            }
            let (len, tag) = self.header_at(head);
            let need = record_size(len as usize).ok_or(PopError::Corrupt)?;
            let to_end = CAP as u64 - head % CAP as u64;
            if need > avail || need > to_end {
                return Err(PopError::Corrupt);
            }
            if tag == TAG_PAD {
                head += need;
                self.h.head.store(head, SeqCst);
                continue;
            }
            out.clear();
            out.resize(len as usize, 0);
            self.read(head + HDR as u64, out);
            self.h.head.store(head + need, SeqCst);
            return Ok(tag);
        }
    }

    /// Consumer, after a pop (R3 mirror): does the producer wait for space?
    pub(crate) fn producer_waiting(&self) -> bool {
        self.h.p_waiting.load(SeqCst) != 0
    }

    /// Bump the producer's futex word (before a `futex_wake` on it).
    pub(crate) fn signal_producer(&self) {
        self.h.p_signal.fetch_add(1, SeqCst);
    }

    /// Consumer, about to sleep (R3), first step: the signal value to wait on.
    pub(crate) fn sleep_token(&self) -> u32 {
        self.h.c_signal.load(SeqCst)
    }

    /// Consumer, about to sleep (R3), second step: announce the wait (then re-check).
    pub(crate) fn announce_sleep(&self) {
        self.h.c_waiting.store(1, SeqCst);
    }

    /// Consumer: the wait is over (woken, timed out, or not needed).
    pub(crate) fn end_sleep(&self) {
        self.h.c_waiting.store(0, SeqCst);
    }

    /// The peer is gone (the exit watcher): set `CLOSED` and wake both sides.
    pub(crate) fn close(&self) {
        self.h.closed.store(1, SeqCst);
        self.h.c_signal.fetch_add(1, SeqCst);
        self.h.p_signal.fetch_add(1, SeqCst);
    }

    pub(crate) fn closed(&self) -> bool {
        self.h.closed.load(SeqCst) != 0
    }
}

fn header_bytes(len: u32, tag: u32) -> [u8; HDR] {
    let mut b = [0u8; HDR];
    b[..4].copy_from_slice(&len.to_le_bytes());
    b[4..].copy_from_slice(&tag.to_le_bytes());
    b
}

/// Bytes a record with `len` payload bytes takes (header + payload, 8-aligned); `None` when
/// it could never fit.
fn record_size(len: usize) -> Option<u64> {
    let n = len.checked_add(HDR + 7)? & !7;
    (n <= CAP).then_some(n as u64)
}

/// Send `msg` the way every side does: as one ring record when it may travel in a ring
/// (`ring_ok`: no memfd) and its encoding fits [`MAX_RECORD`], else on the channel
/// (`to_channel`) announced by a marker record. `push` puts a record in the ring (a
/// producer's `try_push` or `push_wait`); `buf` is the encoding buffer, reused. False if a
/// push or the channel send failed.
pub(crate) fn send_framed<M: serde::Serialize>(
    msg: M,
    ring_ok: bool,
    buf: &mut Vec<u8>,
    mut push: impl FnMut(u32, &[u8]) -> bool,
    to_channel: impl FnOnce(M) -> bool,
) -> bool {
    if ring_ok {
        buf.clear();
        if let Ok(b) = postcard::to_extend(&msg, std::mem::take(buf)) {
            *buf = b;
            if buf.len() <= MAX_RECORD {
                return push(TAG_MSG, buf);
            }
        }
    }
    to_channel(msg) && push(TAG_VIA_CHANNEL, &[])
}

/// A worker's two rings: jobs (parent → worker) and results (worker → parent).
#[derive(Debug, Clone)]
pub(crate) struct Rings {
    pub jobs: std::sync::Arc<Ring>,
    pub results: std::sync::Arc<Ring>,
}

impl Rings {
    pub(crate) fn new() -> nix::Result<Rings> {
        Ok(Rings {
            jobs: std::sync::Arc::new(Ring::new()?),
            results: std::sync::Arc::new(Ring::new()?),
        })
    }
}

/// One ring in a shared mapping (see the module docs).
pub(crate) struct Ring {
    /// Invariant G1: a live shared mapping of `PAGE + CAP` bytes owned by `self`.
    ptr: NonNull<u8>,
}

// SAFETY: the header is only accessed through atomics and the data area under the R1/R2
// ownership rules (G1); the caller serialises producers (one producer, one consumer).
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Map a fresh, zeroed ring.
    pub(crate) fn new() -> nix::Result<Ring> {
        // We own the mapping until `Drop` unmaps it (G1).
        let p = crate::sys::map_shared(PAGE + CAP)?;
        Ok(Ring { ptr: p.cast() })
    }

    pub(crate) fn core(&self) -> Core<'_> {
        // SAFETY: G1: the mapping is live for `&self`, page aligned, zero-initialised (a
        // valid Header: all atomics), and only accessed atomically; the data area starts one
        // page in and is CAP bytes long.
        unsafe {
            Core {
                h: &*(self.ptr.as_ptr() as *const Header),
                data: NonNull::new_unchecked(self.ptr.as_ptr().add(PAGE)),
            }
        }
    }

    /// Producer: push one record, waking the consumer if it sleeps. False if it does not fit
    /// now (or ever: see [`MAX_RECORD`]).
    pub(crate) fn try_push(&self, tag: u32, payload: &[u8]) -> bool {
        let c = self.core();
        let Some(tail) = c.stage(tag, payload) else {
            return false;
        };
        c.publish(tail);
        if c.consumer_waiting() {
            c.signal_consumer();
            futex_wake(&c.h.c_signal);
        }
        true
    }

    /// Producer: push, waiting for space as long as it takes (the results ring: the worker
    /// waits for its parent). False only if the record can never fit or the ring closed.
    pub(crate) fn push_wait(&self, tag: u32, payload: &[u8]) -> bool {
        if record_size(payload.len()).is_none() {
            return false;
        }
        loop {
            if self.try_push(tag, payload) {
                return true;
            }
            let c = self.core();
            if c.closed() {
                return false;
            }
            let s = c.h.p_signal.load(SeqCst);
            c.h.p_waiting.store(1, SeqCst);
            if c.stage(tag, payload).is_none() && !c.closed() {
                futex_wait(&c.h.p_signal, s, Some(Duration::from_millis(100)));
            }
            c.h.p_waiting.store(0, SeqCst);
        }
    }

    /// Consumer: pop one record into `out` (waking a producer that waits for space).
    pub(crate) fn pop(&self, out: &mut Vec<u8>) -> Result<u32, PopError> {
        let c = self.core();
        let r = c.pop(out);
        if r.is_ok() && c.producer_waiting() {
            c.signal_producer();
            futex_wake(&c.h.p_signal);
        }
        r
    }

    /// Consumer: wait until a record is published, the ring is closed, or `timeout`
    /// passes: spin for `spin` first (R3), then sleep.
    pub(crate) fn wait(&self, spin: Duration, timeout: Option<Duration>) {
        let c = self.core();
        let start = Instant::now();
        let mut n = 0u32;
        while !c.has_data() && !c.closed() {
            if start.elapsed() >= spin {
                let s = c.sleep_token();
                c.announce_sleep();
                if !c.has_data() && !c.closed() {
                    let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
                    if left != Some(Duration::ZERO) {
                        futex_wait(&c.h.c_signal, s, left);
                    }
                }
                c.end_sleep();
                return;
            }
            n = n.wrapping_add(1);
            if n % 64 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// The peer is gone: wake both sides for good.
    pub(crate) fn close(&self) {
        let c = self.core();
        c.close();
        futex_wake(&c.h.c_signal);
        futex_wake(&c.h.p_signal);
    }

    pub(crate) fn closed(&self) -> bool {
        self.core().closed()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: G1: our mapping of PAGE + CAP bytes; no reference into it outlives `self`.
        let _ = unsafe { munmap(self.ptr.cast(), PAGE + CAP) };
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.core();
        f.debug_struct("Ring")
            .field("tail", &c.h.tail.load(SeqCst))
            .field("head", &c.h.head.load(SeqCst))
            .finish()
    }
}

fn futex_wait(word: &AtomicU32, val: u32, d: Option<Duration>) {
    let ts = d.map(|d| rustix::thread::futex::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: d.subsec_nanos().into(),
    });
    let _ = rustix::thread::futex::wait(
        word,
        rustix::thread::futex::Flags::empty(),
        val,
        ts.as_ref(),
    );
}

fn futex_wake(word: &AtomicU32) {
    let _ = rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_across_the_wrap() {
        let r = Ring::new().unwrap();
        let mut out = Vec::new();
        assert_eq!(r.pop(&mut out), Err(PopError::Empty));
        // Records of odd sizes, many times around the buffer.
        let mut sent = 0u64;
        let mut got = 0u64;
        for round in 0..2000u64 {
            let len = (round * 7919 % 5000) as usize;
            let msg: Vec<u8> = (0..len).map(|i| (i as u64 + round) as u8).collect();
            while !r.try_push(TAG_MSG, &msg) {
                assert_eq!(r.pop(&mut out), Ok(TAG_MSG));
                got += 1;
            }
            sent += 1;
            if round % 3 == 0 {
                assert_eq!(r.pop(&mut out), Ok(TAG_MSG));
                got += 1;
            }
        }
        while r.pop(&mut out).is_ok() {
            got += 1;
        }
        assert_eq!(sent, got);
        assert!(
            !r.try_push(TAG_MSG, &vec![0u8; CAP]),
            "larger than the ring"
        );
    }

    #[test]
    fn a_full_ring_refuses_and_a_corrupt_header_is_detected() {
        let r = Ring::new().unwrap();
        let chunk = vec![1u8; MAX_RECORD - HDR];
        let mut n = 0;
        while r.try_push(TAG_MSG, &chunk) {
            n += 1;
        }
        assert_eq!(n, CAP / MAX_RECORD);
        let c = r.core();
        // A producer that scribbles a huge length into the next record's header.
        let mut out = Vec::new();
        assert_eq!(r.pop(&mut out), Ok(TAG_MSG));
        c.write(c.h.head.load(SeqCst), &header_bytes(u32::MAX, TAG_MSG));
        assert_eq!(r.pop(&mut out), Err(PopError::Corrupt));
    }

    #[test]
    fn a_sleeping_consumer_is_woken_across_threads() {
        let r = std::sync::Arc::new(Ring::new().unwrap());
        let n = 20_000u32;
        let rc = r.clone();
        let consumer = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut next = 0u32;
            while next < n {
                match rc.pop(&mut out) {
                    Ok(TAG_MSG) => {
                        assert_eq!(out, next.to_le_bytes());
                        next += 1;
                    }
                    Ok(t) => panic!("tag {t}"),
                    Err(PopError::Empty) => rc.wait(Duration::from_micros(5), None),
                    Err(PopError::Corrupt) => panic!("corrupt"),
                }
            }
        });
        for i in 0..n {
            assert!(r.push_wait(TAG_MSG, &i.to_le_bytes()));
            if i % 1000 == 0 {
                std::thread::sleep(Duration::from_millis(1)); // let the consumer sleep
            }
        }
        consumer.join().unwrap();
    }

    /// A producer killed half-way through a record (bytes written, `TAIL` not moved): the
    /// consumer sees the records before it and never the torn one (R1, R4).
    #[test]
    fn a_half_written_record_is_never_seen() {
        let r = Ring::new().unwrap();
        assert!(r.try_push(TAG_MSG, b"whole"));
        let c = r.core();
        let _torn = c.stage(TAG_MSG, b"torn record").expect("room");
        // (the producer dies here: no publish)
        let mut out = Vec::new();
        assert_eq!(r.pop(&mut out), Ok(TAG_MSG));
        assert_eq!(out, b"whole");
        assert_eq!(r.pop(&mut out), Err(PopError::Empty));
        r.close();
        r.wait(Duration::ZERO, Some(Duration::from_secs(5)));
        assert_eq!(r.pop(&mut out), Err(PopError::Empty));
    }

    #[test]
    fn close_wakes_a_waiting_consumer() {
        let r = std::sync::Arc::new(Ring::new().unwrap());
        let rc = r.clone();
        let t = std::thread::spawn(move || {
            rc.wait(Duration::ZERO, None);
            rc.closed()
        });
        std::thread::sleep(Duration::from_millis(20));
        r.close();
        assert!(t.join().unwrap());
    }

    /// R1–R3 over every interleaving: a producer publishing two records (one step per
    /// atomic action of `try_push`), and a consumer that pops, or announces its sleep,
    /// re-checks and "waits" (blocked while its futex word is unchanged). Checked: the
    /// consumer never sleeps through a published record (that would be a deadlock: every
    /// actor blocked) and receives each record exactly once and in order. Then with the
    /// producer killed after staging its second record, and the exit watcher closing the
    /// ring: the consumer gets the first record only, never a torn one, and its wait ends.
    #[test]
    fn ring_model() {
        use poolrun_testkit::model::{explore, Actor, Step};
        use std::cell::RefCell;

        struct S {
            ring: Box<Header>,
            buf: RefCell<Vec<u8>>,
            got: RefCell<Vec<u8>>,
            producer_done: std::cell::Cell<bool>,
        }
        impl S {
            fn core(&self) -> Core<'_> {
                let mut b = self.buf.borrow_mut();
                Core {
                    h: &self.ring,
                    data: NonNull::new(b.as_mut_ptr()).unwrap(),
                }
            }
        }
        struct Producer {
            pc: usize,
            staged: u64,
            crash_before_second: bool,
        }
        impl Actor<S> for Producer {
            fn step(&mut self, s: &S) -> Step {
                let c = s.core();
                let k = self.pc / 3; // record 0 or 1
                if k == 1 && self.crash_before_second && self.pc % 3 == 1 {
                    s.producer_done.set(true); // killed after staging, before publishing
                    return Step::Finished;
                }
                match self.pc % 3 {
                    0 => self.staged = c.stage(TAG_MSG, &[k as u8 + 1]).expect("fits"),
                    1 => c.publish(self.staged),
                    _ => {
                        if c.consumer_waiting() {
                            c.signal_consumer();
                        }
                    }
                }
                self.pc += 1;
                if self.pc == 6 {
                    s.producer_done.set(true);
                    Step::Finished
                } else {
                    Step::Ran
                }
            }
        }
        /// Consumer states: 0 try pop; 3 take the sleep token; 4 announce; 1 re-check;
        /// 2 sleeping on `s`.
        struct Consumer {
            state: u8,
            s: u32,
            /// Records to receive before it stops (0: until the ring is closed).
            want: usize,
        }
        impl Actor<S> for Consumer {
            fn step(&mut self, s: &S) -> Step {
                let c = s.core();
                match self.state {
                    0 => {
                        let mut out = Vec::new();
                        match c.pop(&mut out) {
                            Ok(_) => {
                                s.got.borrow_mut().extend(out);
                                if s.got.borrow().len() == self.want {
                                    return Step::Finished;
                                }
                            }
                            Err(PopError::Empty) if c.closed() => return Step::Finished,
                            Err(PopError::Empty) => self.state = 3,
                            Err(PopError::Corrupt) => panic!("corrupt"),
                        }
                        Step::Ran
                    }
                    1 => {
                        if c.has_data() || c.closed() {
                            c.end_sleep();
                            self.state = 0;
                        } else {
                            self.state = 2;
                        }
                        Step::Ran
                    }
                    3 => {
                        self.s = c.sleep_token();
                        self.state = 4;
                        Step::Ran
                    }
                    4 => {
                        c.announce_sleep();
                        self.state = 1;
                        Step::Ran
                    }
                    _ => {
                        // futex_wait(C_SIGNAL, s): returns once the word changed.
                        if s.ring.c_signal.load(SeqCst) == self.s {
                            return Step::Blocked;
                        }
                        c.end_sleep();
                        self.state = 0;
                        Step::Ran
                    }
                }
            }
        }
        struct Watcher;
        impl Actor<S> for Watcher {
            fn step(&mut self, s: &S) -> Step {
                if !s.producer_done.get() {
                    return Step::Blocked;
                }
                s.core().close();
                Step::Finished
            }
        }
        for crash in [false, true] {
            let stats = explore(
                || {
                    let s = S {
                        ring: Box::new(zeroed_header()),
                        buf: RefCell::new(vec![0u8; CAP]),
                        got: RefCell::new(Vec::new()),
                        producer_done: std::cell::Cell::new(false),
                    };
                    // Without a crash the consumer stops after both records, and nobody
                    // closes the ring: a lost wake-up is a deadlock. With one, only the
                    // exit watcher's close can end its wait.
                    let mut actors: Vec<Box<dyn Actor<S>>> = vec![
                        Box::new(Producer {
                            pc: 0,
                            staged: 0,
                            crash_before_second: crash,
                        }),
                        Box::new(Consumer {
                            state: 0,
                            s: 0,
                            want: if crash { 0 } else { 2 },
                        }),
                    ];
                    if crash {
                        actors.push(Box::new(Watcher));
                    }
                    (s, actors)
                },
                |s, sched| {
                    let want: &[u8] = if crash { &[1] } else { &[1, 2] };
                    assert_eq!(&s.got.borrow()[..], want, "schedule {sched:?}");
                },
                2_000_000,
            );
            assert!(stats.schedules > 100, "{stats:?}");
        }
    }

    fn zeroed_header() -> Header {
        Header {
            tail: AtomicU64::new(0),
            _pad1: [0; 7],
            head: AtomicU64::new(0),
            _pad2: [0; 7],
            c_waiting: AtomicU32::new(0),
            c_signal: AtomicU32::new(0),
            p_waiting: AtomicU32::new(0),
            p_signal: AtomicU32::new(0),
            closed: AtomicU32::new(0),
        }
    }
}
