//! The units the scheduler moves around: an [`Item`] is one task (id, encoded argument,
//! type-erased promise); a [`Batch`] is the items of one `submit` or one `map` chunk, which
//! run one function and travel as one message.
//!
//! Lock discipline: an item is completed or failed only outside the scheduler lock
//! (completing runs user callbacks). An item is dropped under the lock only once its future
//! is done (a cancelled one, skipped at dispatch): dropping then runs nothing.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use poolrun_core::backend::{ErasedPromise, StartCallback};
use poolrun_core::TaskError;

use crate::transport::Arg;

/// Task ids, process-wide: never 0 (0 means "idle" in a status page).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// `n` fresh task ids: the first of them (one atomic step for all).
pub(crate) fn next_ids(n: usize) -> u64 {
    NEXT_ID.fetch_add(n as u64, Ordering::Relaxed)
}

/// One task.
pub(crate) struct Item {
    /// The pool's id for it (also its kill route's task id).
    pub id: u64,
    /// Its encoded argument, kept until it finishes so it can be re-sent after a crash.
    pub arg: Arg,
    promise: Option<ErasedPromise>,
    /// How often it was put back after its worker died before running it.
    pub requeues: u32,
    /// Its own timeout (`TaskOptions`), replacing the pool's `task_timeout`.
    pub timeout: Option<std::time::Duration>,
}

impl Item {
    pub(crate) fn new(id: u64, arg: Arg, promise: ErasedPromise) -> Item {
        Item {
            id,
            arg,
            promise: Some(promise),
            requeues: 0,
            timeout: None,
        }
    }

    /// True once its future is done (completed, cancelled or killed).
    pub(crate) fn is_done(&self) -> bool {
        self.promise.as_ref().is_none_or(|p| p.is_done())
    }

    /// PENDING → RUNNING (or still running); false if it was cancelled or killed. Called
    /// under the scheduler lock: start callbacks go to `deferred`, run after it.
    pub(crate) fn start(&self, deferred: &mut Vec<StartCallback>) -> bool {
        self.promise
            .as_ref()
            .is_some_and(|p| p.start_deferred(deferred))
    }

    /// Cancel it if it has not started.
    pub(crate) fn cancel(&self) -> bool {
        self.promise.as_ref().is_some_and(|p| p.cancel())
    }

    /// Complete with an encoded value (a decode failure → `Codec`).
    pub(crate) fn complete_encoded(mut self, bytes: &[u8]) {
        if let Some(p) = self.promise.take() {
            p.complete_encoded(bytes);
        }
    }

    /// Complete with an error.
    pub(crate) fn fail(mut self, err: TaskError) {
        if let Some(p) = self.promise.take() {
            p.fail(err);
        }
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Item")
            .field("id", &self.id)
            .field("arg_len", &self.arg.len())
            .finish()
    }
}

/// Items that run one function, in order.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Trampoline address (transport invariant T1).
    pub trampoline: usize,
    /// Task function address.
    pub func: usize,
    pub items: VecDeque<Item>,
}

impl Batch {
    /// Fail every item (outside any lock).
    pub(crate) fn fail_all(self, err: &TaskError) {
        for it in self.items {
            it.fail(err.clone());
        }
    }

    /// Split off the first `n` items as a batch of their own.
    pub(crate) fn split_front(&mut self, n: usize) -> Batch {
        let n = n.min(self.items.len());
        Batch {
            trampoline: self.trampoline,
            func: self.func,
            items: self.items.drain(..n).collect(),
        }
    }
}
