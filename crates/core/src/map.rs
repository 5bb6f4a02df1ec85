//! Lazy, windowed `map` iterators: [`MapIter`] (input order) and [`MapUnordered`]
//! (completion order).
//!
//! Unlike CPython's `Executor.map`, which consumes the whole input and submits every task
//! inside the call (CPython submits every task inside `map()`), these pull inputs lazily and keep a bounded window of
//! tasks in flight (like 3.14's `buffersize`), so an endless iterator runs in bounded memory.
//! Every item yields its own `Result`: one failure never ends the iteration (cpython#108518)
//! and never loses the rest of its chunk (CPython loses the whole chunk).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chunking::AutoChunk;
use crate::future::{ChunkState, DoneSink};
use crate::map_entry::Entry;
pub use crate::map_entry::Submitted;
use crate::wait::DoneQueue;
use crate::{Deadline, TaskError, TaskFuture};

/// Where a map iterator gets its tasks: pulls up to `n` inputs and submits them as one batch
/// (one message per batch in process mode). Returns an empty vector once the input is
/// exhausted.
pub trait ChunkSource<R>: Send {
    /// Pull and submit up to `n` inputs.
    fn next_chunk(&mut self, n: usize) -> Submitted<R>;

    /// How many inputs remain, when the source knows (for automatic chunk sizes).
    fn remaining_hint(&self) -> Option<usize> {
        None
    }
}

/// A pool's "submit this chunk of inputs with one completion record" function (see
/// `future/chunk.rs`).
pub type ChunkSubmit<A, R> = Box<dyn FnMut(Vec<A>) -> Arc<ChunkState<R>> + Send>;

/// A [`ChunkSource`] over an iterator and a batch-submit function (and, when the pool has
/// one, a chunk-record submit function for chunks of more than one input).
pub struct IterSource<I, S, A, R> {
    iter: Option<I>,
    submit_batch: S,
    submit_chunk: Option<ChunkSubmit<A, R>>,
}

impl<I, S, A, R> fmt::Debug for IterSource<I, S, A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IterSource")
            .field("exhausted", &self.iter.is_none())
            .finish()
    }
}

impl<I, S, A, R> IterSource<I, S, A, R> {
    /// Pull from `iter`, submit through `submit_batch`.
    pub fn new(iter: I, submit_batch: S) -> Self {
        IterSource {
            iter: Some(iter),
            submit_batch,
            submit_chunk: None,
        }
    }

    /// Submit chunks of more than one input through `submit_chunk` (one record per chunk).
    pub fn with_chunks(mut self, submit_chunk: Option<ChunkSubmit<A, R>>) -> Self {
        self.submit_chunk = submit_chunk;
        self
    }
}

impl<A, R, I, S> ChunkSource<R> for IterSource<I, S, A, R>
where
    I: Iterator<Item = A> + Send,
    S: FnMut(Vec<A>) -> Vec<TaskFuture<R>> + Send,
{
    fn next_chunk(&mut self, n: usize) -> Submitted<R> {
        let Some(it) = self.iter.as_mut() else {
            return Submitted::Futures(Vec::new());
        };
        let items: Vec<A> = it.take(n).collect();
        if items.len() < n {
            self.iter = None; // exhausted; never poll a fused-or-not iterator again
        }
        if items.is_empty() {
            return Submitted::Futures(Vec::new());
        }
        match self.submit_chunk.as_mut() {
            Some(chunk) if items.len() > 1 => Submitted::Chunk(chunk(items)),
            _ => Submitted::Futures((self.submit_batch)(items)),
        }
    }

    fn remaining_hint(&self) -> Option<usize> {
        match self.iter.as_ref()?.size_hint() {
            (lo, Some(hi)) if lo == hi => Some(lo),
            (lo, _) if lo > 0 => Some(lo),
            _ => None,
        }
    }
}

/// Settings shared by both map iterators.
struct Window<R> {
    source: Option<Box<dyn ChunkSource<R>>>,
    chunksize: usize,
    /// Automatic chunk sizes (`chunking.rs`) until the caller sets a `chunksize`.
    auto: Option<AutoChunk>,
    /// Items handed to the caller so far (the automatic rule's clock).
    consumed: u64,
    window_chunks: usize,
    created: Instant,
    timeout: Option<Duration>,
    started: bool,
}

impl<R> Window<R> {
    fn new(source: Box<dyn ChunkSource<R>>, window_chunks: usize) -> Self {
        Window {
            source: Some(source),
            chunksize: 1,
            auto: Some(AutoChunk::new(1)),
            consumed: 0,
            window_chunks: window_chunks.max(1),
            created: Instant::now(),
            timeout: None,
            started: false,
        }
    }

