//! A pool's shared context (`PoolConfig::context`) and context-taking tasks
//! (`Executor::submit_ctx`): the Rust answer to CPython's `initializer` + module global,
//! without the global.
//!
//! The value is built once per worker and lent to every task as `&C`: thread mode shares
//! the pool's one value by reference (an `Arc`), process mode encodes it once and each
//! worker process decodes its own copy at start (and again in a replacement worker). A
//! worker's runtime installs it in a thread-local of the worker thread; the task trampoline
//! [`ctx_task`] lends it to the user's `fn(&C, A) -> R`.

#![allow(unsafe_code)]

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use crate::{codec, Payload};

/// A context value, type-erased.
pub type SharedContext = Arc<dyn Any + Send + Sync>;

/// What `PoolConfig::context` stores (for pool implementations).
#[derive(Clone)]
pub struct ContextSpec {
    type_id: TypeId,
    type_name: &'static str,
    /// The value, for thread mode (shared by reference).
    shared: SharedContext,
    /// The value encoded, for process workers (`Err`: it did not encode).
    encoded: Arc<Result<Vec<u8>, String>>,
    decode: fn(&[u8]) -> Result<SharedContext, String>,
}

fn decode_as<C: Payload + Sync>(bytes: &[u8]) -> Result<SharedContext, String> {
    codec::decode::<C>(bytes)
        .map(|c| Arc::new(c) as SharedContext)
        .map_err(|e| e.to_string())
}

impl ContextSpec {
    pub(crate) fn new<C: Payload + Sync>(value: C) -> ContextSpec {
        ContextSpec {
            type_id: TypeId::of::<C>(),
            type_name: std::any::type_name::<C>(),
            encoded: Arc::new(codec::encode(&value).map_err(|e| e.to_string())),
            shared: Arc::new(value),
            decode: decode_as::<C>,
        }
    }

    /// The context's type.
    pub fn type_id(&self) -> TypeId {
        self.type_id
    }

    /// The value itself, shared by reference (thread mode).
    pub fn shared(&self) -> SharedContext {
        self.shared.clone()
    }

    /// A fresh copy decoded from its encoding (a process worker at start); `Err` names the
    /// type and why.
    pub fn decode_copy(&self) -> Result<SharedContext, String> {
        match &*self.encoded {
            Ok(bytes) => (self.decode)(bytes),
            Err(e) => Err(e.clone()),
        }
        .map_err(|e| format!("the pool context ({}): {e}", self.type_name))
    }
}

impl fmt::Debug for ContextSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextSpec")
            .field("type", &self.type_name)
            .finish()
    }
}

thread_local! {
    /// The context of the pool this worker thread serves.
    static CURRENT: RefCell<Option<SharedContext>> = const { RefCell::new(None) };
}

/// Install `ctx` as this worker thread's context (the worker runtime does it at start).
pub(crate) fn install(ctx: Option<SharedContext>) {
    CURRENT.with(|c| *c.borrow_mut() = ctx);
}

/// The trampoline of a context-taking task: run the `fn(&C, A) -> R` at `func` with this
/// worker's context. A worker without a context of type `C` panics with a message that
/// says so (the task fails `Panicked`); `Executor::submit_ctx` checks the pool's context
/// type first, so this only happens to a pool built without it.
pub(crate) fn ctx_task<C: 'static, A, R>((func, arg): (usize, A)) -> R {
    // SAFETY: `func` was made by `Executor::submit_ctx::<C, A, R>` as `f as usize` from an
    // `fn(&C, A) -> R` of this executable image, in this process or the one this worker
    // was forked from (the backends that support contexts never cross `exec`); this is the
    // matching monomorphization, so the types agree.
    let f = unsafe { std::mem::transmute::<usize, fn(&C, A) -> R>(func) };
    let ctx = CURRENT.with(|c| c.borrow().clone());
    match ctx.as_deref().and_then(|c| c.downcast_ref::<C>()) {
        Some(c) => f(c, arg),
        None => panic!(
            "this worker has no pool context of type {}",
            std::any::type_name::<C>()
        ),
    }
}
