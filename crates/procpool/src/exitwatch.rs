//! The exit watcher: one process-wide thread that learns the instant any worker exits
//! (a `pidfd` per worker, in one `epoll` set) and kills what is left of its process group.
//!
//! Why: a collector learns that its worker died when the result channel reports
//! "disconnected", which needs *every* copy of the worker's sender closed. A task that
//! `fork()`ed without `exec` leaves a copy in its child; that child would keep the channel
//! open after the worker died and the collector would wait forever. Killing the worker's
//! process group as soon as the worker exits ends such children, so the channel always
//! closes — without any periodic "has it exited?" polling.
//!
//! Invariant F3 (`sys.rs`): the watcher signals a group only while the worker is
//! registered, and a collector unregisters its worker ([`Watch`]'s drop) before reaping it,
//! both under the registry lock, so the group id cannot have been recycled.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use nix::unistd::Pid;
use rustix::event::epoll;

use crate::ring::Ring;
use crate::sys;

type Entry = (OwnedFd, Pid, Arc<Ring>);

struct ExitWatcher {
    epoll: OwnedFd,
    /// Registered workers: key → (pidfd, pid, results ring). Closing a pidfd removes it
    /// from the set.
    entries: Mutex<HashMap<u64, Entry>>,
    next: Mutex<u64>,
}

impl ExitWatcher {
    fn entries(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn watcher() -> Option<&'static ExitWatcher> {
    static W: OnceLock<Option<&'static ExitWatcher>> = OnceLock::new();
    *W.get_or_init(|| {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC).ok()?;
        let w: &'static ExitWatcher = Box::leak(Box::new(ExitWatcher {
            epoll,
            entries: Mutex::new(HashMap::new()),
            next: Mutex::new(1),
        }));
        std::thread::Builder::new()
            .name("poolrun-exitwatch".into())
            .spawn(move || run(w))
            .ok()?;
        Some(w)
    })
}

fn run(w: &'static ExitWatcher) {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(32);
    loop {
        events.clear();
        if epoll::wait(&w.epoll, rustix::buffer::spare_capacity(&mut events), None).is_err() {
            continue; // EINTR
        }
        for ev in &events {
            let key = ev.data.u64();
            let mut entries = w.entries();
            if let Some((_pidfd, pid, ring)) = entries.remove(&key) {
                // Still registered, so not reaped (F3): the group id is the worker's own.
                sys::kill_worker(pid);
                // Wake its collector: nothing more will be published (ring.rs, R4).
                ring.close();
            }
        }
    }
}

/// A registered worker; dropping it unregisters (before the collector reaps the pid).
#[derive(Debug)]
pub(crate) struct Watch(Option<u64>);

/// Watch `pid` (a worker, leader of its own process group). If pidfds are not available
/// (Linux before 5.3), nothing is watched: a collector then still sees every ordinary
/// death; only the forked-task case above could keep it waiting.
pub(crate) fn watch(pid: Pid, results: Arc<Ring>) -> Watch {
    let Some(w) = watcher() else {
        return Watch(None);
    };
    let Some(rpid) = rustix::process::Pid::from_raw(pid.as_raw()) else {
        return Watch(None);
    };
    let Ok(pidfd) = rustix::process::pidfd_open(rpid, rustix::process::PidfdFlags::empty()) else {
        return Watch(None);
    };
    let key = {
        let mut n = w.next.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n
    };
    let mut entries = w.entries();
    if epoll::add(
        &w.epoll,
        &pidfd,
        epoll::EventData::new_u64(key),
        epoll::EventFlags::IN | epoll::EventFlags::ONESHOT,
    )
    .is_err()
    {
        return Watch(None);
    }
    entries.insert(key, (pidfd, pid, results));
    Watch(Some(key))
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let (Some(key), Some(w)) = (self.0, watcher()) {
            w.entries().remove(&key);
        }
    }
}
