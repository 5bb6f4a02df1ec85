//! # poolrun-cli
//!
//! The `poolrun` command line as a library, so a program can add its own tasks and reuse the
//! whole CLI (options, output formats, progress bar, signal handling, `compare`, `demo`):
//!
//! ```no_run
//! use poolrun_cli::Registry;
//!
//! fn shout(arg: &str) -> Result<String, String> {
//!     Ok(arg.to_uppercase())
//! }
//!
//! fn main() {
//!     let mut registry = Registry::builtin();
//!     if let Err(e) = registry.register("shout", "upper-case ARG", shout) {
//!         eprintln!("{e}");
//!         std::process::exit(2);
//!     }
//!     std::process::exit(poolrun_cli::main_with(registry));
//! }
//! ```
//!
//! ```text
//! poolrun [--mode thread|process|slurm] [-j N] [--gil on|off] [--switch-interval MS]
//!         [--timeout SECS] [--unordered] [--format text|json] [--progress auto|always|never]
//!         [--partition P] [--time T] [--sbatch-arg ARG]...   # --mode slurm only
//!         TASK [ARG ...]          # one task per ARG; with no ARG or `-`, one per stdin line
//! poolrun compare ...             # the threads-vs-processes experiment
//! poolrun demo SCENARIO ...       # synchronisation demos
//! poolrun tasks                   # list the tasks
//! ```
//!
//! Exit status: 0 every task succeeded; 1 at least one task failed; 2 usage error (bad
//! option, unknown task, `-j` out of range, a pool that cannot start, unreadable stdin);
//! 130 / 143 interrupted by SIGINT / SIGTERM (pending work cancelled, workers stopped and
//! reaped, a summary on stderr; a second signal exits at once); 141 stdout was closed.
//!
//! Parsing is two-phase: [`args`] holds the clap types exactly as typed, [`plan`] validates
//! them into a [`plan::RunPlan`] with a checked [`poolrun::PoolConfig`].

#![warn(missing_docs)]

pub mod args;
mod batch;
mod builtin;
pub mod compare;
pub mod demo;
mod exec;
mod flags;
mod input;
mod output;
pub mod plan;
mod registry;
mod runner;
mod signals;
mod text;

use std::ffi::OsString;
use std::sync::Once;

use clap::Parser;

pub use registry::{ParamTaskFn, Registry, RegistryError, TaskDef, TaskFn, RESERVED_NAMES};

/// Run the `poolrun` command line on this process's arguments with `registry`'s tasks and
/// return the exit status (the caller passes it to `std::process::exit`). Returns rather than
/// exits so a host can clean up first; the exit-status table is in the crate docs.
///
/// `registry` becomes the process-wide task registry before any pool is created (forked
/// workers inherit it). Call it from the main thread, once at a time.
pub fn main_with(registry: Registry) -> i32 {
    run_with_args(registry, std::env::args_os())
}

/// [`main_with`] on explicit arguments (the first is the program name).
pub fn run_with_args<I, T>(registry: Registry, args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    install_panic_hook();
    let registry = registry::install(registry);
    // Started by Slurm as an array task of a `--mode slurm` run: serve it with this
    // registry (the tasks' `fn`s and the registry are the submitter's) and exit.
    poolrun::slurm::run_if_array_task();
    let cli = match args::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    match cli.command {
        Some(args::Sub::Compare(a)) => compare::run(&a),
        Some(args::Sub::Demo(a)) => demo::run(&a),
        Some(args::Sub::Tasks) => {
            list_tasks(&registry);
            0
        }
        None => match plan::plan(cli.run, &registry) {
            Ok(p) => runner::run(p),
            Err(plan::UsageError(msg)) => {
                eprintln!("poolrun: error: {msg}");
                2
            }
        },
    }
}

/// Print a clap error: help and version to stdout (status 0); anything else as the error's
/// first line plus a hint, on stderr (status 2).
fn clap_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            2
        }
        _ => {
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("poolrun: error: {first}");
            eprintln!("(run `poolrun --help` for the usage)");
            2
        }
    }
}

fn list_tasks(registry: &Registry) {
    let width = registry.tasks().map(|t| t.usage().len()).max().unwrap_or(0);
    let mut out = String::new();
    for t in registry.tasks() {
        out.push_str(&format!("{:width$}  {}\n", t.usage(), t.description()));
    }
    let _ = output_all(&out);
}

fn output_all(s: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())?;
    o.flush()
}

/// A panic inside a task is reported as that task's error (the pool catches it), so the hook
/// stays quiet for it; any other panic is a bug in poolrun and is printed as usual.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if registry::IN_TASK.with(|c| c.get()) {
                return;
            }
            default(info)
        }));
    });
}
