//! What a map iterator holds for one in-flight item: its own future, a slot of a chunk's
//! completion record (`future/chunk.rs`), or an outcome decided already (a deadline).

use std::sync::Arc;

use crate::future::{ChunkState, DoneSink};
use crate::{Deadline, TaskError, TaskFuture};

/// What a [`ChunkSource`](crate::map::ChunkSource) submitted for one chunk.
pub enum Submitted<R> {
    /// One future per input, in order.
    Futures(Vec<TaskFuture<R>>),
    /// One completion record whose slots are the inputs, in order.
    Chunk(Arc<ChunkState<R>>),
}

impl<R> std::fmt::Debug for Submitted<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Submitted::Futures(v) => write!(f, "Futures({})", v.len()),
            Submitted::Chunk(c) => write!(f, "Chunk({})", c.len()),
        }
    }
}

impl<R> Submitted<R> {
    /// How many inputs it holds.
    pub fn len(&self) -> usize {
        match self {
            Submitted::Futures(v) => v.len(),
            Submitted::Chunk(c) => c.len(),
        }
    }

    /// True if it holds none (the input is exhausted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its items as entries, in order.
    pub(crate) fn into_entries(self) -> Vec<Entry<R>> {
        match self {
            Submitted::Futures(v) => v.into_iter().map(Entry::Future).collect(),
            Submitted::Chunk(c) => (0..c.len()).map(|i| Entry::Slot(c.clone(), i)).collect(),
        }
    }
}

/// One in-flight item of a map.
pub(crate) enum Entry<R> {
    Future(TaskFuture<R>),
    Slot(Arc<ChunkState<R>>, usize),
    Ready(Result<R, TaskError>),
}

impl<R> Entry<R> {
    pub(crate) fn done(&self) -> bool {
        match self {
            Entry::Future(f) => f.done(),
            Entry::Slot(c, i) => c.done(*i),
            Entry::Ready(_) => true,
        }
    }

    pub(crate) fn wait_until(&self, deadline: Deadline, spin: bool) -> bool {
        match self {
            Entry::Future(f) => f.wait_until(deadline, spin),
            Entry::Slot(c, i) => c.wait_until(*i, deadline, spin),
            Entry::Ready(_) => true,
        }
    }

    /// The outcome (waits for it).
    pub(crate) fn result(self) -> Result<R, TaskError> {
        match self {
            Entry::Future(f) => f.result(),
            Entry::Slot(c, i) => {
                c.wait_until(i, Deadline::NEVER, true);
                c.take(i)
            }
            Entry::Ready(r) => r,
        }
    }

    /// Cancel it if it has not started.
    pub(crate) fn cancel(&self) {
        match self {
            Entry::Future(f) => {
                f.cancel();
            }
            Entry::Slot(c, i) => {
                c.cancel(*i);
            }
            Entry::Ready(_) => {}
        }
    }

    /// At a map's deadline: not done → cancelled if it has not started, and it yields
    /// `WaitTimeout` either way.
    pub(crate) fn expire(&mut self) {
        if !self.done() {
            self.cancel();
            *self = Entry::Ready(Err(TaskError::WaitTimeout));
        }
    }

    /// Report to `sink` as `index` once done (a future; chunk slots are watched per chunk).
    pub(crate) fn watch(&self, sink: &Arc<dyn DoneSink>, index: usize) {
        match self {
            Entry::Future(f) => f.watch(sink, index),
            Entry::Slot(..) => {}
            Entry::Ready(_) => sink.notify_done(index),
        }
    }

    pub(crate) fn unwatch(&self, sink: &Arc<dyn DoneSink>) {
        match self {
            Entry::Future(f) => f.unwatch(sink),
            Entry::Slot(c, _) => c.unwatch(),
            Entry::Ready(_) => {}
        }
    }
}
