//! Task deadlines for `task_timeout`: one thread per pool sleeping until the earliest
//! deadline, started only when the pool has a timeout.
//!
//! Entries are keyed, and a task that ends before its deadline removes its own entry
//! ([`Timer::cancel`]), so the timer holds one entry per *running* task — never one per task
//! ever run (memory does not grow with throughput × timeout).

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Something that is told its deadline passed.
pub(crate) trait Expire: Send + Sync {
    fn expire(&self, after: Duration);
}

/// A scheduled deadline, for [`Timer::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimerKey(Instant, u64);

#[derive(Default)]
struct Entries {
    by_deadline: BTreeMap<TimerKey, (Duration, Arc<dyn Expire>)>,
    seq: u64,
    stop: bool,
}

#[derive(Default)]
struct Deadlines {
    entries: Mutex<Entries>,
    changed: Condvar,
}

impl Deadlines {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The deadline thread.
pub(crate) struct Timer {
    shared: Arc<Deadlines>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Timer {
    pub(crate) fn start(name: String) -> std::io::Result<Timer> {
        let shared: Arc<Deadlines> = Arc::default();
        let s2 = shared.clone();
        let h = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&s2))?;
        Ok(Timer {
            shared,
            thread: Mutex::new(Some(h)),
        })
    }

    /// Call `target.expire(after)` at `deadline` unless cancelled first.
    pub(crate) fn schedule(
        &self,
        deadline: Instant,
        after: Duration,
        target: Arc<dyn Expire>,
    ) -> TimerKey {
        let mut e = self.shared.lock();
        e.seq += 1;
        let key = TimerKey(deadline, e.seq);
        let earliest = e.by_deadline.keys().next().is_none_or(|first| key < *first);
        e.by_deadline.insert(key, (after, target));
        drop(e);
        if earliest {
            self.shared.changed.notify_one();
        }
        key
    }

    /// Remove a deadline that has not fired (a no-op once it has).
    pub(crate) fn cancel(&self, key: TimerKey) {
        self.shared.lock().by_deadline.remove(&key);
    }

    /// Deadlines not yet fired or cancelled.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().by_deadline.len()
    }

    pub(crate) fn stop(&self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_one();
        let h = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = h {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

fn run(shared: &Deadlines) {
    let mut e = shared.lock();
    loop {
        if e.stop {
            return;
        }
        let now = Instant::now();
        match e.by_deadline.keys().next().copied() {
            None => e = shared.changed.wait(e).unwrap_or_else(|p| p.into_inner()),
            Some(key) if key.0 <= now => {
                let Some((after, target)) = e.by_deadline.remove(&key) else {
                    continue;
                };
                drop(e);
                target.expire(after);
                e = shared.lock();
            }
            Some(key) => {
                e = shared
                    .changed
                    .wait_timeout(e, key.0 - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(AtomicUsize);
    impl Expire for Count {
        fn expire(&self, _: Duration) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn cancelled_entries_are_gone_and_due_ones_fire() {
        let t = Timer::start("timer-test".into()).unwrap();
        let c = Arc::new(Count(AtomicUsize::new(0)));
        let far = Instant::now() + Duration::from_secs(3600);
        let keys: Vec<_> = (0..1000)
            .map(|_| t.schedule(far, Duration::from_secs(3600), c.clone()))
            .collect();
        assert_eq!(t.len(), 1000);
        for k in keys {
            t.cancel(k);
        }
        assert_eq!(t.len(), 0, "finished tasks leave nothing behind");
        t.schedule(Instant::now(), Duration::ZERO, c.clone());
        let start = Instant::now();
        while c.0.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
        assert_eq!(t.len(), 0);
        t.stop();
    }
}
