//! The one place where poolrun turns values into bytes and back.
//!
//! serde + postcard: compact, maintained, and already what `ipc-channel` 0.23 uses
//! internally. `bincode` is unmaintained (RUSTSEC-2025-0141), so it is not used; swapping the
//! format means changing only this module.
//!
//! Every failure is a [`TaskError::Codec`] whose message names the type and says why:
//! - postcard drops the text of a type's own serde error ("path contains invalid UTF-8
//!   characters" becomes "Serde Serialization Error"); on that path the value is encoded or
//!   decoded once more through `erased-serde`, which keeps the text, to report it;
//! - a `Serialize` or `Deserialize` impl that panics is caught here: user code never takes
//!   down the thread that decodes (a process pool's collector, a worker);
//! - a shared-memory or sync handle that cannot cross (its segment is gone, a type
//!   mismatch) is a typed [`TaskError::Handle`], not text.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::{de::DeserializeOwned, Serialize};

use crate::runtime::panic_message;
use crate::{shm, TaskError};

/// Encode a value. Errors become [`TaskError::Codec`].
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, TaskError> {
    encode_into(value, Vec::new())
}

/// Encode a value, appending to `buf`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: Vec<u8>) -> Result<Vec<u8>, TaskError> {
    let r = catch_unwind(AssertUnwindSafe(|| postcard::to_extend(value, buf)));
    // A handle that cannot cross always fails the encoding; only then is its stash read.
    if !matches!(r, Ok(Ok(_))) {
        if let Some(h) = shm::take_handle_error() {
            return Err(TaskError::Handle(h));
        }
    }
    match r {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(codec_error::<T>(
            "encode",
            serde_text(e, || encode_message(value)),
        )),
        Err(p) => Err(codec_error::<T>(
            "encode",
            format!("its Serialize panicked: {}", panic_message(&*p)),
        )),
    }
}

/// Decode a value. Trailing bytes are an error: a message must be exactly one value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TaskError> {
    let r = catch_unwind(AssertUnwindSafe(|| postcard::take_from_bytes::<T>(bytes)));
    if !matches!(r, Ok(Ok(_))) {
        if let Some(h) = shm::take_handle_error() {
            return Err(TaskError::Handle(h));
        }
    }
    match r {
        Ok(Ok((value, []))) => Ok(value),
        Ok(Ok((_, rest))) => Err(codec_error::<T>(
            "decode",
            format!("{} trailing bytes after the value", rest.len()),
        )),
        Ok(Err(e)) => Err(codec_error::<T>(
            "decode",
            serde_text(e, || decode_message::<T>(bytes)),
        )),
        Err(p) => Err(codec_error::<T>(
            "decode",
            format!("its Deserialize panicked: {}", panic_message(&*p)),
        )),
    }
}

fn codec_error<T: ?Sized>(op: &str, why: String) -> TaskError {
    TaskError::Codec(format!("{op} {}: {why}", std::any::type_name::<T>()))
}

/// postcard's message, or — for a type's own serde error, whose text postcard drops — the
/// text recovered by `recover`.
fn serde_text(e: postcard::Error, recover: impl FnOnce() -> Option<String>) -> String {
    match e {
        postcard::Error::SerdeSerCustom | postcard::Error::SerdeDeCustom => {
            recover().unwrap_or_else(|| e.to_string())
        }
        other => other.to_string(),
    }
}

/// Encode again through `erased-serde` (its error keeps a custom message's text).
fn encode_message<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    let mut ser = postcard::Serializer {
        output: postcard::ser_flavors::AllocVec::new(),
    };
    let mut erased = <dyn erased_serde::Serializer>::erase(&mut ser);
    let r = catch_unwind(AssertUnwindSafe(|| {
        erased_serde::Serialize::erased_serialize(value, &mut erased)
    }));
    let _ = shm::take_handle_error(); // (nothing may leak into this thread's next call)
    r.ok()?.err().map(|e| e.to_string())
}

/// Decode again through `erased-serde` (see [`encode_message`]).
fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Option<String> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let mut erased = <dyn erased_serde::Deserializer>::erase(&mut de);
    let r = catch_unwind(AssertUnwindSafe(|| {
        erased_serde::deserialize::<T>(&mut erased)
    }));
    let _ = shm::take_handle_error();
    r.ok()?.err().map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::path::PathBuf;

    #[test]
    fn round_trip() {
        let v = (1u64, String::from("x"), vec![1.5f64, 2.0]);
        let b = encode(&v).unwrap();
        let back: (u64, String, Vec<f64>) = decode(&b).unwrap();
        assert_eq!(v, back);
    }

    #[test]
    fn wrong_type_is_codec_error() {
        let b = encode(&u64::MAX).unwrap();
        let r: Result<u8, _> = decode(&b);
        assert!(matches!(r, Err(TaskError::Codec(_))));
        let r: Result<u8, _> = decode(&[]);
        assert!(matches!(r, Err(TaskError::Codec(_))));
        let r: Result<u8, _> = decode(&[1, 2]);
        assert_eq!(
            r,
            Err(TaskError::Codec(
                "decode u8: 1 trailing bytes after the value".into()
            ))
        );
    }

    #[test]
    fn custom_serde_messages_are_kept() {
        use std::os::unix::ffi::OsStrExt;
        let p = PathBuf::from(std::ffi::OsStr::from_bytes(b"bad-\xff-name"));
        assert_eq!(
            encode(&p),
            Err(TaskError::Codec(
                "encode std::path::PathBuf: path contains invalid UTF-8 characters".into()
            ))
        );
        #[derive(Debug)]
        struct Picky;
        impl<'de> Deserialize<'de> for Picky {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let n = u8::deserialize(d)?;
                Err(serde::de::Error::custom(format!("{n} is not picky enough")))
            }
        }
        let bytes = encode(&3u8).unwrap();
        match decode::<Picky>(&bytes) {
            Err(TaskError::Codec(m)) => {
                assert!(
                    m.contains("Picky") && m.contains("3 is not picky enough"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn panicking_impls_are_codec_errors() {
        struct Boom;
        impl Serialize for Boom {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                panic!("serialize boom")
            }
        }
        #[derive(Debug)]
        struct BoomDe;
        impl<'de> Deserialize<'de> for BoomDe {
            fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                panic!("deserialize boom")
            }
        }
        match encode(&Boom) {
            Err(TaskError::Codec(m)) => assert!(m.contains("serialize boom"), "{m}"),
            other => panic!("{other:?}"),
        }
        match decode::<BoomDe>(&[0]) {
            Err(TaskError::Codec(m)) => assert!(m.contains("deserialize boom"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
