//! The `poolrun` binary end to end, in both modes: output order and formats, stdin input,
//! exit statuses, `exec`, `sha256`, timeouts, the GIL flag, `tasks`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

/// Generate `#[test] fn thread()` and `#[test] fn process()` in a module per scenario.
macro_rules! both_modes {
    ($($name:ident => $body:expr;)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                #[test]
                fn thread() {
                    ($body)("thread")
                }
                #[test]
                fn process() {
                    ($body)("process")
                }
            }
        )*
    };
}

fn primes_ordered(mode: &str) {
    let o = run(&[
        "--mode", mode, "-j", "2", "primes", "30000", "10", "100", "abc", "1000",
    ]);
    assert_no_panic(&o);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert_eq!(
        o.lines(),
        [
            "30000\t3245",
            "10\t4",
            "100\t25",
            "abc\tERROR: N must be a whole number >= 0, got \"abc\"",
            "1000\t168"
        ]
    );
    assert!(o.stderr.contains("1 of 5 tasks failed"), "{}", o.stderr);
}

fn all_ok_exit_zero(mode: &str) {
    let o = run(&["--mode", mode, "primes", "10", "20"]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.lines(), ["10\t4", "20\t8"]);
    assert_eq!(o.stderr, "");
}

fn unordered(mode: &str) {
    // The first task sleeps long enough that the others finish first.
    let o = run(&[
        "--mode",
        mode,
        "-j",
        "2",
        "--unordered",
        "sleep",
        "1500",
        "1",
        "2",
        "3",
    ]);
    assert_eq!(o.code, Some(0), "{o:?}");
    let lines = o.lines();
    assert_eq!(lines.len(), 4, "{o:?}");
    // In input order 1500 would come first; here the short tasks on the other worker come
    // out before it. (Not necessarily all of them: a pool may hand a busy worker one task
    // ahead, which then waits behind the long one.)
    assert!(!lines[0].starts_with("1500\t"), "{lines:?}");
    assert!(
        lines[1].starts_with("1500\t")
            || lines[2].starts_with("1500\t")
            || lines[3].starts_with("1500\t")
    );
    let inputs: HashSet<&str> = lines.iter().filter_map(|l| l.split('\t').next()).collect();
    assert_eq!(inputs, HashSet::from(["1500", "1", "2", "3"]));
}

fn json_lines(mode: &str) {
    let o = run(&[
        "--mode", mode, "-j", "2", "--format", "json", "primes", "100", "x", "10",
    ]);
    assert_eq!(o.code, Some(1), "{o:?}");
    let v: Vec<serde_json::Value> = o
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(v.len(), 3);
    for (i, line) in v.iter().enumerate() {
        assert_eq!(line["index"], i as u64);
        assert!(line["ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{line}");
        match mode {
            "process" => {
                let pid = line["worker"].as_u64().expect("worker pid");
                assert_ne!(pid, 0);
            }
            _ => assert!(line["worker"].is_string(), "{line}"),
        }
    }
    assert_eq!(v[0]["input"], "100");
    assert_eq!(v[0]["ok"], true);
    assert_eq!(v[0]["output"], "25");
    assert!(v[0].get("error").is_none());
    assert_eq!(v[1]["ok"], false);
    assert!(v[1]["error"]
        .as_str()
        .is_some_and(|e| e.contains("whole number")));
    assert!(v[1].get("output").is_none());
    assert_eq!(v[2]["output"], "4");
}

fn stdin_lines(mode: &str) {
    let o = run_with(
        &["--mode", mode, "primes"],
        Some(b"10\n\n100\r\n1000"),
        Duration::from_secs(30),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.lines(), ["10\t4", "100\t25", "1000\t168"]);
    let o = run_with(
        &["--mode", mode, "echo", "-"],
        Some(b"a b\nc\n"),
        Duration::from_secs(30),
    );
    assert_eq!(o.lines(), ["a b\ta b", "c\tc"]);
}

fn stdin_many_lines(mode: &str) {
    // More lines than the window: exercises the bounded reader.
    let input: String = (0..500).map(|i| format!("{i}\n")).collect();
    let o = run_with(
        &["--mode", mode, "-j", "2", "echo"],
        Some(input.as_bytes()),
        Duration::from_secs(30),
    );
    assert_eq!(o.code, Some(0), "{o:?}");
    let lines = o.lines();
    assert_eq!(lines.len(), 500);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("{i}\t{i}"));
    }
}

