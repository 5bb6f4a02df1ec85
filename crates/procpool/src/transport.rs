//! What travels between the parent and a worker, and the fn-pointer transport.
//!
//! Both directions are typed `ipc-channel` channels ([`ToWorker`], [`FromWorker`]).
//!
//! ## No message ever blocks its sender on a dead peer (invariant T2)
//! ipc-channel sends a message larger than its socket buffer in fragments over a dedicated
//! socket whose receiving end the sender holds until the send completes. A worker forked
//! meanwhile inherits that end; if the intended receiver then dies, the socket stays open
//! and the sender blocks forever (a real hang: a `map` of 4 MiB arguments to a crashing
//! task). So no message here carries more than [`INLINE_MAX`] bytes inline: a payload over
//! [`LARGE`] bytes travels in its own memfd ([`IpcSharedMemory`], passed as an fd beside
//! the message), and a batch whose small payloads add up to more than `INLINE_MAX` packs
//! them into one. With at most a few unread messages per worker (the scheduler's bound),
//! every send fits the socket buffer: a send never waits for the receiver.
//!
//! ## The fn-pointer transport (invariant T1)
//! A batch names its task by two addresses: `func`, the task's `fn(A) -> R`, and
//! `trampoline`, the monomorphized [`call::<A, R>`]. Every worker is a `fork()` of the
//! process that produced them, made by this crate (never exec'd), so it maps the same image
//! at the same addresses. The parent only sends, over a private socketpair no other process
//! can write to, addresses it took from real `fn` items with exactly the types `call::<A, R>`
//! transmutes them back to. (A function from a library `dlopen`ed after a worker was forked
//! is not mapped in that worker; the worker then crashes and the task fails `WorkerDied`.)

#![allow(unsafe_code)]

use std::sync::Arc;

use ipc_channel::ipc::IpcSharedMemory;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use poolrun_core::backend::WorkerRuntime;
use poolrun_core::{codec, TaskError};

/// The most bytes a message carries inline (T2).
pub(crate) const INLINE_MAX: usize = 16 * 1024;
/// A payload larger than this travels in its own memfd (T2).
pub(crate) const LARGE: usize = 8 * 1024;
/// The most memfds one message carries (ipc-channel passes at most 64 fds per message).
pub(crate) const MAX_LARGE_PER_MESSAGE: usize = 32;

/// An encoded task argument, as it is kept until its task is done (it may be sent again
/// after a worker died) and sent. Cloning it is a reference-count increment.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// Up to [`LARGE`] bytes: `buf[start..start + len]` (the arguments of one batch share
    /// one buffer: one allocation per batch, not per item).
    Small {
        buf: Arc<[u8]>,
        start: u32,
        len: u32,
    },
    /// More: already in its own memfd (made by the submitting thread, outside every lock).
    Large(Arc<IpcSharedMemory>),
}

impl Arg {
    pub(crate) fn new(bytes: &[u8]) -> Arg {
        if bytes.len() > LARGE {
            Arg::Large(Arc::new(IpcSharedMemory::from_bytes(bytes)))
        } else {
            Arg::Small {
                len: bytes.len() as u32, // ≤ LARGE
                buf: Arc::from(bytes),
                start: 0,
            }
        }
    }

    /// Encode a batch's arguments: the small ones into one shared buffer, a large one into
    /// its own memfd; one result per value, in order.
    pub(crate) fn encode_all<T: Serialize>(values: &[T]) -> Vec<Result<Arg, TaskError>> {
        enum Spot {
            Small(u32, u32),
            Large(Arg),
            Failed(TaskError),
        }
        let mut buf = Vec::new();
        let mut one = Vec::new();
        let spots: Vec<Spot> = values
            .iter()
            .map(|v| {
                one.clear();
                match codec::encode_into(v, std::mem::take(&mut one)) {
                    Ok(b) => {
                        one = b;
                        if one.len() > LARGE {
                            Spot::Large(Arg::new(&one))
                        } else {
                            let start = buf.len() as u32; // batches are far below 4 GiB
                            buf.extend_from_slice(&one);
                            Spot::Small(start, one.len() as u32)
                        }
                    }
                    Err(e) => Spot::Failed(e),
                }
            })
            .collect();
        let shared: Arc<[u8]> = Arc::from(buf);
        spots
            .into_iter()
            .map(|s| match s {
                Spot::Small(start, len) => Ok(Arg::Small {
                    buf: shared.clone(),
                    start,
                    len,
                }),
                Spot::Large(a) => Ok(a),
                Spot::Failed(e) => Err(e),
            })
            .collect()
    }

