//! [`ThreadSet`]: a pool's own threads, joinable against a deadline, and detachable.
//!
//! std can only join a thread without a bound; a pool must also offer
//! `shutdown_timeout`, and must never wait for itself (a done-callback that shuts the pool
//! down runs on one of the pool's threads) nor for a thread it has given up on (a
//! thread-mode task that was killed or timed out but never reaches a checkpoint: its future
//! is done, the thread is *detached*). Each thread marks itself finished as it exits, under
//! the set's lock, and wakes joiners: a join waits on a condition variable, not a poll.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, ThreadId};

use crate::Deadline;

struct Member {
    handle: Option<JoinHandle<()>>,
    thread: Option<ThreadId>,
    finished: bool,
    detached: bool,
}

#[derive(Default)]
struct Members {
    entries: HashMap<u64, Member>,
    next: u64,
    /// Threads detached while still running, over the set's life.
    detached_total: u64,
}

#[derive(Default)]
struct SetState {
    members: Mutex<Members>,
    changed: Condvar,
}

impl SetState {
    fn lock(&self) -> MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A set of threads (see the module docs). Cheap to clone: clones share the set.
#[derive(Clone, Default)]
pub struct ThreadSet {
    shared: Arc<SetState>,
}

/// Identifies one thread of a [`ThreadSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThreadKey(u64);

/// Marks the thread finished when it ends, however it ends.
struct Finished {
    shared: Arc<SetState>,
    key: u64,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let mut m = self.shared.lock();
        let remove = match m.entries.get_mut(&self.key) {
            Some(e) => {
                e.finished = true;
                e.detached
            }
            None => false,
        };
        if remove {
            m.entries.remove(&self.key); // nobody joins a detached thread
        }
        drop(m);
        self.shared.changed.notify_all();
    }
}

impl ThreadSet {
    /// An empty set.
    pub fn new() -> Self {
        ThreadSet::default()
    }

    /// Start a named thread running `body` as a member of the set.
    pub fn spawn(
        &self,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<ThreadKey> {
        let key = {
            let mut m = self.shared.lock();
            let key = m.next;
            m.next += 1;
            m.entries.insert(
                key,
                Member {
                    handle: None,
                    thread: None,
                    finished: false,
                    detached: false,
                },
            );
            key
        };
        let guard = Finished {
            shared: self.shared.clone(),
            key,
        };
        match std::thread::Builder::new().name(name).spawn(move || {
            let _guard = guard;
            body();
        }) {
            Ok(h) => {
                let mut m = self.shared.lock();
                if let Some(e) = m.entries.get_mut(&key) {
                    e.thread = Some(h.thread().id());
                    if e.detached {
                        drop(h);
                    } else {
                        e.handle = Some(h);
                    }
                }
                Ok(ThreadKey(key))
            }
            Err(e) => {
                self.shared.lock().entries.remove(&key);
                Err(e)
            }
        }
    }

    /// Stop waiting for this thread: joins skip it, and it is forgotten when it ends.
    /// Returns true if it was still running.
    pub fn detach(&self, key: ThreadKey) -> bool {
        let mut m = self.shared.lock();
        let Some(e) = m.entries.get_mut(&key.0) else {
            return false;
        };
        if e.finished {
            return false;
        }
        if !e.detached {
            e.detached = true;
            e.handle = None;
            m.detached_total += 1;
        }
        drop(m);
        self.shared.changed.notify_all();
        true
    }

    /// Members still running and not detached (the calling thread included).
    pub fn running(&self) -> usize {
        self.shared
            .lock()
            .entries
            .values()
            .filter(|e| !e.finished && !e.detached)
            .count()
    }

    /// Detached members that are still running.
    pub fn detached_running(&self) -> usize {
        self.shared
            .lock()
            .entries
            .values()
            .filter(|e| e.detached && !e.finished)
            .count()
    }

    /// Threads detached while running, over the set's life.
    pub fn detached_total(&self) -> u64 {
        self.shared.lock().detached_total
    }

    /// True if the calling thread is a member.
    pub fn contains_current(&self) -> bool {
        let me = std::thread::current().id();
        self.shared
            .lock()
            .entries
            .values()
            .any(|e| e.thread == Some(me))
    }

    /// Wait until every member except the calling thread and the detached ones has ended,
    /// and join them; false if `deadline` passed first (those still running stay members).
    pub fn join_until(&self, deadline: Deadline) -> bool {
        let me = std::thread::current().id();
        let mut m = self.shared.lock();
        loop {
            let waiting = m
                .entries
                .values()
                .any(|e| !e.finished && !e.detached && e.thread != Some(me));
            if !waiting {
                break;
            }
            match deadline.remaining() {
                None => {
                    m = self
                        .shared
                        .changed
                        .wait(m)
                        .unwrap_or_else(|p| p.into_inner())
                }
                Some(left) if left.is_zero() => return false,
                Some(left) => {
                    m = self
                        .shared
                        .changed
                        .wait_timeout(m, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            }
        }
        let done: Vec<u64> = m
            .entries
            .iter()
            .filter(|(_, e)| e.finished)
            .map(|(k, _)| *k)
            .collect();
        let handles: Vec<JoinHandle<()>> = done
            .iter()
            .filter_map(|k| m.entries.remove(k).and_then(|e| e.handle))
            .collect();
        drop(m);
        for h in handles {
            let _ = h.join();
        }
        true
    }
}

impl std::fmt::Debug for ThreadSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadSet")
            .field("running", &self.running())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn join_with_deadline_and_detach() {
        let set = ThreadSet::new();
        let go = Arc::new(AtomicBool::new(false));
        let g = go.clone();
        let stuck = set
            .spawn("t-stuck".into(), move || {
                while !g.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap();
        set.spawn("t-quick".into(), || {}).unwrap();
        assert!(!set.join_until(Deadline::after(Some(Duration::from_millis(30)))));
        assert!(set.detach(stuck));
        assert_eq!(set.detached_running(), 1);
        assert!(set.join_until(Deadline::after(Some(Duration::from_secs(10)))));
        go.store(true, Ordering::SeqCst);
        let t = std::time::Instant::now();
        while set.detached_running() > 0 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(set.detached_running(), 0);
        assert_eq!(set.detached_total(), 1);
    }

    #[test]
    fn a_member_never_waits_for_itself() {
        let set = ThreadSet::new();
        let s2 = set.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        set.spawn("t-self".into(), move || {
            assert!(s2.contains_current());
            let _ = tx.send(s2.join_until(Deadline::NEVER));
        })
        .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        assert!(set.join_until(Deadline::NEVER));
        assert!(!set.contains_current());
    }
}
