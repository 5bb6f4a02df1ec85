//! What `/proc` says: process states, children, zombies, descendants, fds, memory.
//!
//! Probes that *count* (children, zombies, fds, RSS) panic when `/proc` cannot be read, so
//! a leak check can never pass by not looking. Probes about one process return `None` when
//! that process is gone.

use std::collections::{BTreeSet, HashSet};

/// `(state, ppid)` of `pid` from `/proc/<pid>/stat`; `None` if it does not exist.
pub fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may contain spaces and parentheses.
    let rest = s.rsplit_once(')')?.1;
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

fn proc_dir() -> std::fs::ReadDir {
    std::fs::read_dir("/proc").unwrap_or_else(|e| panic!("cannot read /proc: {e}"))
}

/// `(pid, ppid, state)` of every process.
pub fn processes() -> Vec<(u32, u32, char)> {
    let mut v = Vec::new();
    for e in proc_dir().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some((state, ppid)) = stat(pid) {
            v.push((pid, ppid, state));
        }
    }
    v
}

/// `(pid, state)` of every child of this process.
pub fn children() -> Vec<(u32, char)> {
    let me = std::process::id();
    processes()
        .into_iter()
        .filter(|&(_, ppid, _)| ppid == me)
        .map(|(pid, _, s)| (pid, s))
        .collect()
}

/// Children of this process that are zombies right now.
pub fn zombies() -> Vec<u32> {
    children()
        .into_iter()
        .filter(|&(_, s)| s == 'Z')
        .map(|(p, _)| p)
        .collect()
}

/// True if `pid` is a child of this process (alive or zombie).
pub fn is_our_child(pid: u32) -> bool {
    matches!(stat(pid), Some((_, ppid)) if ppid == std::process::id())
}

/// Every live descendant of `root` (children, grandchildren, ...).
pub fn descendants(root: u32) -> HashSet<u32> {
    let procs = processes();
    let mut found = HashSet::new();
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

/// Is `pid` a running process (not a zombie, not gone)?
pub fn alive(pid: u32) -> bool {
    matches!(stat(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// The command line of `pid` (for messages).
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The open fds of this process: number → link target.
pub fn fds() -> Vec<(u32, String)> {
    fds_of("self").unwrap_or_else(|| panic!("cannot read /proc/self/fd"))
}

/// The open fds of process `who` (`"self"` or a pid), or `None` if it is gone. An fd that
/// closes while we read is skipped.
pub fn fds_of(who: &str) -> Option<Vec<(u32, String)>> {
    let rd = std::fs::read_dir(format!("/proc/{who}/fd")).ok()?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Ok(n) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(t) = std::fs::read_link(e.path()) {
            out.push((n, t.to_string_lossy().into_owned()));
        }
    }
    out.sort();
    Some(out)
}

/// Number of open fds of this process (minus the one `read_dir` holds while reading).
pub fn fd_count() -> usize {
    fds().len()
}

/// Resident set size of this process in bytes (`VmRSS` in `/proc/self/status`).
pub fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("cannot read /proc/self/status: {e}"));
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no VmRSS line in /proc/self/status"))
}

/// Bytes → MiB, for messages.
pub fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Names in `/dev/shm` right now (empty if it does not exist).
pub fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_visible() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(rss_bytes() > 0);
        assert!(fd_count() >= 3);
        assert!(processes().iter().any(|&(p, _, _)| p == me));
        assert!(stat(u32::MAX).is_none());
    }
}
