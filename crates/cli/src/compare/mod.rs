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

mod args;
mod experiment;
mod measure;
mod report;
mod svg;
#[cfg(test)]
mod tests;
mod workload;

use std::io::Write as _;

pub use args::{CompareArgs, ReportFormat, Workload};

use experiment::plan;
use measure::execute;

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
        ReportFormat::Text => report.text(),
        ReportFormat::Json => format!("{}\n", report.json()),
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
