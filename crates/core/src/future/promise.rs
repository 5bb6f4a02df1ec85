//! The pool's half of a future: [`Promise`] (typed) and [`ErasedPromise`] (its value type
//! erased, completed from encoded bytes in process mode), and [`task_pair`], which makes a
//! linked future/promise pair.
//!
//! A promise never loses a task: dropped without completing, it completes its future —
//! `Cancelled` if the task never started, `Shutdown` if it had.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::chunk::ChunkState;
use super::state::{run_start_callbacks, FutureState, Route, StartCallback};
use super::TaskFuture;
use crate::{codec, TaskError};

/// Starts and completes one [`TaskFuture`].
pub struct Promise<R> {
    state: Option<Arc<FutureState<R>>>,
}

/// Make a linked future/promise pair in the PENDING state. `route` is where
/// [`TaskFuture::kill`] goes once the task runs (`None`: kill only cancels a pending task).
pub fn task_pair<R>(route: Option<Route>) -> (Promise<R>, TaskFuture<R>) {
    let state = Arc::new(FutureState::new(route));
    (
        Promise {
            state: Some(state.clone()),
        },
        TaskFuture { state },
    )
}

impl<R> Promise<R> {
    /// PENDING → RUNNING. Returns false if the future was cancelled (then the task must not
    /// run; the promise may simply be dropped). Start callbacks run here, in this thread:
    /// call it holding no lock (else use [`start_deferred`](Self::start_deferred)).
    pub fn start(&self) -> bool {
        let mut cbs = Vec::new();
        let started = self.start_deferred(&mut cbs);
        run_start_callbacks(cbs);
        started
    }

    /// Like [`start`](Self::start), moving the start callbacks to `deferred` for the caller
    /// to run with [`run_start_callbacks`] once it holds no lock.
    pub fn start_deferred(&self, deferred: &mut Vec<StartCallback>) -> bool {
        self.state.as_ref().is_some_and(|s| s.start(deferred))
    }

    /// True if the future was cancelled, killed or otherwise completed already.
    pub fn is_done(&self) -> bool {
        self.state.as_ref().is_none_or(|s| s.is_done())
    }

    /// Cancel the future if it has not started (`shutdown(cancel_pending)`).
    pub fn cancel(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.cancel())
    }

    /// Complete the future with `outcome` (ignored if it is already done). Callbacks run in
    /// this thread.
    pub fn complete(self, outcome: Result<R, TaskError>) {
        self.complete_won(outcome);
    }

    /// [`complete`](Self::complete), telling whether this completion won (false: the future
    /// was already done — cancelled, killed, timed out — and `outcome` is dropped).
    pub fn complete_won(self, outcome: Result<R, TaskError>) -> bool {
        self.complete_counted(outcome, None)
    }

    /// [`complete_won`](Self::complete_won), counting the outcome in `counts` if it wins,
    /// before the future reads as done (a pool that counts in its own paths).
    pub fn complete_counted(
        mut self,
        outcome: Result<R, TaskError>,
        counts: Option<&crate::stats::TaskCounters>,
    ) -> bool {
        self.state
            .take()
            .is_some_and(|s| s.complete_counted(outcome, counts))
    }
}

impl<R> Drop for Promise<R> {
    fn drop(&mut self) {
        if let Some(s) = self.state.take() {
            s.abandon();
        }
    }
}

impl<R> fmt::Debug for Promise<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise")
            .field("done", &self.is_done())
            .finish()
    }
}

/// What [`ErasedPromise`] needs of a future's state, whatever its value type. `slot` is
/// the item's slot in a chunk record; single futures ignore it.
trait EncodedState: Send + Sync {
    fn start(&self, slot: usize, deferred: &mut Vec<StartCallback>) -> bool;
    fn is_done(&self, slot: usize) -> bool;
    fn cancel(&self, slot: usize) -> bool;
    fn complete_encoded(&self, slot: usize, bytes: &[u8]);
    fn fail(&self, slot: usize, err: TaskError);
    fn abandon(&self, slot: usize);
}

impl<R: DeserializeOwned + Send + 'static> EncodedState for FutureState<R> {
    fn start(&self, _: usize, deferred: &mut Vec<StartCallback>) -> bool {
        FutureState::start(self, deferred)
    }
    fn is_done(&self, _: usize) -> bool {
        FutureState::is_done(self)
    }
    fn cancel(&self, _: usize) -> bool {
        FutureState::cancel(self)
    }
    fn complete_encoded(&self, _: usize, bytes: &[u8]) {
        // `codec::decode` turns a panicking `Deserialize` into `Codec` too: a user type's
        // decoder can never take down the thread that completes futures.
        self.complete(codec::decode::<R>(bytes));
    }
    fn fail(&self, _: usize, err: TaskError) {
        self.complete(Err(err));
    }
    fn abandon(&self, _: usize) {
        FutureState::abandon(self)
    }
}

