//! The scheduler: the one owner of the process pool's dispatch state — the queue, which
//! worker holds which batches, what each may be sent — as a plain state machine. It does no
//! I/O itself: it talks to workers through the [`WorkerLink`] trait (a real worker's status
//! page and channel in the pool, a fake in the unit tests below) and returns [`Action`]s for
//! the caller to carry out after releasing the scheduler's lock.
//!
//! ## Rules
//! - Everything queued stays in the parent and stays cancellable. A worker holds
//!   at most two batches: the one it runs and one *ahead*.
//! - Idle workers are served first; a batch goes ahead to a busy worker only when no worker
//!   is idle.
//! - **No head-of-line blocking**: when a worker is idle and the queue is empty, a batch
//!   ahead on a busy worker that it has not begun is *withdrawn* (the status page's gate,
//!   `status.rs`) and given to the idle worker.
//! - `max_tasks_per_child`: a worker is never sent more items than its quota; a batch is
//!   split to fit.
//! - Sends never wait (transport invariant T2): a message is small, and a busy worker is
//!   sent another batch only while fewer than [`MAX_UNREAD`] messages to it are unread. An
//!   idle worker is reading, so it may always be sent to.
//! - Every state change is followed by [`Scheduler::dispatch`], under the same lock: there
//!   are no timed wake-ups that would hide a missed one as latency.

use std::collections::VecDeque;
use std::sync::Arc;

use poolrun_core::backend::StartCallback;
use poolrun_core::TaskError;

use crate::item::{Batch, Item};
use crate::transport::Arg;

/// Messages to a busy worker that may be unread before it is sent another batch ahead.
pub(crate) const MAX_UNREAD: u64 = 3;
/// Batches a worker may hold: the one it runs and one ahead.
pub(crate) const MAX_IN_FLIGHT: usize = 2;

/// What the scheduler needs of a live worker.
pub(crate) trait WorkerLink: Send + Sync {
    /// Messages the worker has taken from its channel.
    fn received(&self) -> u64;
    /// Take batch `seq` back if the worker has not begun it.
    fn withdraw(&self, seq: u64) -> bool;
    /// `kill()` of item `id`, which this worker holds: mark it, and claim it if it runs
    /// now; true means "kill the worker".
    fn doom(&self, id: u64) -> bool;
    /// Remove a kill mark the worker will never see (its batch was withdrawn).
    fn unmark(&self, id: u64);
    /// SIGKILL the worker's process group. Only called while the worker is attached.
    fn kill(&self);
    /// The worker's pid.
    fn pid(&self) -> u32;
}

/// A message to a worker, built outside the lock.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// Run these items (batch `seq` on that worker).
    Run {
        seq: u64,
        trampoline: usize,
        func: usize,
        items: Vec<(u64, Arg)>,
    },
    /// Exit: the pool is closed and nothing is left for it.
    Exit,
}

/// What the caller does after releasing the lock.
pub(crate) enum Action<L> {
    /// Send `msg` to the worker behind `link` (queue it on the link under the lock, send it
    /// after).
    Send(Arc<L>, Outgoing),
    /// Fail every item of `batch` with `err` (outside the lock).
    Fail(Batch, TaskError),
    /// Run these start callbacks (outside the lock).
    Started(Vec<StartCallback>),
}

struct Sent {
    seq: u64,
    batch: Batch,
}

struct Attached<L> {
    link: Arc<L>,
    generation: u64,
    /// Batches sent and not finished, in sending order: the front one runs.
    in_flight: VecDeque<Sent>,
    next_seq: u64,
    msgs_sent: u64,
    items_sent: usize,
    exit_sent: bool,
}

impl<L: WorkerLink> Attached<L> {
    fn items(&self) -> usize {
        self.in_flight.iter().map(|s| s.batch.items.len()).sum()
    }
}

