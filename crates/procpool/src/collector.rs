//! The collector: one thread per worker entry, the owner of that entry's worker process.
//!
//! It forks the worker (through the spawner), attaches it to the scheduler, receives its
//! results and completes their futures (so done-callbacks run in this parent thread, never
//! in a worker), enforces `task_timeout` from the status page, notices the worker's end
//! (its channel disconnects: the exit watcher makes sure it does), detaches it, kills its
//! process group and reaps it by pid, attributes a death to the exact item that was
//! running, re-queues the rest, and forks a replacement — unless the pool is closing, broken
//! or the restart-intensity limit says stop.
//!
//! Nothing a user type does can take this thread down: decoding a result (a panicking
//! `Deserialize`) and running callbacks are caught where they happen, and a panic anywhere
//! else in a worker's life is caught here and treated as that worker's death.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use ipc_channel::ipc::IpcReceiver;
use ipc_channel::{IpcError, TryRecvError};
use nix::unistd::Pid;

use poolrun_core::backend::describe_exit;
use poolrun_core::TaskError;

use crate::child::EXIT_UNSAFE_FORK;
use crate::exitwatch;
use crate::item::{Batch, Item};
use crate::link::Link;
use crate::ring::{PopError, Ring, TAG_MSG, TAG_VIA_CHANNEL};
use crate::scheduler::WorkerLink;
use crate::shared::PoolShared;
use crate::spawn::{self, Lifeline, WorkerHandle};
use crate::status::StatusPage;
use crate::sys::{self, ExitInfo};
use crate::transport::{FromWorker, PayloadReader, Results};

/// How long a worker that closed its channel may take to finish exiting before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// How long a collector spins on its results ring before it sleeps (ring.rs, R3).
const RESULT_SPIN: Duration = Duration::from_micros(20);
/// Without a pidfd exit watcher to close the ring, how often a sleeping collector looks
/// whether its worker's channel disconnected.
const DISCONNECT_POLL: Duration = Duration::from_millis(100);
/// How long a collector waits for a message that a ring marker announced (it was sent
/// before the marker, so it is there unless the worker broke the protocol).
const MARKED_WAIT: Duration = Duration::from_secs(1);

/// An item re-queued this many times (its workers kept dying before running it) fails.
const MAX_REQUEUES: u32 = 16;

/// How a worker's life ended, as its collector saw it.
enum WorkerEnd {
    /// Its result channel closed (it exited or died) or broke.
    Gone,
    /// It exceeded its timeout (the item's own, or `task_timeout`) running this item and
    /// was killed.
    TimedOut(u64, Duration),
    /// Its initializer failed.
    InitFailed(String),
}

/// A worker attached to its scheduler entry, ready for its collector.
pub(crate) struct Started {
    idx: usize,
    pid: Pid,
    rx: IpcReceiver<FromWorker>,
    status: Arc<StatusPage>,
    lifeline: Lifeline,
    results: Arc<Ring>,
    watch: exitwatch::Watch,
    generation: u64,
}

/// Attach a freshly forked worker to entry `idx` (the scheduler may send to it from now on).
pub(crate) fn attach(pool: &PoolShared, idx: usize, h: WorkerHandle) -> Started {
    let WorkerHandle {
        pid,
        tx,
        rx,
        status,
        lifeline,
        rings,
    } = h;
    let watch = exitwatch::watch(pid, rings.results.clone());
    let link = Arc::new(Link::new(pid, tx, rings.jobs, status.clone()));
    let generation = pool.with_sched(|s| {
        let g = s.attach(idx, link.clone());
        if s.is_killing() {
            link.kill(); // raced with the pool's kill: attached now, so killed here
        }
        g
    });
    Started {
        idx,
        pid,
        rx,
        status,
        lifeline,
        results: rings.results,
        watch,
        generation,
    }
}

impl Started {
    /// No collector will run for it: detach, kill and reap it.
    pub(crate) fn abandon(self, pool: &PoolShared) {
        pool.with_sched(|s| s.detach(self.idx, self.generation));
        drop(self.watch);
        sys::reap(self.pid, Duration::ZERO);
    }
}

