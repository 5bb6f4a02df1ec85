//! `poolrun compare`'s command line: exactly what the user typed (validated into an
//! [`Experiment`](super::experiment::Experiment) by `experiment.rs`).

use std::path::PathBuf;

use clap::ValueEnum;

use super::workload::{CPU_PRIMES_BELOW, IO_SLEEP_MS, MIXED_PRIMES_BELOW, MIXED_SLEEP_MS};

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
    pub(super) fn name(self) -> &'static str {
        match self {
            Workload::Cpu => "cpu",
            Workload::Io => "io",
            Workload::Mixed => "mixed",
        }
    }

    pub(super) fn describe(self) -> String {
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
pub enum ReportFormat {
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
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
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
