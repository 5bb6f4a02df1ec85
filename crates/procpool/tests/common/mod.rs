//! Helpers shared by the process-pool tests: zombie and fd checks, bounded waits.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// The `/proc/<pid>/stat` state letter and parent pid, if the process exists.
pub fn proc_state(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True if `pid` is our child (alive or zombie).
pub fn is_our_child(pid: u32) -> bool {
    matches!(proc_state(pid), Some((_, ppid)) if ppid == std::process::id())
}

/// Wait (bounded) until none of `pids` is a child of this process any more — i.e. every
/// one was reaped. Panics after `limit`, naming the leftovers and their states.
pub fn assert_reaped(pids: &[u32], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<(u32, Option<(char, u32)>)> = pids
            .iter()
            .copied()
            .filter(|&p| is_our_child(p))
            .map(|p| (p, proc_state(p)))
            .collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("workers not reaped after {limit:?}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Children of this process that are zombies right now.
pub fn our_zombies() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some((state, ppid)) = proc_state(pid) {
                    if ppid == me && state == 'Z' {
                        out.push(pid);
                    }
                }
            }
        }
    }
    out
}

/// Open fds of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// SIGKILL a process (test helper; the pid is a live worker we were just told about).
pub fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Poll `cond` until true or `limit` passes; returns whether it became true.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Generous bound for any single wait in these tests.
pub const LIMIT: Duration = Duration::from_secs(20);
