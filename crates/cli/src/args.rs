//! Phase one of argument parsing ("low" arguments, after ripgrep's `lowargs`): exactly what
//! the user typed, as clap parsed it. Nothing here is validated beyond its type;
//! [`crate::plan`] turns it into a checked [`crate::plan::RunPlan`].

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::compare::CompareArgs;
use crate::demo::DemoArgs;

/// `poolrun`: run a task per argument on a process pool, a thread pool or a Slurm cluster.
#[derive(Parser, Debug)]
#[command(
    name = "poolrun",
    version,
    about = "Run one task per argument (or stdin line) on a process pool, a thread pool or a Slurm cluster",
    long_about = None,
    args_conflicts_with_subcommands = true,
    args_override_self = true,
    allow_negative_numbers = true,
    after_help = "With no ARG, or ARG `-`, one task per stdin line (empty lines are skipped).\n\
                  Run `poolrun tasks` to list the tasks.\n\n\
                  Exit status: 0 all tasks succeeded, 1 a task failed, 2 usage error,\n\
                  130 interrupted (SIGINT), 143 terminated (SIGTERM), 141 stdout closed."
)]
pub struct Cli {
    /// A subcommand instead of a task.
    #[command(subcommand)]
    pub command: Option<Sub>,
    /// Options and the task to run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// `poolrun`'s subcommands.
#[derive(Subcommand, Debug)]
pub enum Sub {
    /// Run a workload serially, on threads with and without the GIL, and on processes; print
    /// the speed-ups and the winner.
    Compare(CompareArgs),
    /// Run a demonstration scenario of poolrun's synchronisation primitives.
    Demo(DemoArgs),
    /// List the tasks, one line each.
    Tasks,
}

/// `--mode`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    /// Worker threads in this process.
    Thread,
    /// Forked worker processes.
    Process,
    /// Job arrays on a Slurm cluster (each array task a local process pool).
    Slurm,
}

/// `--gil`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    /// Emulate CPython's GIL.
    On,
    /// Free-threaded.
    Off,
}

/// `--format`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// `INPUT<TAB>OUTPUT`, or `INPUT<TAB>ERROR: MESSAGE`, one line per task.
    Text,
    /// One JSON object per line: index, input, ok, output|error, worker, ms.
    Json,
}

/// `--progress`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressArg {
    /// When stderr is a terminal.
    Auto,
    /// Always (also when stderr is not a terminal).
    Always,
    /// Never.
    Never,
}

/// The options of a task run.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run tasks on forked worker processes, on worker threads, or as Slurm job arrays
    /// [default: process].
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Number of workers [default: the number of CPUs]; with `--mode slurm`, array tasks
    /// running at once.
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    /// Emulate CPython's GIL in each worker (each process has its own).
    #[arg(long, value_enum, default_value = "off")]
    pub gil: OnOff,
    /// The GIL's switch interval in milliseconds (CPython's default is 5).
    #[arg(long, value_name = "MS")]
    pub switch_interval: Option<f64>,
    /// Stop a task that runs longer than SECS seconds (fractions allowed); it fails.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Print results as they complete instead of in input order.
    #[arg(long)]
    pub unordered: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: FormatArg,
    /// Show a progress bar on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
    /// Slurm partition (`--mode slurm`).
    #[arg(long, value_name = "P", help_heading = "Slurm (--mode slurm)")]
    pub partition: Option<String>,
    /// Slurm time limit per array task: MINUTES, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
    #[arg(long, value_name = "T", help_heading = "Slurm (--mode slurm)")]
    pub time: Option<String>,
    /// One more sbatch option, with its value in one word (`--qos=short`); repeatable.
    #[arg(
        long = "sbatch-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        help_heading = "Slurm (--mode slurm)"
    )]
    pub sbatch_args: Vec<String>,
    /// The task to run (see `poolrun tasks`).
    #[arg(value_name = "TASK")]
    pub task: Option<String>,
    /// One task per ARG (for `exec`, the first is CMD); none or `-`: one per stdin line.
    #[arg(value_name = "ARG")]
    pub args: Vec<String>,
}
