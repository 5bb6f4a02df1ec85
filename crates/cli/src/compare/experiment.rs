//! A validated `compare` invocation ([`Experiment`]): worker counts, task count, repeats,
//! the GIL switch interval — every value checked, with the flag named in the error.

use std::time::Duration;

use super::args::{CompareArgs, Workload};
use crate::flags;

/// A validated `compare` invocation.
#[derive(Debug, Clone)]
pub(super) struct Experiment {
    pub(super) workload: Workload,
    pub(super) tasks: usize,
    pub(super) jobs: Vec<usize>,
    pub(super) interval: Duration,
    pub(super) cores: usize,
    pub(super) repeat: usize,
}

/// 1, 2, 4, … below the core count, and the core count.
pub(super) fn default_jobs(cores: usize) -> Vec<usize> {
    let mut v = vec![];
    let mut j = 1;
    while j < cores {
        v.push(j);
        j *= 2;
    }
    v.push(cores.max(1));
    v
}

/// Enough tasks to keep the largest worker count busy, rounded up to a multiple of it.
pub(super) fn default_tasks(workload: Workload, max_j: usize) -> usize {
    let n = match workload {
        Workload::Cpu => (2 * max_j).max(16),
        Workload::Io => (4 * max_j).max(32),
        Workload::Mixed => (2 * max_j).max(16),
    };
    n.div_ceil(max_j) * max_j
}

/// Check `args` (on a machine with `cores` cores).
pub(super) fn plan(args: &CompareArgs, cores: usize) -> Result<Experiment, String> {
    let mut jobs = if args.jobs.is_empty() {
        default_jobs(cores)
    } else {
        args.jobs.clone()
    };
    for &j in &jobs {
        flags::workers("-j/--jobs", j)?;
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
    let interval = flags::switch_interval("--switch-interval", args.switch_interval)?;
    Ok(Experiment {
        workload: args.workload,
        tasks,
        jobs,
        interval,
        cores,
        repeat: args.repeat,
    })
}
