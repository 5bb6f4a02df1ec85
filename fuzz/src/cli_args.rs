//! Fuzz target body `cli_args`: arbitrary argument vectors through the CLI's two-phase
//! parsing — clap's `Cli::try_parse_from` ("low" args), then `plan::plan` against the
//! built-in task registry ("high" args: a validated `PoolConfig`, the task, its inputs).
//! No task is run and no pool is started.
//!
//! The input is split on NUL bytes into arguments, kept as raw bytes (`OsString`), so
//! invalid UTF-8 is covered too. Properties: nothing panics; an `Ok` plan carries a
//! config that validates and a task that exists; an `Err` is a one-line message.
//!
//! Shared by `fuzz/fuzz_targets/cli_args.rs` (libFuzzer) and the stable-Rust corpus replay
//! `crates/cli/tests/fuzz_replay_cli.rs`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::Parser;
use poolrun_cli::args::Cli;
use poolrun_cli::plan::{plan, InputSpec};
use poolrun_cli::Registry;

/// The target.
pub fn run(data: &[u8]) {
    let args: Vec<OsString> = std::iter::once(OsString::from("poolrun"))
        .chain(
            data.split(|b| *b == 0)
                .take(64)
                .map(|a| OsString::from_vec(a.to_vec())),
        )
        .collect();
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // Rendering the error (what the binary prints) must not panic either.
            let _ = e.render().to_string();
            return;
        }
    };
    if cli.command.is_some() {
        return; // `compare` / `demo` / `tasks`: parsed is all we check here
    }
    let registry = Registry::builtin();
    match plan(cli.run, &registry) {
        Ok(p) => {
            assert!(
                p.config.validate().is_ok(),
                "plan produced an invalid config"
            );
            assert!(
                registry.get(&p.task_name).is_some(),
                "plan names an unknown task"
            );
            if let InputSpec::Args(a) = &p.inputs {
                assert!(!a.is_empty(), "Args with no argument");
                assert!(!a.iter().any(|x| x == "-"), "`-` among several ARGs");
            }
        }
        Err(e) => {
            assert!(!e.0.is_empty(), "empty usage message");
            assert!(
                !e.0.contains('\n'),
                "usage message is not one line: {:?}",
                e.0
            );
        }
    }
}