    /// The encoded bytes of a small argument (`None` for a large one).
    pub(crate) fn small_bytes(&self) -> Option<&[u8]> {
        match self {
            Arg::Small { buf, start, len } => {
                buf.get(*start as usize..(*start as usize).checked_add(*len as usize)?)
            }
            Arg::Large(_) => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Arg::Small { len, .. } => *len as usize,
            Arg::Large(m) => m.len(),
        }
    }
}

/// Where one payload of a message is: the next `len` bytes of the message's [`Body`]
/// (payloads are back to back, in the order of the entries that name them), or one of its
/// memfds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) enum Data {
    /// The next `len` bytes of the body.
    Inline(u32),
    /// The whole of `large[i]`.
    Large(u32),
}

/// A message's small payloads, back to back: inline, or packed into one memfd.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Body {
    Inline(ByteBuf),
    Shared(IpcSharedMemory),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Inline(b) => b,
            Body::Shared(m) => m,
        }
    }
}

/// The payloads of one message being built (see T2).
#[derive(Default)]
pub(crate) struct Payloads {
    inline: Vec<u8>,
    large: Vec<IpcSharedMemory>,
}

impl Payloads {
    /// Add bytes; a payload over [`LARGE`] gets its own memfd.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Data {
        if bytes.len() > LARGE {
            self.push_large(IpcSharedMemory::from_bytes(bytes))
        } else {
            self.inline.extend_from_slice(bytes);
            Data::Inline(u32::try_from(bytes.len()).unwrap_or(u32::MAX))
        }
    }

    /// Add a payload that is already in a memfd.
    pub(crate) fn push_large(&mut self, m: IpcSharedMemory) -> Data {
        self.large.push(m);
        Data::Large(u32::try_from(self.large.len() - 1).unwrap_or(u32::MAX))
    }

    /// Inline bytes so far.
    pub(crate) fn inline_len(&self) -> usize {
        self.inline.len()
    }

    /// Memfds so far.
    pub(crate) fn large_count(&self) -> usize {
        self.large.len()
    }

    /// The body (packed into a memfd if the inline part is too big) and the memfds.
    pub(crate) fn finish(self) -> (Body, Vec<IpcSharedMemory>) {
        let body = if self.inline.len() > INLINE_MAX {
            Body::Shared(IpcSharedMemory::from_bytes(&self.inline))
        } else {
            Body::Inline(ByteBuf::from(self.inline))
        };
        (body, self.large)
    }
}

/// Reads a received message's payloads, in the order its entries name them.
pub(crate) struct PayloadReader<'a> {
    body: &'a [u8],
    at: usize,
    large: &'a [IpcSharedMemory],
}

impl<'a> PayloadReader<'a> {
    pub(crate) fn new(body: &'a Body, large: &'a [IpcSharedMemory]) -> Self {
        PayloadReader {
            body: body.bytes(),
            at: 0,
            large,
        }
    }

    /// The payload `d` names (the next one); `None` if it points outside the message.
    pub(crate) fn next(&mut self, d: Data) -> Option<&'a [u8]> {
        match d {
            Data::Inline(len) => {
                let end = self.at.checked_add(usize::try_from(len).ok()?)?;
                let bytes = self.body.get(self.at..end)?;
                self.at = end;
                Some(bytes)
            }
            Data::Large(i) => self.large.get(usize::try_from(i).ok()?).map(|m| &m[..]),
        }
    }
}

/// A message to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// Run this batch (if the parent has not withdrawn it: see `status.rs`).
    Run(RunBatch),
    /// Exit cleanly (shutdown).
    Exit,
}

