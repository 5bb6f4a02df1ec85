//! Signals: SIGINT / SIGTERM to a busy `poolrun` cancel the work, stop the workers and exit
//! 130 / 143 with a summary; SIGKILL to `poolrun` leaves no worker and no command behind.
//! Every process the run started is recorded from `/proc` while it runs, and checked dead
//! afterwards.

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// Start `poolrun args` (stdin: a pipe kept open, or /dev/null).
fn start(args: &[&str], keep_stdin_open: bool) -> std::process::Child {
    let mut c = cmd(args);
    c.stdin(if keep_stdin_open {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.spawn().expect("spawn poolrun")
}

/// Wait until `root` has descendants matching `pred` (at least `n`), and return all of them.
fn wait_for_descendants(root: u32, n: usize, pred: impl Fn(u32) -> bool) -> HashSet<u32> {
    let mut seen = HashSet::new();
    let ok = wait_until(Duration::from_secs(10), || {
        let d = descendants(root);
        seen.extend(d.iter().copied());
        d.iter().filter(|p| pred(**p)).count() >= n
    });
    assert!(
        ok,
        "poolrun {root} did not start {n} matching processes: {seen:?}"
    );
    // One more look, so late starters are recorded too.
    std::thread::sleep(Duration::from_millis(100));
    seen.extend(descendants(root));
    seen
}

fn is_sleep_cmd(pid: u32) -> bool {
    cmdline(pid).starts_with("sleep")
}

fn assert_all_dead(pids: &HashSet<u32>, within: Duration, what: &str) {
    let ok = wait_until(within, || pids.iter().all(|p| !alive(*p)));
    let left: Vec<String> = pids
        .iter()
        .filter(|p| alive(**p))
        .map(|p| format!("{p} ({})", cmdline(*p)))
        .collect();
    assert!(ok, "{what}: still alive after {within:?}: {left:?}");
}

fn collect_stderr(child: &mut std::process::Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

fn interrupt(mode: &str, sig: Signal, expect: i32) {
    let mut child = start(
        &[
            "--mode", mode, "-j", "2", "sleep", "30000", "30000", "30000", "5",
        ],
        false,
    );
    let pid = child.id();
    // Let the pool start (process mode: until both workers exist) and the long tasks begin.
    if mode == "process" {
        wait_for_descendants(pid, 2, |_| true);
    }
    std::thread::sleep(Duration::from_millis(500));
    let started = descendants(pid);
    let t = Instant::now();
    signal(pid, sig);
    let code = wait_deadline(&mut child, Duration::from_secs(10));
    let err = collect_stderr(&mut child);
    assert_eq!(code, Some(expect), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "slow exit: {:?}",
        t.elapsed()
    );
    assert!(err.contains("interrupted by SIG"), "{err}");
    // Nothing finished; the 4 tasks were running (thread mode: 2; process mode may count the
    // task handed to each worker one ahead as running too — a task counts as running once handed to a
    // worker) or cancelled.
    assert!(err.contains("0 task(s) finished"), "{err}");
    let number_before = |what: &str| -> u32 {
        let end = err
            .find(what)
            .unwrap_or_else(|| panic!("{what:?} missing: {err}"));
        let digits: String = err[..end]
            .trim_end()
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no count before {what:?}: {err}"))
    };
    assert_eq!(
        number_before("running stopped") + number_before("queued cancelled"),
        4,
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_all_dead(&started, Duration::from_secs(1), "workers after the signal");
}

fn interrupt_exec(mode: &str) {
    let mut child = start(
        &["--mode", mode, "-j", "2", "exec", "sleep 30", "1", "2", "3"],
        false,
    );
    let pid = child.id();
    let seen = wait_for_descendants(pid, 2, is_sleep_cmd);
    signal(pid, Signal::SIGINT);
    let code = wait_deadline(&mut child, Duration::from_secs(10));
    let err = collect_stderr(&mut child);
    assert_eq!(code, Some(130), "{err}");
    assert_all_dead(
        &seen,
        Duration::from_secs(1),
        "workers and commands after SIGINT",
    );
}

fn sigkill_busy(mode: &str) {
    let mut child = start(
        &["--mode", mode, "-j", "2", "exec", "sleep 30", "1", "2", "3"],
        false,
    );
    let pid = child.id();
    let seen = wait_for_descendants(pid, 2, is_sleep_cmd);
    signal(pid, Signal::SIGKILL);
    let _ = wait_deadline(&mut child, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    let left: Vec<String> = seen
        .iter()
        .filter(|p| alive(**p))
        .map(|p| format!("{p} ({})", cmdline(*p)))
        .collect();
    // Clean up whatever survived so a failure does not leak `sleep 30`s.
    for p in &seen {
        if alive(*p) {
            sigkill(*p);
        }
    }
    assert!(
        left.is_empty(),
        "alive 1 s after SIGKILL of poolrun: {left:?}"
    );
}

#[test]
fn sigint_thread() {
    interrupt("thread", Signal::SIGINT, 130);
}

#[test]
fn sigint_process() {
    interrupt("process", Signal::SIGINT, 130);
}

#[test]
fn sigterm_thread() {
    interrupt("thread", Signal::SIGTERM, 143);
}

#[test]
fn sigterm_process() {
    interrupt("process", Signal::SIGTERM, 143);
}

#[test]
fn sigint_kills_exec_commands_thread() {
    interrupt_exec("thread");
}

#[test]
fn sigint_kills_exec_commands_process() {
    interrupt_exec("process");
}

#[test]
fn sigkill_busy_thread() {
    sigkill_busy("thread");
}

#[test]
fn sigkill_busy_process() {
    sigkill_busy("process");
}

#[test]
fn sigkill_idle_process() {
    // Workers idle, waiting for stdin lines that never come.
    let mut child = start(&["--mode", "process", "-j", "2", "echo"], true);
    let pid = child.id();
    let seen = wait_for_descendants(pid, 2, |_| true);
    signal(pid, Signal::SIGKILL);
    let _ = wait_deadline(&mut child, Duration::from_secs(5));
    drop(child.stdin.take());
    std::thread::sleep(Duration::from_secs(1));
    let left: Vec<String> = seen
        .iter()
        .filter(|p| alive(**p))
        .map(|p| format!("{p} ({})", cmdline(*p)))
        .collect();
    for p in &seen {
        if alive(*p) {
            sigkill(*p);
        }
    }
    assert!(
        left.is_empty(),
        "idle workers alive 1 s after SIGKILL of poolrun: {left:?}"
    );
}

#[test]
fn sigint_while_reading_stdin() {
    // No input arrives: the run loop waits on stdin and must still react to Ctrl-C.
    let mut child = start(&["--mode", "thread", "echo"], true);
    std::thread::sleep(Duration::from_millis(300));
    signal(child.id(), Signal::SIGINT);
    let code = wait_deadline(&mut child, Duration::from_secs(10));
    let err = collect_stderr(&mut child);
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("0 task(s) finished"), "{err}");
}

#[test]
fn second_sigint_exits_at_once() {
    // Two signals in a row: whichever handles it (the run loop's teardown or the immediate
    // exit), the status is 130 and the exit is quick.
    let mut child = start(&["--mode", "thread", "-j", "1", "sleep", "30000"], false);
    std::thread::sleep(Duration::from_millis(300));
    signal(child.id(), Signal::SIGINT);
    signal(child.id(), Signal::SIGINT);
    let t = Instant::now();
    let code = wait_deadline(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(130));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn worker_killed_by_its_task_fails_only_that_task_and_is_reaped() {
    // `kill -9 $PPID` from the command kills the worker process running it.
    let mut child = start(
        &[
            "--mode",
            "process",
            "-j",
            "1",
            "--format",
            "json",
            "exec",
            "test {} = die && kill -9 $PPID; sleep 1; echo ok",
            "die",
            "x",
        ],
        false,
    );
    let pid = child.id();
    // While the second task runs on the replacement worker, the dead one must be reaped.
    std::thread::sleep(Duration::from_millis(600));
    let zombies: Vec<u32> = processes()
        .into_iter()
        .filter(|(_, ppid, state)| *ppid == pid && *state == 'Z')
        .map(|(p, _, _)| p)
        .collect();
    let code = wait_deadline(&mut child, Duration::from_secs(20));
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut out);
    }
    assert!(
        zombies.is_empty(),
        "zombie children of poolrun: {zombies:?}"
    );
    assert_eq!(code, Some(1), "{out}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["ok"], false);
    let err = lines[0]["error"].as_str().unwrap_or_default();
    assert!(err.contains("died") && err.contains("SIGKILL"), "{err}");
    assert!(lines[0]["worker"].as_u64().is_some(), "{out}");
    assert_eq!(lines[1]["ok"], true, "{out}");
    assert_eq!(lines[1]["output"], "ok");
    assert_ne!(lines[0]["worker"], lines[1]["worker"]);
}
