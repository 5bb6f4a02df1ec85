//! Tiny-task throughput of `ThreadPool` against rayon (`spawn` + a channel) and
//! `std::thread::scope` chunks, all in the same run. CPython's `ThreadPoolExecutor` is
//! measured by `benches/python_thread_peer.py` (see BENCHMARKS.md).
//!
//! `cargo bench --bench threadpool` (set `POOLRUN_BENCH_N` to change the task count,
//! default 1,000,000).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use poolrun::{Executor, PoolConfig, ThreadPool};

fn noop(x: u64) -> u64 {
    black_box(x)
}

fn n_tasks() -> u64 {
    std::env::var("POOLRUN_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000)
}

fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

fn bench(c: &mut Criterion) {
    let n = n_tasks();
    let w = workers();
    let mut g = c.benchmark_group(format!("tiny_tasks_{n}_on_{w}_threads"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(n));

    let pool = ThreadPool::new(PoolConfig::new().workers(w)).expect("pool");
    g.bench_function("poolrun_submit_then_result", |b| {
        b.iter(|| {
            let fs: Vec<_> = (0..n).map(|i| pool.submit(noop, i)).collect();
            let mut s = 0u64;
            for f in fs {
                s = s.wrapping_add(f.result().unwrap_or(0));
            }
            black_box(s)
        })
    });
    g.bench_function("poolrun_map", |b| {
        b.iter(|| black_box(pool.map(noop, 0..n).filter_map(Result::ok).sum::<u64>()))
    });
    g.bench_function("poolrun_map_chunksize_256", |b| {
        b.iter(|| {
            black_box(
                pool.map(noop, 0..n)
                    .chunksize(256)
                    .filter_map(Result::ok)
                    .sum::<u64>(),
            )
        })
    });

    let rpool = rayon::ThreadPoolBuilder::new()
        .num_threads(w)
        .build()
        .expect("rayon pool");
    g.bench_function("rayon_spawn_plus_channel", |b| {
        b.iter(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            for i in 0..n {
                let tx = tx.clone();
                rpool.spawn(move || {
                    let _ = tx.send(noop(i));
                });
            }
            drop(tx);
            black_box(rx.iter().fold(0u64, u64::wrapping_add))
        })
    });
    g.bench_function("std_thread_scope_chunks", |b| {
        b.iter(|| {
            let per = n.div_ceil(w as u64);
            let s: u64 = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..w as u64)
                    .map(|t| {
                        sc.spawn(move || {
                            (t * per..((t + 1) * per).min(n))
                                .fold(0u64, |a, i| a.wrapping_add(noop(i)))
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
            });
            black_box(s)
        })
    });
    g.finish();

    // A one-shot summary line per contender, easy to paste into BENCHMARKS.md.
    let t = Instant::now();
    let fs: Vec<_> = (0..n).map(|i| pool.submit(noop, i)).collect();
    for f in fs {
        let _ = f.result();
    }
    let e = t.elapsed();
    println!(
        "summary: poolrun submit+result {n} tasks on {w} threads: {:.3} s = {:.0} ns/task",
        e.as_secs_f64(),
        e.as_nanos() as f64 / n as f64
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
