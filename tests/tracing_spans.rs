//! The `tracing` feature (issue 12): each task runs inside a `task` span (target
//! `poolrun`) in the user's own subscriber, and each completed future emits `task done`.
//! `cargo test --features tracing --test tracing_spans` (CI runs it).
#![cfg(feature = "tracing")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use poolrun::{Executor, Mode, Pool, PoolConfig, TaskError};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Counts `poolrun` spans named `task` and `task done` events.
#[derive(Default)]
struct Counts {
    spans: AtomicUsize,
    done: AtomicUsize,
    next: AtomicUsize,
}

#[derive(Clone, Default)]
struct Counter(Arc<Counts>);

impl std::ops::Deref for Counter {
    type Target = Counts;
    fn deref(&self) -> &Counts {
        &self.0
    }
}

impl Subscriber for Counter {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target() == "poolrun"
    }
    fn new_span(&self, a: &Attributes<'_>) -> Id {
        if a.metadata().name() == "task" {
            self.spans.fetch_add(1, Ordering::SeqCst);
        }
        Id::from_u64(self.next.fetch_add(1, Ordering::SeqCst) as u64 + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        if e.metadata().target() == "poolrun" {
            self.done.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn square(x: u64) -> u64 {
    x * x
}

fn boom(_: ()) -> u64 {
    panic!("boom")
}

#[test]
fn thread_mode_tasks_are_spans_in_the_callers_subscriber() {
    let c = Counter::default();
    tracing::subscriber::set_global_default(c.clone()).expect("subscriber");
    let pool = Pool::new(Mode::Thread, PoolConfig::new().workers(2)).expect("pool");
    let fs: Vec<_> = (0..10).map(|i| pool.submit(square, i)).collect();
    for f in fs {
        assert!(f.result().is_ok());
    }
    assert!(matches!(
        pool.submit(boom, ()).result(),
        Err(TaskError::Panicked { .. })
    ));
    pool.shutdown(true, false);
    assert_eq!(c.spans.load(Ordering::SeqCst), 11, "a span per task run");
    assert_eq!(
        c.done.load(Ordering::SeqCst),
        11,
        "an event per completed future"
    );
    // Process mode: the completions are events in this process (the spans are in the
    // workers' copies of the subscriber).
    let pool = Pool::new(Mode::Process, PoolConfig::new().workers(1)).expect("pool");
    assert_eq!(pool.submit(square, 3).result(), Ok(9));
    assert_eq!(c.done.load(Ordering::SeqCst), 12);
}
