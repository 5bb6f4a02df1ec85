//! `poolrun compare`: the seed experiment. Runs one workload serially, on threads under the
//! emulated GIL, on free threads and on processes, for each worker count, and reports wall
//! time, speedup over serial and parallel efficiency per row, then a one-line verdict
//! ("cpu-bound on 2 cores: process 1.9×, thread+GIL 1.0× → use processes"). `--plot` writes
//! an SVG chart of speedup against workers per mode.
//!
//! What is timed: one `map` of all tasks through an already started and warmed pool, until
//! every result is in (pool start-up and shutdown are excluded; serial runs the same task
//! functions in a loop in the calling thread). Every mode's results are checked against the
//! serial results. A mode whose pool cannot be built (or that fails) is shown as a row
//! marked unavailable, and the verdict says what it could not compare.

use std::fmt::Write as _;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use poolrun::gil::{self, GilStats};
use poolrun::{Executor, GilMode, Mode, Pool, PoolConfig, TaskError};

/// Candidates below this are tested for primality by one CPU-bound task (`--workload cpu`);
/// about 100 ms of work on a 2020s x86 core.
const CPU_PRIMES_BELOW: u64 = 1_500_000;
/// One I/O-bound task: a sleep of this many ms with the GIL released.
const IO_SLEEP_MS: u64 = 20;
/// One mixed task: primes below this (about 20 ms) then a sleep of `MIXED_SLEEP_MS`.
const MIXED_PRIMES_BELOW: u64 = 300_000;
const MIXED_SLEEP_MS: u64 = 20;
/// The largest worker count `compare` accepts.
const MAX_JOBS: usize = 1024;

/// The kind of work `compare` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// CPU-bound: each task counts primes by trial division, calling `gil::checkpoint()`.
    Cpu,
    /// I/O-bound: each task sleeps, releasing the GIL (`gil::allow_threads`).
    Io,
    /// Each task computes a little, then sleeps.
    Mixed,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Cpu => "cpu",
            Workload::Io => "io",
            Workload::Mixed => "mixed",
        }
    }

    fn describe(self) -> String {
        match self {
            Workload::Cpu => format!("count primes below {CPU_PRIMES_BELOW}"),
            Workload::Io => format!("sleep {IO_SLEEP_MS} ms (GIL released)"),
            Workload::Mixed => {
                format!("count primes below {MIXED_PRIMES_BELOW}, then sleep {MIXED_SLEEP_MS} ms")
            }
        }
    }
}

/// How `compare` prints its report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table and a verdict line.
    Text,
    /// One JSON object.
    Json,
}

/// Arguments of `poolrun compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// The workload to run.
    #[arg(long, value_enum, default_value_t = Workload::Cpu)]
    pub workload: Workload,
    /// Number of tasks [default: cpu: max(16, 2 × the largest worker count); io: 4 × it,
    /// at least 32; mixed: 2 × it, at least 16 — rounded up to a multiple of it].
    #[arg(long, value_name = "N")]
    pub tasks: Option<usize>,
    /// Worker counts to try, comma-separated [default: 1,2,4,… up to the available cores,
    /// and the core count itself].
    #[arg(
        short = 'j',
        long = "jobs",
        value_name = "N,...",
        value_delimiter = ','
    )]
    pub jobs: Vec<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Also write an SVG chart of speedup against workers per mode to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Run every row N times, round-robin, and keep each row's fastest run (steadier
    /// figures on a busy machine).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat: usize,
    /// The emulated GIL's switch interval in milliseconds (CPython's default: 5).
    #[arg(
        long = "switch-interval",
        value_name = "MS",
        default_value_t = 5.0,
        allow_negative_numbers = true
    )]
    pub switch_interval: f64,
}

/// One way of running the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Serial,
    ThreadGil,
    ThreadFree,
    Process,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Serial => "serial",
            Kind::ThreadGil => "thread+GIL",
            Kind::ThreadFree => "thread (no GIL)",
            Kind::Process => "process",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Kind::Serial => "serial",
            Kind::ThreadGil => "thread_gil",
            Kind::ThreadFree => "thread_nogil",
            Kind::Process => "process",
        }
    }
    fn color(self) -> &'static str {
        match self {
            Kind::Serial => "#888888",
            Kind::ThreadGil => "#d62728",
            Kind::ThreadFree => "#ff7f0e",
            Kind::Process => "#1f77b4",
        }
    }
}

