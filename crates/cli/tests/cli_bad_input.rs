//! Bad input of every kind: each case gets the documented exit status, a clear message in
//! the documented place, and never a panic.
//!
//! Usage errors (exit 2, message on stderr): flags and their values, unknown task, missing
//! TASK or CMD, `-j` out of range, `-` mixed with other ARGs, unreadable stdin, non-UTF-8
//! command-line arguments. Failed tasks (exit 1, `ERROR:` in the task's output line): a bad
//! per-task argument, a missing file, a command that fails or is not found, a stdin line that
//! is not UTF-8 or is longer than 1 MiB.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use common::*;

/// Where the message must appear.
#[derive(Debug, Clone, Copy)]
enum Where {
    Stderr,
    Stdout,
}

struct Case {
    args: &'static [&'static str],
    stdin: Option<Vec<u8>>,
    code: i32,
    place: Where,
    needle: &'static str,
}

fn case(args: &'static [&'static str], code: i32, place: Where, needle: &'static str) -> Case {
    Case {
        args,
        stdin: None,
        code,
        place,
        needle,
    }
}

fn stdin_case(
    args: &'static [&'static str],
    stdin: Vec<u8>,
    code: i32,
    needle: &'static str,
) -> Case {
    Case {
        args,
        stdin: Some(stdin),
        code,
        place: Where::Stdout,
        needle,
    }
}

fn cases() -> Vec<Case> {
    use Where::*;
    let one_mb_line = {
        let mut v = vec![b'7'; 1_000_000];
        v.extend_from_slice(b"x\n");
        v
    };
    let two_mb_line = {
        let mut v = vec![b'1'; 2 << 20];
        v.push(b'\n');
        v
    };
    vec![
        // --- usage errors: exit 2, message on stderr
        case(
            &["--mode", "fiber", "primes", "1"],
            2,
            Stderr,
            "invalid value 'fiber'",
        ),
        case(&["-j", "0", "primes", "1"], 2, Stderr, "-j 0"),
        case(
            &["-j", "100000", "primes", "1"],
            2,
            Stderr,
            "too many workers",
        ),
        case(
            &["-j", "abc", "primes", "1"],
            2,
            Stderr,
            "invalid value 'abc'",
        ),
        case(
            &["-j", "-3", "primes", "1"],
            2,
            Stderr,
            "invalid value '-3'",
        ),
        case(
            &["-j", "99999999999999999999999", "primes", "1"],
            2,
            Stderr,
            "invalid value",
        ),
        case(
            &["--gil", "maybe", "spin", "1"],
            2,
            Stderr,
            "invalid value 'maybe'",
        ),
        case(
            &["--gil", "on", "--switch-interval", "0", "spin", "1"],
            2,
            Stderr,
            "--switch-interval",
        ),
        case(&["--timeout", "0", "sleep", "1"], 2, Stderr, "--timeout"),
        case(&["--timeout", "-1", "sleep", "1"], 2, Stderr, "--timeout"),
        case(
            &["--timeout", "abc", "sleep", "1"],
            2,
            Stderr,
            "invalid value 'abc'",
        ),
        case(&["--timeout"], 2, Stderr, "a value is required"),
        case(
            &["--format", "xml", "primes", "1"],
            2,
            Stderr,
            "invalid value 'xml'",
        ),
        case(
            &["--progress", "sometimes", "primes", "1"],
            2,
            Stderr,
            "invalid value",
        ),
        case(
            &["--bogus", "primes", "1"],
            2,
            Stderr,
            "unexpected argument '--bogus'",
        ),
        case(&[], 2, Stderr, "missing TASK"),
        case(&["primez", "1"], 2, Stderr, "did you mean `primes`"),
        case(&["nonsense"], 2, Stderr, "unknown task"),
        case(&["exec"], 2, Stderr, "needs CMD"),
        case(&["exec", "  "], 2, Stderr, "CMD is empty"),
        case(
            &["primes", "1", "-", "2"],
            2,
            Stderr,
            "must be the only ARG",
        ),
        case(
            &["tasks", "extra"],
            2,
            Stderr,
            "unexpected argument 'extra'",
        ),
        // --- failed tasks: exit 1, ERROR in the task's line
        case(
            &["primes", "abc"],
            1,
            Stdout,
            "abc\tERROR: N must be a whole number",
        ),
        case(
            &["primes", "-5"],
            1,
            Stdout,
            "-5\tERROR: N must be a whole number",
        ),
        case(
            &["primes", "1.5"],
            1,
            Stdout,
            "ERROR: N must be a whole number",
        ),
        case(
            &["primes", "99999999999999999999999"],
            1,
            Stdout,
            "ERROR: N is too large",
        ),
        case(
            &["primes", ""],
            1,
            Stdout,
            "ERROR: N must be a whole number",
        ),
        case(&["sleep", "NaN"], 1, Stdout, "ERROR: MS must be between"),
        case(&["sleep", "1e12"], 1, Stdout, "ERROR: MS must be between"),
        case(&["spin", "soon"], 1, Stdout, "ERROR: MS must be a number"),
        case(
            &["sha256", "/nonexistent/poolrun"],
            1,
            Stdout,
            "No such file or directory",
        ),
        case(&["sha256", "/"], 1, Stdout, "Is a directory"),
        case(&["sha256", ""], 1, Stdout, "PATH is empty"),
        case(
            &["exec", "no-such-command-poolrun {}", "a"],
            1,
            Stdout,
            "status 127 (command not found)",
        ),
        case(&["exec", "exit 3", "a"], 1, Stdout, "exited with status 3"),
        case(
            &["exec", "kill -9 $$", "a"],
            1,
            Stdout,
            "killed by signal 9 (SIGKILL)",
        ),
        case(
            &["exec", "echo oops >&2; exit 1", "a"],
            1,
            Stdout,
            "status 1: oops",
        ),
        // --- stdin
        stdin_case(&["echo"], b"ok\n\xff\xfe\n".to_vec(), 1, "not valid UTF-8"),
        stdin_case(
            &["primes"],
            one_mb_line,
            1,
            "ERROR: N must be a whole number",
        ),
        stdin_case(&["echo"], two_mb_line, 1, "longer than the limit"),
        stdin_case(&["primes", "-"], b"".to_vec(), 0, ""),
    ]
}