/// The collector of entry `idx`; `first` is the worker `ProcessPool::new` forked and
/// attached for it.
pub(crate) fn collector(pool: Arc<PoolShared>, idx: usize, first: Option<Started>) {
    let mut next = first;
    let mut lives = 0u64;
    loop {
        let w = match next.take() {
            Some(w) => w,
            None => {
                if !pool.lock().wants_worker(idx) {
                    break;
                }
                if lives > 0 {
                    pool.counters.restarted();
                }
                match spawn::spawn(&pool.setup, 1).pop() {
                    Some(Ok(h)) => attach(&pool, idx, h),
                    Some(Err(e)) => {
                        let n = pool.startup_failure(&format!("could not fork a worker: {e}"));
                        std::thread::sleep(backoff(n));
                        continue;
                    }
                    None => break,
                }
            }
        };
        life(&pool, idx, w);
        lives += 1;
    }
}

fn backoff(failures: usize) -> Duration {
    let shift = failures.saturating_sub(1).min(5) as u32;
    Duration::from_millis(5u64 << shift)
}

/// One worker's life, from attached to reaped.
fn life(pool: &Arc<PoolShared>, idx: usize, w: Started) {
    let Started {
        idx: _,
        pid,
        rx,
        status,
        lifeline,
        results,
        watch,
        generation,
    } = w;
    let (end, ready) = catch_unwind(AssertUnwindSafe(|| {
        receive(pool, idx, generation, &rx, &results, &status, pid)
    }))
    .unwrap_or_else(|p| {
        eprintln!(
            "poolrun: the collector of worker {pid} failed ({}); replacing the worker",
            poolrun_core::backend::panic_message(&*p)
        );
        sys::kill_worker(pid); // not reaped yet: it is ours (F3)
        (WorkerEnd::Gone, true)
    });
    // Detach first: nothing is sent to this worker any more and the scheduler no longer
    // signals it; then the exit watcher lets go of it; only then is the pid reaped (F3).
    let held = pool.with_sched(|s| s.detach(idx, generation));
    drop(watch);
    let killing = pool.lock().is_killing();
    let grace = match end {
        WorkerEnd::Gone | WorkerEnd::InitFailed(_) if !killing => EXIT_GRACE,
        _ => Duration::ZERO,
    };
    let info = sys::reap(pid, grace);
    drop(lifeline);
    let mut held: Vec<Batch> = held;
    // Results it published before it died are still in the ring (R4) or the channel.
    let mut buf = Vec::new();
    while let Ok(tag) = results.pop(&mut buf) {
        let msg = match tag {
            TAG_MSG => postcard::from_bytes::<FromWorker>(&buf).ok(),
            TAG_VIA_CHANNEL => rx.try_recv().ok(),
            _ => None,
        };
        if let Some(FromWorker::Results(res)) = msg {
            deliver_detached(&mut held, &res);
        }
    }
    while let Ok(msg) = rx.try_recv() {
        if let FromWorker::Results(res) = msg {
            deliver_detached(&mut held, &res);
        }
    }
    let (running, _) = status.running();
    settle(pool, idx, held, end, running, pid, info, ready, killing);
}

/// The running item's time limit, looked up once per item: its own timeout when tasks
/// with their own are about (`TaskOptions`), else the pool's `task_timeout`.
#[derive(Default)]
struct RunningLimit {
    /// The item looked up last, and its limit.
    last: Option<(u64, Option<Duration>)>,
}

impl RunningLimit {
    fn limit(&mut self, pool: &PoolShared, idx: usize, id: u64) -> Option<Duration> {
        if !pool
            .per_task_timeouts
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return pool.task_timeout;
        }
        if let Some((last, limit)) = self.last {
            if last == id {
                return limit;
            }
        }
        let own = pool.lock().timeout_of(idx, id).flatten();
        let limit = own.or(pool.task_timeout);
        self.last = Some((id, limit));
        limit
    }
}

/// What one message from the worker means for its collector.
enum Next {
    Continue,
    End(WorkerEnd),
}

