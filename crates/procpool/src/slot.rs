//! One worker slot: the parent-side threads that drive one worker process at a time.
//!
//! - The **feeder** takes jobs from the pool queue and sends them (at most
//!   [`MAX_JOBS_PER_WORKER`] in flight: the one running and one ahead, SPEC §3). A send of a
//!   big payload can block until the worker reads it, so sending lives in its own thread:
//!   the thread that drains the worker's results never blocks on a send (STYLE).
//! - The **collector** owns the worker process: it installs it, receives its results and
//!   completes the futures (so done-callbacks run in this parent thread, never in a worker),
//!   enforces `task_timeout` from the shared status page, notices death (closed channel, or a
//!   zombie on the periodic tick), kills the process group, reaps the pid, attributes the
//!   death to the item that was running, re-queues the rest, and forks a replacement through
//!   the spawner — unless the restart-intensity limit says the pool is broken.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ipc_channel::ipc::IpcBytesSender;
use ipc_channel::{IpcError, TryRecvError};
use nix::unistd::Pid;

use poolrun_core::{codec, TaskError};

use crate::pool::Shared;
use crate::queue::{Item, Job, Queue};
use crate::spawn::{self, WorkerHandle};
use crate::sys::{self, ExitInfo, StatusPage};
use crate::transport::{FromWorker, ResultEntry, ToWorker, WireItem};

/// Jobs a worker may hold: the one it runs and one ahead.
pub(crate) const MAX_JOBS_PER_WORKER: usize = 2;
/// How often an idle collector checks its worker for a death the channel did not report
/// (a task that forked a process which kept a copy of the result channel).
const TICK: Duration = Duration::from_millis(100);
/// How long a worker that closed its channel may take to finish exiting before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);
/// An item re-queued this many times (its worker kept dying before running it) fails.
const MAX_REQUEUES: u32 = 16;

/// The worker currently attached to a slot, as the feeder and the pool see it.
pub(crate) struct Conn {
    pub pid: Pid,
    tx: IpcBytesSender,
    /// The worker's status page (for `kill_item`).
    status: Arc<StatusPage>,
}

#[derive(Default)]
pub(crate) struct SlotState {
    pub conn: Option<Conn>,
    generation: u64,
    /// Jobs sent (or about to be) to the current worker whose results are not all in.
    in_flight: VecDeque<Job>,
    /// Items sent to the current worker (for `max_tasks_per_child`).
    sent: usize,
    /// Set when this slot can run no more tasks: every job it takes fails with this.
    pub poisoned: Option<TaskError>,
    /// Whether this slot is counted in the queue's idle slots.
    counted_idle: bool,
    /// The feeder is waiting on the slot's condvar.
    feeder_waiting: bool,
}

impl SlotState {
    /// Keep the queue's idle-slot count in step with this slot (call after every change).
    fn refresh_idle(&mut self, flag: &AtomicBool, q: &Queue, max_tasks: Option<usize>) {
        let idle = self.conn.is_some()
            && self.poisoned.is_none()
            && self.in_flight.is_empty()
            && max_tasks.is_none_or(|m| self.sent < m);
        if idle != self.counted_idle {
            self.counted_idle = idle;
            flag.store(idle, Ordering::SeqCst);
            q.slot_idle(idle);
        }
    }
}

/// One slot's shared state.
#[derive(Default)]
pub(crate) struct Slot {
    st: Mutex<SlotState>,
    cond: Condvar,
    /// The collector has finished: the feeder stops too.
    done: AtomicBool,
    /// Mirrors `SlotState::counted_idle` for `Queue::take` (read without the slot lock).
    idle: AtomicBool,
}

