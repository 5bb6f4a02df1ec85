//! The CLI tests' helpers: run the built `poolrun` binary with a deadline (the runner is
//! `poolrun-testkit`'s, bound here to this crate's binary) and inspect `/proc`.
#![allow(dead_code, unused_imports)]

use std::process::Command;
use std::time::Duration;

pub use poolrun_testkit::cli::{assert_no_panic, wait_deadline, Out};
pub use poolrun_testkit::*;

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_poolrun");

/// Both modes, for tests that run in each.
pub const MODES: [&str; 2] = ["thread", "process"];

/// A `poolrun` command with stdout/stderr piped and no `RUST_BACKTRACE`.
pub fn cmd(args: &[&str]) -> Command {
    poolrun_testkit::cli::cmd(BIN, args)
}

/// Run `poolrun args` with `stdin` bytes (None: /dev/null), at most `limit`.
pub fn run_with(args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Out {
    poolrun_testkit::cli::run_command(cmd(args), stdin, limit)
}

/// Run `poolrun args` with no stdin, at most 30 s.
pub fn run(args: &[&str]) -> Out {
    run_with(args, None, Duration::from_secs(30))
}

/// Poll `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, f: impl FnMut() -> bool) -> bool {
    eventually(limit, f)
}
