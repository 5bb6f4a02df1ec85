//! GIL fidelity: the same experiments on real CPython and on poolrun's emulated GIL, in one
//! run, side by side.
//!
//! ```text
//! cargo bench --bench gil_fidelity
//! GIL_FIDELITY_REPEAT=5 GIL_FIDELITY_CPU_MS=200 cargo bench --bench gil_fidelity
//! ```
//!
//! It runs `benches/cpython_gil_fidelity.py` with `python3` (override with `PYTHON=...`)
//! first, then the poolrun side, and prints one table: each experiment's ratio in CPython,
//! in poolrun, and their difference (aim: within 15%). The experiments (see the script's
//! docstring for the exact definitions):
//! - `cpu4_thread` / `cpu4_process`: speedup over serial of 4 CPU-bound tasks on 4 threads
//!   under one GIL / on 4 workers with a GIL each (a `ProcessPool` when it is available,
//!   else 4 threads with one GIL each, which is the same thing: no contention);
//! - `sleep4_thread` / `sleep100_thread`: wall time of 4 / 100 sleeping tasks on as many
//!   GIL-bound threads, over one sleep;
//! - `convoy1` / `convoy2` (and at a 0.1 ms interval): how much a thread doing 100 × 1 ms
//!   sleeps slows down beside 1 or 2 CPU-bound threads.
//!
//! Worker threads are plain `std::thread`s bound to a [`Gil`] through [`WorkerBinding`],
//! exactly as the thread pool binds its workers; threads are started before timing (as the
//! script warms its executors).

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use poolrun::gil::{self, Gil, WorkerBinding};
use poolrun::{Executor, GilMode, PoolConfig, ProcessPool};

const SLEEP: Duration = Duration::from_millis(50);
const IO_ITERS: usize = 100;
const IO_SLEEP: Duration = Duration::from_millis(1);

/// CPU-bound loop with a checkpoint per iteration (CPython polls its eval breaker on every
/// backward jump).
fn burn(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = (x + i.wrapping_mul(i)) % 1_000_003;
        gil::checkpoint();
    }
    std::hint::black_box(x)
}

