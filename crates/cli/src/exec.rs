//! The `exec CMD ARG...` task: run `sh -c CMD sh ARG` per argument.
//!
//! - `{}` in CMD is replaced by ARG, single-quoted for the shell; ARG is also `$1`.
//! - stdin is `/dev/null` (poolrun's own stdin may be the task list); stdout is captured
//!   (the first [`STDOUT_CAP`] bytes are kept, the rest counted and reported as truncated, so
//!   a task printing 100 MB cannot exhaust memory); stderr is captured the same way (first
//!   [`STDERR_CAP`] bytes) and its last line explains a failure.
//! - A non-zero exit or a death by signal fails the task; 127 is "command not found".
//! - The command runs in a process group of its own, led by a tiny guard process (see
//!   [`Group`]) that kills the whole group if this process dies, even by SIGKILL; the command
//!   itself also has `PR_SET_PDEATHSIG(SIGKILL)`. The task waits inside `allow_threads`,
//!   polling `try_wait` with a `checkpoint()` between polls, so a thread-mode `--timeout` can
//!   stop it; a drop guard kills the group (and reaps) if the task is stopped or unwinds.
//!   When the command exits, whatever it left running in its group (`cmd &`) is killed too:
//!   a task ends when its command ends and leaves nothing behind.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use poolrun::gil::{allow_threads, checkpoint};

use crate::text::{io_reason, show};

/// How much of a command's stdout is kept.
pub const STDOUT_CAP: usize = 1 << 20;
/// How much of a command's stderr is kept.
pub const STDERR_CAP: usize = 64 << 10;

/// Process groups of the commands running in *this* process (thread mode), so an interrupted
/// `poolrun` can kill them before it exits.
static LIVE_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Kill every command still running from this process (by process group). Used on Ctrl-C /
/// SIGTERM in thread mode; process-mode commands die with their worker.
pub(crate) fn kill_all_running() {
    let groups = LIVE_GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for g in groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
}

/// Quote `s` for a POSIX shell: `'...'` with every `'` written as `'\''`.
pub(crate) fn shell_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        if c == '\'' {
            q.push_str("'\\''");
        } else {
            q.push(c);
        }
    }
    q.push('\'');
    q
}

/// A process group holding one command and its guard. On drop (normal end, error, or
/// unwinding from a stopped task) kills the whole group and reaps what it spawned.
///
/// The guard is `sh -c 'read _; kill -9 0'`, the group's leader, reading a lifeline pipe
/// whose only write end this process holds (close-on-exec). If this process dies — even by
/// SIGKILL, even in the middle of a task — the pipe reaches EOF and the guard kills the
/// group: the command *and everything it started* (a shell that forks `sleep` instead of
/// exec'ing it leaves a grandchild that `PR_SET_PDEATHSIG` alone would not reach).
struct Group {
    guard: Child,
    /// Write end of the guard's lifeline; closing it (our death) fires the guard.
    _lifeline: std::os::fd::OwnedFd,
    pgid: i32,
    child: Option<Child>,
}

impl Group {
    /// Start the guard; its pid becomes the group id for the command.
    fn start() -> Result<Group, String> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("cannot create a pipe: {e}"))?;
        let mut guard = Command::new("/bin/sh");
        guard
            .arg("-c")
            .arg("read _; kill -9 0")
            .stdin(Stdio::from(r))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let guard = allow_threads(|| guard.spawn())
            .map_err(|e| format!("cannot run /bin/sh: {}", io_reason(&e)))?;
        let pgid = i32::try_from(guard.id()).unwrap_or(i32::MAX);
        LIVE_GROUPS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pgid);
        Ok(Group {
            guard,
            _lifeline: w,
            pgid,
            child: None,
        })
    }

    fn kill_group(&self) {
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill_group();
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.guard.kill();
        let _ = self.guard.wait();
        let mut live = LIVE_GROUPS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = live.iter().position(|g| *g == self.pgid) {
            live.swap_remove(i);
        }
    }
}

/// Bytes read from a pipe: the kept prefix and how many more were discarded.
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
}

/// Read `r` to EOF on a new thread, keeping the first `cap` bytes.
fn spawn_reader<R: Read + Send + 'static>(
    mut r: R,
    cap: usize,
) -> Result<mpsc::Receiver<Captured>, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("poolrun-exec-reader".into())
        .spawn(move || {
            let mut kept = Vec::new();
            let mut dropped = 0u64;
            let mut buf = [0u8; 64 * 1024];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = cap.saturating_sub(kept.len());
                        let take = room.min(n);
                        kept.extend_from_slice(&buf[..take]);
                        dropped += (n - take) as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(Captured { kept, dropped });
        })
        .map_err(|e| format!("cannot start a reader thread: {}", io_reason(&e)))?;
    Ok(rx)
}