impl Slot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn notify(&self) {
        let _g = self.lock();
        self.cond.notify_all();
    }

    /// Attach a freshly forked worker: the feeder may send to it from now on.
    pub(crate) fn install(&self, h: &WorkerHandle, shared: &Shared) {
        let mut st = self.lock();
        st.generation += 1;
        st.sent = 0;
        st.conn = Some(Conn {
            pid: h.pid,
            tx: h.tx.clone(),
            status: h.status.clone(),
        });
        st.refresh_idle(&self.idle, &shared.queue, shared.max_tasks);
        self.cond.notify_all();
    }

    /// Poison the slot (pool broken).
    pub(crate) fn poison(&self, err: TaskError, shared: &Shared) {
        let mut st = self.lock();
        if st.poisoned.is_none() {
            st.poisoned = Some(err);
        }
        st.refresh_idle(&self.idle, &shared.queue, shared.max_tasks);
        self.cond.notify_all();
    }

    /// `TaskFuture::kill` of the item whose promise has `key` (its future is already
    /// cancelled): if this slot's worker holds it, doom it in the status page — the worker
    /// then skips it — and if it is running right now, kill the worker (which is then
    /// replaced; the other items it held are re-queued). True if this slot held it.
    pub(crate) fn kill_item(&self, key: usize) -> bool {
        let st = self.lock();
        let Some(id) = st
            .in_flight
            .iter()
            .flat_map(|j| j.items.iter())
            .find(|it| it.key() == key)
            .map(|it| it.id)
        else {
            return false;
        };
        if let Some(c) = &st.conn {
            if c.status.doom(id) {
                // Under the slot lock with `conn` attached: the pid is not reaped (F3).
                sys::kill_worker(c.pid);
            }
        }
        true
    }

    /// SIGKILL the attached worker, if any. Safe with respect to pid reuse: the collector
    /// detaches `conn` under this lock *before* it reaps (invariant F3 in `sys.rs`).
    pub(crate) fn kill_worker(&self) {
        let st = self.lock();
        if let Some(c) = &st.conn {
            sys::kill_worker(c.pid);
        }
    }
}

/// Remove item `id` from the in-flight jobs (normally the first item of the first job).
fn take_item(jobs: &mut VecDeque<Job>, id: u64) -> Option<Item> {
    let (ji, ii) = jobs
        .iter()
        .enumerate()
        .find_map(|(ji, j)| j.items.iter().position(|it| it.id == id).map(|ii| (ji, ii)))?;
    let item = jobs[ji].items.remove(ii);
    if jobs[ji].items.is_empty() {
        jobs.remove(ji);
    }
    item
}

fn encode_job(job: &Job) -> Result<Vec<u8>, TaskError> {
    let msg = ToWorker::Job {
        trampoline: job.trampoline,
        func: job.func,
        items: job
            .items
            .iter()
            .map(|it| WireItem {
                id: it.id,
                arg: &it.arg,
            })
            .collect(),
    };
    codec::encode(&msg)
}

/// The feeder thread of slot `idx`.
pub(crate) fn feeder(shared: Arc<Shared>, idx: usize) {
    let slot = &shared.slots[idx];
    let q = &shared.queue;
    loop {
        // 1. Wait until the worker can take a job (or the slot is poisoned / done).
        let (generation, quota, poison) = {
            let mut st = slot.lock();
            loop {
                if q.is_killing() {
                    return;
                }
                // A poisoned slot keeps failing the jobs it takes until the pool is finished
                // (its collector has already ended); otherwise the feeder ends with it.
                if let Some(e) = &st.poisoned {
                    break (0, usize::MAX, Some(e.clone()));
                }
                if slot.done.load(Ordering::SeqCst) {
                    return;
                }
                if st.conn.is_some() && st.in_flight.len() < MAX_JOBS_PER_WORKER {
                    let left = shared
                        .max_tasks
                        .map_or(usize::MAX, |m| m.saturating_sub(st.sent));
                    if left > 0 {
                        break (st.generation, left, None);
                    }
                }
                // Every change notifies; the timeout is only a backstop.
                st.feeder_waiting = true;
                st = slot
                    .cond
                    .wait_timeout(st, Duration::from_millis(500))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                st.feeder_waiting = false;
            }
        };
        // 2. Take a job.
        static NEVER: AtomicBool = AtomicBool::new(false);
        static ALWAYS: AtomicBool = AtomicBool::new(true);
        let (stop, idle) = if poison.is_some() {
            (&NEVER, &ALWAYS)
        } else {
            (&slot.done, &slot.idle)
        };
        let Some(mut job) = q.take(quota, stop, idle) else {
            if q.is_killing() {
                return;
            }
            if q.is_finished() {
                // Nothing left anywhere: tell the worker to exit (tiny message, nothing in
                // flight, so it cannot block). A worker forked after this is told by its
                // collector.
                send_exit(slot);
                return;
            }
            // The slot's collector ended: re-check (a poisoned slot keeps failing jobs).
            continue;
        };
        if let Some(e) = poison {
            job.fail_all(&e);
            continue;
        }
        // 3. Still the same worker? Then the items start (a cancelled one is skipped: its
        //    future is already done).
        let check = {
            let st = slot.lock();
            if let Some(e) = &st.poisoned {
                Err(Some(e.clone()))
            } else if st.conn.is_none() || st.generation != generation {
                Err(None)
            } else {
                Ok(())
            }
        };
        match check {
            Err(Some(e)) => {
                job.fail_all(&e);
                continue;
            }
            Err(None) => {
                requeue(&shared, vec![job]);
                continue;
            }
            Ok(()) => {}
        }
        let (started, cancelled): (VecDeque<Item>, VecDeque<Item>) =
            job.items.drain(..).partition(|it| it.start());
        drop(cancelled);
        job.items = started;
        if job.items.is_empty() {
            continue;
        }
        let bytes = match encode_job(&job) {
            Ok(b) => b,
            Err(e) => {
                job.fail_all(&e);
                continue;
            }
        };
        // 4. Publish it as in flight, then send without holding any lock.
        let n = job.items.len();
        let tx = {
            let mut st = slot.lock();
            // (a direct dispatch may have used some of the quota meanwhile)
            let fits = shared.max_tasks.is_none_or(|m| st.sent + n <= m);
            match &st.conn {
                Some(c) if st.generation == generation && fits => {
                    let tx = c.tx.clone();
                    // Killed since they started (a `kill` that ran before this publish
                    // could not find them here): the worker must skip them.
                    for it in job.items.iter().filter(|it| it.is_done()) {
                        c.status.doom(it.id);
                    }
                    st.sent += n;
                    st.in_flight.push_back(job);
                    st.refresh_idle(&slot.idle, q, shared.max_tasks);
                    Ok(tx)
                }
                _ => Err(job),
            }
        };
        match tx {
            Err(job) => requeue(&shared, vec![job]),
            Ok(tx) => send_or_kill(slot, generation, &tx, &bytes),
        }
    }
}