impl ToWorker {
    /// True when the message carries no memfd, so it can travel through a ring.
    pub(crate) fn ring_ok(&self) -> bool {
        match self {
            ToWorker::Run(b) => b.ring_ok(),
            ToWorker::Exit => true,
        }
    }
}

/// One batch of items that run one function, in order.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RunBatch {
    /// The batch's sequence number on this worker (1, 2, 3… in sending order).
    pub seq: u64,
    /// Address of `call::<A, R>` (invariant T1).
    pub trampoline: usize,
    /// Address of the task's `fn(A) -> R` (invariant T1).
    pub func: usize,
    /// Task id and argument of each item.
    pub items: Vec<(u64, Data)>,
    pub body: Body,
    pub large: Vec<IpcSharedMemory>,
}

impl RunBatch {
    /// True when the message carries no memfd, so it can travel through a ring.
    pub(crate) fn ring_ok(&self) -> bool {
        matches!(self.body, Body::Inline(_)) && self.large.is_empty()
    }

    /// Build the message for items `(id, argument)`.
    pub(crate) fn new(seq: u64, trampoline: usize, func: usize, args: &[(u64, Arg)]) -> Self {
        let mut p = Payloads::default();
        let items = args
            .iter()
            .map(|(id, a)| {
                let d = match a {
                    Arg::Small { .. } => p.push(a.small_bytes().unwrap_or(&[])),
                    Arg::Large(m) => p.push_large(IpcSharedMemory::clone(m)),
                };
                (*id, d)
            })
            .collect();
        let (body, large) = p.finish();
        RunBatch {
            seq,
            trampoline,
            func,
            items,
            body,
            large,
        }
    }
}

/// A message from a worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// The initializer (if any) succeeded; the worker takes tasks.
    Ready,
    /// The initializer failed with this message; the worker exits.
    InitFailed(String),
    /// Outcomes of finished items, in the order they ran.
    Results(Results),
}

impl FromWorker {
    /// True when the message carries no memfd, so it can travel through a ring.
    pub(crate) fn ring_ok(&self) -> bool {
        match self {
            FromWorker::Results(r) => matches!(r.body, Body::Inline(_)) && r.large.is_empty(),
            FromWorker::Ready | FromWorker::InitFailed(_) => true,
        }
    }
}

/// Finished items, with their payloads.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Results {
    pub entries: Vec<ResultEntry>,
    pub body: Body,
    pub large: Vec<IpcSharedMemory>,
}

/// One finished item.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct ResultEntry {
    /// The item's task id.
    pub id: u64,
    pub outcome: Outcome,
    pub data: Data,
}

/// What an item's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The encoded result.
    Ok,
    /// An encoded [`TaskError`] (a panic, a codec failure).
    Err,
    /// Not run: the item was killed (`TaskFuture::kill`) before the worker began it.
    Skipped,
}

impl Outcome {
    /// The task's outcome from its payload: `Ok(encoded value)` or the error.
    pub(crate) fn resolve(self, bytes: &[u8]) -> Result<&[u8], TaskError> {
        match self {
            Outcome::Ok => Ok(bytes),
            Outcome::Err => Err(codec::decode::<TaskError>(bytes).unwrap_or_else(|e| {
                TaskError::Codec(format!("an error from the worker did not decode: {e}"))
            })),
            Outcome::Skipped => Err(TaskError::Cancelled),
        }
    }
}

/// Every trampoline's signature: run the task at `func` on the encoded argument, leaving its
/// encoded result (or encoded error) in `out` (cleared first).
pub(crate) type Trampoline = fn(&WorkerRuntime, usize, &[u8], &mut Vec<u8>) -> Outcome;

