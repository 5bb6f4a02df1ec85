//! Task deadlines for `task_timeout`: one thread per pool sleeping until the earliest
//! deadline (a binary heap), started only when the pool has a timeout.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Something that can be told its deadline passed.
pub(crate) trait Expire: Send + Sync {
    fn expire(&self, after: Duration);
}

struct Entry {
    deadline: Instant,
    seq: u64,
    after: Duration,
    target: Arc<dyn Expire>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.deadline, self.seq) == (o.deadline, o.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(o.deadline, o.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    stop: bool,
}

/// The deadline thread.
pub(crate) struct Timer {
    state: Arc<(Mutex<State>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Timer {
    pub(crate) fn start(name: String) -> std::io::Result<Timer> {
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let s2 = state.clone();
        let h = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&s2))?;
        Ok(Timer {
            state,
            thread: Mutex::new(Some(h)),
        })
    }

    pub(crate) fn schedule(&self, deadline: Instant, after: Duration, target: Arc<dyn Expire>) {
        let (m, c) = &*self.state;
        let mut st = m.lock().unwrap_or_else(|p| p.into_inner());
        st.seq += 1;
        let seq = st.seq;
        let earliest = st
            .heap
            .peek()
            .is_none_or(|Reverse(e)| deadline < e.deadline);
        st.heap.push(Reverse(Entry {
            deadline,
            seq,
            after,
            target,
        }));
        drop(st);
        if earliest {
            c.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        let (m, c) = &*self.state;
        m.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        c.notify_one();
        let h = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = h {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

fn run(state: &(Mutex<State>, Condvar)) {
    let (m, c) = state;
    let mut st = m.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if st.stop {
            return;
        }
        let now = Instant::now();
        match st.heap.peek() {
            None => st = c.wait(st).unwrap_or_else(|p| p.into_inner()),
            Some(Reverse(e)) if e.deadline <= now => {
                let Some(Reverse(e)) = st.heap.pop() else {
                    continue;
                };
                drop(st);
                e.target.expire(e.after);
                st = m.lock().unwrap_or_else(|p| p.into_inner());
            }
            Some(Reverse(e)) => {
                let wait = e.deadline - now;
                st = c
                    .wait_timeout(st, wait)
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