#[derive(Default)]
struct WorkerEntry<L> {
    attached: Option<Attached<L>>,
    generation: u64,
    /// This worker's initializer failed: every batch it takes fails with this error.
    poisoned: Option<TaskError>,
}

/// The scheduler (see the module docs).
pub(crate) struct Scheduler<L> {
    queue: VecDeque<Batch>,
    queued_items: usize,
    entries: Vec<WorkerEntry<L>>,
    max_tasks: Option<usize>,
    closed: bool,
    killing: bool,
    broken: Option<String>,
    /// Where the next round of dispatch starts (round robin among equal workers).
    start: usize,
}

impl<L: WorkerLink> Scheduler<L> {
    pub(crate) fn new(workers: usize, max_tasks: Option<usize>) -> Self {
        Scheduler {
            queue: VecDeque::new(),
            queued_items: 0,
            entries: (0..workers)
                .map(|_| WorkerEntry {
                    attached: None,
                    generation: 0,
                    poisoned: None,
                })
                .collect(),
            max_tasks,
            closed: false,
            killing: false,
            broken: None,
            start: 0,
        }
    }

    /// Queue a new batch at the back. Refused (the batch is given back with the error its
    /// items fail with) after shutdown or once the pool is broken.
    pub(crate) fn push(&mut self, batch: Batch) -> Result<(), (Batch, TaskError)> {
        if let Some(msg) = &self.broken {
            return Err((batch, TaskError::Broken(msg.clone())));
        }
        if self.closed {
            return Err((batch, TaskError::Shutdown));
        }
        self.queued_items += batch.items.len();
        self.queue.push_back(batch);
        Ok(())
    }

    /// Put batches back at the front, in order (after a worker died): accepted even when
    /// closed, since they are still owed. Given back, with the error to fail them with, if
    /// the pool is broken.
    pub(crate) fn requeue_front(&mut self, batches: Vec<Batch>) -> Vec<(Batch, TaskError)> {
        if let Some(msg) = &self.broken {
            let err = TaskError::Broken(msg.clone());
            return batches.into_iter().map(|b| (b, err.clone())).collect();
        }
        for b in batches.into_iter().rev() {
            self.queued_items += b.items.len();
            self.queue.push_front(b);
        }
        Vec::new()
    }

    /// A freshly forked worker for entry `idx`; returns its generation.
    pub(crate) fn attach(&mut self, idx: usize, link: Arc<L>) -> u64 {
        let e = &mut self.entries[idx];
        e.generation += 1;
        e.attached = Some(Attached {
            link,
            generation: e.generation,
            in_flight: VecDeque::new(),
            next_seq: 1,
            msgs_sent: 0,
            items_sent: 0,
            exit_sent: false,
        });
        e.generation
    }

    /// The worker of entry `idx` (generation `generation`) is gone or going: from now on
    /// nothing is sent to it and it is never signalled from here (invariant F3). Returns the
    /// batches it held, in order (the front one was running).
    pub(crate) fn detach(&mut self, idx: usize, generation: u64) -> Vec<Batch> {
        let e = &mut self.entries[idx];
        match &e.attached {
            Some(a) if a.generation == generation => {}
            _ => return Vec::new(),
        }
        e.attached
            .take()
            .map(|a| a.in_flight.into_iter().map(|s| s.batch).collect())
            .unwrap_or_default()
    }

    /// The worker's initializer failed: it is not replaced, and every batch its entry takes
    /// fails with `err`.
    pub(crate) fn poison(&mut self, idx: usize, err: TaskError) {
        self.entries[idx].poisoned.get_or_insert(err);
    }