/// Receive from the worker until it is gone; returns how it ended and whether it got ready.
///
/// Everything the worker sends comes through its results ring, in order: a message, or a
/// marker for a message on the channel (ring.rs). The collector drains the ring, then
/// spins and sleeps on it; the exit watcher closes the ring when the worker exits, and
/// without one the channel's disconnect is polled.
fn receive(
    pool: &Arc<PoolShared>,
    idx: usize,
    generation: u64,
    rx: &IpcReceiver<FromWorker>,
    results: &Ring,
    status: &StatusPage,
    pid: Pid,
) -> (WorkerEnd, bool) {
    let mut ready = false;
    let mut buf = Vec::new();
    let mut timeouts = RunningLimit::default();
    let handle = |msg: FromWorker, ready: &mut bool| -> Next {
        match msg {
            FromWorker::Ready => {
                *ready = true;
                pool.startup_succeeded();
                Next::Continue
            }
            FromWorker::InitFailed(msg) => Next::End(WorkerEnd::InitFailed(msg)),
            FromWorker::Results(res) => {
                deliver(pool, idx, generation, status, &res);
                Next::Continue
            }
        }
    };
    let broken = |why: &str| {
        eprintln!("poolrun: receiving from worker {pid} failed ({why}); replacing the worker");
        sys::kill_worker(pid); // ours, not reaped (F3)
        WorkerEnd::Gone
    };
    loop {
        // Everything published so far.
        loop {
            let msg = match results.pop(&mut buf) {
                Ok(TAG_MSG) => match postcard::from_bytes::<FromWorker>(&buf) {
                    Ok(m) => m,
                    Err(e) => {
                        return (
                            broken(&format!("a ring message did not decode: {e}")),
                            ready,
                        )
                    }
                },
                Ok(TAG_VIA_CHANNEL) => match rx.try_recv_timeout(MARKED_WAIT) {
                    Ok(m) => m,
                    Err(TryRecvError::IpcError(IpcError::Disconnected)) => {
                        return (WorkerEnd::Gone, ready)
                    }
                    Err(e) => {
                        return (
                            broken(&format!("an announced message is missing: {e:?}")),
                            ready,
                        )
                    }
                },
                Ok(tag) => return (broken(&format!("unknown ring record {tag}")), ready),
                Err(PopError::Corrupt) => return (broken("its results ring is corrupt"), ready),
                Err(PopError::Empty) => break,
            };
            if let Next::End(end) = handle(msg, &mut ready) {
                return (end, ready);
            }
        }
        if results.closed() {
            return (WorkerEnd::Gone, ready); // it exited; what it published is delivered
        }
        // With a timeout for the running item (its own, or the pool's), wake at its
        // deadline; nothing running: wake after one pool timeout at the most (an item that
        // begins meanwhile is seen then), or the disconnect poll.
        let (running, since) = status.running();
        let limit = match running {
            0 => None,
            id => timeouts.limit(pool, idx, id),
        };
        let wait = match limit {
            Some(t) => {
                let deadline =
                    since.saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
                let now = sys::now_ns();
                if now >= deadline {
                    sys::kill_worker(pid); // ours, not reaped (F3)
                    return (WorkerEnd::TimedOut(running, t), ready);
                }
                Duration::from_nanos(deadline - now).min(DISCONNECT_POLL)
            }
            None => pool
                .task_timeout
                .unwrap_or(DISCONNECT_POLL)
                .min(DISCONNECT_POLL),
        };
        results.wait(RESULT_SPIN, Some(wait));
        if !results.core().has_data() && !results.closed() {
            // Woken without news: has the worker gone without an exit watcher to say so?
            match rx.try_recv() {
                Ok(msg) => {
                    if let Next::End(end) = handle(msg, &mut ready) {
                        return (end, ready);
                    }
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::IpcError(IpcError::Disconnected)) => {
                    return (WorkerEnd::Gone, ready)
                }
                Err(TryRecvError::IpcError(e)) => {
                    return (broken(&e.to_string()), ready);
                }
            }
        }
    }
}

