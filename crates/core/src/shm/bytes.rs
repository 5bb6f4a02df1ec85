//! [`SharedBytes`]: an immutable byte buffer in shared memory.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::segment::{Mapping, SegmentKind};
use super::ShmError;

/// An immutable byte buffer in shared memory: a `Clone` handle (cloning shares, never
/// copies) that serializes as a handle, so sending it to a worker is O(1) in its length.
///
/// ```
/// use poolrun_core::shm::SharedBytes;
/// let b = SharedBytes::from_slice(&[1, 2, 3]).unwrap();
/// let c = b.clone();
/// assert_eq!(&*c, &[1, 2, 3]);
/// ```
#[derive(Clone)]
pub struct SharedBytes {
    map: Arc<Mapping>,
}

impl SharedBytes {
    /// Copy `data` into a new shared segment.
    pub fn from_slice(data: &[u8]) -> Result<SharedBytes, ShmError> {
        let map = Mapping::create(SegmentKind::Bytes, data.len(), 1, "")?;
        map.write_data(data)?;
        Ok(SharedBytes { map })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.data_len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.bytes()
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}
impl Eq for SharedBytes {}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBytes")
            .field("len", &self.len())
            .field("id", &format_args!("{:016x}", self.map.id()))
            .finish()
    }
}

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize_handle(s)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = super::receive(d, SegmentKind::Bytes, 1)?;
        Ok(SharedBytes { map })
    }
}