const PARALLEL: [Kind; 3] = [Kind::ThreadGil, Kind::ThreadFree, Kind::Process];

/// One row of the report.
#[derive(Debug, Clone)]
struct Row {
    kind: Kind,
    workers: usize,
    /// Wall time, or why there is none.
    wall: Result<Duration, String>,
    /// GIL counters over the run (thread+GIL rows only).
    gil: Option<GilStats>,
}

/// A validated `compare` invocation.
#[derive(Debug, Clone)]
struct Plan {
    workload: Workload,
    tasks: usize,
    jobs: Vec<usize>,
    interval: Duration,
    cores: usize,
    repeat: usize,
}

#[derive(Debug)]
struct Report {
    plan: Plan,
    /// 1-minute load average just before the run (Linux), to flag a busy machine.
    load_before: Option<f64>,
    serial: Result<Duration, String>,
    rows: Vec<Row>,
}

// ---------------------------------------------------------------- task functions

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Count primes below `n`, polling the eval breaker for every candidate.
fn count_primes(n: u64) -> u64 {
    let mut count = 0;
    for k in 0..n {
        gil::checkpoint();
        if is_prime(k) {
            count += 1;
        }
    }
    count
}

/// CPU-bound task: the number of primes below `n`.
fn cpu_task(n: u64) -> u64 {
    count_primes(n)
}

/// I/O-bound task: sleep `ms` with the GIL released; returns `ms`.
fn io_task(ms: u64) -> u64 {
    gil::allow_threads(|| std::thread::sleep(Duration::from_millis(ms)));
    ms
}

/// Mixed task: count primes below `n`, then sleep `ms` with the GIL released.
fn mixed_task((n, ms): (u64, u64)) -> u64 {
    let c = count_primes(n);
    gil::allow_threads(|| std::thread::sleep(Duration::from_millis(ms)));
    c
}

fn noop(x: u64) -> u64 {
    x
}

// ---------------------------------------------------------------- planning

fn default_jobs(cores: usize) -> Vec<usize> {
    let mut v = vec![];
    let mut j = 1;
    while j < cores {
        v.push(j);
        j *= 2;
    }
    v.push(cores.max(1));
    v
}

fn default_tasks(workload: Workload, max_j: usize) -> usize {
    let n = match workload {
        Workload::Cpu => (2 * max_j).max(16),
        Workload::Io => (4 * max_j).max(32),
        Workload::Mixed => (2 * max_j).max(16),
    };
    n.div_ceil(max_j) * max_j
}

fn plan(args: &CompareArgs, cores: usize) -> Result<Plan, String> {
    let mut jobs = if args.jobs.is_empty() {
        default_jobs(cores)
    } else {
        args.jobs.clone()
    };
    if let Some(bad) = jobs.iter().find(|&&j| j == 0) {
        return Err(format!(
            "-j/--jobs: worker count {bad} is not allowed (must be ≥ 1)"
        ));
    }
    if let Some(bad) = jobs.iter().find(|&&j| j > MAX_JOBS) {
        return Err(format!(
            "-j/--jobs: worker count {bad} is above the maximum {MAX_JOBS}"
        ));
    }
    jobs.sort_unstable();
    jobs.dedup();
    let max_j = *jobs.last().unwrap_or(&1);
    let tasks = match args.tasks {
        Some(0) => return Err("--tasks: 0 tasks is not allowed (must be ≥ 1)".into()),
        Some(n) if n > 1_000_000 => {
            return Err(format!("--tasks: {n} is too many (at most 1000000)"))
        }
        Some(n) => n,
        None => default_tasks(args.workload, max_j),
    };
    if args.repeat == 0 || args.repeat > 100 {
        return Err(format!(
            "--repeat: {} is not allowed (must be 1 to 100)",
            args.repeat
        ));
    }
    let si = args.switch_interval;
    if !si.is_finite() || si <= 0.0 || si > 10_000.0 {
        return Err(format!(
            "--switch-interval: {si} ms is not allowed (must be > 0 and at most 10000)"
        ));
    }
    Ok(Plan {
        workload: args.workload,
        tasks,
        jobs,
        interval: Duration::from_secs_f64(si / 1000.0).max(Duration::from_micros(1)),
        cores,
        repeat: args.repeat,
    })
}

// ---------------------------------------------------------------- running