    /// Results for these items arrived from the worker of `idx`: take them out (in the
    /// order given; items the scheduler no longer has for it are skipped).
    pub(crate) fn delivered(
        &mut self,
        idx: usize,
        generation: u64,
        ids: impl IntoIterator<Item = u64>,
    ) -> Vec<Item> {
        let Some(a) = self.attached_mut(idx, generation) else {
            return Vec::new();
        };
        let ids = ids.into_iter();
        let mut out = Vec::with_capacity(ids.size_hint().0);
        for id in ids {
            // Normally the first item of the first batch.
            if let Some(front) = a.in_flight.front_mut() {
                if front.batch.items.front().is_some_and(|it| it.id == id) {
                    out.extend(front.batch.items.pop_front());
                    if front.batch.items.is_empty() {
                        a.in_flight.pop_front();
                    }
                    continue;
                }
            }
            let found = a.in_flight.iter().enumerate().find_map(|(bi, s)| {
                s.batch
                    .items
                    .iter()
                    .position(|it| it.id == id)
                    .map(|ii| (bi, ii))
            });
            if let Some((bi, ii)) = found {
                if let Some(it) = a.in_flight[bi].batch.items.remove(ii) {
                    out.push(it);
                }
                if a.in_flight[bi].batch.items.is_empty() {
                    a.in_flight.remove(bi);
                }
            }
        }
        out
    }

    fn attached_mut(&mut self, idx: usize, generation: u64) -> Option<&mut Attached<L>> {
        self.entries
            .get_mut(idx)?
            .attached
            .as_mut()
            .filter(|a| a.generation == generation)
    }

    /// `TaskFuture::kill` of task `id` (its future is already done): if a worker holds it,
    /// mark it there and kill that worker if it runs it right now. True if a worker held it.
    pub(crate) fn kill_item(&mut self, id: u64) -> bool {
        for e in &self.entries {
            let Some(a) = &e.attached else { continue };
            let held = a
                .in_flight
                .iter()
                .any(|s| s.batch.items.iter().any(|it| it.id == id));
            if held {
                if a.link.doom(id) {
                    a.link.kill(); // attached, under the lock: F3
                }
                return true;
            }
        }
        false
    }

    /// Stop accepting work. With `cancel_pending`, the queued batches are taken out for the
    /// caller to cancel (outside the lock; it gives back, via
    /// [`requeue_front`](Self::requeue_front), items that had already started).
    pub(crate) fn close(&mut self, cancel_pending: bool) -> Vec<Batch> {
        self.closed = true;
        if cancel_pending {
            self.queued_items = 0;
            self.queue.drain(..).collect()
        } else {
            Vec::new()
        }
    }

    /// Daemon teardown: close, take every queued batch out, SIGKILL every worker.
    pub(crate) fn kill_all(&mut self) -> Vec<Batch> {
        self.closed = true;
        self.killing = true;
        self.queued_items = 0;
        for a in self.entries.iter().filter_map(|e| e.attached.as_ref()) {
            a.link.kill();
        }
        self.queue.drain(..).collect()
    }

    /// Give up on the pool: remember why, take every queued batch out (the caller fails
    /// them). `None` if it was broken already.
    pub(crate) fn set_broken(&mut self, msg: &str) -> Option<Vec<Batch>> {
        if self.broken.is_some() {
            return None;
        }
        self.broken = Some(msg.to_string());
        self.queued_items = 0;
        Some(self.queue.drain(..).collect())
    }

    pub(crate) fn is_killing(&self) -> bool {
        self.killing
    }

    /// Should entry `idx` get a new worker now that its last one is gone?
    pub(crate) fn wants_worker(&self, idx: usize) -> bool {
        !self.killing
            && self.broken.is_none()
            && self.entries[idx].poisoned.is_none()
            && (!self.closed || !self.queue.is_empty())
    }

    /// Tasks submitted and not finished: queued or held by a worker.
    pub(crate) fn pending(&self) -> usize {
        self.queued_items
            + self
                .entries
                .iter()
                .filter_map(|e| e.attached.as_ref())
                .map(|a| a.items())
                .sum::<usize>()
    }

    /// True if `link` is the live worker of some entry.
    pub(crate) fn is_attached(&self, link: &Arc<L>) -> bool {
        self.entries
            .iter()
            .filter_map(|e| e.attached.as_ref())
            .any(|a| Arc::ptr_eq(&a.link, link))
    }

