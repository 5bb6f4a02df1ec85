//! Fuzz target body `codec_decode`: arbitrary bytes through poolrun's decoding path — the
//! path every task argument takes in a worker and every result takes in the parent
//! (`codec::decode`, and `ErasedPromise::complete_encoded`, which completes a future from
//! a worker's encoded result).
//!
//! The first byte picks a payload type; the rest is decoded as that type. Properties:
//! - decoding never panics, never aborts, never allocates what the input only claims
//!   (a length prefix of 2^60 must not reserve 2^60 bytes);
//! - `complete_encoded` agrees with `decode`: the same value, or `TaskError::Codec` for
//!   both;
//! - a decoded value re-encodes, and the re-encoding decodes to a value that encodes
//!   identically (the canonical form is a fixpoint).
//!
//! Shared by `fuzz/fuzz_targets/codec_decode.rs` (libFuzzer) and the stable-Rust corpus
//! replay `tests/fault_fuzz_codec.rs`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use poolrun::codec;
use poolrun::shm::{SharedArray, SharedBytes};
use poolrun::{Payload, TaskError};
use poolrun_core::backend::{task_pair, ErasedPromise};
use serde::{Deserialize, Serialize};

/// A user payload with the serde shapes tasks use: unit/newtype/struct variants, nesting,
/// options, maps, floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    /// Unit variant.
    Unit,
    /// Newtype variant.
    Byte(u8),
    /// Struct variant.
    Record {
        /// A name.
        name: String,
        /// Some numbers.
        values: Vec<f32>,
        /// Optional nested map.
        extra: Option<BTreeMap<String, i64>>,
    },
    /// A tuple variant with signed/wide ints.
    Wide(i128, u128, char),
    /// Nesting (bounded: a list, not recursion through `Box`).
    List(Vec<(u16, Option<String>)>),
}

fn check<T: Payload + Debug>(bytes: &[u8]) {
    let direct = codec::decode::<T>(bytes);
    // The process pool's result path: a type-erased promise completed from bytes.
    let (promise, fut) = task_pair::<T>(None);
    let erased = ErasedPromise::from(promise);
    erased.complete_encoded(bytes);
    let via = fut.result_timeout(Duration::from_secs(10));
    match (&direct, &via) {
        (Ok(a), Ok(b)) => {
            let ea = codec::encode(a).expect("a decoded value re-encodes");
            let eb = codec::encode(b).expect("a decoded value re-encodes");
            assert_eq!(ea, eb, "complete_encoded and decode disagree");
            let back: T = codec::decode(&ea).expect("a re-encoded value decodes");
            let eback = codec::encode(&back).expect("re-encodes again");
            assert_eq!(eback, ea, "encoding is not a fixpoint for {back:?}");
        }
        (Err(TaskError::Codec(_)), Err(TaskError::Codec(_))) => {}
        _ => panic!("decode gave {direct:?} but complete_encoded gave {via:?}"),
    }
}

/// The target: `data[0]` picks the type, `data[1..]` is decoded.
pub fn run(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    match sel % 16 {
        0 => check::<u64>(bytes),
        1 => check::<i32>(bytes),
        2 => check::<f64>(bytes),
        3 => check::<bool>(bytes),
        4 => check::<char>(bytes),
        5 => check::<String>(bytes),
        6 => check::<Vec<u8>>(bytes),
        7 => check::<Vec<String>>(bytes),
        8 => check::<(u32, String, Option<Vec<u64>>)>(bytes),
        9 => check::<BTreeMap<String, Vec<i16>>>(bytes),
        10 => check::<Shape>(bytes),
        11 => check::<Vec<Shape>>(bytes),
        12 => check::<Option<(Duration, Vec<Vec<u8>>)>>(bytes),
        13 => check::<((), [u8; 4], Option<bool>)>(bytes),
        // Shared-memory handles: decoding one must fail cleanly unless it names a live
        // poolrun segment (never map an arbitrary fd).
        14 => {
            let _ = codec::decode::<SharedBytes>(bytes);
        }
        _ => {
            let _ = codec::decode::<SharedArray<u64>>(bytes);
        }
    }
}
