//! A tiny mutex that is safe across `fork()`: `pthread_atfork` handlers take it before the
//! fork and release it in parent and child, so a child never inherits it locked by a thread
//! that does not exist there (what would happen with `std::sync::Mutex` if another thread
//! held it at the moment of the fork). Used for the per-process segment registry and the
//! pin list, which forked workers must be able to use. Critical sections are a few
//! hash-map operations, so waiting spins and yields.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// Invariant (F1): `data` is only accessed through a [`ForkGuard`], which exists only
/// while `locked` was set by its creator.
pub(crate) struct ForkSafeMutex<T> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialised by `locked` (F1).
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}

impl<T> ForkSafeMutex<T> {
    pub(crate) const fn new(v: T) -> Self {
        ForkSafeMutex {
            locked: AtomicBool::new(false),
            data: UnsafeCell::new(v),
        }
    }

    fn raw_lock(&self) {
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    fn raw_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    pub(crate) fn lock(&self) -> ForkGuard<'_, T> {
        self.raw_lock();
        ForkGuard { m: self }
    }
}

pub(crate) struct ForkGuard<'a, T> {
    m: &'a ForkSafeMutex<T>,
}

impl<T> Deref for ForkGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: F1: this guard holds the lock.
        unsafe { &*self.m.data.get() }
    }
}
impl<T> DerefMut for ForkGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: F1: this guard holds the lock exclusively.
        unsafe { &mut *self.m.data.get() }
    }
}
impl<T> Drop for ForkGuard<'_, T> {
    fn drop(&mut self) {
        self.m.raw_unlock();
    }
}

/// The locks the fork handlers take, in this order (and release in reverse).
pub(crate) fn register(locks: &'static [&'static (dyn ForkLock + Sync)]) {
    use std::sync::OnceLock;
    static LOCKS: OnceLock<&'static [&'static (dyn ForkLock + Sync)]> = OnceLock::new();
    if LOCKS.set(locks).is_err() {
        return;
    }
    extern "C" fn prepare() {
        if let Some(l) = LOCKS.get() {
            for m in l.iter() {
                m.fork_lock();
            }
        }
    }
    extern "C" fn after() {
        if let Some(l) = LOCKS.get() {
            for m in l.iter().rev() {
                m.fork_unlock();
            }
        }
    }
    // SAFETY: plain `extern "C"` functions without captured state; they only touch
    // atomics of 'static locks. Registered once (guarded by the OnceLock).
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(after), Some(after));
    }
}

/// Object-safe lock/unlock for the fork handlers.
pub(crate) trait ForkLock {
    fn fork_lock(&self);
    fn fork_unlock(&self);
}

impl<T> ForkLock for ForkSafeMutex<T> {
    fn fork_lock(&self) {
        self.raw_lock();
    }
    fn fork_unlock(&self) {
        self.raw_unlock();
    }
}
