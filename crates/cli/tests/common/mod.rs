//! Helpers shared by the CLI tests: run the built `poolrun` binary with a deadline, and
//! inspect `/proc` for the processes it started.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_poolrun");

/// Both modes, for tests that run in each.
pub const MODES: [&str; 2] = ["thread", "process"];

/// What a finished run produced.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// A `poolrun` command with stdout/stderr piped and no progress bar.
pub fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Read a pipe to its end on a thread.
fn reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Wait for `child` at most `limit`; kill it (and fail) if it takes longer.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.code(),
            Ok(None) => {}
            Err(e) => panic!("wait failed: {e}"),
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("poolrun did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Run `poolrun args` with `stdin` bytes (None: /dev/null), at most `limit`.
pub fn run_with(args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Out {
    let mut c = cmd(args);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().expect("spawn poolrun");
    let out = reader(child.stdout.take().expect("stdout"));
    let err = reader(child.stderr.take().expect("stderr"));
    if let Some(data) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        // Write on a thread: poolrun reads lazily, so a big input must not block us.
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let code = wait_deadline(&mut child, limit);
    let stdout = String::from_utf8_lossy(&out.join().expect("stdout reader")).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned();
    Out {
        code,
        stdout,
        stderr,
    }
}

/// Run `poolrun args` with no stdin, at most 30 s.
pub fn run(args: &[&str]) -> Out {
    run_with(args, None, Duration::from_secs(30))
}

/// Assert nothing in stderr looks like a panic or a backtrace.
pub fn assert_no_panic(o: &Out) {
    assert!(
        !o.stderr.contains("panicked") && !o.stderr.contains("RUST_BACKTRACE"),
        "stderr shows a panic: {}",
        o.stderr
    );
}

/// `(pid, ppid, state)` of every process, from `/proc/*/stat`.
pub fn processes() -> Vec<(i32, i32, char)> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((ppid, state)) = stat(pid) {
            v.push((pid, ppid, state));
        }
    }
    v
}

/// `(ppid, state)` of `pid`, if it exists.
pub fn stat(pid: i32) -> Option<(i32, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: parse after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Every live descendant of `root` (children, grandchildren, ...).
pub fn descendants(root: i32) -> HashSet<i32> {
    let procs = processes();
    let mut found: HashSet<i32> = HashSet::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid, _) in &procs {
            if ppid == p && found.insert(pid) {
                frontier.push(pid);
            }
        }
    }
    found
}

/// Is `pid` a running (not zombie, not gone) process?
pub fn alive(pid: i32) -> bool {
    matches!(stat(pid), Some((_, s)) if s != 'Z' && s != 'X')
}

/// The command line of `pid` (for messages).
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Poll `f` every 10 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Send `sig` to `pid`.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
    nix::sys::signal::kill(pid, sig).expect("kill");
}
