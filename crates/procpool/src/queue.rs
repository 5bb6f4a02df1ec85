//! The pool's shared job queue, its items, and the outstanding-task count.
//!
//! Every submitted task is an [`Item`] (id, encoded argument, type-erased promise). Items
//! travel in [`Job`]s: one per `submit`, one per `map` chunk. The queue lives in the parent
//! (so everything in it stays cancellable, SPEC §3); a worker is handed at most one job ahead
//! of the one it runs.
//!
//! Lock discipline: an item is never dropped, completed or failed while the queue lock or a
//! slot lock is held (completing runs user callbacks, and dropping the last item may wake
//! the queue).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use poolrun_core::{ErasedPromise, TaskError};

/// Task ids: never 0 (0 means "idle" in a status page).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One task.
pub(crate) struct Item {
    /// The pool's id for it.
    pub id: u64,
    /// Its encoded argument (kept until it finishes, so it can be re-sent after a crash).
    pub arg: Vec<u8>,
    promise: Option<ErasedPromise>,
    /// How often it was put back after its worker died before running it.
    pub requeues: u32,
    _token: Token,
}

impl Item {
    /// A new item counted as outstanding in `queue`.
    pub(crate) fn new(queue: &Arc<Queue>, arg: Vec<u8>, promise: ErasedPromise) -> Item {
        queue.outstanding.fetch_add(1, Ordering::SeqCst);
        Item {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            arg,
            promise: Some(promise),
            requeues: 0,
            _token: Token(queue.clone()),
        }
    }

    /// Its promise's key (`Promise::key`), which `TaskFuture::kill` names it by.
    pub(crate) fn key(&self) -> usize {
        self.promise.as_ref().map_or(0, |p| p.key())
    }

    /// True once its future is done (completed, cancelled or killed).
    pub(crate) fn is_done(&self) -> bool {
        self.promise.as_ref().is_none_or(|p| p.is_done())
    }

    /// PENDING → RUNNING; false if it was cancelled.
    pub(crate) fn start(&self) -> bool {
        self.promise.as_ref().is_some_and(|p| p.start())
    }

    /// Cancel it if it has not started.
    pub(crate) fn cancel(&self) -> bool {
        self.promise.as_ref().is_some_and(|p| p.cancel())
    }

