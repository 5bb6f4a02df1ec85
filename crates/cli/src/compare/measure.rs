//! Running an [`Experiment`]: serially, then through a pool per contender and worker count,
//! timed and checked against the serial results, round-robin over `--repeat` rounds.
//!
//! What is timed: one `map` of all tasks through an already started and warmed pool, until
//! every result is in (pool start-up and shutdown are excluded; serial runs the same task
//! functions in a loop in the calling thread). A contender whose pool cannot be built (or
//! that fails) is a row marked unavailable.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use poolrun::gil::{self, GilStats};
use poolrun::{Executor, GilMode, Mode, Pool, PoolConfig, TaskError};

use super::args::Workload;
use super::experiment::Experiment;
use super::workload::{
    cpu_task, io_task, mixed_task, noop, CPU_PRIMES_BELOW, IO_SLEEP_MS, MIXED_PRIMES_BELOW,
    MIXED_SLEEP_MS,
};

/// One way of running the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Contender {
    Serial,
    ThreadGil,
    ThreadFree,
    Process,
}

impl Contender {
    pub(super) fn label(self) -> &'static str {
        match self {
            Contender::Serial => "serial",
            Contender::ThreadGil => "thread+GIL",
            Contender::ThreadFree => "thread (no GIL)",
            Contender::Process => "process",
        }
    }
    pub(super) fn key(self) -> &'static str {
        match self {
            Contender::Serial => "serial",
            Contender::ThreadGil => "thread_gil",
            Contender::ThreadFree => "thread_nogil",
            Contender::Process => "process",
        }
    }
    pub(super) fn color(self) -> &'static str {
        match self {
            Contender::Serial => "#888888",
            Contender::ThreadGil => "#d62728",
            Contender::ThreadFree => "#ff7f0e",
            Contender::Process => "#1f77b4",
        }
    }
}

pub(super) const PARALLEL: [Contender; 3] = [
    Contender::ThreadGil,
    Contender::ThreadFree,
    Contender::Process,
];

/// One row of the report.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) kind: Contender,
    pub(super) workers: usize,
    /// Wall time, or why there is none.
    pub(super) wall: Result<Duration, String>,
    /// GIL counters over the run (thread+GIL rows only).
    pub(super) gil: Option<GilStats>,
}

#[derive(Debug)]
pub(super) struct Report {
    pub(super) plan: Experiment,
    /// 1-minute load average just before the run (Linux), to flag a busy machine.
    pub(super) load_before: Option<f64>,
    pub(super) serial: Result<Duration, String>,
    pub(super) rows: Vec<Row>,
}

/// Warm the pool, then run the plan's tasks through `pool.map` once, checking the results;
/// return the wall time and the process-wide GIL counters over that run.
pub(super) fn run_on(
    pool: &Pool,
    plan: &Experiment,
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
pub(super) fn run_once(
    pool: &Pool,
    plan: &Experiment,
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
pub(super) fn serial(plan: &Experiment) -> (Duration, Vec<u64>) {
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

pub(super) fn measure(
    kind: Contender,
    workers: usize,
    plan: &Experiment,
    expected: &[u64],
    limit: Duration,
) -> Row {
    let gil_mode = GilMode::On {
        switch_interval: plan.interval,
    };
    let (mode, cfg) = match kind {
        Contender::ThreadGil => (Mode::Thread, PoolConfig::new().gil(gil_mode)),
        Contender::ThreadFree => (Mode::Thread, PoolConfig::new().gil(GilMode::Off)),
        // Each process has its own GIL, as each CPython process does: no contention.
        Contender::Process => (Mode::Process, PoolConfig::new().gil(gil_mode)),
        Contender::Serial => unreachable!("serial is not run through a pool"),
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
        Ok((w, g)) => (Ok(w), (kind == Contender::ThreadGil).then_some(g)),
        Err(e) => (Err(e), None),
    };
    Row {
        kind,
        workers,
        wall,
        gil,
    }
}

pub(super) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// The 1-minute load average (Linux `/proc/loadavg`), if readable.
pub(super) fn load_average() -> Option<f64> {
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
pub(super) fn execute(plan: Experiment, progress: bool) -> Report {
    let load_before = load_average();
    // Warm up (page faults, frequency ramp) so serial is not penalised for going first.
    let _ = std::hint::black_box(cpu_task(MIXED_PRIMES_BELOW));
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
