//! Cost of `gil::checkpoint()` (the eval breaker task code calls in its loops) and of an
//! uncontended `gil::allow_threads` round trip.
//!
//! ```text
//! cargo bench --bench gil_checkpoint
//! ```
//!
//! Cases: a relaxed atomic load (the floor to compare with); `checkpoint()` on a thread with
//! no binding (off-pool); on a worker thread bound without a GIL (`GilMode::Off` pool); on a
//! worker thread holding an uncontended GIL; `allow_threads(|| ())` holding an uncontended GIL
//! (one release + one take). Note: inlined into criterion's loop, the optimiser may hoist
//! the thread-local read out of the loop; the `_not_inlined` case gives an upper bound.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use poolrun::gil::{self, Gil, WorkerBinding};

/// A call the optimiser cannot fold into the benchmark loop (an upper bound: adds a call).
#[inline(never)]
fn checkpoint_not_inlined() {
    gil::checkpoint()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("gil");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    let flag = AtomicBool::new(false);
    g.bench_function("atomic_load_relaxed (floor)", |b| {
        b.iter(|| black_box(flag.load(Ordering::Relaxed)))
    });
    g.bench_function("checkpoint/off_pool", |b| b.iter(gil::checkpoint));
    {
        let binding = WorkerBinding::new(None, Arc::new(AtomicBool::new(false)));
        binding.run_task(|| {
            g.bench_function("checkpoint/bound_no_gil", |b| b.iter(gil::checkpoint));
        });
    }
    {
        let binding = WorkerBinding::new(
            Some(Gil::new(Duration::from_millis(5))),
            Arc::new(AtomicBool::new(false)),
        );
        binding.run_task(|| {
            g.bench_function("checkpoint/gil_held_uncontended", |b| {
                b.iter(gil::checkpoint)
            });
            g.bench_function("checkpoint/gil_held_uncontended_not_inlined", |b| {
                b.iter(checkpoint_not_inlined)
            });
            g.bench_function("allow_threads/gil_held_uncontended", |b| {
                b.iter(|| gil::allow_threads(|| black_box(1u32)))
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