/// Warm the pool, then run the plan's tasks through `pool.map` once, checking the results;
/// return the wall time and the process-wide GIL counters over that run.
fn run_on(
    pool: &Pool,
    plan: &Plan,
    expected: &[u64],
    limit: Duration,
) -> Result<(Duration, GilStats), String> {
    // Warm: every worker has started and run something.
    let warm: Vec<u64> = (0..(2 * pool.workers()) as u64).collect();
    for r in pool.map(noop, warm).timeout(limit) {
        r.map_err(|e| format!("warm-up failed: {e}"))?;
    }
    let before = gil::stats();
    let wall = run_once(pool, plan, expected, limit)?;
    Ok((wall, gil::stats().since(&before)))
}

/// One timed `map` of all tasks, results checked against `expected`.
fn run_once(
    pool: &Pool,
    plan: &Plan,
    expected: &[u64],
    limit: Duration,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    let got: Vec<Result<u64, TaskError>> = match plan.workload {
        Workload::Cpu => pool
            .map(cpu_task, vec![CPU_PRIMES_BELOW; plan.tasks])
            .timeout(limit)
            .collect(),
        Workload::Io => pool
            .map(io_task, vec![IO_SLEEP_MS; plan.tasks])
            .timeout(limit)
            .collect(),
        Workload::Mixed => pool
            .map(
                mixed_task,
                vec![(MIXED_PRIMES_BELOW, MIXED_SLEEP_MS); plan.tasks],
            )
            .timeout(limit)
            .collect(),
    };
    let wall = t0.elapsed();
    if got.len() != expected.len() {
        return Err(format!(
            "got {} results for {} tasks",
            got.len(),
            expected.len()
        ));
    }
    for (i, (g, e)) in got.into_iter().zip(expected).enumerate() {
        match g {
            Ok(v) if v == *e => {}
            Ok(v) => return Err(format!("task {i} returned {v}, serial gave {e}")),
            Err(err) => return Err(format!("task {i} failed: {err}")),
        }
    }
    Ok(wall)
}

/// One serial run of all tasks in the calling thread: (wall time, results).
fn serial(plan: &Plan) -> (Duration, Vec<u64>) {
    let t0 = Instant::now();
    let out: Vec<u64> = (0..plan.tasks)
        .map(|_| match plan.workload {
            Workload::Cpu => cpu_task(CPU_PRIMES_BELOW),
            Workload::Io => io_task(IO_SLEEP_MS),
            Workload::Mixed => mixed_task((MIXED_PRIMES_BELOW, MIXED_SLEEP_MS)),
        })
        .collect();
    (t0.elapsed(), out)
}

