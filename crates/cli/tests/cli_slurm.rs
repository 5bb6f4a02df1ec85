//! `poolrun --mode slurm` against the real one-node cluster of `scripts/slurm/start.sh`:
//! the same tasks, the same ordered text / JSON output and exit statuses as the local
//! modes, a progress bar with queued / running / done, usage errors (exit 2, one line) for
//! options Slurm refuses and for a missing `sbatch`, and nothing left in `squeue` after an
//! interrupt or a SIGKILL.
//!
//! The cluster tests skip, with one line saying why, where no cluster answers
//! (`POOLRUN_REQUIRE_SLURM=1` turns that into a failure, as `.ci/run` does).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use poolrun_testkit::slurm::{cluster_or_skip, queued_named};

const L: Duration = Duration::from_secs(120);

/// A work directory of this test's own, so it can check that a run leaves it empty.
fn work_dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir()
        .join("poolrun-cli-slurm")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn slurm_cmd(test: &str, args: &[&str]) -> (std::process::Command, PathBuf) {
    let dir = work_dir(test);
    let mut c = cmd(args);
    c.env("POOLRUN_SLURM_WORK_DIR", &dir)
        .env("POOLRUN_SLURM_POLL_MS", "100");
    (c, dir)
}

fn run_slurm(test: &str, args: &[&str]) -> (Out, PathBuf) {
    let (c, dir) = slurm_cmd(test, args);
    (poolrun_testkit::cli::run_command(c, None, L), dir)
}

/// The JSON lines without the fields that differ between runs (`worker`, `ms`).
fn comparable(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let o = v.as_object_mut().unwrap();
            o.remove("worker");
            o.remove("ms");
            v.to_string()
        })
        .collect()
}

fn empty_dir(dir: &PathBuf) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

#[test]
fn the_readme_command_runs_on_the_cluster() {
    if !cluster_or_skip("the_readme_command_runs_on_the_cluster") {
        return;
    }
    let (o, dir) = run_slurm(
        "readme",
        &["--mode", "slurm", "-j", "2", "primes", "100000", "200000"],
    );
    assert_no_panic(&o);
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (Some(0), "100000\t9592\n200000\t17984\n"),
        "{}",
        o.stderr
    );
    assert!(empty_dir(&dir), "a clean run removes its work directory");
}

#[test]
fn output_and_exit_status_are_those_of_the_local_modes() {
    if !cluster_or_skip("output_and_exit_status_are_those_of_the_local_modes") {
        return;
    }
    let inputs = ["7", "x", "30", "1000", "-3", "2"];
    let mut args = vec!["--format", "json", "primes"];
    args.extend(inputs);
    let local = run(&args);
    let mut sargs = vec!["--mode", "slurm", "-j", "2"];
    sargs.extend(&args);
    let (o, _) = run_slurm("json", &sargs);
    assert_eq!(local.code, Some(1));
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert_eq!(comparable(&o.stdout), comparable(&local.stdout));
    assert_eq!(
        o.stderr.lines().last(),
        local.stderr.lines().last(),
        "the same summary"
    );
    // `exec` runs the command on the node; text output in input order.
    let (o, dir) = run_slurm(
        "exec",
        &[
            "--mode",
            "slurm",
            "exec",
            "sh -c 'echo {}-$((1+{}))'",
            "1",
            "2",
            "3",
        ],
    );
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (Some(0), "1\t1-2\n2\t2-3\n3\t3-4\n"),
        "{}",
        o.stderr
    );
    assert!(empty_dir(&dir));
}

#[test]
fn the_progress_bar_shows_queued_running_and_done() {
    if !cluster_or_skip("the_progress_bar_shows_queued_running_and_done") {
        return;
    }
    let (o, _) = run_slurm(
        "progress",
        &[
            "--mode",
            "slurm",
            "-j",
            "1",
            "--progress",
            "always",
            "sleep",
            "1500",
            "1500",
            "1500",
        ],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stderr.contains("running 1"), "{}", o.stderr);
    assert!(o.stderr.contains("queued "), "{}", o.stderr);
    assert!(o.stderr.contains("/3"), "done of total: {}", o.stderr);
}

