//! [`SharedArray`]: a fixed-length array of `Copy` values in shared memory.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::segment::{Mapping, SegmentKind};
use super::ShmError;

/// Element types a [`SharedArray`] can hold: plain values that stay meaningful in another
/// process and for which all-zero bytes are a valid value (arrays start zero-filled).
///
/// Implemented for the integer and float types, `bool`, `char`, `()`, arrays and tuples
/// (up to 4) of them. References are not plain: another process could not follow them, and
/// a zero-filled one would be null.
///
/// ```compile_fail
/// use poolrun_core::shm::SharedArray;
/// let a = SharedArray::<&'static str>::new(1).unwrap();
/// ```
///
/// # Safety
/// An implementor must be `Copy`, valid when all its bytes are zero, and contain no
/// pointers, references or other process-local handles (no `&T`, `Box`, fd, ...). A
/// `#[repr(C)]` struct of `Plain` fields (without padding that matters to you) qualifies.
pub unsafe trait Plain: Copy + 'static {}

macro_rules! plain {
    ($($t:ty),*) => { $(
        // SAFETY: a primitive value type: zero is valid, no pointers.
        unsafe impl Plain for $t {}
    )* };
}
plain!(
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    bool,
    char,
    ()
);
// SAFETY: an array of Plain values is zero-valid and pointer-free if its elements are.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}
// SAFETY: tuples of Plain values: each field zero-valid and pointer-free.
unsafe impl<A: Plain, B: Plain> Plain for (A, B) {}
// SAFETY: as above.
unsafe impl<A: Plain, B: Plain, C: Plain> Plain for (A, B, C) {}
// SAFETY: as above.
unsafe impl<A: Plain, B: Plain, C: Plain, D: Plain> Plain for (A, B, C, D) {}

