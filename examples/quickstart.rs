//! The README's API example, runnable: `cargo run --example quickstart -- process` (or
//! `thread`, or `slurm` with a cluster up: `scripts/slurm/start.sh`).

use std::time::Duration;

use poolrun::{as_completed, Executor, Mode, Pool, PoolConfig, TaskError};

/// Count the primes below `n` (CPU-bound; `checkpoint` lets a GIL-bound thread hand over and
/// lets a thread-mode timeout stop it).
fn count_primes(n: u64) -> u64 {
    (2..n)
        .filter(|&k| {
            poolrun::gil::checkpoint();
            (2..).take_while(|d| d * d <= k).all(|d| k % d != 0)
        })
        .count() as u64
}

fn crash(_: ()) -> u64 {
    std::process::abort()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode: Mode = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "process".into())
        .parse()?;
    let pool = Pool::new(mode, PoolConfig::new().workers(2))?;

    // submit + result
    let fut = pool.submit(count_primes, 100_000);
    fut.add_done_callback(|r| println!("callback: {r:?}"));
    println!("primes below 100000: {}", fut.result()?);

    // map: input order, lazy, one Result per item
    for (n, r) in [10u64, 100, 1000]
        .iter()
        .zip(pool.map(count_primes, vec![10, 100, 1000]))
    {
        println!("primes below {n}: {}", r?);
    }

    // as_completed
    let futs: Vec<_> = (1..=4)
        .map(|i| pool.submit(count_primes, i * 50_000))
        .collect();
    for (i, r) in as_completed(futs) {
        println!("task {i} finished: {r:?}");
    }

    // crash isolation: in process and Slurm mode only this task fails, the pool carries on
    if mode != Mode::Thread {
        match pool
            .submit(crash, ())
            .result_timeout(Duration::from_secs(10))
        {
            Err(e @ TaskError::WorkerDied { .. }) => println!("isolated: {e}"),
            other => println!("unexpected: {other:?}"),
        }
        println!(
            "still working: {:?}",
            pool.submit(count_primes, 1000).result()
        );
    }
    // kill: stop a task that is already running (cancel() only stops queued ones)
    let runaway = pool.submit(count_primes, u64::MAX);
    while !runaway.running() {
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("killed: {} -> {:?}", runaway.kill(), runaway.result());
    println!(
        "still working: {:?}",
        pool.submit(count_primes, 1000).result()
    );

    pool.shutdown(true, false);
    Ok(())
}
