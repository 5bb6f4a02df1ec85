//! The one place where poolrun turns values into bytes and back.
//!
//! serde + postcard: compact, maintained, and already what `ipc-channel` 0.23 uses
//! internally. `bincode` is unmaintained (RUSTSEC-2025-0141), so it is not used; swapping the
//! format means changing only this module.

use serde::{de::DeserializeOwned, Serialize};

use crate::TaskError;

/// Encode a value. Errors become [`TaskError::Codec`].
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, TaskError> {
    postcard::to_stdvec(value).map_err(|e| TaskError::Codec(format!("encode: {e}")))
}

/// Encode a value, appending to `buf`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: Vec<u8>) -> Result<Vec<u8>, TaskError> {
    postcard::to_extend(value, buf).map_err(|e| TaskError::Codec(format!("encode: {e}")))
}

/// Decode a value. Trailing bytes are an error: a message must be exactly one value.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TaskError> {
    // The message names the target type: postcard drops the text of a custom
    // `Deserialize` error ("Serde Deserialization Error"), so the type is the only clue to
    // which payload failed (found by the reliability suite, RELIABILITY.md).
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)
        .map_err(|e| TaskError::Codec(format!("decode {}: {e}", std::any::type_name::<T>())))?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(TaskError::Codec(format!(
            "decode {}: {} trailing bytes after the value",
            std::any::type_name::<T>(),
            rest.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(r, Err(TaskError::Codec(_))));
    }
}
