//! What travels between the parent and a worker, and the fn-pointer transport.
//!
//! Parent → worker, on an `ipc-channel` *bytes* channel: one [`ToWorker`] per message,
//! encoded with poolrun's `codec` (postcard) and decoded in the worker **borrowing** the
//! argument bytes from the received buffer (no copy). Worker → parent, on a typed
//! `ipc-channel` channel: [`FromWorker`].
//!
//! ## The fn-pointer transport invariant (T1)
//!
//! A task is sent as two addresses: `func`, the task's `fn(A) -> R`, and `trampoline`, the
//! address of the monomorphized [`call::<A, R>`]. Every worker is a `fork()` of the process
//! that produced those addresses, made by this crate (never exec'd), so it maps the same
//! executable image at the same addresses: an address taken in the parent names the same
//! function in the worker. The parent only ever sends, over a private socketpair that no other
//! process can write to, addresses it obtained from real `fn` items with exactly the types
//! `call::<A, R>` transmutes them back to. (A function in a library `dlopen`ed *after* a worker
//! was forked would not be mapped in that worker; the worker then crashes and the task fails
//! with `WorkerDied` — documented in README.md.)

#![allow(unsafe_code)]

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use poolrun_core::{codec, panic_message, TaskError};

/// A message to a worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToWorker<'a> {
    /// Run these items, in order, with one function.
    Job {
        /// Address of `call::<A, R>` (invariant T1).
        trampoline: usize,
        /// Address of the task's `fn(A) -> R` (invariant T1).
        func: usize,
        /// The items: task id and encoded argument.
        #[serde(borrow)]
        items: Vec<WireItem<'a>>,
    },
    /// Exit cleanly (shutdown).
    Exit,
}

/// One task of a job.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireItem<'a> {
    /// The pool's id for the task (never 0).
    pub id: u64,
    /// The postcard-encoded argument.
    #[serde(borrow, with = "serde_bytes")]
    pub arg: &'a [u8],
}

/// A message from a worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromWorker {
    /// The initializer (if any) succeeded; the worker takes tasks.
    Ready,
    /// The initializer failed with this message; the worker exits.
    InitFailed(String),
    /// Outcomes of finished items, in the order they ran. Their bytes are concatenated in
    /// `data` (one buffer per message, not one per item); entry `i` owns the next `len`
    /// bytes.
    Results {
        /// One per finished item.
        entries: Vec<ResultEntry>,
        /// The encoded results / error messages, back to back.
        data: ByteBuf,
    },
}

/// One finished item in a [`FromWorker::Results`] message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct ResultEntry {
    /// The item's task id.
    pub id: u64,
    /// What its bytes are.
    pub outcome: Outcome,
    /// How many bytes of `data` are its.
    pub len: usize,
}

/// What an item's bytes in a result message are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// The encoded result.
    Ok,
    /// The task panicked; the bytes are the message (UTF-8).
    Panicked,
    /// The argument did not decode or the result did not encode; the bytes are the message.
    Codec,
    /// Not run: the item was killed (`TaskFuture::kill`) before the worker began it.
    Skipped,
}

impl Outcome {
    /// The task's outcome from its bytes: `Ok(encoded value)` or the error.
    pub(crate) fn resolve(self, bytes: &[u8]) -> Result<&[u8], TaskError> {
        let text = || String::from_utf8_lossy(bytes).into_owned();
        match self {
            Outcome::Ok => Ok(bytes),
            Outcome::Panicked => Err(TaskError::Panicked { message: text() }),
            Outcome::Codec => Err(TaskError::Codec(text())),
            Outcome::Skipped => Err(TaskError::Cancelled),
        }
    }
}

/// The signature every trampoline has: run the task at `func` on the encoded argument,
/// leaving its encoded result (or error message) in `out` (cleared first).
pub(crate) type Trampoline = fn(usize, &[u8], &mut Vec<u8>) -> Outcome;

/// Decode `A`, run the task at `func`, encode `R` into `out`; a panic becomes `Panicked`.
fn call<A: DeserializeOwned, R: Serialize>(func: usize, arg: &[u8], out: &mut Vec<u8>) -> Outcome {
    out.clear();
    let a: A = match codec::decode(arg) {
        Ok(a) => a,
        Err(e) => {
            out.extend_from_slice(codec_message(e).as_bytes());
            return Outcome::Codec;
        }
    };
    // SAFETY: invariant T1: `func` was made by `task_addrs::<A, R>` from an `fn(A) -> R` of this
    // very executable image, which the forked worker maps at the same address; this is the
    // matching monomorphization of `call`, so the types agree.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(a))) {
        // `encode_into` appends to (and reuses the capacity of) the buffer it is given.
        Ok(r) => match codec::encode_into(&r, std::mem::take(out)) {
            Ok(b) => {
                *out = b;
                Outcome::Ok
            }
            Err(e) => {
                out.extend_from_slice(codec_message(e).as_bytes());
                Outcome::Codec
            }
        },
        Err(p) => {
            out.extend_from_slice(panic_message(&*p).as_bytes());
            Outcome::Panicked
        }
    }
}

fn codec_message(e: TaskError) -> String {
    match e {
        TaskError::Codec(m) => m,
        other => other.to_string(),
    }
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

    fn double(x: u32) -> u32 {
        x * 2
    }
    fn boom(_: u32) -> u32 {
        panic!("boom")
    }

    #[test]
    fn trampoline_round_trip_in_process() {
        let mut out = Vec::new();
        let (t, f) = task_addrs(double);
        // SAFETY: `t` comes from `task_addrs` in this process (invariant T1).
        let t = unsafe { trampoline_at(t) };
        let arg = codec::encode(&21u32).unwrap();
        assert_eq!(t(f, &arg, &mut out), Outcome::Ok);
        assert_eq!(codec::decode::<u32>(&out).unwrap(), 42);
        assert_eq!(t(f, &[0xff, 0xff, 0xff], &mut out), Outcome::Codec);
        assert!(Outcome::Codec.resolve(&out).is_err());
        let (t, f) = task_addrs(boom);
        // SAFETY: as above.
        let t = unsafe { trampoline_at(t) };
        assert_eq!(t(f, &arg, &mut out), Outcome::Panicked);
        match Outcome::Panicked.resolve(&out) {
            Err(TaskError::Panicked { message }) => assert!(message.contains("boom")),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn job_message_borrows_args() {
        let arg = vec![7u8; 100];
        let msg = ToWorker::Job {
            trampoline: 1,
            func: 2,
            items: vec![WireItem { id: 5, arg: &arg }],
        };
        let bytes = codec::encode(&msg).unwrap();
        let back: ToWorker<'_> = postcard::from_bytes(&bytes).unwrap();
        match back {
            ToWorker::Job { items, .. } => {
                assert_eq!(items[0].id, 5);
                assert_eq!(items[0].arg, &arg[..]);
            }
            ToWorker::Exit => panic!("wrong variant"),
        }
    }
}