fn check(c: &Case, mode: &str) {
    let mut args = vec!["--mode", mode];
    // `--mode` must not be added to the cases that test flags parsing of a bare command line.
    if c.args.is_empty() || c.args[0] == "tasks" {
        args.clear();
    }
    args.extend_from_slice(c.args);
    let o = run_with(&args, c.stdin.as_deref(), Duration::from_secs(30));
    assert_no_panic(&o);
    assert_eq!(o.code, Some(c.code), "{args:?}: {o:?}");
    let text = match c.place {
        Where::Stderr => &o.stderr,
        Where::Stdout => &o.stdout,
    };
    assert!(
        text.contains(c.needle),
        "{args:?}: {:?} not in {:?}: {o:?}",
        c.needle,
        c.place
    );
    if c.code == 2 {
        // A usage error: one clear line (plus at most a hint line), no output.
        assert!(o.stdout.is_empty(), "{args:?}: {o:?}");
        assert!(o.stderr.lines().count() <= 2, "{args:?}: {}", o.stderr);
        assert!(
            o.stderr.starts_with("poolrun: error: "),
            "{args:?}: {}",
            o.stderr
        );
    }
    if c.code == 1 {
        // The error is on the task's line, which is short even for a 1 MB input.
        for l in o.stdout.lines() {
            assert!(l.len() < 2000, "{args:?}: a {}-byte line", l.len());
        }
        assert!(o.stderr.contains("failed"), "{args:?}: {}", o.stderr);
    }
}

#[test]
fn table_has_enough_cases() {
    assert!(cases().len() >= 25);
}

#[test]
fn bad_input_thread_mode() {
    for c in cases() {
        check(&c, "thread");
    }
}

#[test]
fn bad_input_process_mode() {
    for c in cases() {
        check(&c, "process");
    }
}

#[test]
fn non_utf8_argument_is_a_usage_error() {
    let mut c = cmd(&["--mode", "thread", "echo"]);
    c.arg(OsStr::from_bytes(b"\xff\xfe"));
    c.stdin(std::process::Stdio::null());
    let o = c.output().expect("run poolrun");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("invalid UTF-8"), "{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn unreadable_stdin_is_reported() {
    let dir = std::fs::File::open("/").expect("open /");
    let o = cmd(&["--mode", "thread", "echo"])
        .stdin(dir)
        .output()
        .expect("run poolrun");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot read stdin"), "{err}");
}

#[test]
fn hundred_megabytes_of_output_is_truncated() {
    for mode in MODES {
        let o = run_with(
            &[
                "--mode",
                mode,
                "exec",
                "head -c 100000000 /dev/zero | tr '\\0' y",
                "x",
            ],
            None,
            Duration::from_secs(60),
        );
        assert_no_panic(&o);
        assert_eq!(o.code, Some(0), "{mode}: {}", o.stderr);
        assert!(o.stdout.len() < 2 << 20, "{mode}: {} bytes", o.stdout.len());
        assert!(
            o.stdout
                .contains("output truncated: kept 1048576 bytes, dropped 98951424 more"),
            "{mode}: {}",
            &o.stdout[o.stdout.len().saturating_sub(200)..]
        );
    }
}