/// A fixed-length, zero-filled array of `T` in shared memory, writable through `&self` by
/// every thread and every process of the pool that holds a handle. `T` is a [`Plain`] value
/// type (integers, floats, `bool`, arrays and tuples of them).
///
/// Elements of 1, 2, 4 or 8 bytes (naturally aligned) are read and written with relaxed
/// atomic accesses, so a `get` never sees a torn value; larger elements are copied with
/// volatile accesses and can tear under a concurrent `set`. Nothing orders `get`/`set` of
/// different elements between processes. For read-modify-write on integer elements use the
/// atomic operations ([`fetch_add`](Self::fetch_add), [`compare_exchange`](Self::compare_exchange),
/// …: sequentially consistent, so they also order the plain accesses around them);
/// otherwise protect a sequence with a [`crate::sync::Lock`] (its acquire/release order the
/// accesses), or use one writer per element. Ranges: [`read_range`](Self::read_range),
/// [`copy_from_slice`](Self::copy_from_slice), [`copy_to_slice`](Self::copy_to_slice).
///
/// ```
/// use poolrun_core::shm::SharedArray;
/// let a = SharedArray::<f64>::new(3).unwrap();
/// a.set(1, 2.5);
/// assert_eq!(a.get(1), 2.5);
/// assert_eq!(a.get(0), 0.0);
/// assert_eq!(a.len(), 3);
/// ```
pub struct SharedArray<T: Copy> {
    map: Arc<Mapping>,
    len: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T: Copy> Clone for SharedArray<T> {
    fn clone(&self) -> Self {
        SharedArray {
            map: self.map.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Plain> SharedArray<T> {
    const ELEM: usize = std::mem::size_of::<T>();

    /// A new zero-filled array of `len` elements.
    pub fn new(len: usize) -> Result<SharedArray<T>, ShmError> {
        const { assert!(std::mem::align_of::<T>() <= 4096, "alignment above a page") };
        let bytes = len
            .checked_mul(Self::ELEM)
            .ok_or(ShmError::TooLarge { len: usize::MAX })?;
        let map = Mapping::create(SegmentKind::Array, bytes, Self::ELEM as u32, "")?;
        Ok(SharedArray {
            map,
            len,
            _t: PhantomData,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&self, i: usize) -> *mut T {
        assert!(
            i < self.len,
            "SharedArray index out of bounds: the len is {} but the index is {i}",
            self.len
        );
        self.map.ptr_at::<T>(0, i).as_ptr()
    }

    /// Element `i`. Panics if `i >= len()`, like slice indexing.
    pub fn get(&self, i: usize) -> T {
        let p = self.slot(i);
        macro_rules! atomic_load {
            ($a:ty) => {{
                // SAFETY: `p` is in bounds and aligned for T, and T has the size of `$a`
                // and at least its alignment (checked by the match below), so it is a
                // valid `$a` location; every access to it goes through atomics of this
                // size or volatile whole-T copies of other element types (never both for
                // one segment: the element size is checked when a handle is received).
                let v = unsafe { (*(p as *const $a)).load(Ordering::Relaxed) };
                // SAFETY: the bytes are zero (valid for T: Plain) or a whole T written by
                // `set` in some process of the pool; a Plain value has no pointers.
                unsafe { std::mem::transmute_copy::<_, T>(&v) }
            }};
        }
        match (Self::ELEM, std::mem::align_of::<T>() >= Self::ELEM) {
            (1, _) => atomic_load!(AtomicU8),
            (2, true) => atomic_load!(AtomicU16),
            (4, true) => atomic_load!(AtomicU32),
            (8, true) => atomic_load!(AtomicU64),
            // SAFETY: as above; other sizes are copied with a volatile read (a torn read
            // of a larger element is possible under a concurrent `set`: guard with a Lock).
            _ => unsafe { std::ptr::read_volatile(p) },
        }
    }

    /// Set element `i` to `v`. Panics if `i >= len()`, like slice indexing.
    pub fn set(&self, i: usize, v: T) {
        let p = self.slot(i);
        macro_rules! atomic_store {
            ($a:ty, $u:ty) => {{
                // SAFETY: T has the size of `$u` (checked by the match below).
                let bits = unsafe { std::mem::transmute_copy::<T, $u>(&v) };
                // SAFETY: as in `get`: an aligned, in-bounds `$a` location.
                unsafe { (*(p as *const $a)).store(bits, Ordering::Relaxed) }
            }};
        }
        match (Self::ELEM, std::mem::align_of::<T>() >= Self::ELEM) {
            (1, _) => atomic_store!(AtomicU8, u8),
            (2, true) => atomic_store!(AtomicU16, u16),
            (4, true) => atomic_store!(AtomicU32, u32),
            (8, true) => atomic_store!(AtomicU64, u64),
            // SAFETY: as in `get`; shared memory is meant to be written through `&self`.
            _ => unsafe { std::ptr::write_volatile(p, v) },
        }
    }

    /// Copy all elements out.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    /// Copy the elements in `range` out. Panics if the range is out of bounds, like slice
    /// indexing. Each element is read whole (see the type's docs); the copy as a whole is
    /// not a snapshot if others write meanwhile.
    pub fn read_range(&self, range: std::ops::Range<usize>) -> Vec<T> {
        self.check_range(range.start, range.end);
        range.map(|i| self.get(i)).collect()
    }

    /// Write `src` into elements `start..start + src.len()`. Panics if that is out of
    /// bounds, like `slice::copy_from_slice` on a mismatched length.
    pub fn copy_from_slice(&self, start: usize, src: &[T]) {
        let end = start.saturating_add(src.len());
        self.check_range(start, end);
        for (i, v) in (start..end).zip(src) {
            self.set(i, *v);
        }
    }

    /// Fill `dst` from elements `start..start + dst.len()`. Panics if that is out of bounds.
    pub fn copy_to_slice(&self, start: usize, dst: &mut [T]) {
        let end = start.saturating_add(dst.len());
        self.check_range(start, end);
        for (i, d) in (start..end).zip(dst) {
            *d = self.get(i);
        }
    }

    fn check_range(&self, start: usize, end: usize) {
        assert!(
            start <= end && end <= self.len,
            "SharedArray range {start}..{end} out of bounds for length {}",
            self.len
        );
    }

    /// The element's location, for the atomic operations (`array_atomic.rs`).
    pub(super) fn slot_ptr(&self, i: usize) -> *mut T {
        self.slot(i)
    }

    /// Fill every element with `v`.
    pub fn fill(&self, v: T) {
        for i in 0..self.len {
            self.set(i, v);
        }
    }
}

impl<T: Copy> fmt::Debug for SharedArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedArray")
            .field("len", &self.len)
            .field("id", &format_args!("{:016x}", self.map.id()))
            .finish()
    }
}

impl<T: Plain> Serialize for SharedArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize_handle(s)
    }
}

impl<'de, T: Plain> Deserialize<'de> for SharedArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = super::receive(d, SegmentKind::Array, Self::ELEM as u32)?;
        let len = map.data_len().checked_div(Self::ELEM).unwrap_or(0);
        Ok(SharedArray {
            map,
            len,
            _t: PhantomData,
        })
    }
}