/// Decode `A`, run the task at `func` through the worker runtime, encode `R` into `out`.
fn call<A: DeserializeOwned, R: Serialize>(
    rt: &WorkerRuntime,
    func: usize,
    arg: &[u8],
    out: &mut Vec<u8>,
) -> Outcome {
    out.clear();
    let a: A = match codec::decode(arg) {
        Ok(a) => a,
        Err(e) => return failed(out, e),
    };
    // SAFETY: invariant T1: `func` was made by `task_addrs::<A, R>` from an `fn(A) -> R` of this
    // very executable image, which the forked worker maps at the same address; this is the
    // matching monomorphization of `call`, so the types agree.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    match rt.run_caught(move || f(a)) {
        // `encode_into` appends to (and reuses the capacity of) the buffer it is given.
        Ok(r) => match codec::encode_into(&r, std::mem::take(out)) {
            Ok(b) => {
                *out = b;
                Outcome::Ok
            }
            Err(e) => failed(out, e),
        },
        Err(Err(init)) => failed(out, TaskError::Initializer(init)),
        Err(Ok(caught)) => failed(out, caught.into_task_error(TaskError::Shutdown)),
    }
}

fn failed(out: &mut Vec<u8>, e: TaskError) -> Outcome {
    out.clear();
    if let Ok(b) = codec::encode(&e) {
        *out = b;
    }
    Outcome::Err
}

/// The `(trampoline, func)` addresses that send `f` to a worker (invariant T1).
pub(crate) fn task_addrs<A: DeserializeOwned, R: Serialize>(f: fn(A) -> R) -> (usize, usize) {
    let t: Trampoline = call::<A, R>;
    (t as usize, f as usize)
}

/// Worker: turn a received trampoline address back into a function.
///
/// # Safety
/// `addr` must come from [`task_addrs`] in the process this worker was forked from
/// (invariant T1).
pub(crate) unsafe fn trampoline_at(addr: usize) -> Trampoline {
    // SAFETY: the caller guarantees invariant T1: `addr` is the address of a `Trampoline` in
    // this same image.
    unsafe { std::mem::transmute::<usize, Trampoline>(addr) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn double(x: u32) -> u32 {
        x * 2
    }
    fn boom(_: u32) -> u32 {
        panic!("boom")
    }

    #[test]
    fn trampoline_round_trip_in_process() {
        let rt = WorkerRuntime::start(None, Arc::new(AtomicBool::new(false)), None);
        let mut out = Vec::new();
        let (t, f) = task_addrs(double);
        // SAFETY: `t` comes from `task_addrs` in this process (invariant T1).
        let t = unsafe { trampoline_at(t) };
        let arg = codec::encode(&21u32).unwrap();
        assert_eq!(t(&rt, f, &arg, &mut out), Outcome::Ok);
        assert_eq!(codec::decode::<u32>(&out).unwrap(), 42);
        assert_eq!(t(&rt, f, &[0xff, 0xff, 0xff], &mut out), Outcome::Err);
        assert!(matches!(
            Outcome::Err.resolve(&out),
            Err(TaskError::Codec(m)) if m.contains("u32")
        ));
        let (t, f) = task_addrs(boom);
        // SAFETY: as above.
        let t = unsafe { trampoline_at(t) };
        assert_eq!(t(&rt, f, &arg, &mut out), Outcome::Err);
        assert_eq!(
            Outcome::Err.resolve(&out),
            Err(TaskError::Panicked {
                message: "boom".into()
            })
        );
    }

    #[test]
    fn big_payloads_leave_the_message() {
        let big = vec![7u8; LARGE + 1];
        let small = vec![1u8; 100];
        let args = vec![(1, Arg::new(&small)), (2, Arg::new(&big))];
        let m = RunBatch::new(1, 0, 0, &args);
        assert!(matches!(m.body, Body::Inline(ref b) if b.len() == 100));
        assert_eq!(m.large.len(), 1);
        let mut r = PayloadReader::new(&m.body, &m.large);
        assert_eq!(r.next(m.items[0].1), Some(&small[..]));
        assert_eq!(r.next(m.items[1].1), Some(&big[..]));
        // Many small payloads are packed into one memfd.
        let many: Vec<_> = (0..40u64)
            .map(|i| (i, Arg::new(&[i as u8; 1000])))
            .collect();
        let m = RunBatch::new(2, 0, 0, &many);
        assert!(matches!(m.body, Body::Shared(_)));
        let mut r = PayloadReader::new(&m.body, &m.large);
        let last = m.items.iter().map(|&(_, d)| r.next(d)).last().flatten();
        assert_eq!(last, Some(&[39u8; 1000][..]));
    }
}