/// Ask the slot's worker, if any, to exit (shutdown). Only when nothing is in flight.
fn send_exit(slot: &Slot) {
    let tx = {
        let st = slot.lock();
        if !st.in_flight.is_empty() {
            return;
        }
        st.conn.as_ref().map(|c| c.tx.clone())
    };
    if let (Some(tx), Ok(bytes)) = (tx, codec::encode(&ToWorker::Exit)) {
        let _ = tx.send(&bytes);
    }
}

/// Send a published job. On failure the worker is gone (its collector will see it) or the
/// channel broke: kill it, so the collector re-queues the job and replaces the worker.
fn send_or_kill(slot: &Slot, generation: u64, tx: &IpcBytesSender, bytes: &[u8]) {
    if let Err(e) = tx.send(bytes) {
        let st = slot.lock();
        if st.generation == generation {
            if let Some(c) = &st.conn {
                if !sys::has_exited(c.pid) {
                    eprintln!(
                        "poolrun: sending a task to worker {} failed ({e}); replacing the worker",
                        c.pid
                    );
                }
                sys::kill_worker(c.pid);
            }
        }
    }
}

/// Jobs up to this size may be sent by the submitting thread itself (a message this small
/// fits the idle worker's empty socket buffer, so the send cannot block on the work).
const DIRECT_MAX_BYTES: usize = 64 * 1024;

/// The latency path: when the queue is empty and a worker is idle, the submitting thread
/// hands a small job straight to that worker, saving the wake-up of a feeder thread.
/// Gives the job back if that is not possible (it is then queued as usual).
pub(crate) fn try_direct(shared: &Shared, job: Job) -> Result<(), Job> {
    let q = &shared.queue;
    if q.idle_slots() == 0 {
        return Err(job);
    }
    let size: usize = job.items.iter().map(|it| it.arg.len() + 16).sum();
    if size > DIRECT_MAX_BYTES || !q.is_empty() {
        return Err(job);
    }
    let bytes = match encode_job(&job) {
        Ok(b) => b,
        Err(_) => return Err(job),
    };
    let n = shared.slots.len();
    let start = shared.next_slot();
    for k in 0..n {
        let slot = &shared.slots[(start + k) % n];
        if !slot.idle.load(Ordering::SeqCst) {
            continue;
        }
        let mut st = slot.lock();
        if !st.counted_idle {
            continue;
        }
        let Some(c) = &st.conn else { continue };
        let left = shared
            .max_tasks
            .map_or(usize::MAX, |m| m.saturating_sub(st.sent));
        if job.items.len() > left {
            continue;
        }
        let (tx, generation) = (c.tx.clone(), st.generation);
        // Fresh items: nobody could cancel them yet, so every one starts.
        if !job.items.iter().all(|it| it.start()) {
            drop(st);
            return Err(job);
        }
        st.sent += job.items.len();
        st.in_flight.push_back(job);
        st.refresh_idle(&slot.idle, q, shared.max_tasks);
        drop(st);
        send_or_kill(slot, generation, &tx, &bytes);
        return Ok(());
    }
    Err(job)
}

