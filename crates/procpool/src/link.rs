//! [`Link`]: the parent's connection to one live worker process — its pid, its job channel,
//! its status page — and the scheduler's [`WorkerLink`] in the real pool.
//!
//! Sending: the scheduler decides under its lock what goes to a worker, and the messages are
//! queued here in that order ([`post`](Link::post), under the scheduler lock); whoever
//! posted then [`flush`](Link::flush)es after releasing it, holding only this link's send
//! lock. So messages reach each worker in the order the scheduler chose (batch sequence
//! numbers stay in order), and no thread holds the scheduler lock across a system call.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use ipc_channel::ipc::IpcSender;
use nix::unistd::Pid;

use crate::ring::{send_framed, Ring};
use crate::scheduler::{Outgoing, WorkerLink};
use crate::status::StatusPage;
use crate::sys;
use crate::transport::{RunBatch, ToWorker};

/// The parent's side of one live worker (see the module docs).
pub(crate) struct Link {
    pub pid: Pid,
    tx: IpcSender<ToWorker>,
    pub status: Arc<StatusPage>,
    outbox: Mutex<VecDeque<Outgoing>>,
    /// Held while sending (so the jobs ring has one producer at a time), with the encoding
    /// buffer.
    send: Mutex<Vec<u8>>,
    /// The jobs ring (parent → worker).
    jobs: Arc<Ring>,
}

impl Link {
    pub(crate) fn new(
        pid: Pid,
        tx: IpcSender<ToWorker>,
        jobs: Arc<Ring>,
        status: Arc<StatusPage>,
    ) -> Link {
        Link {
            pid,
            tx,
            status,
            outbox: Mutex::new(VecDeque::new()),
            send: Mutex::new(Vec::new()),
            jobs,
        }
    }

    /// Send one message: through the jobs ring when it fits (no memfd, at most
    /// [`MAX_RECORD`] bytes), else on the channel announced by a marker record. The caller
    /// holds the send lock (one producer). With the scheduler's bound on unread messages
    /// the ring always has room for a live worker; no room means a broken worker.
    fn send_one(&self, wire: ToWorker, buf: &mut Vec<u8>) -> Result<(), String> {
        let mut channel_error = None;
        let ok = wire.ring_ok();
        let sent = send_framed(
            wire,
            ok,
            buf,
            |tag, rec| self.jobs.try_push(tag, rec),
            |m| match self.tx.send(m) {
                Ok(()) => true,
                Err(e) => {
                    channel_error = Some(e.to_string());
                    false
                }
            },
        );
        match (sent, channel_error) {
            (true, _) => Ok(()),
            (false, Some(e)) => Err(e),
            (false, None) => Err("its jobs ring is full".into()),
        }
    }

    /// Queue a message (under the scheduler lock, so queue order is the scheduler's order).
    pub(crate) fn post(&self, msg: Outgoing) {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(msg);
    }

    /// Send everything queued, in order. False if a send failed: the worker is gone or its
    /// channel broke (the caller has it killed, so its collector replaces it; what was queued
    /// here is re-queued from the scheduler's record of what the worker held).
    pub(crate) fn flush(&self) -> bool {
        let mut buf = self.send.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let next = self
                .outbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(msg) = next else { return true };
            let wire = match msg {
                Outgoing::Run {
                    seq,
                    trampoline,
                    func,
                    items,
                } => ToWorker::Run(RunBatch::new(seq, trampoline, func, &items)),
                Outgoing::Exit => ToWorker::Exit,
            };
            if let Err(e) = self.send_one(wire, &mut buf) {
                if !sys::has_exited(self.pid) {
                    eprintln!(
                        "poolrun: sending a task to worker {} failed ({e}); replacing the worker",
                        self.pid
                    );
                }
                self.outbox
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                return false;
            }
        }
    }
}

impl WorkerLink for Link {
    fn received(&self) -> u64 {
        self.status.received()
    }

    fn withdraw(&self, seq: u64) -> bool {
        self.status.gate_withdraw(seq)
    }

    fn doom(&self, id: u64) -> bool {
        self.status.doom(id)
    }

    fn unmark(&self, id: u64) {
        self.status.take_mark(id);
    }

    fn kill(&self) {
        sys::kill_worker(self.pid);
    }

    fn pid(&self) -> u32 {
        u32::try_from(self.pid.as_raw()).unwrap_or(0)
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("pid", &self.pid).finish()
    }
}