/// Issue 11: trivial tasks are sent in chunks; with failures sprinkled among 200,000 lines
/// every line still gets its own result, in input order, and the exit status counts them.
fn stdin_batched_with_failures(mode: &str) {
    let input: String = (0..200_000u32)
        .map(|i| {
            if i % 9973 == 5 {
                "x\n".to_string()
            } else {
                format!("{}\n", i % 50)
            }
        })
        .collect();
    let o = run_with(
        &["--mode", mode, "-j", "2", "primes"],
        Some(input.as_bytes()),
        Duration::from_secs(120),
    );
    assert_eq!(o.code, Some(1), "{:?}", o.stderr);
    let lines = o.lines();
    assert_eq!(lines.len(), 200_000);
    let primes_below = |n: u32| (2..n).filter(|k| (2..*k).all(|d| k % d != 0)).count();
    let mut failed = 0;
    for (i, l) in lines.iter().enumerate() {
        let i = i as u32;
        if i % 9973 == 5 {
            assert!(l.starts_with("x\tERROR: "), "line {i}: {l}");
            failed += 1;
        } else {
            assert_eq!(
                *l,
                format!("{}\t{}", i % 50, primes_below(i % 50)),
                "line {i}"
            );
        }
    }
    assert!(
        o.stderr
            .contains(&format!("{failed} of 200000 tasks failed")),
        "{}",
        o.stderr
    );
}