fn measure(kind: Kind, workers: usize, plan: &Plan, expected: &[u64], limit: Duration) -> Row {
    let gil_mode = GilMode::On {
        switch_interval: plan.interval,
    };
    let (mode, cfg) = match kind {
        Kind::ThreadGil => (Mode::Thread, PoolConfig::new().gil(gil_mode)),
        Kind::ThreadFree => (Mode::Thread, PoolConfig::new().gil(GilMode::Off)),
        // Each process has its own GIL, as each CPython process does: no contention.
        Kind::Process => (Mode::Process, PoolConfig::new().gil(gil_mode)),
        Kind::Serial => unreachable!("serial is not run through a pool"),
    };
    let cfg = cfg.workers(workers).daemon(true);
    let r = catch_unwind(AssertUnwindSafe(|| {
        let pool = Pool::new(mode, cfg).map_err(|e| format!("unavailable: {e}"))?;
        let r = run_on(&pool, plan, expected, limit);
        pool.shutdown(r.is_ok(), true);
        r
    }))
    .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&*p))));
    let (wall, gil) = match r {
        Ok((w, g)) => (Ok(w), (kind == Kind::ThreadGil).then_some(g)),
        Err(e) => (Err(e), None),
    };
    Row {
        kind,
        workers,
        wall,
        gil,
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// The 1-minute load average (Linux `/proc/loadavg`), if readable.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Run every row `plan.repeat` times, round-robin (serial, then each mode and worker count,
/// then again), keeping each row's fastest run: a burst of other load then hurts one run of
/// each row rather than every run of one row.
fn execute(plan: Plan, progress: bool) -> Report {
    let load_before = load_average();
    // Warm up (page faults, frequency ramp) so serial is not penalised for going first.
    let _ = std::hint::black_box(count_primes(MIXED_PRIMES_BELOW));
    let (mut serial_wall, expected) = serial(&plan);
    // A mode that takes 20× the serial time (plus a minute) is stuck: give up on it.
    let limit = serial_wall * 20 + Duration::from_secs(60);
    let mut rows: Vec<Row> = vec![];
    for round in 0..plan.repeat {
        if round > 0 {
            serial_wall = serial_wall.min(serial(&plan).0);
        }
        let mut i = 0;
        for kind in PARALLEL {
            for &j in &plan.jobs {
                if progress {
                    eprint!(
                        "\rcompare: round {}/{}: {} × {j} ...          ",
                        round + 1,
                        plan.repeat,
                        kind.label()
                    );
                }
                let row = measure(kind, j, &plan, &expected, limit);
                match rows.get_mut(i) {
                    None => rows.push(row),
                    Some(best) => match (&best.wall, &row.wall) {
                        // A failure in any round is what the row reports.
                        (Err(_), _) => {}
                        (Ok(_), Err(_)) => *best = row,
                        (Ok(b), Ok(w)) if w < b => *best = row,
                        (Ok(_), Ok(_)) => {}
                    },
                }
                i += 1;
            }
        }
    }
    if progress {
        eprint!("\r{:50}\r", "");
    }
    Report {
        plan,
        load_before,
        serial: Ok(serial_wall),
        rows,
    }
}

// ---------------------------------------------------------------- reporting

impl Report {
    fn serial_secs(&self) -> Option<f64> {
        self.serial.as_ref().ok().map(Duration::as_secs_f64)
    }

    fn speedup(&self, row: &Row) -> Option<f64> {
        let s = self.serial_secs()?;
        let w = row.wall.as_ref().ok()?.as_secs_f64();
        (w > 0.0).then(|| s / w)
    }

    /// The best speedup a mode reached, with the worker count it reached it at.
    fn best(&self, kind: Kind) -> Option<(f64, usize)> {
        self.rows
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| Some((self.speedup(r)?, r.workers)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    fn verdict(&self) -> String {
        let p = self.plan.cores;
        let head = match self.plan.workload {
            Workload::Cpu => format!("cpu-bound on {p} cores"),
            Workload::Io => format!("io-bound on {p} cores"),
            Workload::Mixed => format!("mixed workload on {p} cores"),
        };
        let pr = self.best(Kind::Process);
        let gl = self.best(Kind::ThreadGil);
        let fr = self.best(Kind::ThreadFree);
        let show = |x: Option<(f64, usize)>| {
            x.map_or("unavailable".to_string(), |(s, _)| format!("{s:.1}×"))
        };
        // CPU work that does not speed up even on free threads or processes, with more
        // than one worker tried on a multi-core machine: no core was free to use.
        let max_j = self.plan.jobs.last().copied().unwrap_or(1);
        let nothing_scaled = self.plan.workload != Workload::Io
            && self.plan.cores >= 2
            && max_j >= 2
            && [pr, fr].iter().all(|b| b.is_none_or(|(s, _)| s < 1.25))
            && (pr.is_some() || fr.is_some());
        let advice = match (pr, gl) {
            _ if nothing_scaled => "inconclusive: not even free threads or processes sped up, \
                so no core was free (a busy machine?); rerun when it is idle"
                .to_string(),
            (Some((ps, _)), Some((gs, _))) => {
                if ps > gs * 1.15 {
                    "use processes".to_string()
                } else if gs > ps * 1.15 {
                    "use threads".to_string()
                } else {
                    "use threads (as fast as processes, and cheaper)".to_string()
                }
            }
            (Some(_), None) => "thread+GIL could not be measured".to_string(),
            (None, Some(_)) => "processes could not be measured".to_string(),
            (None, None) => "no parallel mode could be measured".to_string(),
        };
        let free = fr.map_or(String::new(), |(s, _)| format!(" (free-threaded: {s:.1}×)"));
        format!(
            "{head}: process {}, thread+GIL {} → {advice}{free}",
            show(pr),
            show(gl)
        )
    }

    /// A warning when other programs were already using the CPU before the run.
    fn busy_note(&self) -> Option<String> {
        let load = self.load_before?;
        (load > 0.25 * self.plan.cores as f64 + 0.25).then(|| {
            format!(
                "note: the load average was {load:.2} on {} cores before this run: other \
                 programs were using the CPU, so speedups may be understated (rerun when \
                 the machine is idle, or with --repeat 3)",
                self.plan.cores
            )
        })
    }

    fn text(&self) -> String {
        let p = &self.plan;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "poolrun compare: {} workload, {} tasks ({}), {} cores, GIL switch interval {} ms",
            p.workload.name(),
            p.tasks,
            p.workload.describe(),
            p.cores,
            fmt_ms(p.interval)
        );
        let _ = writeln!(
            o,
            "wall = one map() of all tasks on a started pool (start-up excluded){}\n",
            if p.repeat > 1 {
                format!(", fastest of {} round-robin rounds", p.repeat)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            o,
            "{:<16} {:>7} {:>10} {:>8} {:>10}  {:>8} {:>7} {:>9}",
            "mode", "workers", "wall", "speedup", "efficiency", "switches", "forced", "GIL wait"
        );
        let serial_line = match &self.serial {
            Ok(d) => format!(
                "{:<16} {:>7} {:>8.3} s {:>7.2}× {:>9.0}%",
                Kind::Serial.label(),
                1,
                d.as_secs_f64(),
                1.0,
                100.0
            ),
            Err(e) => format!("{:<16} {:>7} {e}", Kind::Serial.label(), 1),
        };
        let _ = writeln!(o, "{serial_line}");
        for r in &self.rows {
            match (&r.wall, self.speedup(r)) {
                (Ok(d), Some(s)) => {
                    let _ = write!(
                        o,
                        "{:<16} {:>7} {:>8.3} s {:>7.2}× {:>9.0}%",
                        r.kind.label(),
                        r.workers,
                        d.as_secs_f64(),
                        s,
                        100.0 * s / r.workers as f64
                    );
                    if let Some(g) = &r.gil {
                        let _ = write!(
                            o,
                            "  {:>8} {:>7} {:>7.3} s",
                            g.switches,
                            g.forced_drops,
                            g.wait.as_secs_f64()
                        );
                    }
                    o.push('\n');
                }
                (Err(e), _) => {
                    let _ = writeln!(o, "{:<16} {:>7}   {e}", r.kind.label(), r.workers);
                }
                (Ok(_), None) => {
                    let _ = writeln!(
                        o,
                        "{:<16} {:>7}   (no serial baseline)",
                        r.kind.label(),
                        r.workers
                    );
                }
            }
        }
        let _ = writeln!(o, "\nverdict: {}", self.verdict());
        if let Some(n) = self.busy_note() {
            let _ = writeln!(o, "{n}");
        }
        o
    }

    fn json(&self) -> serde_json::Value {
        let row = |kind: Kind,
                   workers: usize,
                   wall: &Result<Duration, String>,
                   s: Option<f64>,
                   g: Option<&GilStats>| {
            let mut v = serde_json::json!({
                "mode": kind.key(),
                "workers": workers,
                "available": wall.is_ok(),
            });
            match wall {
                Ok(d) => {
                    v["wall_s"] = serde_json::json!(d.as_secs_f64());
                    if let Some(s) = s {
                        v["speedup"] = serde_json::json!(s);
                        v["efficiency"] = serde_json::json!(s / workers as f64);
                    }
                }
                Err(e) => v["error"] = serde_json::json!(e),
            }
            if let Some(g) = g {
                v["gil"] = serde_json::json!({
                    "switches": g.switches,
                    "forced_drops": g.forced_drops,
                    "wait_s": g.wait.as_secs_f64(),
                });
            }
            v
        };
        let mut rows = vec![row(
            Kind::Serial,
            1,
            &self.serial,
            self.serial.is_ok().then_some(1.0),
            None,
        )];
        rows.extend(
            self.rows
                .iter()
                .map(|r| row(r.kind, r.workers, &r.wall, self.speedup(r), r.gil.as_ref())),
        );
        serde_json::json!({
            "workload": self.plan.workload.name(),
            "task": self.plan.workload.describe(),
            "tasks": self.plan.tasks,
            "jobs": self.plan.jobs,
            "cores": self.plan.cores,
            "switch_interval_ms": self.plan.interval.as_secs_f64() * 1000.0,
            "repeat": self.plan.repeat,
            "load_average_before": self.load_before,
            "note": self.busy_note(),
            "rows": rows,
            "verdict": self.verdict(),
        })
    }

    /// An SVG line chart: speedup over serial against worker count, one line per mode, plus
    /// the ideal (speedup = workers, capped at the core count) as a dashed line.
    fn svg(&self) -> String {
        let (w, h) = (720.0f64, 440.0f64);
        let (l, r, t, b) = (70.0, 190.0, 50.0, 60.0);
        let jobs = &self.plan.jobs;
        let n = jobs.len().max(1);
        let xs = |i: usize| {
            if n == 1 {
                l + (w - l - r) / 2.0
            } else {
                l + (w - l - r) * i as f64 / (n - 1) as f64
            }
        };
        let ideal = |j: usize| j.min(self.plan.cores.max(1)) as f64;
        let max_y = self
            .rows
            .iter()
            .filter_map(|r| self.speedup(r))
            .chain(jobs.iter().map(|&j| ideal(j)))
            .fold(1.0f64, f64::max)
            * 1.1;
        let ys = |v: f64| t + (h - t - b) * (1.0 - v / max_y);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            (w - r + l) / 2.0,
            xml_escape(&format!(
                "poolrun compare: {} workload, {} tasks, {} cores",
                self.plan.workload.name(),
                self.plan.tasks,
                self.plan.cores
            ))
        );
        // Axes, grid and ticks.
        let _ = writeln!(
            s,
            r#"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="black"/>"#,
            h - b,
            w - r,
            h - b,
            h - b
        );
        let step = nice_step(max_y);
        let mut v = 0.0;
        while v <= max_y + 1e-9 {
            let y = ys(v);
            let _ = writeln!(
                s,
                r##"<line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}×</text>"##,
                w - r,
                l - 6.0,
                y + 4.0,
                trim_num(v)
            );
            v += step;
        }
        for (i, j) in jobs.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{j}</text>"#,
                xs(i),
                h - b + 18.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">workers</text>"#,
            (w - r + l) / 2.0,
            h - 14.0
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">speedup over serial</text>"#,
            (h - b + t) / 2.0,
            (h - b + t) / 2.0
        );
        // Ideal and serial baselines.
        let pts: Vec<String> = jobs
            .iter()
            .enumerate()
            .map(|(i, &j)| format!("{:.1},{:.1}", xs(i), ys(ideal(j))))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#2ca02c" stroke-dasharray="6 4"/>"##,
            pts.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<line x1="{l}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="{2}" stroke-dasharray="2 3"/>"#,
            ys(1.0),
            w - r,
            Kind::Serial.color()
        );
        // One line per mode.
        for kind in PARALLEL {
            let pts: Vec<(f64, f64)> = jobs
                .iter()
                .enumerate()
                .filter_map(|(i, &j)| {
                    let row = self
                        .rows
                        .iter()
                        .find(|r| r.kind == kind && r.workers == j)?;
                    Some((xs(i), ys(self.speedup(row)?)))
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                p.join(" "),
                kind.color()
            );
            for (x, y) in pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{}"/>"#,
                    kind.color()
                );
            }
        }
        // Legend.
        let legend: Vec<(String, &str, &str)> = PARALLEL
            .iter()
            .map(|k| {
                let label = if self.best(*k).is_some() {
                    k.label().to_string()
                } else {
                    format!("{} (unavailable)", k.label())
                };
                (label, k.color(), "")
            })
            .chain([
                ("ideal".to_string(), "#2ca02c", "6 4"),
                ("serial".to_string(), Kind::Serial.color(), "2 3"),
            ])
            .collect();
        for (i, (label, color, dash)) in legend.iter().enumerate() {
            let y = t + 10.0 + 20.0 * i as f64;
            let x = w - r + 15.0;
            let _ = writeln!(
                s,
                r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}">{}</text>"#,
                x + 24.0,
                x + 30.0,
                y + 4.0,
                xml_escape(label)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="8" y="{}" font-size="10">{}</text>"#,
            h - 2.0,
            xml_escape(&self.verdict())
        );
        s.push_str("</svg>\n");
        s
    }
}