    fn deadline(&self) -> Deadline {
        Deadline::after_from(self.created, self.timeout)
    }

    fn capacity(&self) -> usize {
        self.window_chunks.saturating_mul(self.chunksize)
    }

    fn for_workers(&mut self, workers: usize) {
        if self.auto.is_some() {
            self.auto = Some(AutoChunk::new(workers));
        }
    }

    /// A fixed chunk size from the caller (ends the automatic rule).
    fn set_chunksize(&mut self, n: usize) {
        if !self.started {
            self.chunksize = n.max(1);
            self.auto = None;
        }
    }

    /// Before topping the window up: the automatic rule picks the chunk size.
    fn resize(&mut self) {
        if let (Some(auto), Some(src)) = (self.auto.as_mut(), self.source.as_ref()) {
            self.chunksize = auto.next_size(self.consumed, Instant::now(), src.remaining_hint());
        }
    }

    /// Submit one more chunk; false once the input is exhausted.
    fn pull(&mut self) -> Option<Submitted<R>> {
        let src = self.source.as_mut()?;
        let chunk = src.next_chunk(self.chunksize);
        if chunk.is_empty() {
            self.source = None;
            None
        } else {
            Some(chunk)
        }
    }
}

/// The iterator returned by `Executor::map`: one `Result` per input, in input order.
///
/// Configure with [`chunksize`](Self::chunksize) and [`timeout`](Self::timeout) before the
/// first `next()`. Dropping it cancels the tasks it submitted that have not started.
pub struct MapIter<R> {
    w: Window<R>,
    in_flight: VecDeque<Entry<R>>,
    timed_out: bool,
}

impl<R> MapIter<R> {
    /// Build from a chunk source; `window_chunks` is how many chunks may be in flight.
    pub fn new(source: Box<dyn ChunkSource<R>>, window_chunks: usize) -> Self {
        MapIter {
            w: Window::new(source, window_chunks),
            in_flight: VecDeque::new(),
            timed_out: false,
        }
    }

    /// Send `n` inputs per message (process mode; thread mode runs a chunk on one thread).
    /// Each item still yields its own result. `0` is treated as 1. Ignored after the first
    /// `next()`.
    ///
    /// Without it the size is automatic: it starts at 1 and follows the measured cost of an
    /// item so that a chunk takes about 2 ms of one worker's time (at most 1024 items, and
    /// at most a quarter of one worker's share of the inputs left when the iterator knows
    /// its length). Tiny items reach chunked throughput; long ones go one per message.
    pub fn chunksize(mut self, n: usize) -> Self {
        self.w.set_chunksize(n);
        self
    }

    /// One deadline for the whole map, measured from the `map` call. Items not done by then
    /// yield `Err(TaskError::WaitTimeout)` (and are cancelled if they have not started);
    /// the iterator then ends without pulling more inputs. Ignored after the first `next()`.
    pub fn timeout(mut self, d: Duration) -> Self {
        if !self.w.started {
            self.w.timeout = Some(d);
        }
        self
    }

    /// How many inputs may be in flight at once (`window_chunks × chunksize`).
    pub fn window(mut self, chunks: usize) -> Self {
        if !self.w.started {
            self.w.window_chunks = chunks.max(1);
        }
        self
    }

    /// The pool's worker count, for the automatic chunk size.
    pub(crate) fn for_workers(mut self, workers: usize) -> Self {
        self.w.for_workers(workers);
        self
    }

    /// Top the window up once it has drained to half: submitting in bursts lets workers
    /// run through many items per wake-up instead of ping-ponging with the consumer.
    fn refill(&mut self) {
        if self.in_flight.len() > self.w.capacity() / 2 {
            return;
        }
        self.w.resize();
        while !self.timed_out && self.in_flight.len() < self.w.capacity() {
            match self.w.pull() {
                Some(chunk) => self.in_flight.extend(chunk.into_entries()),
                None => break,
            }
        }
    }
}

impl<R> Iterator for MapIter<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.w.started = true;
        self.refill();
        let f = self.in_flight.pop_front()?;
        self.w.consumed += 1;
        if self.timed_out || f.done() || f.wait_until(self.w.deadline(), true) {
            return Some(f.result());
        }
        // The deadline passed: this item and every other one not done by now yields
        // `WaitTimeout` (those not started are cancelled); no more inputs are pulled.
        self.timed_out = true;
        for g in self.in_flight.iter_mut() {
            g.expire();
        }
        let mut f = f;
        f.expire();
        self.w.source = None;
        Some(f.result())
    }
}

impl<R> Drop for MapIter<R> {
    fn drop(&mut self) {
        for f in &self.in_flight {
            f.cancel();
        }
    }
}

