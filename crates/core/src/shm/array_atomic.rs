//! Atomic read-modify-write on the integer elements of a [`SharedArray`]: a shared counter
//! or a claim flag without a `Lock`.
//!
//! Memory ordering: every operation here is `SeqCst`, in every process (the same atomic
//! instructions on the same physical memory), so one also orders the plain `get`/`set`
//! (relaxed) accesses before and after it, like a fence.

#![allow(unsafe_code)]

use std::sync::atomic::{
    AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicIsize, AtomicU16, AtomicU32, AtomicU64,
    AtomicU8, AtomicUsize, Ordering::SeqCst,
};

use super::array::{Plain, SharedArray};

mod sealed {
    pub trait Sealed {}
}

/// Integer element types with atomic operations on a [`SharedArray`] (sealed: the integer
/// types whose size equals their alignment on this target).
pub trait AtomicElem: Plain + sealed::Sealed {
    #[doc(hidden)]
    type Atomic;
    #[doc(hidden)]
    fn fetch_add(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn fetch_sub(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn swap(a: &Self::Atomic, v: Self) -> Self;
    #[doc(hidden)]
    fn compare_exchange(a: &Self::Atomic, current: Self, new: Self) -> Result<Self, Self>;
}

macro_rules! atomic_elem {
    ($($t:ty => $a:ty),*) => { $(
        impl sealed::Sealed for $t {}
        impl AtomicElem for $t {
            type Atomic = $a;
            fn fetch_add(a: &$a, v: $t) -> $t { a.fetch_add(v, SeqCst) }
            fn fetch_sub(a: &$a, v: $t) -> $t { a.fetch_sub(v, SeqCst) }
            fn swap(a: &$a, v: $t) -> $t { a.swap(v, SeqCst) }
            fn compare_exchange(a: &$a, current: $t, new: $t) -> Result<$t, $t> {
                a.compare_exchange(current, new, SeqCst, SeqCst)
            }
        }
        const _: () = assert!(
            std::mem::size_of::<$t>() == std::mem::size_of::<$a>()
                && std::mem::align_of::<$t>() == std::mem::align_of::<$a>()
        );
    )* };
}
atomic_elem!(
    u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64, usize => AtomicUsize,
    i8 => AtomicI8, i16 => AtomicI16, i32 => AtomicI32, i64 => AtomicI64, isize => AtomicIsize
);

impl<T: AtomicElem> SharedArray<T> {
    fn atomic(&self, i: usize) -> &T::Atomic {
        let p = self.slot_ptr(i);
        // SAFETY: `slot_ptr` checked `i < len` and gives a pointer into the live mapping
        // (M1), aligned for T; T::Atomic has T's size and alignment (asserted above), so the
        // location is a valid atomic. Every access to this segment's elements is atomic of
        // this size (`get`/`set` use the same-size atomics for these types), and the
        // mapping outlives `&self`.
        unsafe { &*(p as *const T::Atomic) }
    }

    /// Add `v` to element `i` (wrapping on overflow); returns the previous value. Panics if
    /// `i >= len()`.
    ///
    /// ```
    /// use poolrun_core::shm::SharedArray;
    /// let hits = SharedArray::<u64>::new(1).unwrap();
    /// assert_eq!(hits.fetch_add(0, 5), 0);
    /// assert_eq!(hits.get(0), 5);
    /// ```
    pub fn fetch_add(&self, i: usize, v: T) -> T {
        T::fetch_add(self.atomic(i), v)
    }

    /// Subtract `v` from element `i` (wrapping); returns the previous value.
    pub fn fetch_sub(&self, i: usize, v: T) -> T {
        T::fetch_sub(self.atomic(i), v)
    }

    /// Store `v` in element `i`; returns the previous value.
    pub fn swap(&self, i: usize, v: T) -> T {
        T::swap(self.atomic(i), v)
    }

    /// If element `i` is `current`, set it to `new`: `Ok(current)`; else `Err(actual)`.
    ///
    /// ```
    /// use poolrun_core::shm::SharedArray;
    /// let owner = SharedArray::<u32>::new(1).unwrap();
    /// assert_eq!(owner.compare_exchange(0, 0, 7), Ok(0)); // claimed by 7
    /// assert_eq!(owner.compare_exchange(0, 0, 9), Err(7)); // already taken
    /// ```
    pub fn compare_exchange(&self, i: usize, current: T, new: T) -> Result<T, T> {
        T::compare_exchange(self.atomic(i), current, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_many_threads_add_up() {
        let a = SharedArray::<i64>::new(2).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        a.fetch_add(0, 1);
                        a.fetch_sub(1, 2);
                    }
                });
            }
        });
        assert_eq!(a.get(0), 40_000);
        assert_eq!(a.get(1), -80_000);
        assert_eq!(a.swap(0, 3), 40_000);
        let b = SharedArray::<u8>::new(1).unwrap();
        b.set(0, 255);
        assert_eq!(b.fetch_add(0, 2), 255);
        assert_eq!(b.get(0), 1, "wrapping");
    }

    #[test]
    fn ranges_copy_in_and_out_and_check_bounds() {
        let a = SharedArray::<u32>::new(8).unwrap();
        a.copy_from_slice(2, &[1, 2, 3]);
        assert_eq!(a.read_range(1..6), vec![0, 1, 2, 3, 0]);
        let mut out = [9u32; 4];
        a.copy_to_slice(3, &mut out);
        assert_eq!(out, [2, 3, 0, 0]);
        let r = std::panic::catch_unwind(|| a.copy_from_slice(usize::MAX, &[1]));
        assert!(
            r.is_err(),
            "an overflowing range panics with a message, never wraps"
        );
        let r = std::panic::catch_unwind(|| a.read_range(5..9));
        assert!(r.is_err());
    }
}