fn exec_substitutes(mode: &str) {
    let o = run(&[
        "--mode",
        mode,
        "exec",
        "echo [{}] $1",
        "a b",
        "it's",
        "$(touch /tmp/poolrun-should-not-exist)",
    ]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(
        o.lines(),
        [
            "a b\t[a b] a b",
            "it's\t[it's] it's",
            "$(touch /tmp/poolrun-should-not-exist)\t[$(touch /tmp/poolrun-should-not-exist)] $(touch /tmp/poolrun-should-not-exist)"
        ]
    );
    assert!(!std::path::Path::new("/tmp/poolrun-should-not-exist").exists());
}

fn exec_failures(mode: &str) {
    let o = run(&[
        "--mode",
        mode,
        "exec",
        "test {} != bad || exit 7",
        "ok",
        "bad",
    ]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert_eq!(o.lines()[0], "ok\t");
    assert!(o.lines()[1].contains("status 7"), "{o:?}");
}

fn sha256_files(mode: &str) {
    let dir = std::env::temp_dir().join(format!("poolrun-cli-test-{}-{mode}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let f = dir.join("abc");
    std::fs::write(&f, b"abc").expect("write");
    let missing = dir.join("missing");
    let o = run(&[
        "--mode",
        mode,
        "sha256",
        f.to_str().unwrap_or_default(),
        missing.to_str().unwrap_or_default(),
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.lines()[0]
        .ends_with("\tba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    assert!(o.lines()[1].contains("ERROR: cannot open") && o.lines()[1].contains("No such file"));
}

fn timeout_fails_task(mode: &str) {
    let start = std::time::Instant::now();
    let o = run(&[
        "--mode",
        mode,
        "-j",
        "2",
        "--timeout",
        "0.3",
        "spin",
        "20000",
        "1",
    ]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.lines()[0].contains("timeout"), "{o:?}");
    assert!(o.lines()[1].starts_with("1\tspun"), "{o:?}");
    assert!(start.elapsed() < Duration::from_secs(15));
}

/// A timeout too large for the clock (`1e19` seconds) means "no deadline": it used to
/// overflow `Instant + Duration` in every thread-mode worker (a regression test: it once panicked).
fn huge_timeout_is_no_deadline(mode: &str) {
    let o = run(&["--mode", mode, "--timeout", "1e19", "sleep", "10", "20"]);
    assert_no_panic(&o);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.lines().len(), 2, "{o:?}");
    assert!(o.lines()[0].starts_with("10\t"), "{o:?}");
}

fn timeout_kills_exec_command(mode: &str) {
    // A duration unique to this test run, to find the `sleep` in /proc afterwards.
    let secs = format!(
        "20.{}{}",
        std::process::id(),
        if mode == "thread" { 1 } else { 2 }
    );
    let script = format!("sleep {secs}; echo done");
    let o = run(&[
        "--mode",
        mode,
        "--format",
        "json",
        "--timeout",
        "0.3",
        "exec",
        &script,
        "x",
    ]);
    assert_eq!(o.code, Some(1), "{o:?}");
    assert!(o.stdout.contains("timeout"), "{o:?}");
    let target = format!("sleep {secs} ");
    let gone = wait_until(Duration::from_secs(1), || {
        !processes()
            .iter()
            .any(|(pid, _, _)| alive(*pid) && cmdline(*pid) == target)
    });
    assert!(gone, "`{target}` still running after its task timed out");
}

fn gil_on(mode: &str) {
    let o = run(&[
        "--mode",
        mode,
        "-j",
        "2",
        "--gil",
        "on",
        "--switch-interval",
        "1",
        "primes",
        "20000",
        "20000",
    ]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.lines(), ["20000\t2262", "20000\t2262"]);
}

both_modes! {
    ordered_output => primes_ordered;
    exit_zero => all_ok_exit_zero;
    unordered_output => unordered;
    json_output => json_lines;
    stdin_input => stdin_lines;
    stdin_window => stdin_many_lines;
    stdin_batched => stdin_batched_with_failures;
    exec_placeholder => exec_substitutes;
    exec_failure => exec_failures;
    sha256 => sha256_files;
    timeout => timeout_fails_task;
    timeout_exec => timeout_kills_exec_command;
    timeout_huge => huge_timeout_is_no_deadline;
    gil => gil_on;
}

#[test]
fn tasks_lists_builtins() {
    let o = run(&["tasks"]);
    assert_eq!(o.code, Some(0));
    for t in [
        "primes N",
        "spin MS",
        "sleep MS",
        "sha256 PATH",
        "exec CMD ARG",
        "echo ARG",
    ] {
        assert!(
            o.lines().iter().any(|l| l.starts_with(t)),
            "{t} missing in {}",
            o.stdout
        );
    }
}

#[test]
fn help_and_version() {
    let o = run(&["--help"]);
    assert_eq!(o.code, Some(0));
    assert!(o.stdout.contains("--mode") && o.stdout.contains("TASK"));
    let o = run(&["--version"]);
    assert_eq!(o.code, Some(0));
    assert!(o.stdout.starts_with("poolrun "));
}

#[test]
fn progress_always_draws_on_stderr() {
    let o = run(&[
        "--mode",
        "thread",
        "--progress",
        "always",
        "sleep",
        "400",
        "400",
    ]);
    assert_eq!(o.code, Some(0), "{o:?}");
    assert_eq!(o.lines().len(), 2);
    assert!(o.stderr.contains("/2"), "{:?}", o.stderr);
}

#[test]
fn stdout_closed_early_is_not_a_panic() {
    // `poolrun ... | head -1`: the rest of the output has nowhere to go.
    let mut c = cmd(&["--mode", "thread", "echo"]);
    c.stdin(std::process::Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    drop(stdout);
    let mut w = child.stdin.take().expect("stdin");
    let input: String = (0..2000).map(|i| format!("{i}\n")).collect();
    std::thread::spawn(move || {
        use std::io::Write;
        let _ = w.write_all(input.as_bytes());
    });
    let code = wait_deadline(&mut child, Duration::from_secs(20));
    assert_eq!(code, Some(141));
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn subcommands_are_wired() {
    for sub in ["compare", "demo", "tasks"] {
        let o = run(&[sub, "--help"]);
        assert_eq!(o.code, Some(0), "{sub}: {o:?}");
        assert!(o.stdout.contains("Usage: poolrun"), "{sub}: {}", o.stdout);
    }
    let o = run(&["--mode", "thread", "compare"]);
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("is a subcommand"), "{}", o.stderr);
}
