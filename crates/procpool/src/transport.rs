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
    /// Outcomes of finished items, in the order they ran.
    Results(Vec<(u64, WireOutcome)>),
}

/// One task's outcome as it crosses the process boundary.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireOutcome {
    /// The encoded result.
    Ok(ByteBuf),
    /// The task panicked.
    Panicked(String),
    /// The argument did not decode or the result did not encode.
    Codec(String),
}

impl WireOutcome {
    /// The error a failed outcome stands for.
    pub(crate) fn into_error(self) -> Result<ByteBuf, TaskError> {
        match self {
            WireOutcome::Ok(b) => Ok(b),
            WireOutcome::Panicked(message) => Err(TaskError::Panicked { message }),
            WireOutcome::Codec(m) => Err(TaskError::Codec(m)),
        }
    }
}

/// The signature every trampoline has.
pub(crate) type Trampoline = fn(usize, &[u8]) -> WireOutcome;

/// Decode `A`, run the task at `func`, encode `R`; a panic becomes `Panicked`.
fn call<A: DeserializeOwned, R: Serialize>(func: usize, arg: &[u8]) -> WireOutcome {
    let a: A = match codec::decode(arg) {
        Ok(a) => a,
        Err(e) => return WireOutcome::Codec(codec_message(e)),
    };
    // SAFETY: invariant T1: `func` was made by `task_addrs::<A, R>` from an `fn(A) -> R` of this
    // very executable image, which the forked worker maps at the same address; this is the
    // matching monomorphization of `call`, so the types agree.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(a))) {
        Ok(r) => match codec::encode(&r) {
            Ok(b) => WireOutcome::Ok(ByteBuf::from(b)),
            Err(e) => WireOutcome::Codec(codec_message(e)),
        },
        Err(p) => WireOutcome::Panicked(panic_message(&*p)),
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
        let (t, f) = task_addrs(double);
        // SAFETY: `t` comes from `task_addrs` in this process (invariant T1).
        let t = unsafe { trampoline_at(t) };
        let arg = codec::encode(&21u32).unwrap();
        match t(f, &arg) {
            WireOutcome::Ok(b) => assert_eq!(codec::decode::<u32>(&b).unwrap(), 42),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(t(f, &[0xff, 0xff, 0xff]), WireOutcome::Codec(_)));
        let (t, f) = task_addrs(boom);
        // SAFETY: as above.
        let t = unsafe { trampoline_at(t) };
        match t(f, &arg) {
            WireOutcome::Panicked(m) => assert!(m.contains("boom")),
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