    /// Tasks queued and not handed to any worker.
    pub(crate) fn queued(&self) -> usize {
        self.queued_items
    }

    /// The timeout of item `id`, which attached worker `idx` holds: `Some(its own
    /// timeout, if any)`, or `None` if that worker does not hold it.
    pub(crate) fn timeout_of(&self, idx: usize, id: u64) -> Option<Option<std::time::Duration>> {
        let a = self.entries.get(idx)?.attached.as_ref()?;
        a.in_flight
            .iter()
            .flat_map(|s| s.batch.items.iter())
            .find(|it| it.id == id)
            .map(|it| it.timeout)
    }

    /// The attached workers' links.
    pub(crate) fn attached_links(&self) -> Vec<Arc<L>> {
        self.entries
            .iter()
            .filter_map(|e| e.attached.as_ref())
            .map(|a| a.link.clone())
            .collect()
    }

    /// The pids of the attached workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.entries
            .iter()
            .filter_map(|e| e.attached.as_ref())
            .map(|a| a.link.pid())
            .collect()
    }

    /// The front batch of the queue, cut to `max_items`.
    fn take(&mut self, max_items: usize) -> Option<Batch> {
        let front = self.queue.front_mut()?;
        let b = if front.items.len() <= max_items {
            self.queue.pop_front()?
        } else {
            front.split_front(max_items.max(1))
        };
        self.queued_items -= b.items.len();
        Some(b)
    }

    fn quota_left(&self, a: &Attached<L>) -> usize {
        self.max_tasks
            .map_or(usize::MAX, |m| m.saturating_sub(a.items_sent))
    }

    /// Hand out work: see the module docs. Call after every state change.
    pub(crate) fn dispatch(&mut self) -> Vec<Action<L>> {
        let mut out = Vec::new();
        if self.killing {
            return out;
        }
        let n = self.entries.len();
        let start = self.start;
        self.start = (self.start + 1) % n.max(1);
        // 1. Idle workers (and poisoned entries, which fail what they take).
        for k in 0..n {
            let i = (start + k) % n;
            if let Some(err) = self.entries[i].poisoned.clone() {
                if let Some(b) = self.take(usize::MAX) {
                    out.push(Action::Fail(b, err));
                }
                continue;
            }
            let quota = match &self.entries[i].attached {
                Some(a) if a.in_flight.is_empty() && !a.exit_sent => self.quota_left(a),
                _ => continue,
            };
            if quota == 0 {
                continue;
            }
            let batch = match self.take(quota) {
                Some(b) => Some(b),
                None => self.steal(quota),
            };
            if let Some(b) = batch {
                self.send(i, b, &mut out);
            }
        }
        // 2. A batch ahead for busy workers.
        for k in 0..n {
            if self.queue.is_empty() {
                break;
            }
            let i = (start + k) % n;
            let quota = match &self.entries[i].attached {
                Some(a)
                    if a.in_flight.len() < MAX_IN_FLIGHT
                        && !a.exit_sent
                        && a.msgs_sent.saturating_sub(a.link.received()) < MAX_UNREAD =>
                {
                    self.quota_left(a)
                }
                _ => continue,
            };
            if quota > 0 {
                if let Some(b) = self.take(quota) {
                    self.send(i, b, &mut out);
                }
            }
        }
        // 3. Closed and nothing queued: idle workers exit.
        if self.closed && self.queue.is_empty() {
            for e in &mut self.entries {
                if let Some(a) = &mut e.attached {
                    if a.in_flight.is_empty() && !a.exit_sent {
                        a.exit_sent = true;
                        a.msgs_sent += 1;
                        out.push(Action::Send(a.link.clone(), Outgoing::Exit));
                    }
                }
            }
        }
        out
    }

    /// Withdraw a batch ahead on a busy worker (not begun there) for an idle one.
    fn steal(&mut self, quota: usize) -> Option<Batch> {
        for e in self.entries.iter_mut() {
            let Some(a) = &mut e.attached else { continue };
            if a.in_flight.len() < 2 {
                continue;
            }
            let Some(back) = a.in_flight.back() else {
                continue;
            };
            if back.batch.items.len() > quota || !a.link.withdraw(back.seq) {
                continue;
            }
            let Some(sent) = a.in_flight.pop_back() else {
                continue;
            };
            a.items_sent = a.items_sent.saturating_sub(sent.batch.items.len());
            for it in sent.batch.items.iter().filter(|it| it.is_done()) {
                a.link.unmark(it.id); // a kill mark that worker will never read
            }
            return Some(sent.batch);
        }
        None
    }

    /// Send batch `b` to the worker of entry `i` (attached): items cancelled meanwhile are
    /// dropped (their futures are done; dropping them runs nothing), the rest start.
    fn send(&mut self, i: usize, mut b: Batch, out: &mut Vec<Action<L>>) {
        let mut started = Vec::new();
        b.items.retain(|it| it.start(&mut started));
        if !started.is_empty() {
            out.push(Action::Started(started));
        }
        if b.items.is_empty() {
            return;
        }
        let Some(a) = self.entries[i].attached.as_mut() else {
            self.queued_items += b.items.len();
            self.queue.push_front(b);
            return;
        };
        let seq = a.next_seq;
        a.next_seq += 1;
        a.msgs_sent += 1;
        a.items_sent += b.items.len();
        let msg = Outgoing::Run {
            seq,
            trampoline: b.trampoline,
            func: b.func,
            items: b.items.iter().map(|it| (it.id, it.arg.clone())).collect(),
        };
        a.in_flight.push_back(Sent { seq, batch: b });
        out.push(Action::Send(a.link.clone(), msg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolrun_core::backend::{task_pair, ErasedPromise};
    use poolrun_core::TaskFuture;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Mutex;

    /// A worker that never runs anything: the test moves its state by hand.
    #[derive(Default)]
    struct Fake {
        received: AtomicU64,
        /// The batch the worker has begun (withdrawals below it fail).
        begun: AtomicU64,
        withdrawn: Mutex<Vec<u64>>,
        killed: AtomicBool,
        doomed: Mutex<Vec<u64>>,
        running: AtomicU64,
    }

    impl WorkerLink for Fake {
        fn received(&self) -> u64 {
            self.received.load(Ordering::SeqCst)
        }
        fn withdraw(&self, seq: u64) -> bool {
            if self.begun.load(Ordering::SeqCst) >= seq {
                return false;
            }
            self.withdrawn.lock().unwrap().push(seq);
            true
        }
        fn doom(&self, id: u64) -> bool {
            self.doomed.lock().unwrap().push(id);
            self.running.load(Ordering::SeqCst) == id
        }
        fn unmark(&self, _: u64) {}
        fn kill(&self) {
            self.killed.store(true, Ordering::SeqCst);
        }
        fn pid(&self) -> u32 {
            4242
        }
    }

    fn batch(n: usize) -> (Batch, Vec<TaskFuture<u32>>) {
        let (b, f, _) = batch_ids(n);
        (b, f)
    }

    fn batch_ids(n: usize) -> (Batch, Vec<TaskFuture<u32>>, Vec<u64>) {
        let mut futs = Vec::new();
        let items = (0..n)
            .map(|_| {
                let (p, f) = task_pair::<u32>(None);
                futs.push(f);
                Item::new(
                    crate::item::next_ids(1),
                    Arg::new(&[]),
                    ErasedPromise::from(p),
                )
            })
            .collect();
        let b = Batch {
            trampoline: 0,
            func: 0,
            items,
        };
        let ids = b.items.iter().map(|it| it.id).collect();
        (b, futs, ids)
    }

    /// (worker index, seq, item count) of each Run sent, and the number of Exits.
    fn sends(actions: &[Action<Fake>], links: &[Arc<Fake>]) -> (Vec<(usize, u64, usize)>, usize) {
        let mut runs = Vec::new();
        let mut exits = 0;
        for a in actions {
            if let Action::Send(l, m) = a {
                let w = links.iter().position(|x| Arc::ptr_eq(x, l)).unwrap();
                match m {
                    Outgoing::Run { seq, items, .. } => runs.push((w, *seq, items.len())),
                    Outgoing::Exit => exits += 1,
                }
            }
        }
        (runs, exits)
    }

    fn pool(n: usize, max: Option<usize>) -> (Scheduler<Fake>, Vec<Arc<Fake>>, Vec<u64>) {
        let mut s = Scheduler::new(n, max);
        let links: Vec<Arc<Fake>> = (0..n).map(|_| Arc::new(Fake::default())).collect();
        let gens = links
            .iter()
            .enumerate()
            .map(|(i, l)| s.attach(i, l.clone()))
            .collect();
        (s, links, gens)
    }

    #[test]
    fn idle_workers_first_then_one_ahead_each() {
        let (mut s, links, _) = pool(2, None);
        let mut keep = Vec::new();
        for _ in 0..6 {
            let (b, f) = batch(1);
            keep.push(f);
            s.push(b).map_err(|_| ()).unwrap();
        }
        let a = s.dispatch();
        let (runs, _) = sends(&a, &links);
        // Both idle workers first, then one ahead each; two stay queued.
        assert_eq!(runs.len(), 4);
        assert_eq!(runs[..2].iter().map(|r| r.0).collect::<Vec<_>>().len(), 2);
        assert_ne!(runs[0].0, runs[1].0);
        assert_eq!(s.queued(), 2);
        assert_eq!(s.pending(), 6);
        assert!(keep.iter().flatten().take(4).all(|f| f.running()));
        assert!(keep.iter().flatten().skip(4).all(|f| !f.running()));
    }

    #[test]
    fn an_idle_worker_takes_back_a_batch_stuck_behind_a_long_one() {
        // `2 0.1 0.1 2` seconds on two workers: the second short job must not wait for
        // the first long one.
        let (mut s, links, gens) = pool(2, None);
        let mut ids = Vec::new();
        for _ in 0..4 {
            let (b, f) = batch(1);
            ids.push(b.items[0].id);
            std::mem::forget(f);
            s.push(b).map_err(|_| ()).unwrap();
        }
        let (runs, _) = sends(&s.dispatch(), &links);
        let w_long = runs[0].0; // has long (seq 1) + ahead (seq 2)
        let w_short = runs[1].0;
        links[w_long].begun.store(1, Ordering::SeqCst);
        links[w_short].begun.store(1, Ordering::SeqCst);
        // The short one finishes its first job, then its ahead one; the queue is empty.
        let first_short = ids[1];
        let done = s.delivered(w_short, gens[w_short], [first_short]);
        assert_eq!(done.len(), 1);
        let (runs, _) = sends(&s.dispatch(), &links);
        assert!(runs.is_empty(), "it still holds a batch ahead");
        let ahead_short = ids[3];
        assert_eq!(s.delivered(w_short, gens[w_short], [ahead_short]).len(), 1);
        // Now it is idle while the long worker holds one not begun: it is withdrawn.
        let (runs, _) = sends(&s.dispatch(), &links);
        assert_eq!(runs, vec![(w_short, 3, 1)]);
        assert_eq!(*links[w_long].withdrawn.lock().unwrap(), vec![2]);
        // A batch the worker has begun is never taken back.
        let (b, f) = batch(1);
        std::mem::forget(f);
        s.push(b).map_err(|_| ()).unwrap();
        let (runs, _) = sends(&s.dispatch(), &links);
        assert_eq!(runs.len(), 1, "ahead again: {runs:?}");
        links[w_long].begun.store(99, Ordering::SeqCst);
        assert!(sends(&s.dispatch(), &links).0.is_empty());
    }

    #[test]
    fn busy_workers_get_nothing_ahead_while_messages_pile_up() {
        let (mut s, links, _) = pool(1, None);
        for _ in 0..3 {
            let (b, f) = batch(1);
            std::mem::forget(f);
            s.push(b).map_err(|_| ()).unwrap();
        }
        let (runs, _) = sends(&s.dispatch(), &links);
        assert_eq!(runs.len(), 2);
        // Unread: 2 < MAX_UNREAD, but two in flight is the limit anyway.
        assert_eq!(s.queued(), 1);
    }

    #[test]
    fn quota_splits_batches_and_stops_sending() {
        let (mut s, links, gens) = pool(1, Some(3));
        let (b, f) = batch(5);
        std::mem::forget(f);
        s.push(b).map_err(|_| ()).unwrap();
        let (runs, _) = sends(&s.dispatch(), &links);
        assert_eq!(runs, vec![(0, 1, 3)]);
        assert_eq!(s.queued(), 2);
        // The worker exits after its quota; a new one takes the rest.
        let held = s.detach(0, gens[0]);
        assert_eq!(held.len(), 1);
        drop(held);
        let fresh = Arc::new(Fake::default());
        s.attach(0, fresh.clone());
        let (runs, _) = sends(&s.dispatch(), &[fresh]);
        assert_eq!(runs, vec![(0, 1, 2)]);
    }

    #[test]
    fn cancelled_items_are_never_sent_and_close_exits_idle_workers() {
        let (mut s, links, gens) = pool(2, None);
        let (b, futs, ids) = batch_ids(3);
        s.push(b).map_err(|_| ()).unwrap();
        assert!(futs[1].cancel());
        let (runs, _) = sends(&s.dispatch(), &links);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].2, 2, "the cancelled item was dropped");
        let w = runs[0].0;
        assert!(s.close(false).is_empty());
        let a = s.dispatch();
        let (runs, exits) = sends(&a, &links);
        assert!(runs.is_empty());
        assert_eq!(exits, 1, "only the idle worker is told to exit");
        let done = s.delivered(w, gens[w], [ids[0], ids[2]]);
        assert_eq!(done.len(), 2);
        drop(done);
        let (_, exits) = sends(&s.dispatch(), &links);
        assert_eq!(exits, 1, "the other one once it is done");
        assert!(!s.wants_worker(0));
    }

    #[test]
    fn poisoned_entries_fail_what_they_take_and_kill_finds_the_holder() {
        let (mut s, links, _) = pool(2, None);
        s.poison(1, TaskError::Initializer("boom".into()));
        let (b1, _f1) = batch(1);
        let (b2, _f2) = batch(1);
        let id = b1.items[0].id;
        s.push(b1).map_err(|_| ()).unwrap();
        s.push(b2).map_err(|_| ()).unwrap();
        let a = s.dispatch();
        let fails = a
            .iter()
            .filter(|a| matches!(a, Action::Fail(_, TaskError::Initializer(_))))
            .count();
        assert_eq!(fails, 1);
        links[0].running.store(id, Ordering::SeqCst);
        assert!(s.kill_item(id));
        assert!(links[0].killed.load(Ordering::SeqCst));
        assert!(!s.kill_item(123_456_789));
    }

    #[test]
    fn broken_pools_refuse_and_fail_requeues() {
        let (mut s, _links, _) = pool(1, None);
        let (b, _f) = batch(2);
        s.push(b).map_err(|_| ()).unwrap();
        let taken = s.set_broken("too many crashes").unwrap();
        assert_eq!(taken.len(), 1);
        assert!(s.set_broken("again").is_none());
        let (b, _f2) = batch(1);
        assert!(matches!(s.push(b), Err((_, TaskError::Broken(_)))));
        let back = s.requeue_front(taken);
        assert!(matches!(back[..], [(_, TaskError::Broken(_))]));
        assert!(!s.wants_worker(0));
    }
}