#[test]
fn options_slurm_refuses_are_usage_errors() {
    if !cluster_or_skip("options_slurm_refuses_are_usage_errors") {
        return;
    }
    for (args, needle) in [
        (
            &["--mode", "slurm", "--partition", "nope", "primes", "5"][..],
            "invalid partition",
        ),
        (
            &[
                "--mode",
                "slurm",
                "--sbatch-arg",
                "--cpus-per-task=4096",
                "primes",
                "5",
            ],
            "sbatch",
        ),
        (
            &["--mode", "slurm", "--sbatch-arg", "--bogus", "primes", "5"],
            "--bogus",
        ),
        (
            &["--mode", "slurm", "--time", "1:2:3:4", "primes", "5"],
            "not a Slurm time limit",
        ),
    ] {
        let (o, _) = run_slurm("refused", args);
        assert_eq!(o.code, Some(2), "{args:?}: {}", o.stderr);
        assert_eq!(
            o.stderr.lines().count(),
            1,
            "{args:?}: one line: {}",
            o.stderr
        );
        assert!(o.stderr.contains(needle), "{args:?}: {}", o.stderr);
        assert!(o.stdout.is_empty());
    }
}

/// Runs everywhere: without Slurm, `--mode slurm` is a usage error.
#[test]
fn no_sbatch_is_a_usage_error() {
    let mut c = cmd(&["--mode", "slurm", "primes", "5"]);
    c.env("PATH", "/nonexistent");
    let o = poolrun_testkit::cli::run_command(c, None, Duration::from_secs(30));
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert_eq!(
        o.stderr.trim(),
        "poolrun: cannot start the slurm pool: cannot start a worker: \"sbatch\" not found: is Slurm installed and on PATH?"
    );
}

/// Start `poolrun --mode slurm … sleep 60000 ×3` and wait until its arrays run.
fn start_long(test: &str, extra_env: &[(&str, &str)]) -> (std::process::Child, PathBuf) {
    let (mut c, dir) = slurm_cmd(
        test,
        &[
            "--mode", "slurm", "-j", "2", "sleep", "60000", "60000", "60000",
        ],
    );
    c.stdin(std::process::Stdio::null());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let child = c.spawn().unwrap();
    let name = format!("poolrun-{}", child.id());
    let t = Instant::now();
    while !queued_named(&name).iter().any(|l| l.ends_with("RUNNING")) {
        assert!(t.elapsed() < L, "its arrays did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, dir)
}

fn assert_gone(name: &str, limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let left = queued_named(name);
        if left.is_empty() {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "still in squeue after {limit:?}: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_interrupt_cancels_the_arrays() {
    if !cluster_or_skip("an_interrupt_cancels_the_arrays") {
        return;
    }
    let (mut child, _) = start_long("sigint", &[]);
    let name = format!("poolrun-{}", child.id());
    signal(child.id(), Signal::SIGINT);
    assert_eq!(
        wait_deadline(&mut child, Duration::from_secs(30)),
        Some(130)
    );
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    assert_gone(&name, Duration::from_secs(15));
}

#[test]
fn a_sigkilled_cli_leaves_nothing_in_the_queue() {
    if !cluster_or_skip("a_sigkilled_cli_leaves_nothing_in_the_queue") {
        return;
    }
    let (mut child, dir) = start_long("sigkill", &[("POOLRUN_SLURM_HEARTBEAT_SECS", "5")]);
    let name = format!("poolrun-{}", child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    let took = assert_gone(&name, Duration::from_secs(30));
    eprintln!("{name} left the queue {took:?} after SIGKILL (heartbeat 5 s)");
    let _ = std::fs::remove_dir_all(dir);
}