fn requeue(shared: &Shared, jobs: Vec<Job>) {
    if let Some((jobs, msg)) = shared.queue.push_front(jobs) {
        let err = TaskError::Broken(msg);
        for j in jobs {
            j.fail_all(&err);
        }
    }
}

/// How a worker's life ended, as the collector saw it.
enum End {
    /// Its result channel closed (it exited or died) or broke.
    Gone,
    /// It exceeded `task_timeout` running this item and was killed.
    TimedOut(u64),
    /// Its initializer failed.
    InitFailed(String),
}

/// The collector thread of slot `idx`; `first` is the worker forked (and already installed)
/// by `ProcessPool::new`.
pub(crate) fn collector(shared: Arc<Shared>, idx: usize, first: Option<WorkerHandle>) {
    let slot = &shared.slots[idx];
    let mut next = first;
    loop {
        let (h, installed) = match next.take() {
            Some(h) => (h, true),
            None => {
                if shared.stop_spawning() || slot.lock().poisoned.is_some() {
                    break;
                }
                let r = spawn::spawn(&shared.setup, 1)
                    .pop()
                    .unwrap_or_else(|| Err("no reply from the spawner".into()));
                match r {
                    Ok(h) => (h, false),
                    Err(e) => {
                        let n = shared.startup_failure(&format!("could not fork a worker: {e}"));
                        std::thread::sleep(backoff(n));
                        continue;
                    }
                }
            }
        };
        if !installed {
            slot.install(&h, &shared);
        }
        if shared.queue.is_killing() {
            // Raced with the pool's kill: it may not have seen this worker.
            sys::kill_worker(h.pid);
        }
        let (end, ready) = receive(&shared, slot, &h);
        teardown(&shared, slot, h, end, ready);
    }
    slot.done.store(true, Ordering::SeqCst);
    slot.notify();
    shared.queue.wake_all();
}

fn backoff(failures: usize) -> Duration {
    let shift = failures.saturating_sub(1).min(5) as u32;
    Duration::from_millis(5u64 << shift)
}

