//! Phase two of argument parsing ("high" arguments, after ripgrep's `hiargs`): the clap
//! values of [`crate::args::RunArgs`] checked and turned into a [`RunPlan`] with a validated
//! [`PoolConfig`]. Every problem here is a usage error (exit status 2) with a one-line
//! message; problems with one task's argument are not checked here — that task fails instead
//! (exit status 1).

use std::io::IsTerminal;
use std::time::Duration;

use poolrun::slurm::SlurmConfig;
use poolrun::{GilMode, Mode, PoolConfig};

use crate::args::{FormatArg, ModeArg, OnOff, ProgressArg, RunArgs};
use crate::flags;
use crate::registry::{Registry, TaskKind};

/// The mode used when `--mode` is not given.
pub const DEFAULT_MODE: Mode = Mode::Process;

/// A usage error: the message for stderr (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

/// Where the tasks' arguments come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    /// The command-line arguments.
    Args(Vec<String>),
    /// One per line of stdin.
    Stdin,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Tab-separated text.
    Text,
    /// JSON lines.
    Json,
}

/// A validated run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Thread, process or Slurm.
    pub mode: Mode,
    /// The pool's configuration (already validated).
    pub config: PoolConfig,
    /// With `Mode::Slurm`: the cluster settings, the `POOLRUN_SLURM_*` environment
    /// overridden by the flags (already validated).
    pub slurm: Option<SlurmConfig>,
    /// The task's index in the registry.
    pub task: usize,
    /// The task's name.
    pub task_name: String,
    /// The task's parameter (`exec`'s CMD).
    pub param: Option<String>,
    /// Where the arguments come from.
    pub inputs: InputSpec,
    /// Results in completion order.
    pub unordered: bool,
    /// Output format.
    pub format: OutputFormat,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Warnings to print before running (not errors).
    pub warnings: Vec<String>,
}

fn usage<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// Check `args` against `registry` and build the plan.
pub fn plan(args: RunArgs, registry: &Registry) -> Result<RunPlan, UsageError> {
    let mut warnings = Vec::new();
    let Some(task_name) = args.task else {
        return usage("missing TASK: usage is `poolrun [OPTIONS] TASK [ARG...]` (run `poolrun tasks` to list the tasks)");
    };
    if crate::registry::RESERVED_NAMES.contains(&task_name.as_str()) {
        return usage(format!(
            "`{task_name}` is a subcommand: write it first, with its own options after it (`poolrun {task_name} --help`)"
        ));
    }
    let Some(task) = registry.index_of(&task_name) else {
        let hint = match registry.suggest(&task_name) {
            Some(s) => format!(" (did you mean `{s}`? run `poolrun tasks` to list them)"),
            None => " (run `poolrun tasks` to list them)".to_string(),
        };
        return usage(format!(
            "unknown task {}{hint}",
            crate::text::show(&task_name)
        ));
    };
    let def = registry
        .by_index(task)
        .ok_or_else(|| UsageError("internal error: task index out of range".into()))?;

    let mut rest = args.args;
    let param = match def.kind() {
        TaskKind::Simple(_) => None,
        TaskKind::WithParam(_) => {
            let pname = def.param_name().unwrap_or("PARAM");
            if rest.is_empty() {
                return usage(format!(
                    "task `{task_name}` needs {pname}: usage is `poolrun {} ...`",
                    def.usage()
                ));
            }
            let p = rest.remove(0);
            if p.trim().is_empty() {
                return usage(format!("task `{task_name}`: {pname} is empty"));
            }
            Some(p)
        }
    };
    let inputs = if rest.is_empty() || (rest.len() == 1 && rest[0] == "-") {
        InputSpec::Stdin
    } else if rest.iter().any(|a| a == "-") {
        return usage("`-` (read the arguments from stdin) must be the only ARG");
    } else {
        InputSpec::Args(rest)
    };

    let mode = match args.mode {
        None => DEFAULT_MODE,
        Some(ModeArg::Thread) => Mode::Thread,
        Some(ModeArg::Process) => Mode::Process,
        Some(ModeArg::Slurm) => Mode::Slurm,
    };
    let slurm = slurm_config(mode, &args.partition, &args.time, &args.sbatch_args)?;

    let mut config = PoolConfig::new().daemon(true);
    if let Some(j) = args.jobs {
        config = config.workers(flags::workers("-j", j).map_err(UsageError)?);
    }

    let switch_interval = match args.switch_interval {
        None => Duration::from_millis(5),
        Some(ms) => flags::switch_interval("--switch-interval", ms).map_err(UsageError)?,
    };
    match args.gil {
        OnOff::On => config = config.gil(GilMode::On { switch_interval }),
        OnOff::Off => {
            if args.switch_interval.is_some() {
                warnings.push("--switch-interval has no effect without --gil on".to_string());
            }
        }
    }

    if let Some(secs) = args.timeout {
        config = config.task_timeout(Some(flags::seconds("--timeout", secs).map_err(UsageError)?));
    }

    if let Err(e) = config.validate() {
        return usage(e.to_string());
    }

    let progress = match args.progress {
        ProgressArg::Always => true,
        ProgressArg::Never => false,
        ProgressArg::Auto => std::io::stderr().is_terminal(),
    };

    Ok(RunPlan {
        mode,
        config,
        slurm,
        task,
        task_name,
        param,
        inputs,
        unordered: args.unordered,
        format: match args.format {
            FormatArg::Text => OutputFormat::Text,
            FormatArg::Json => OutputFormat::Json,
        },
        progress,
        warnings,
    })
}