    /// Complete with an encoded value (decode failure → `Codec`).
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

/// Decrements the outstanding count when its item is gone, waking the feeders when the last
/// task of a closed pool is done.
struct Token(Arc<Queue>);

impl Drop for Token {
    fn drop(&mut self) {
        if self.0.outstanding.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.is_closed() {
            self.0.wake_all();
        }
    }
}

/// Items that run one function.
#[derive(Debug)]
pub(crate) struct Job {
    /// Trampoline address (transport invariant T1).
    pub trampoline: usize,
    /// Task function address.
    pub func: usize,
    /// The items, in order.
    pub items: VecDeque<Item>,
}

impl Job {
    /// Fail every item (outside any lock).
    pub(crate) fn fail_all(self, err: &TaskError) {
        for it in self.items {
            it.fail(err.clone());
        }
    }
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    broken: Option<String>,
    /// Feeders waiting on `cond` (their slot was idle when they went to sleep).
    idle_waiting: usize,
    /// Feeders waiting on `ahead`.
    ahead_waiting: usize,
}

/// The pool-wide queue.
#[derive(Default)]
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// Feeders of idle workers wait here.
    cond: Condvar,
    /// Feeders of busy workers (wanting a job ahead) wait here.
    ahead: Condvar,
    outstanding: AtomicUsize,
    /// Slots whose live worker has nothing in flight (and may take a task). While there are
    /// any, a feeder that would only hand its busy worker a job *ahead* leaves the job to
    /// them, so a queued task never waits behind a running one while a worker idles.
    idle_slots: AtomicUsize,
    closed: AtomicBool,
    killing: AtomicBool,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("outstanding", &self.outstanding())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Why a job could not be queued.
pub(crate) enum Rejected {
    /// After shutdown.
    Closed(Job),
    /// The pool is broken (the message says why).
    Broken(Job, String),
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Items submitted and not yet finished (queued or in flight).
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::SeqCst)
    }

    /// No new work is accepted.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// The pool is being torn down at once (daemon drop): workers are killed.
    pub(crate) fn is_killing(&self) -> bool {
        self.killing.load(Ordering::SeqCst)
    }

    /// Closed and nothing left to do: workers may exit.
    pub(crate) fn is_finished(&self) -> bool {
        self.is_closed() && self.outstanding() == 0
    }

    /// The broken-pool message, if the pool gave up.
    pub(crate) fn broken(&self) -> Option<String> {
        self.lock().broken.clone()
    }

    /// Wake every thread waiting for a job.
    pub(crate) fn wake_all(&self) {
        let _g = self.lock();
        self.cond.notify_all();
        self.ahead.notify_all();
    }

    /// A slot became idle (`true`) or busy (`false`). Called under that slot's lock.
    pub(crate) fn slot_idle(&self, idle: bool) {
        let wake = if idle {
            // Its feeder may be waiting among the "ahead" feeders.
            self.idle_slots.fetch_add(1, Ordering::SeqCst);
            true
        } else {
            // No idle worker left: feeders wanting a job ahead may take one now.
            self.idle_slots.fetch_sub(1, Ordering::SeqCst) == 1
        };
        if wake {
            // Only queued jobs make a re-check worth a wake-up; a job pushed later wakes
            // the right feeder itself (`wake_one`).
            let st = self.lock();
            if !st.jobs.is_empty() && st.ahead_waiting > 0 {
                self.ahead.notify_all();
            }
        }
    }

    /// Wake one feeder for a new job: an idle worker's first. `locked` proves the caller
    /// holds the queue lock (no lost wake-up).
    fn wake_one(&self, locked: &QueueState) {
        // (each notify is a syscall even with nobody waiting: only notify sleepers)
        if self.idle_slots.load(Ordering::SeqCst) > 0 {
            if locked.idle_waiting > 0 {
                self.cond.notify_one();
            } else if locked.ahead_waiting > 0 {
                // The idle slot's feeder went to sleep before its worker became idle (or
                // is on its way): let the sleepers re-check which kind they are.
                self.ahead.notify_all();
            }
        } else {
            if locked.ahead_waiting > 0 {
                self.ahead.notify_one();
            }
            if locked.idle_waiting > 0 {
                // A feeder asleep as "idle" whose worker got busy since (a direct
                // dispatch) may take the job ahead too.
                self.cond.notify_one();
            }
        }
    }

    /// How many slots are idle right now.
    pub(crate) fn idle_slots(&self) -> usize {
        self.idle_slots.load(Ordering::SeqCst)
    }

    /// True if no job is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().jobs.is_empty()
    }

    /// Queue a new job at the back.
    pub(crate) fn push(&self, job: Job) -> Result<(), Rejected> {
        let mut st = self.lock();
        if let Some(msg) = &st.broken {
            let msg = msg.clone();
            return Err(Rejected::Broken(job, msg));
        }
        if self.is_closed() {
            return Err(Rejected::Closed(job));
        }
        st.jobs.push_back(job);
        self.wake_one(&st);
        Ok(())
    }

    /// Put jobs back at the front, in the given order (after a crash, or when a worker went
    /// away between taking and sending). Accepted even when closed: these are outstanding.
    /// Returns them if the pool is broken (the caller fails them).
    pub(crate) fn push_front(&self, jobs: Vec<Job>) -> Option<(Vec<Job>, String)> {
        if jobs.is_empty() {
            return None;
        }
        let mut st = self.lock();
        if let Some(msg) = &st.broken {
            let msg = msg.clone();
            return Some((jobs, msg));
        }
        for job in jobs.into_iter().rev() {
            st.jobs.push_front(job);
        }
        drop(st);
        self.wake_all();
        None
    }

    /// Take the next job, at most `max_items` of it (the rest stays at the front). Blocks
    /// until there is one; `None` when the pool is finished or being killed, or `stop` is set.
    /// `idle`: the caller's slot is idle (its worker has nothing in flight); such callers are
    /// served first. Slots change this flag before calling [`slot_idle`](Self::slot_idle).
    pub(crate) fn take(
        &self,
        max_items: usize,
        stop: &AtomicBool,
        idle: &AtomicBool,
    ) -> Option<Job> {
        let max_items = max_items.max(1);
        let mut st = self.lock();
        let job = loop {
            if self.is_killing() || stop.load(Ordering::SeqCst) {
                break None;
            }
            let idle = idle.load(Ordering::SeqCst);
            if idle || self.idle_slots.load(Ordering::SeqCst) == 0 {
                if let Some(front) = st.jobs.front_mut() {
                    if front.items.len() <= max_items {
                        break st.jobs.pop_front();
                    }
                    let items: VecDeque<Item> = front.items.drain(..max_items).collect();
                    break Some(Job {
                        trampoline: front.trampoline,
                        func: front.func,
                        items,
                    });
                }
            }
            if self.is_finished() {
                break None;
            }
            // Every state change notifies; the timeout is only a backstop.
            if idle {
                st.idle_waiting += 1;
                st = self
                    .cond
                    .wait_timeout(st, Duration::from_millis(500))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                st.idle_waiting -= 1;
            } else {
                st.ahead_waiting += 1;
                st = self
                    .ahead
                    .wait_timeout(st, Duration::from_millis(500))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                st.ahead_waiting -= 1;
            }
        };
        if !st.jobs.is_empty() {
            // More work (or the rest of a split job) for the next feeder in line.
            self.wake_one(&st);
        }
        job
    }

    /// Stop accepting work; with `cancel_pending`, take every queued job out (the caller
    /// cancels its items outside the lock). Idempotent.
    pub(crate) fn close(&self, cancel_pending: bool) -> Vec<Job> {
        let mut st = self.lock();
        self.closed.store(true, Ordering::SeqCst);
        let out = if cancel_pending {
            st.jobs.drain(..).collect()
        } else {
            Vec::new()
        };
        drop(st);
        self.wake_all();
        out
    }

    /// Daemon teardown: close, mark killing, take every queued job out.
    pub(crate) fn kill(&self) -> Vec<Job> {
        let mut st = self.lock();
        self.closed.store(true, Ordering::SeqCst);
        self.killing.store(true, Ordering::SeqCst);
        let out = st.jobs.drain(..).collect();
        drop(st);
        self.wake_all();
        out
    }

    /// Give up: remember why, take every queued job out (the caller fails them). Returns
    /// `None` if the pool was already broken.
    pub(crate) fn set_broken(&self, msg: &str) -> Option<Vec<Job>> {
        let mut st = self.lock();
        if st.broken.is_some() {
            return None;
        }
        st.broken = Some(msg.to_string());
        let out = st.jobs.drain(..).collect();
        drop(st);
        self.wake_all();
        Some(out)
    }
}
