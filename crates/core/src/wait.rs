//! [`wait`] and [`as_completed`] over many futures (`concurrent.futures.wait` /
//! `as_completed`), with cancelled futures counted as done (unlike CPython, cpython#92001).

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::future::DoneSink;
use crate::{gil, Deadline, TaskError, TaskFuture};

/// When [`wait`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnWhen {
    /// As soon as any future is done (or at once if one already is).
    FirstCompleted,
    /// As soon as a future finishes with an error (cancellation does not count); if none
    /// does, when all are done.
    FirstException,
    /// When every future is done.
    AllCompleted,
}

/// Collects indices of futures as they become done.
#[derive(Default)]
pub(crate) struct DoneQueue {
    done: Mutex<VecDeque<usize>>,
    cond: Condvar,
}

impl DoneSink for DoneQueue {
    fn notify_done(&self, index: usize) {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(index);
        self.cond.notify_all();
    }
}

impl DoneQueue {
    /// Pop the next done index, waiting until `deadline` (None: forever). Releases the GIL
    /// while it waits.
    pub(crate) fn pop(&self, deadline: Deadline) -> Option<usize> {
        let mut q = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = q.pop_front() {
            return Some(i);
        }
        drop(q);
        gil::allow_threads(|| {
            let mut q = self.done.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(i) = q.pop_front() {
                    return Some(i);
                }
                q = deadline.wait_on(&self.cond, q)?;
            }
        })
    }
}

/// Wait for the futures in `fs` (by index) until `return_when` is satisfied or `timeout`
/// passes. Returns `(done, pending)` index lists, each in ascending order. Never fails on a
/// timeout. Cancelled futures count as done.
pub fn wait<R>(
    fs: &[TaskFuture<R>],
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> (Vec<usize>, Vec<usize>) {
    let deadline = Deadline::after(timeout);
    let q = Arc::new(DoneQueue::default());
    let sink: Arc<dyn DoneSink> = q.clone();
    for (i, f) in fs.iter().enumerate() {
        f.watch(&sink, i);
    }
    let mut is_done = vec![false; fs.len()];
    let mut n_done = 0;
    let mut hit_exception = false;
    loop {
        let satisfied = match return_when {
            ReturnWhen::AllCompleted => n_done == fs.len(),
            ReturnWhen::FirstCompleted => n_done > 0 || fs.is_empty(),
            ReturnWhen::FirstException => n_done == fs.len() || hit_exception,
        };
        if satisfied {
            break;
        }
        // Futures already done at the call were queued by `watch`, so they come first.
        let Some(idx) = q.pop(deadline) else { break };
        if !is_done[idx] {
            is_done[idx] = true;
            n_done += 1;
            hit_exception |= fs[idx].failed();
        }
    }
    for f in fs {
        f.unwatch(&sink);
    }
    // Report the real state at return (more may have finished meanwhile).
    let mut done = Vec::new();
    let mut pending = Vec::new();
    for (i, f) in fs.iter().enumerate() {
        if f.done() {
            done.push(i);
        } else {
            pending.push(i);
        }
    }
    (done, pending)
}

/// Yield `(index, outcome)` for each future as it becomes done: those already done first,
/// then in completion order. Cancelled futures are yielded (with `Err(Cancelled)`) like any
/// other. Use [`AsCompleted::timeout`] to bound the total wait: once it passes, every
/// remaining future yields `Err(TaskError::WaitTimeout)` at once.
pub fn as_completed<R>(fs: Vec<TaskFuture<R>>) -> AsCompleted<R> {
    let q = Arc::new(DoneQueue::default());
    let sink: Arc<dyn DoneSink> = q.clone();
    for (i, f) in fs.iter().enumerate() {
        f.watch(&sink, i);
    }
    let remaining = fs.len();
    AsCompleted {
        futures: fs.into_iter().map(Some).collect(),
        queue: q,
        sink,
        remaining,
        deadline: Deadline::NEVER,
        timed_out: false,
    }
}

/// The iterator returned by [`as_completed`].
pub struct AsCompleted<R> {
    futures: Vec<Option<TaskFuture<R>>>,
    queue: Arc<DoneQueue>,
    sink: Arc<dyn DoneSink>,
    remaining: usize,
    deadline: Deadline,
    timed_out: bool,
}

impl<R> AsCompleted<R> {
    /// Give up waiting `d` from now: remaining futures then yield `Err(WaitTimeout)`.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.deadline = Deadline::after(Some(d));
        self
    }
}

