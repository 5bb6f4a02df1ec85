//! The synchronisation primitives the GIL is built from, imported through one place.
//!
//! Everything in `lock.rs` takes its mutex, condition variables and atomics from here (the
//! pattern of tokio's `src/loom/mod.rs`), so the hand-off state machine can be model-checked
//! by swapping this module for `loom::sync` equivalents without touching the algorithm.
//! Today it re-exports `std` — loom is not a dependency of this crate (see `README.md`,
//! "Model checking").

pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