/// Receive from the worker until it is gone; returns how it ended and whether it got ready.
fn receive(shared: &Shared, slot: &Slot, h: &WorkerHandle) -> (End, bool) {
    let mut ready = false;
    let mut exit_sent = false;
    loop {
        if !exit_sent && shared.queue.is_finished() {
            // The pool finished while this worker was being forked (its feeder may already
            // be gone): tell it to exit.
            send_exit(slot);
            exit_sent = true;
        }
        let mut wait = TICK;
        if let Some(t) = shared.task_timeout {
            let (running, since) = h.status.running();
            if running != 0 {
                let deadline =
                    since.saturating_add(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
                let now = sys::now_ns();
                if now >= deadline {
                    sys::kill_worker(h.pid);
                    return (End::TimedOut(running), ready);
                }
                wait = wait.min(Duration::from_nanos(deadline - now));
            }
        }
        match h.rx.try_recv_timeout(wait) {
            Ok(FromWorker::Ready) => {
                ready = true;
                shared.startup_succeeded();
            }
            Ok(FromWorker::InitFailed(msg)) => return (End::InitFailed(msg), ready),
            Ok(FromWorker::Results { entries, data }) => deliver(shared, slot, &entries, &data),
            Err(TryRecvError::Empty) => {
                if shared.queue.is_killing() {
                    sys::kill_worker(h.pid);
                    return (End::Gone, ready);
                }
                if sys::has_exited(h.pid) {
                    return (End::Gone, ready);
                }
            }
            Err(TryRecvError::IpcError(IpcError::Disconnected)) => return (End::Gone, ready),
            Err(TryRecvError::IpcError(e)) => {
                eprintln!(
                    "poolrun: receiving from worker {} failed ({e}); replacing the worker",
                    h.pid
                );
                sys::kill_worker(h.pid);
                return (End::Gone, ready);
            }
        }
    }
}

/// Complete the futures of finished items (outside every lock: callbacks run here).
fn deliver(shared: &Shared, slot: &Slot, entries: &[ResultEntry], data: &[u8]) {
    let mut done = Vec::with_capacity(entries.len());
    {
        let mut st = slot.lock();
        for e in entries {
            if let Some(item) = take_item(&mut st.in_flight, e.id) {
                if item.is_done() {
                    // Killed, but it ran to its end first: withdraw the mark it no longer
                    // needs (the worker may have taken it already).
                    if let Some(c) = &st.conn {
                        c.status.take_doomed(item.id);
                    }
                }
                done.push(item);
            }
        }
        st.refresh_idle(&slot.idle, &shared.queue, shared.max_tasks);
        if st.feeder_waiting {
            // (a notify is a syscall even with nobody waiting: skip it when we can)
            slot.cond.notify_all();
        }
    }
    if !done.is_empty() {
        shared.startup_succeeded();
    }
    let mut done = done.into_iter().peekable();
    let mut at = 0usize;
    for e in entries {
        let end = at.saturating_add(e.len).min(data.len());
        let bytes = &data[at.min(end)..end];
        at = end;
        if done.peek().is_some_and(|it| it.id == e.id) {
            if let Some(item) = done.next() {
                match e.outcome.resolve(bytes) {
                    Ok(b) => item.complete_encoded(b),
                    Err(err) => item.fail(err),
                }
            }
        }
    }
}

/// After the worker is gone (or must go): detach, kill the group, reap, collect what it sent
/// before dying, attribute the death, re-queue the rest.
fn teardown(shared: &Shared, slot: &Slot, h: WorkerHandle, end: End, ready: bool) {
    // Detach first: no new job can be published to this worker, and the pool's kill no
    // longer targets this pid (it is about to be reaped, invariant F3).
    {
        let mut st = slot.lock();
        st.conn = None;
        st.refresh_idle(&slot.idle, &shared.queue, shared.max_tasks);
        slot.cond.notify_all();
    }
    let grace = match end {
        End::Gone | End::InitFailed(_) if !shared.queue.is_killing() => EXIT_GRACE,
        _ => Duration::ZERO,
    };
    let info = sys::reap(h.pid, grace);
    // Results flushed before it died are still in the channel.
    while let Ok(msg) = h.rx.try_recv() {
        if let FromWorker::Results { entries, data } = msg {
            deliver(shared, slot, &entries, &data);
        }
    }
    let (running, _) = h.status.running();
    let jobs = std::mem::take(&mut slot.lock().in_flight);
    let killing = shared.queue.is_killing();
    let pid = u32::try_from(h.pid.as_raw()).unwrap_or(0);
    let blamed = match &end {
        End::TimedOut(id) => *id,
        _ => running,
    };
    let mut back = Vec::new();
    let mut failed = Vec::new();
    for mut job in jobs {
        let items = std::mem::take(&mut job.items);
        for mut item in items {
            let err = if killing {
                Some(TaskError::Shutdown)
            } else if let End::InitFailed(msg) = &end {
                Some(TaskError::Initializer(msg.clone()))
            } else if blamed != 0 && item.id == blamed {
                Some(match (&end, shared.task_timeout) {
                    (End::TimedOut(_), Some(after)) => TaskError::TimedOut { after },
                    _ => died(pid, info),
                })
            } else {
                item.requeues += 1;
                if item.requeues > MAX_REQUEUES {
                    Some(died(pid, info))
                } else {
                    None
                }
            };
            match err {
                Some(e) => failed.push((item, e)),
                None => job.items.push_back(item),
            }
        }
        if !job.items.is_empty() {
            back.push(job);
        }
    }
    requeue(shared, back);
    drop(h); // closes the lifeline and the channels; the pid is reaped
    for (item, e) in failed {
        item.fail(e);
    }
    match end {
        End::InitFailed(msg) => {
            shared.report_init_failure(pid, &msg);
            slot.poison(TaskError::Initializer(msg), shared);
        }
        _ if !ready && info.code == Some(crate::worker::EXIT_UNSAFE_FORK) => {
            // Not the worker's fault: it was forked while a host thread was inside a panic
            // hook. Fork again (bounded separately, see `Shared::unsafe_fork`).
            shared.unsafe_fork();
        }
        _ if !ready && !killing && !shared.queue.is_finished() => {
            shared.startup_failure(&format!(
                "worker {pid} died before it was ready ({})",
                describe(info)
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

fn describe(info: ExitInfo) -> String {
    match (info.signal, info.code) {
        (Some(s), _) => format!("killed by signal {s} ({})", poolrun_core::signal_name(s)),
        (None, Some(c)) => format!("exit code {c}"),
        _ => "unknown status".into(),
    }
}