fn calibrate(cpu_ms: f64) -> u64 {
    let mut n = 100_000u64;
    loop {
        let t0 = Instant::now();
        burn(n);
        let dt = t0.elapsed().as_secs_f64();
        if dt > 0.05 {
            return ((n as f64) * (cpu_ms / 1000.0) / dt).max(1.0) as u64;
        }
        n *= 2;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn pct(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((q * v.len() as f64) as usize).min(v.len() - 1)]
}

/// Run `jobs[i]` on its own thread bound to `gils[i]` (None: unbound), all released at
/// once; returns the wall time from release to the last one done, and each job's result.
fn run_bound<T: Send + 'static>(
    gils: Vec<Option<Gil>>,
    jobs: Vec<Box<dyn FnOnce() -> T + Send>>,
) -> (Duration, Vec<T>) {
    let start = Arc::new(Barrier::new(jobs.len() + 1));
    let handles: Vec<_> = gils
        .into_iter()
        .zip(jobs)
        .map(|(g, job)| {
            let start = start.clone();
            thread::spawn(move || {
                let binding = WorkerBinding::new(g, Arc::new(AtomicBool::new(false)));
                start.wait();
                binding.run_task(job)
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let out: Vec<T> = handles
        .into_iter()
        .map(|h| h.join().expect("experiment thread panicked"))
        .collect();
    (t0.elapsed(), out)
}

fn cpu4_serial(n: u64) -> f64 {
    let g = Gil::new(Duration::from_millis(5));
    let (d, _) = run_bound(
        vec![Some(g)],
        vec![Box::new(move || (0..4).map(|_| burn(n)).sum::<u64>())],
    );
    d.as_secs_f64()
}

fn cpu4_gil_threads(n: u64, shared: bool) -> f64 {
    let one = Gil::new(Duration::from_millis(5));
    let gils = (0..4)
        .map(|_| {
            Some(if shared {
                one.clone()
            } else {
                Gil::new(Duration::from_millis(5))
            })
        })
        .collect();
    let jobs: Vec<Box<dyn FnOnce() -> u64 + Send>> =
        (0..4).map(|_| Box::new(move || burn(n)) as _).collect();
    run_bound(gils, jobs).0.as_secs_f64()
}

/// 4 CPU tasks on a 4-worker ProcessPool (each worker its own GIL). None if unavailable.
fn cpu4_process_pool(pool: &ProcessPool, n: u64) -> Option<f64> {
    let t0 = Instant::now();
    let ok = pool.map(burn, vec![n; 4]).all(|r| r.is_ok());
    ok.then(|| t0.elapsed().as_secs_f64())
}

fn sleeps(count: usize) -> f64 {
    let g = Gil::new(Duration::from_millis(5));
    let jobs: Vec<Box<dyn FnOnce() + Send>> = (0..count)
        .map(|_| Box::new(|| gil::allow_threads(|| thread::sleep(SLEEP))) as _)
        .collect();
    let (d, _) = run_bound(vec![Some(g); count], jobs);
    d.as_secs_f64() / SLEEP.as_secs_f64()
}

/// The I/O loop beside `n_cpu` CPU-bound threads: (total seconds, per-iteration seconds).
fn convoy(n_cpu: usize, interval: Duration) -> (f64, Vec<f64>) {
    let g = Gil::new(interval);
    let stop = Arc::new(AtomicBool::new(false));
    let cpus: Vec<_> = (0..n_cpu)
        .map(|_| {
            let g = g.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let b = WorkerBinding::new(Some(g), Arc::new(AtomicBool::new(false)));
                b.run_task(|| {
                    let mut x = 0u64;
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = (x + i.wrapping_mul(i)) % 1_000_003;
                        i += 1;
                        gil::checkpoint();
                    }
                    std::hint::black_box(x);
                })
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(20));
    let io = thread::spawn(move || {
        let b = WorkerBinding::new(Some(g), Arc::new(AtomicBool::new(false)));
        b.run_task(|| {
            let mut per = Vec::with_capacity(IO_ITERS);
            let t0 = Instant::now();
            for _ in 0..IO_ITERS {
                let s = Instant::now();
                gil::allow_threads(|| thread::sleep(IO_SLEEP));
                per.push(s.elapsed().as_secs_f64());
            }
            (t0.elapsed().as_secs_f64(), per)
        })
    });
    let r = io.join().expect("I/O thread panicked");
    stop.store(true, Ordering::Relaxed);
    for c in cpus {
        c.join().expect("CPU thread panicked");
    }
    r
}

/// CPython's results: version, ratios and details, by name.
#[derive(Default)]
struct PyResults {
    version: String,
    ratios: HashMap<String, f64>,
    extra: HashMap<String, f64>,
}

fn cpython(repeat: usize, cpu_ms: f64) -> Result<PyResults, String> {
    let py = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/cpython_gil_fidelity.py"
    );
    let out = Command::new(&py)
        .args([script, "--kv", "--repeat", &repeat.to_string(), "--cpu-ms"])
        .arg(cpu_ms.to_string())
        .output()
        .map_err(|e| format!("cannot run {py}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{py} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut r = PyResults::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut it = line.split_whitespace();
        match (
            it.next(),
            it.next(),
            it.next().and_then(|v| v.parse::<f64>().ok()),
        ) {
            (Some("python"), Some(v), _) => r.version = v.to_string(),
            (Some("ratio"), Some(k), Some(v)) => {
                r.ratios.insert(k.to_string(), v);
            }
            (Some("extra"), Some(k), Some(v)) => {
                r.extra.insert(k.to_string(), v);
            }
            _ => {}
        }
    }
    if r.ratios.is_empty() {
        return Err("the script printed no ratios".into());
    }
    Ok(r)
}

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(default)
}

/// Named values, in the order they were measured.
type Named = Vec<(String, f64)>;

/// One pass of every experiment on poolrun's side: (ratios, details).
fn poolrun_once(n: u64, pool: Option<&ProcessPool>) -> (Named, Named) {
    let mut ratios = Vec::new();
    let mut extra = Vec::new();
    let s = cpu4_serial(n);
    extra.push(("cpu4_serial_s".to_string(), s));
    ratios.push(("cpu4_thread".to_string(), s / cpu4_gil_threads(n, true)));
    let p = pool
        .and_then(|p| cpu4_process_pool(p, n))
        .unwrap_or_else(|| cpu4_gil_threads(n, false));
    ratios.push(("cpu4_process".to_string(), s / p));
    ratios.push(("sleep4_thread".to_string(), sleeps(4)));
    ratios.push(("sleep100_thread".to_string(), sleeps(100)));
    for (interval, suffix) in [
        (Duration::from_millis(5), ""),
        (Duration::from_micros(100), "_0.1ms"),
    ] {
        let alone = convoy(0, interval).0;
        extra.push((format!("io_alone_ms{suffix}"), alone * 1e3));
        for k in [1usize, 2] {
            let (tot, per) = convoy(k, interval);
            let name = format!("convoy{k}{suffix}");
            ratios.push((name.clone(), tot / alone));
            extra.push((format!("{name}_iter_p50_ms"), pct(&per, 0.5) * 1e3));
            extra.push((format!("{name}_iter_p99_ms"), pct(&per, 0.99) * 1e3));
        }
    }
    (ratios, extra)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Median per name, in first-seen order.
fn medians(runs: &[Named]) -> Named {
    let mut names: Vec<String> = Vec::new();
    for run in runs {
        for (k, _) in run {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    names
        .into_iter()
        .map(|k| {
            let vals = runs
                .iter()
                .flat_map(|r| r.iter().filter(|(n, _)| *n == k).map(|(_, v)| *v))
                .collect();
            (k, median(vals))
        })
        .collect()
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let repeat = (env_num("GIL_FIDELITY_REPEAT", 3.0) as usize).max(1);
    let cpu_ms = env_num("GIL_FIDELITY_CPU_MS", 200.0);
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = loadavg();

    let n = calibrate(cpu_ms);
    let pool = ProcessPool::new(PoolConfig::new().workers(4).gil(GilMode::cpython())).ok();
    if let Some(p) = &pool {
        // Warm: every worker forked and ready.
        let _ = p.map(burn, vec![1u64; 8]).count();
    }
    let process_label = if pool.is_some() {
        "ProcessPool(4)"
    } else {
        "4 threads, one GIL each (ProcessPool unavailable)"
    };

    // Rounds alternate CPython and poolrun, so both sides see the same machine conditions.
    let mut py_ratios = Vec::new();
    let mut py_extra = Vec::new();
    let mut py_version = None;
    let mut our_ratios = Vec::new();
    let mut our_extra = Vec::new();
    for round in 1..=repeat {
        eprintln!("round {round}/{repeat}: CPython ...");
        match cpython(1, cpu_ms) {
            Ok(r) => {
                py_version = Some(r.version.clone());
                py_ratios.push(r.ratios.into_iter().collect::<Vec<_>>());
                py_extra.push(r.extra.into_iter().collect::<Vec<_>>());
            }
            Err(e) => eprintln!("CPython side skipped: {e}"),
        }
        eprintln!("round {round}/{repeat}: poolrun ...");
        let (r, x) = poolrun_once(n, pool.as_ref());
        our_ratios.push(r);
        our_extra.push(x);
    }
    if let Some(p) = &pool {
        p.shutdown(true, true);
    }
    let ratios = medians(&our_ratios);
    let extra = medians(&our_extra);
    let py_r: HashMap<String, f64> = medians(&py_ratios).into_iter().collect();
    let py_x: HashMap<String, f64> = medians(&py_extra).into_iter().collect();

    println!();
    println!(
        "GIL fidelity, {cores} cores, {repeat} alternating rounds (medians), CPU task \
         ~{cpu_ms} ms; process row: {process_label}; load average before {load_before}, \
         after {}",
        loadavg()
    );
    if let Some(v) = &py_version {
        println!("CPython {v}");
    }
    println!();
    println!("| experiment | CPython | poolrun | diff | within 15% |");
    println!("|---|---:|---:|---:|:---:|");
    let mut within = 0;
    let mut compared = 0;
    for (k, ours) in &ratios {
        match py_r.get(k) {
            Some(t) => {
                let diff = (ours - t) / t * 100.0;
                compared += 1;
                let ok = diff.abs() <= 15.0;
                within += usize::from(ok);
                println!(
                    "| {k} | {t:.3} | {ours:.3} | {diff:+.1}% | {} |",
                    if ok { "yes" } else { "no" }
                );
            }
            None => println!("| {k} | n/a | {ours:.3} | | |"),
        }
    }
    println!();
    println!("| detail (median of per-round values) | CPython | poolrun |");
    println!("|---|---:|---:|");
    for (k, ours) in &extra {
        let theirs = py_x.get(k).map_or("n/a".to_string(), |t| format!("{t:.3}"));
        println!("| {k} | {theirs} | {ours:.3} |");
    }
    println!();
    println!("{within} of {compared} ratios within 15% of CPython's");
}