impl<R> fmt::Debug for MapIter<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapIter")
            .field("chunksize", &self.w.chunksize)
            .field("in_flight", &self.in_flight.len())
            .field("timeout", &self.w.timeout)
            .finish()
    }
}

/// The iterator returned by `Executor::map_unordered`: `(input index, Result)` in completion
/// order, with the same window, chunksize and timeout rules as [`MapIter`].
pub struct MapUnordered<R> {
    w: Window<R>,
    in_flight: HashMap<usize, Entry<R>>,
    next_index: usize,
    queue: Arc<DoneQueue>,
    sink: Arc<dyn DoneSink>,
    timed_out: bool,
}

impl<R> MapUnordered<R> {
    /// Build from a chunk source; `window_chunks` is how many chunks may be in flight.
    pub fn new(source: Box<dyn ChunkSource<R>>, window_chunks: usize) -> Self {
        let queue = Arc::new(DoneQueue::default());
        let sink: Arc<dyn DoneSink> = queue.clone();
        MapUnordered {
            w: Window::new(source, window_chunks),
            in_flight: HashMap::new(),
            next_index: 0,
            queue,
            sink,
            timed_out: false,
        }
    }

    /// See [`MapIter::chunksize`].
    pub fn chunksize(mut self, n: usize) -> Self {
        self.w.set_chunksize(n);
        self
    }

    /// See [`MapIter::timeout`].
    pub fn timeout(mut self, d: Duration) -> Self {
        if !self.w.started {
            self.w.timeout = Some(d);
        }
        self
    }

    /// See [`MapIter::window`].
    pub fn window(mut self, chunks: usize) -> Self {
        if !self.w.started {
            self.w.window_chunks = chunks.max(1);
        }
        self
    }

    /// See [`MapIter::for_workers`].
    pub(crate) fn for_workers(mut self, workers: usize) -> Self {
        self.w.for_workers(workers);
        self
    }

    /// See [`MapIter::refill`].
    fn refill(&mut self) {
        if self.in_flight.len() > self.w.capacity() / 2 {
            return;
        }
        self.w.resize();
        while !self.timed_out && self.in_flight.len() < self.w.capacity() {
            match self.w.pull() {
                Some(chunk) => {
                    let base = self.next_index;
                    let record = match &chunk {
                        Submitted::Chunk(c) => Some(c.clone()),
                        Submitted::Futures(_) => None,
                    };
                    for f in chunk.into_entries() {
                        let i = self.next_index;
                        self.next_index += 1;
                        f.watch(&self.sink, i);
                        self.in_flight.insert(i, f);
                    }
                    // (after the entries exist: a slot done already is reported at once)
                    if let Some(c) = record {
                        c.watch(&self.sink, base);
                    }
                }
                None => break,
            }
        }
    }
}

impl<R> Iterator for MapUnordered<R> {
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        self.w.started = true;
        self.refill();
        if self.in_flight.is_empty() {
            return None;
        }
        while !self.timed_out {
            match self.queue.pop(self.w.deadline()) {
                Some(i) => {
                    if let Some(f) = self.in_flight.remove(&i) {
                        self.w.consumed += 1;
                        return Some((i, f.result()));
                    }
                }
                None => {
                    // See `MapIter::next`: what is not done now yields `WaitTimeout`.
                    self.timed_out = true;
                    for f in self.in_flight.values_mut() {
                        f.unwatch(&self.sink);
                        f.expire();
                    }
                    self.w.source = None;
                }
            }
        }
        let i = *self.in_flight.keys().min()?;
        let f = self.in_flight.remove(&i)?;
        f.unwatch(&self.sink);
        Some((i, f.result()))
    }
}

impl<R> Drop for MapUnordered<R> {
    fn drop(&mut self) {
        for f in self.in_flight.values() {
            f.unwatch(&self.sink);
            f.cancel();
        }
    }
}