/// The Slurm settings of a `--mode slurm` run; the Slurm flags without it are an error.
fn slurm_config(
    mode: Mode,
    partition: &Option<String>,
    time: &Option<String>,
    sbatch_args: &[String],
) -> Result<Option<SlurmConfig>, UsageError> {
    if mode != Mode::Slurm {
        let given = [
            partition.as_ref().map(|_| "--partition"),
            time.as_ref().map(|_| "--time"),
            sbatch_args.first().map(|_| "--sbatch-arg"),
        ];
        if let Some(flag) = given.into_iter().flatten().next() {
            return usage(format!("{flag} needs --mode slurm"));
        }
        return Ok(None);
    }
    let mut cfg = SlurmConfig::from_env().map_err(|e| UsageError(e.to_string()))?;
    if let Some(p) = partition {
        cfg = cfg.partition(p);
    }
    if let Some(t) = time {
        cfg = cfg.time_limit(flags::slurm_time("--time", t).map_err(UsageError)?);
    }
    for a in sbatch_args {
        cfg = cfg.sbatch_arg(a);
    }
    cfg.validate().map_err(|e| UsageError(e.to_string()))?;
    Ok(Some(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::Parser;

    fn p(argv: &[&str]) -> Result<RunPlan, UsageError> {
        let cli = Cli::try_parse_from(std::iter::once("poolrun").chain(argv.iter().copied()))
            .map_err(|e| UsageError(e.to_string()))?;
        plan(cli.run, &Registry::builtin())
    }

    #[test]
    fn good_plans() {
        let r = p(&["--mode", "thread", "-j", "3", "primes", "10", "20"]).unwrap();
        assert_eq!(r.mode, Mode::Thread);
        assert_eq!(r.config.get_workers(), 3);
        assert_eq!(r.inputs, InputSpec::Args(vec!["10".into(), "20".into()]));
        let r = p(&["exec", "echo {}", "-"]).unwrap();
        assert_eq!(r.param.as_deref(), Some("echo {}"));
        assert_eq!(r.inputs, InputSpec::Stdin);
        let r = p(&[
            "--gil",
            "on",
            "--switch-interval",
            "0.5",
            "--timeout",
            "1.5",
            "spin",
            "1",
        ])
        .unwrap();
        assert_eq!(
            r.config.get_gil(),
            GilMode::On {
                switch_interval: Duration::from_micros(500)
            }
        );
        assert_eq!(
            r.config.get_task_timeout(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            p(&["primes", "-5"]).unwrap().inputs,
            InputSpec::Args(vec!["-5".into()])
        );
        let r = p(&[
            "--mode",
            "slurm",
            "-j",
            "2",
            "--partition",
            "debug",
            "--time",
            "0:30",
            "--sbatch-arg",
            "--qos=short",
            "--sbatch-arg",
            "--exclusive",
            "primes",
            "7",
        ])
        .unwrap();
        assert_eq!(r.mode, Mode::Slurm);
        assert_eq!(r.config.get_workers(), 2);
        assert!(r.slurm.is_some());
        assert!(p(&["primes", "7"]).unwrap().slurm.is_none());
    }

    #[test]
    fn usage_errors() {
        for (argv, needle) in [
            (&["-j", "0", "primes", "1"][..], "-j 0"),
            (&["-j", "100000", "primes", "1"], "at most"),
            (&["primez", "1"], "did you mean `primes`"),
            (&[][..], "missing TASK"),
            (&["exec"], "needs CMD"),
            (&["exec", " "], "CMD is empty"),
            (&["--timeout", "0", "sleep", "1"], "--timeout"),
            (&["--timeout", "-1", "sleep", "1"], "--timeout"),
            (&["--timeout", "inf", "sleep", "1"], "--timeout"),
            (
                &["--gil", "on", "--switch-interval", "0", "spin", "1"],
                "--switch-interval",
            ),
            (&["primes", "1", "-", "2"], "only ARG"),
            (&["--mode", "thread", "compare"], "is a subcommand"),
            (
                &["--partition", "x", "primes", "1"],
                "--partition needs --mode slurm",
            ),
            (
                &["--mode", "thread", "--time", "5", "primes", "1"],
                "--time needs --mode slurm",
            ),
            (
                &["--mode", "slurm", "--time", "5x", "primes", "1"],
                "not a Slurm time limit",
            ),
            (
                &[
                    "--mode",
                    "slurm",
                    "--sbatch-arg",
                    "--array=0-3",
                    "primes",
                    "1",
                ],
                "poolrun sets --array",
            ),
            (
                &["--mode", "slurm", "--sbatch-arg", "qos", "primes", "1"],
                "starts with '-'",
            ),
            (
                &["--mode", "slurm", "--partition", "a b", "primes", "1"],
                "partition",
            ),
        ] {
            let e = p(argv).unwrap_err();
            assert!(e.0.contains(needle), "{argv:?}: {e:?}");
        }
    }
}
