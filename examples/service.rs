//! A long-running service: several request threads submit work to one pool, backpressure
//! keeps the queue bounded, a reporter polls `stats()`, and Ctrl-C (or SIGTERM) shuts down
//! gracefully: stop taking requests, let what was accepted finish (bounded), report.
//!
//! `cargo run --release --example service -- [process|thread] [--seconds N]`
//! (runs until Ctrl-C, or for N seconds)
//!
//! What it shows: `PoolConfig::max_queued` + `submit_timeout` (a request is refused, not
//! queued without bound, when the pool is saturated), `Executor::stats`, `shutdown_timeout`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolrun::{Executor, Mode, Pool, PoolConfig};

/// A request: some CPU work (a checkpoint per step, so thread mode can stop it too).
fn handle(seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..2_000_000 {
        poolrun::gil::checkpoint();
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    x
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode: Mode = args.first().map_or("process", String::as_str).parse()?;
    let seconds: Option<u64> = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?;
    let pool = Arc::new(Pool::new(
        mode,
        PoolConfig::new().workers(2).max_queued(Some(8)),
    )?);

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let (pool, stop) = (pool.clone(), stop.clone());
            let (accepted, refused) = (accepted.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    // Wait at most 2 ms for room; a saturated pool refuses instead of
                    // letting its queue grow.
                    match pool.submit_timeout(handle, c << 32 | n, Duration::from_millis(2)) {
                        Ok(_fut) => accepted.fetch_add(1, Ordering::Relaxed),
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if seconds.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
            stop.store(true, Ordering::Relaxed);
        }
        if last.elapsed() >= Duration::from_secs(1) {
            let s = pool.stats();
            eprintln!(
                "service: {} queued, {} running on {}/{} workers, {} done; {} accepted, {} refused",
                s.queued,
                s.running,
                s.workers_alive,
                s.workers,
                s.completed,
                accepted.load(Ordering::Relaxed),
                refused.load(Ordering::Relaxed)
            );
            last = Instant::now();
        }
    }
    eprintln!("service: stopping: no new requests; finishing what was accepted");
    for c in clients {
        let _ = c.join();
    }
    let clean = pool.shutdown_timeout(false, Duration::from_secs(10));
    let s = pool.stats();
    eprintln!(
        "service: {} completed, {} failed, {} cancelled, {} refused at the door; {}",
        s.completed,
        s.failed,
        s.cancelled,
        refused.load(Ordering::Relaxed),
        if clean {
            "all workers stopped"
        } else {
            "gave up waiting after 10 s"
        }
    );
    if s.completed + s.failed + s.cancelled != accepted.load(Ordering::Relaxed) {
        return Err("an accepted request was lost".into());
    }
    Ok(())
}