impl<R> fmt::Debug for MapUnordered<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapUnordered")
            .field("chunksize", &self.w.chunksize)
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::future::task_pair;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A source of `total` inputs whose tasks complete at once with their index, counting
    /// how many inputs have been pulled.
    struct Counting {
        next: usize,
        total: usize,
        pulled: Arc<AtomicUsize>,
        /// Inputs from this index on never complete.
        stall_from: usize,
        /// Their promises, held as a pool would hold them (outliving the source).
        keep: Arc<std::sync::Mutex<Vec<crate::future::Promise<usize>>>>,
    }

    impl ChunkSource<usize> for Counting {
        fn next_chunk(&mut self, n: usize) -> Submitted<usize> {
            let mut out = Vec::new();
            while out.len() < n && self.next < self.total {
                let (p, f) = task_pair(None);
                if self.next < self.stall_from {
                    p.complete(Ok(self.next));
                } else {
                    assert!(p.start());
                    self.keep.lock().unwrap().push(p);
                }
                out.push(f);
                self.next += 1;
            }
            self.pulled.store(self.next, Ordering::SeqCst);
            Submitted::Futures(out)
        }
    }

    /// A source that submits each chunk as one completion record; slots from `stall_from`
    /// on start and never finish, the others complete with their input index.
    struct Records {
        next: usize,
        total: usize,
        stall_from: usize,
    }

    impl ChunkSource<usize> for Records {
        fn next_chunk(&mut self, n: usize) -> Submitted<usize> {
            let k = n.min(self.total - self.next);
            let c = ChunkState::new(k);
            for i in 0..k {
                if self.next + i < self.stall_from {
                    c.complete(i, Ok(self.next + i));
                } else {
                    assert!(c.start(i));
                }
            }
            self.next += k;
            Submitted::Chunk(c)
        }
    }

    #[test]
    fn chunk_records_yield_every_item_in_order_and_expire_per_item() {
        let src = Box::new(Records {
            next: 0,
            total: 100,
            stall_from: usize::MAX,
        });
        let v: Vec<usize> = MapIter::new(src, 4)
            .chunksize(7)
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
        let src = Box::new(Records {
            next: 0,
            total: 50,
            stall_from: usize::MAX,
        });
        let mut got: Vec<usize> = MapUnordered::new(src, 4)
            .chunksize(7)
            .map(|(i, r)| {
                assert_eq!(r, Ok(i));
                i
            })
            .collect();
        got.sort();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        // Items 10.. never finish: they yield WaitTimeout at the deadline, one each.
        let src = Box::new(Records {
            next: 0,
            total: 20,
            stall_from: 10,
        });
        let out: Vec<_> = MapIter::new(src, 4)
            .chunksize(4)
            .timeout(Duration::from_millis(50))
            .collect();
        assert_eq!(out.len(), 20);
        assert!(out[..10].iter().enumerate().all(|(i, r)| *r == Ok(i)));
        assert!(out[10..].iter().all(|r| *r == Err(TaskError::WaitTimeout)));
    }

    thread_local! {
        static KEEP: Arc<std::sync::Mutex<Vec<crate::future::Promise<usize>>>> = Arc::default();
    }

    fn source(total: usize, stall_from: usize) -> (Box<dyn ChunkSource<usize>>, Arc<AtomicUsize>) {
        let pulled = Arc::new(AtomicUsize::new(0));
        let s = Counting {
            next: 0,
            total,
            pulled: pulled.clone(),
            stall_from,
            keep: KEEP.with(|k| k.clone()),
        };
        (Box::new(s), pulled)
    }

    #[test]
    fn the_window_bounds_what_is_pulled_and_refills_at_half() {
        let (src, pulled) = source(1000, usize::MAX);
        let mut it = MapIter::new(src, 4).chunksize(5);
        assert_eq!(
            pulled.load(Ordering::SeqCst),
            0,
            "lazy: nothing before next()"
        );
        assert_eq!(it.next(), Some(Ok(0)));
        assert_eq!(pulled.load(Ordering::SeqCst), 20, "window 4 × chunk 5");
        // Drain to half the window before it tops up again.
        for i in 1..=9 {
            assert_eq!(it.next(), Some(Ok(i)));
        }
        assert_eq!(pulled.load(Ordering::SeqCst), 20);
        assert_eq!(it.next(), Some(Ok(10)));
        assert_eq!(
            pulled.load(Ordering::SeqCst),
            30,
            "topped up to 4 chunks in flight"
        );
        let rest: Vec<_> = it.collect();
        assert_eq!(rest.len(), 1000 - 11);
        assert_eq!(pulled.load(Ordering::SeqCst), 1000);
    }

    #[test]
    fn a_deadline_ends_the_map_without_pulling_more() {
        let (src, pulled) = source(1000, 3);
        let got: Vec<_> = MapIter::new(src, 2)
            .chunksize(2)
            .timeout(Duration::from_millis(30))
            .collect();
        let before = pulled.load(Ordering::SeqCst);
        assert_eq!(&got[..3], &[Ok(0), Ok(1), Ok(2)]);
        assert!(
            got[3..].iter().all(|r| *r == Err(TaskError::WaitTimeout)),
            "{got:?}"
        );
        assert_eq!(
            got.len(),
            before,
            "every pulled input yields once, none more pulled"
        );
        assert!(before < 1000);
    }

    #[test]
    fn unordered_yields_every_index_once() {
        let (src, _) = source(100, usize::MAX);
        let mut got: Vec<usize> = MapUnordered::new(src, 3)
            .chunksize(7)
            .map(|(i, r)| {
                assert_eq!(r, Ok(i));
                i
            })
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }
}