impl<R> Iterator for AsCompleted<R> {
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        loop {
            if !self.timed_out {
                if let Some(i) = self.queue.pop(self.deadline) {
                    if let Some(f) = self.futures[i].take() {
                        self.remaining -= 1;
                        return Some((i, f.result()));
                    }
                    continue;
                }
                self.timed_out = true;
            }
            // Deadline passed: drain whatever is left, in index order.
            let i = self.futures.iter().position(|f| f.is_some())?;
            let f = self.futures[i].take()?;
            self.remaining -= 1;
            f.unwatch(&self.sink);
            return Some((i, f.try_result().unwrap_or(Err(TaskError::WaitTimeout))));
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<R> Drop for AsCompleted<R> {
    fn drop(&mut self) {
        for f in self.futures.iter().flatten() {
            f.unwatch(&self.sink);
        }
    }
}

impl<R> fmt::Debug for AsCompleted<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// Like [`as_completed`], but borrowing the futures: yields `(index, &future)` as each
/// becomes done (those done already first), so the caller keeps every future — after
/// [`AsCompletedRef::timeout`] ends the iteration, the stragglers are still there to
/// `kill()` or wait for.
///
/// ```
/// # use poolrun_core::{as_completed_ref, backend::task_pair};
/// # use std::time::Duration;
/// # let (p, fast) = task_pair::<u32>(None);
/// # p.complete(Ok(1));
/// # let (_slow_promise, slow) = task_pair::<u32>(None);
/// let fs = vec![fast, slow]; // from pool.submit(..)
/// let done: Vec<usize> = as_completed_ref(&fs)
///     .timeout(Duration::from_millis(10))
///     .map(|(i, _)| i)
///     .collect();
/// assert_eq!(done, [0]);
/// for f in &fs {
///     if !f.done() {
///         f.kill(); // the straggler is still ours
///     }
/// }
/// ```
pub fn as_completed_ref<R>(fs: &[TaskFuture<R>]) -> AsCompletedRef<'_, R> {
    let q = Arc::new(DoneQueue::default());
    let sink: Arc<dyn DoneSink> = q.clone();
    for (i, f) in fs.iter().enumerate() {
        f.watch(&sink, i);
    }
    AsCompletedRef {
        futures: fs,
        seen: vec![false; fs.len()],
        queue: q,
        sink,
        remaining: fs.len(),
        deadline: Deadline::NEVER,
    }
}

/// The iterator returned by [`as_completed_ref`].
pub struct AsCompletedRef<'a, R> {
    futures: &'a [TaskFuture<R>],
    seen: Vec<bool>,
    queue: Arc<DoneQueue>,
    sink: Arc<dyn DoneSink>,
    remaining: usize,
    deadline: Deadline,
}

impl<R> AsCompletedRef<'_, R> {
    /// Stop waiting `d` from now: the iteration then ends; the futures not yielded are
    /// still the caller's.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.deadline = Deadline::after(Some(d));
        self
    }
}

impl<'a, R> Iterator for AsCompletedRef<'a, R> {
    type Item = (usize, &'a TaskFuture<R>);

    fn next(&mut self) -> Option<Self::Item> {
        while self.remaining > 0 {
            let i = self.queue.pop(self.deadline)?;
            if !std::mem::replace(&mut self.seen[i], true) {
                self.remaining -= 1;
                return Some((i, &self.futures[i]));
            }
        }
        None
    }
}

impl<R> Drop for AsCompletedRef<'_, R> {
    fn drop(&mut self) {
        for f in self.futures {
            f.unwatch(&self.sink);
        }
    }
}

impl<R> fmt::Debug for AsCompletedRef<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompletedRef")
            .field("remaining", &self.remaining)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::future::task_pair;
    use std::time::Instant;

    #[test]
    fn cancelled_counts_as_done() {
        let (_p, f) = task_pair::<u32>(None);
        assert!(f.cancel());
        let t = Instant::now();
        let (done, pending) = wait(
            std::slice::from_ref(&f),
            Some(Duration::from_secs(5)),
            ReturnWhen::AllCompleted,
        );
        assert_eq!(done, vec![0]);
        assert!(pending.is_empty());
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn first_completed_and_timeout() {
        let (p0, f0) = task_pair::<u32>(None);
        let (_p1, f1) = task_pair::<u32>(None);
        let fs = vec![f0, f1];
        let (d, pnd) = wait(
            &fs,
            Some(Duration::from_millis(20)),
            ReturnWhen::FirstCompleted,
        );
        assert!(d.is_empty());
        assert_eq!(pnd, vec![0, 1]);
        p0.complete(Ok(1));
        let (d, pnd) = wait(&fs, None, ReturnWhen::FirstCompleted);
        assert_eq!((d, pnd), (vec![0], vec![1]));
    }

    #[test]
    fn first_exception() {
        let (p0, f0) = task_pair::<u32>(None);
        let (p1, f1) = task_pair::<u32>(None);
        let (_p2, f2) = task_pair::<u32>(None);
        p0.complete(Ok(1));
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            p1.complete(Err(TaskError::Panicked {
                message: "x".into(),
            }));
        });
        let fs = vec![f0, f1, f2];
        let (d, pnd) = wait(
            &fs,
            Some(Duration::from_secs(10)),
            ReturnWhen::FirstException,
        );
        assert_eq!((d, pnd), (vec![0, 1], vec![2]));
        h.join().unwrap();
    }

    #[test]
    fn as_completed_order_and_timeout() {
        let (p0, f0) = task_pair::<u32>(None);
        let (p1, f1) = task_pair::<u32>(None);
        let (_p2, f2) = task_pair::<u32>(None);
        p1.complete(Ok(11));
        let mut it = as_completed(vec![f0, f1, f2]).timeout(Duration::from_millis(50));
        assert_eq!(it.next(), Some((1, Ok(11))));
        p0.complete(Ok(10));
        assert_eq!(it.next(), Some((0, Ok(10))));
        assert_eq!(it.next(), Some((2, Err(TaskError::WaitTimeout))));
        assert_eq!(it.next(), None);
    }
}
