//! `SlurmPool`'s side of the Slurm benchmark (`scripts/bench-slurm.sh` runs it beside the
//! peers, on the same cluster): prints one line `bench n secs` per measurement.
//!
//! ```text
//! cargo run --release -p poolrun-slurm --example slurm_bench -- [-j N] latency ROUNDS
//! cargo run --release -p poolrun-slurm --example slurm_bench -- [-j N] noop N
//! cargo run --release -p poolrun-slurm --example slurm_bench -- [-j N] sleep N MS
//! ```
//!
//! `-j` is the number of array tasks running at once (default 8, the test cluster's CPUs);
//! each runs a local pool of one worker (`cpus_per_task(1)`), like one CPU per raw array
//! element. The `POOLRUN_SLURM_*` variables apply (e.g. `POOLRUN_SLURM_CHUNK`).

use std::time::{Duration, Instant};

use poolrun_core::{Executor, PoolConfig};
use poolrun_slurm::{SlurmConfig, SlurmPool};

fn noop(x: u64) -> u64 {
    x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn usage() -> ! {
    eprintln!("usage: slurm_bench [-j N] latency ROUNDS | noop N | sleep N MS");
    std::process::exit(2)
}

fn num(s: Option<&String>) -> u64 {
    s.and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut workers = 8;
    if args.first().map(String::as_str) == Some("-j") {
        workers = num(args.get(1)) as usize;
        args.drain(..2);
    }
    let slurm = SlurmConfig::from_env().unwrap_or_else(|e| {
        eprintln!("slurm_bench: {e}");
        std::process::exit(2)
    });
    let pool = SlurmPool::new(PoolConfig::new().workers(workers).daemon(false), slurm)
        .unwrap_or_else(|e| {
            eprintln!("slurm_bench: {e}");
            std::process::exit(2)
        });
    let limit = Duration::from_secs(3600);
    match args.first().map(String::as_str) {
        Some("latency") => {
            for _ in 0..num(args.get(1)) {
                let t = Instant::now();
                assert_eq!(pool.submit(noop, 7).result_timeout(limit), Ok(7));
                println!("latency 1 {:.3}", t.elapsed().as_secs_f64());
            }
        }
        Some("noop") => {
            let n = num(args.get(1));
            let t = Instant::now();
            let ok = pool
                .map(noop, 0..n)
                .timeout(limit)
                .filter(Result::is_ok)
                .count();
            assert_eq!(ok as u64, n, "every task succeeded");
            println!("noop {n} {:.3}", t.elapsed().as_secs_f64());
        }
        Some("sleep") => {
            let (n, ms) = (num(args.get(1)), num(args.get(2)));
            let t = Instant::now();
            let ok = pool
                .map(sleep_ms, std::iter::repeat_n(ms, n as usize))
                .timeout(limit)
                .filter(Result::is_ok)
                .count();
            assert_eq!(ok as u64, n, "every task succeeded");
            println!("sleep{ms} {n} {:.3}", t.elapsed().as_secs_f64());
        }
        _ => usage(),
    }
    pool.shutdown(true, false);
}