/// The `exec` task.
pub(crate) fn exec(cmd: &str, arg: &str) -> Result<String, String> {
    if arg.contains('\0') {
        return Err(format!("ARG {} contains a NUL byte", show(arg)));
    }
    let script = cmd.replace("{}", &shell_quote(arg));
    let mut group = Group::start()?;
    let parent = std::process::id();
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&script)
        .arg("sh")
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(group.pgid);
    // SAFETY: the closure runs in the forked child between fork and exec, where only
    // async-signal-safe calls are allowed; it makes exactly two syscalls (prctl, getppid)
    // and allocates nothing. It only affects the child.
    unsafe {
        command.pre_exec(move || {
            // Die with the thread that spawned us (a worker thread, or a worker process's
            // task thread); the guard takes care of what we start.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died before PDEATHSIG was armed: then we were reparented.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    let mut child = allow_threads(|| command.spawn())
        .map_err(|e| format!("cannot run /bin/sh: {}", io_reason(&e)))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    group.child = Some(child);
    let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
        return Err("internal error: the command's pipes are missing".into());
    };
    let out_rx = spawn_reader(stdout, STDOUT_CAP)?;
    let err_rx = spawn_reader(stderr, STDERR_CAP)?;

    // Poll for exit: 0.5 ms at first (short commands return fast), backing off to 20 ms.
    let mut pause = Duration::from_micros(500);
    let status = loop {
        let Some(child) = group.child.as_mut() else {
            return Err("internal error: the command is missing".into());
        };
        let polled = allow_threads(|| match child.try_wait() {
            Ok(Some(st)) => Some(Ok(st)),
            Ok(None) => {
                std::thread::sleep(pause);
                None
            }
            Err(e) => Some(Err(e)),
        });
        match polled {
            Some(Ok(st)) => break st,
            Some(Err(e)) => return Err(format!("waiting for the command: {}", io_reason(&e))),
            None => {
                checkpoint();
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    };
    group.child = None; // reaped by try_wait
                        // Kill whatever the command left running in its group (and the guard), so the pipes
                        // close and nothing outlives the task.
    drop(group);

    let collect = |rx: mpsc::Receiver<Captured>| {
        allow_threads(|| rx.recv_timeout(Duration::from_secs(2))).unwrap_or(Captured {
            kept: Vec::new(),
            dropped: 0,
        })
    };
    let out = collect(out_rx);
    let err = collect(err_rx);

    if status.success() {
        let mut text = String::from_utf8_lossy(&out.kept).into_owned();
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if out.dropped > 0 {
            text.push_str(&format!(
                " [output truncated: kept {STDOUT_CAP} bytes, dropped {} more]",
                out.dropped
            ));
        }
        return Ok(text);
    }
    let why = match (status.code(), status.signal()) {
        (Some(127), _) => "exited with status 127 (command not found)".to_string(),
        (Some(126), _) => "exited with status 126 (command not executable)".to_string(),
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!(
            "was killed by signal {s} ({})",
            Signal::try_from(s).map(|g| g.as_str()).unwrap_or("unknown")
        ),
        (None, None) => "ended with an unknown status".to_string(),
    };
    let stderr_text = String::from_utf8_lossy(&err.kept);
    let last = stderr_text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty());
    match last {
        Some(l) => {
            let l: String = l.chars().take(300).collect();
            Err(format!("command {why}: {l}"))
        }
        None => Err(format!("command {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn runs_and_substitutes() {
        assert_eq!(exec("echo {}", "a b; rm -rf /"), Ok("a b; rm -rf /".into()));
        assert_eq!(exec("printf '%s' \"$1\"", "x'y"), Ok("x'y".into()));
        assert_eq!(exec("true", "z"), Ok(String::new()));
    }

    #[test]
    fn failures_are_explained() {
        let e = exec("exit 3", "a").unwrap_err();
        assert!(e.contains("status 3"), "{e}");
        let e = exec("no-such-command-xyz {}", "a").unwrap_err();
        assert!(e.contains("127") && e.contains("not found"), "{e}");
        let e = exec("kill -9 $$", "a").unwrap_err();
        assert!(e.contains("signal 9"), "{e}");
        assert!(exec("echo {}", "a\0b").unwrap_err().contains("NUL"));
    }

    #[test]
    fn output_is_capped() {
        let out = exec("head -c 3000000 /dev/zero | tr '\\0' x", "").unwrap();
        assert!(out.len() < STDOUT_CAP + 200);
        assert!(out.contains("truncated"), "{}", &out[out.len() - 100..]);
    }

    #[test]
    fn background_leftovers_are_killed() {
        // Without the group kill the reader would wait for `sleep 30` to close stdout.
        let t = std::time::Instant::now();
        assert_eq!(exec("sleep 30 & echo started", ""), Ok("started".into()));
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