/// Complete the futures of finished items (outside every lock: callbacks run here).
fn deliver(
    pool: &Arc<PoolShared>,
    idx: usize,
    generation: u64,
    status: &StatusPage,
    res: &Results,
) {
    let items = pool.with_sched(|s| s.delivered(idx, generation, res.entries.iter().map(|e| e.id)));
    if items.is_empty() {
        return;
    }
    pool.startup_succeeded();
    for it in items.iter().filter(|it| it.is_done()) {
        // Killed, but it ran to its end first: withdraw the mark it no longer needs.
        status.take_mark(it.id);
    }
    complete(items, res);
}

/// Complete `items` (a subsequence of `res`'s entries, in order) from `res`.
fn complete(items: Vec<Item>, res: &Results) {
    let mut items = items.into_iter().peekable();
    let mut payloads = PayloadReader::new(&res.body, &res.large);
    for e in &res.entries {
        let bytes = payloads.next(e.data).unwrap_or(&[]);
        if items.peek().is_none_or(|it| it.id != e.id) {
            continue;
        }
        let Some(item) = items.next() else { break };
        match e.outcome.resolve(bytes) {
            Ok(b) => item.complete_encoded(b),
            Err(err) => item.fail(err),
        }
    }
}

/// Results that arrived after the worker was detached: complete the items still held.
fn deliver_detached(held: &mut [Batch], res: &Results) {
    let mut done = Vec::new();
    for e in &res.entries {
        for b in held.iter_mut() {
            if let Some(pos) = b.items.iter().position(|it| it.id == e.id) {
                if let Some(it) = b.items.remove(pos) {
                    done.push(it);
                }
                break;
            }
        }
    }
    complete(done, res);
}

/// After the worker is gone: attribute its death, re-queue what it held, report.
#[allow(clippy::too_many_arguments)]
fn settle(
    pool: &Arc<PoolShared>,
    idx: usize,
    held: Vec<Batch>,
    end: WorkerEnd,
    running: u64,
    pid: Pid,
    info: ExitInfo,
    ready: bool,
    killing: bool,
) {
    let pid = u32::try_from(pid.as_raw()).unwrap_or(0);
    let blamed = match &end {
        WorkerEnd::TimedOut(id, _) => *id,
        _ => running,
    };
    let mut back = Vec::new();
    let mut failed = Vec::new();
    for mut b in held {
        let items = std::mem::take(&mut b.items);
        let mut keep = VecDeque::new();
        for mut item in items {
            let err = if killing {
                Some(TaskError::Shutdown)
            } else if let WorkerEnd::InitFailed(msg) = &end {
                Some(TaskError::Initializer(msg.clone()))
            } else if blamed != 0 && item.id == blamed {
                Some(match (&end, pool.task_timeout) {
                    (WorkerEnd::TimedOut(_, after), _) => TaskError::TimedOut { after: *after },
                    _ => died(pid, info),
                })
            } else {
                item.requeues += 1;
                (item.requeues > MAX_REQUEUES).then(|| died(pid, info))
            };
            match err {
                Some(e) => failed.push((item, e)),
                None => keep.push_back(item),
            }
        }
        if !keep.is_empty() {
            b.items = keep;
            back.push(b);
        }
    }
    if let WorkerEnd::InitFailed(msg) = &end {
        pool.report_init_failure(pid, msg);
        let err = TaskError::Initializer(msg.clone());
        pool.with_sched(|s| s.poison(idx, err));
    }
    let refused = pool.with_sched(|s| s.requeue_front(back));
    for (item, e) in failed {
        item.fail(e);
    }
    refused.into_iter().for_each(|(b, e)| b.fail_all(&e));
    match end {
        WorkerEnd::InitFailed(_) => {}
        _ if !ready && info.code == Some(EXIT_UNSAFE_FORK) => {
            // Not the worker's fault: it was forked while a host thread was inside a panic
            // hook. Fork again (bounded separately, see `PoolShared::unsafe_fork`).
            pool.unsafe_fork();
        }
        _ if !ready && !killing && pool.lock().wants_worker(idx) => {
            pool.startup_failure(&format!(
                "worker {pid} died before it was ready ({})",
                describe_exit(info.signal, info.code)
            ));
        }
        _ => {}
    }
}

fn died(pid: u32, info: ExitInfo) -> TaskError {
    TaskError::WorkerDied {
        pid,
        signal: info.signal,
        exit_code: info.code,
    }
}