fn fmt_ms(d: Duration) -> String {
    trim_num(d.as_secs_f64() * 1000.0)
}

fn trim_num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn nice_step(max: f64) -> f64 {
    let raw = max / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if raw <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// ---------------------------------------------------------------- entry point

/// Run `poolrun compare` and return the process exit code: 0 on success, 2 on bad arguments
/// (message on stderr), 1 if the report or the plot could not be written.
pub fn run(args: &CompareArgs) -> i32 {
    // Not `stdout().lock()`: the lock must not be held while pools run (the process pool
    // takes it around fork so no child inherits it mid-write).
    run_to(args, &mut std::io::stdout())
}

/// [`run`], writing the report to `out` instead of stdout.
pub fn run_to(args: &CompareArgs, out: &mut dyn std::io::Write) -> i32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = match plan(args, cores) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("poolrun compare: {e}");
            return 2;
        }
    };
    // Open the plot file first, so a bad path fails before minutes of work.
    let mut plot_file = match &args.plot {
        None => None,
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some((path, f)),
            Err(e) => {
                eprintln!("poolrun compare: --plot {}: {e}", path.display());
                return 2;
            }
        },
    };
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = execute(plan, progress);
    let text = match args.format {
        Format::Text => report.text(),
        Format::Json => format!("{}\n", report.json()),
    };
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("poolrun compare: cannot write the report: {e}");
        }
        return 1;
    }
    if let Some((path, f)) = plot_file.as_mut() {
        if let Err(e) = f
            .write_all(report.svg().as_bytes())
            .and_then(|()| f.flush())
        {
            eprintln!("poolrun compare: --plot {}: {e}", path.display());
            return 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: CompareArgs,
    }

    fn parse(argv: &[&str]) -> CompareArgs {
        let mut v = vec!["compare"];
        v.extend_from_slice(argv);
        Cli::try_parse_from(v).expect("arguments parse").args
    }

    #[test]
    fn parses_flags() {
        let a = parse(&[
            "--workload",
            "io",
            "--tasks",
            "7",
            "-j",
            "1,2,4",
            "--format",
            "json",
            "--plot",
            "x.svg",
            "--switch-interval",
            "0.1",
        ]);
        assert_eq!(a.workload, Workload::Io);
        assert_eq!(a.tasks, Some(7));
        assert_eq!(a.jobs, vec![1, 2, 4]);
        assert_eq!(a.format, Format::Json);
        assert_eq!(a.plot, Some(PathBuf::from("x.svg")));
        assert_eq!(a.switch_interval, 0.1);
        let d = parse(&[]);
        assert_eq!(d.workload, Workload::Cpu);
        assert_eq!(d.format, Format::Text);
        assert_eq!(d.switch_interval, 5.0);
        assert!(d.jobs.is_empty());
        assert!(Cli::try_parse_from(["compare", "--workload", "gpu"]).is_err());
        assert!(Cli::try_parse_from(["compare", "-j", "1,x"]).is_err());
    }

    #[test]
    fn defaults_and_validation() {
        assert_eq!(default_jobs(1), vec![1]);
        assert_eq!(default_jobs(2), vec![1, 2]);
        assert_eq!(default_jobs(6), vec![1, 2, 4, 6]);
        assert_eq!(default_jobs(16), vec![1, 2, 4, 8, 16]);
        let p = plan(&parse(&[]), 2).expect("defaults are valid");
        assert_eq!(p.jobs, vec![1, 2]);
        assert_eq!(p.tasks, 16);
        assert_eq!(p.interval, Duration::from_millis(5));
        let p = plan(&parse(&["-j", "4,1,4"]), 2).expect("valid");
        assert_eq!(p.jobs, vec![1, 4], "sorted and deduplicated");
        assert_eq!(default_tasks(Workload::Cpu, 6), 18);
        assert_eq!(default_tasks(Workload::Io, 16), 64);
        for bad in [
            &["-j", "0"][..],
            &["--tasks", "0"],
            &["--switch-interval", "0"],
            &["--switch-interval", "-1"],
            &["--switch-interval", "NaN"],
            &["-j", "99999"],
            &["--repeat", "0"],
        ] {
            let e = plan(&parse(bad), 2).expect_err("must be rejected");
            assert!(e.contains("--"), "message names the flag: {e}");
            assert_eq!(run_to(&parse(bad), &mut Vec::new()), 2, "{bad:?}");
        }
    }

    #[test]
    fn task_functions() {
        assert_eq!(count_primes(100), 25);
        assert_eq!(cpu_task(10), 4);
        assert_eq!(mixed_task((10, 0)), 4);
        assert_eq!(io_task(0), 0);
        assert!(is_prime(2) && is_prime(97) && !is_prime(1) && !is_prime(91));
    }

    #[test]
    fn bad_plot_path_is_a_usage_error() {
        let a = parse(&[
            "--workload",
            "io",
            "--tasks",
            "1",
            "-j",
            "1",
            "--plot",
            "/nonexistent-dir/x.svg",
        ]);
        assert_eq!(run_to(&a, &mut Vec::new()), 2);
    }

    fn fake_report(process_ok: bool) -> Report {
        let plan = plan(
            &parse(&["--workload", "cpu", "-j", "1,2", "--tasks", "4"]),
            2,
        )
        .expect("valid");
        let mk = |kind, workers, ms: Option<u64>| Row {
            kind,
            workers,
            wall: ms
                .map(Duration::from_millis)
                .ok_or_else(|| "unavailable: not yet".to_string()),
            gil: (kind == Kind::ThreadGil).then(GilStats::default),
        };
        Report {
            plan,
            load_before: Some(0.0),
            serial: Ok(Duration::from_millis(1000)),
            rows: vec![
                mk(Kind::ThreadGil, 1, Some(1000)),
                mk(Kind::ThreadGil, 2, Some(1050)),
                mk(Kind::ThreadFree, 1, Some(1000)),
                mk(Kind::ThreadFree, 2, Some(520)),
                mk(Kind::Process, 1, process_ok.then_some(1000)),
                mk(Kind::Process, 2, process_ok.then_some(526)),
            ],
        }
    }

    #[test]
    fn verdict_text_json_svg() {
        let r = fake_report(true);
        let v = r.verdict();
        assert!(
            v.starts_with("cpu-bound on 2 cores: process 1.9×, thread+GIL 1.0×"),
            "{v}"
        );
        assert!(v.contains("use processes"), "{v}");
        let t = r.text();
        assert!(t.contains("thread+GIL") && t.contains("verdict:"), "{t}");
        assert!(t.contains("95%"), "efficiency of process×2: {t}");
        let j = r.json();
        assert_eq!(j["rows"].as_array().map(Vec::len), Some(7));
        assert_eq!(j["rows"][0]["mode"], "serial");
        let svg = r.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4, "3 modes + ideal");

        let r = fake_report(false);
        let v = r.verdict();
        assert!(v.contains("process unavailable"), "{v}");
        assert!(r.text().contains("unavailable: not yet"));
        assert_eq!(r.json()["rows"][5]["available"], false);
        assert!(r.svg().contains("process (unavailable)"));

        // Nothing scaled, not even processes: the verdict does not pretend to know.
        let mut r = fake_report(true);
        for row in &mut r.rows {
            if row.wall.is_ok() {
                row.wall = Ok(Duration::from_millis(990));
            }
        }
        assert!(r.verdict().contains("inconclusive"), "{}", r.verdict());

        let mut r = fake_report(true);
        assert!(r.busy_note().is_none());
        r.load_before = Some(3.0);
        assert!(r.busy_note().is_some_and(|n| n.contains("3.00 on 2 cores")));
        assert!(r.text().contains("note: the load average"));
    }

    #[test]
    fn end_to_end_tiny_io_run() {
        // Runs whatever modes are available; unavailable ones become rows, not failures.
        let dir = std::env::temp_dir().join(format!("poolrun-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let svg = dir.join("c.svg");
        let a = parse(&[
            "--workload",
            "io",
            "--tasks",
            "4",
            "-j",
            "1,2",
            "--format",
            "json",
            "--repeat",
            "2",
            "--plot",
            svg.to_str().expect("utf-8 temp path"),
        ]);
        let mut out = Vec::new();
        assert_eq!(run_to(&a, &mut out), 0);
        let j: serde_json::Value = serde_json::from_slice(&out).expect("one JSON object");
        assert_eq!(j["workload"], "io");
        assert_eq!(j["tasks"], 4);
        assert_eq!(j["repeat"], 2);
        let rows = j["rows"].as_array().expect("rows");
        assert_eq!(rows.len(), 7, "serial + 3 modes × 2 worker counts");
        for r in rows {
            // Available rows have a positive wall time; unavailable ones say why.
            if r["available"] == true {
                assert!(r["wall_s"].as_f64().is_some_and(|w| w > 0.0), "{r}");
            } else {
                assert!(r["error"].is_string(), "{r}");
            }
        }
        assert!(j["verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with("io-bound")));
        let body = std::fs::read_to_string(&svg).expect("plot written");
        assert!(body.contains("</svg>"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