impl<R: DeserializeOwned + Send + 'static> EncodedState for ChunkState<R> {
    fn start(&self, slot: usize, _: &mut Vec<StartCallback>) -> bool {
        ChunkState::start(self, slot)
    }
    fn is_done(&self, slot: usize) -> bool {
        ChunkState::is_done(self, slot)
    }
    fn cancel(&self, slot: usize) -> bool {
        ChunkState::cancel(self, slot)
    }
    fn complete_encoded(&self, slot: usize, bytes: &[u8]) {
        ChunkState::complete_encoded(self, slot, bytes)
    }
    fn fail(&self, slot: usize, err: TaskError) {
        self.complete(slot, Err(err));
    }
    fn abandon(&self, slot: usize) {
        ChunkState::abandon(self, slot)
    }
}

/// A [`Promise`] with its value type erased, completed from encoded bytes (process mode).
///
/// It is the future's own state behind a trait object (converting a `Promise` allocates
/// nothing) and keeps the promise's guarantee: dropped without completing, it completes its
/// future.
pub struct ErasedPromise {
    state: Option<Arc<dyn EncodedState>>,
    /// The item's slot when `state` is a chunk record.
    slot: usize,
}

impl<R: DeserializeOwned + Send + 'static> From<Promise<R>> for ErasedPromise {
    fn from(mut p: Promise<R>) -> Self {
        ErasedPromise {
            state: p.state.take().map(|s| s as Arc<dyn EncodedState>),
            slot: 0,
        }
    }
}

/// The state of a promise whose value is the encoded bytes themselves.
struct RawBytes(Arc<FutureState<Vec<u8>>>);

impl EncodedState for RawBytes {
    fn start(&self, _: usize, deferred: &mut Vec<StartCallback>) -> bool {
        self.0.start(deferred)
    }
    fn is_done(&self, _: usize) -> bool {
        self.0.is_done()
    }
    fn cancel(&self, _: usize) -> bool {
        self.0.cancel()
    }
    fn complete_encoded(&self, _: usize, bytes: &[u8]) {
        self.0.complete(Ok(bytes.to_vec()));
    }
    fn fail(&self, _: usize, err: TaskError) {
        self.0.complete(Err(err));
    }
    fn abandon(&self, _: usize) {
        self.0.abandon()
    }
}

impl ErasedPromise {
    /// A promise completed with the encoded result bytes as they are, undecoded (a backend
    /// that relays results to another process decodes them there).
    pub fn raw(mut p: Promise<Vec<u8>>) -> ErasedPromise {
        ErasedPromise {
            state: p
                .state
                .take()
                .map(|s| Arc::new(RawBytes(s)) as Arc<dyn EncodedState>),
            slot: 0,
        }
    }

    /// The promise of slot `slot` of a chunk record (`map` chunks: one record, not one
    /// future, per chunk).
    pub fn slot<R: DeserializeOwned + Send + 'static>(
        chunk: &Arc<ChunkState<R>>,
        slot: usize,
    ) -> ErasedPromise {
        ErasedPromise {
            state: Some(chunk.clone() as Arc<dyn EncodedState>),
            slot,
        }
    }

    /// See [`Promise::start`].
    pub fn start(&self) -> bool {
        let mut cbs = Vec::new();
        let started = self.start_deferred(&mut cbs);
        run_start_callbacks(cbs);
        started
    }

    /// See [`Promise::start_deferred`].
    pub fn start_deferred(&self, deferred: &mut Vec<StartCallback>) -> bool {
        self.state
            .as_ref()
            .is_some_and(|s| s.start(self.slot, deferred))
    }

    /// See [`Promise::is_done`].
    pub fn is_done(&self) -> bool {
        self.state.as_ref().is_none_or(|s| s.is_done(self.slot))
    }

    /// See [`Promise::cancel`].
    pub fn cancel(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.cancel(self.slot))
    }

    /// Decode `bytes` as the task's value and complete; a decode failure (or a panicking
    /// `Deserialize`) completes with [`TaskError::Codec`].
    pub fn complete_encoded(mut self, bytes: &[u8]) {
        if let Some(s) = self.state.take() {
            s.complete_encoded(self.slot, bytes);
        }
    }

    /// Complete with an error.
    pub fn fail(mut self, err: TaskError) {
        if let Some(s) = self.state.take() {
            s.fail(self.slot, err);
        }
    }
}

impl Drop for ErasedPromise {
    fn drop(&mut self) {
        if let Some(s) = self.state.take() {
            s.abandon(self.slot);
        }
    }
}

impl fmt::Debug for ErasedPromise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErasedPromise")
            .field("done", &self.is_done())
            .finish()
    }
}
