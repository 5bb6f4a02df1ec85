//! Security properties of the process pool (the threat model is in
//! README.md): workers talk to their parent only over inherited, anonymous channels, and
//! shared memory is never readable by other users.
//!
//! - every fd a worker holds that the pool gave it is anonymous: a `socketpair` socket with
//!   no path in `/proc/<pid>/net/unix`, a pipe, an `anon_inode`, or a memfd — nothing named
//!   on the file system that another process could open or connect to;
//! - the pool's new fds in the parent are anonymous too, and `/dev/shm` is untouched;
//! - every shared-memory memfd (made by the parent or by a worker) has mode 0600 or
//!   stricter, in the parent and in the worker.
//!
//! One binary on its own: it compares fd tables, so nothing else may create pools here.

mod fault_util;

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use fault_util::*;
use poolrun::shm::{SharedArray, SharedBytes};
use poolrun::{Executor, PoolConfig, ProcessPool};

const LIMIT: Duration = Duration::from_secs(20);

/// `(fd, link target, st_mode)` of every fd of the calling process.
fn own_fds(_: ()) -> Vec<(u32, String, u32)> {
    fds()
        .into_iter()
        .map(|(n, t)| {
            let mode = std::fs::metadata(format!("/proc/self/fd/{n}"))
                .map(|m| m.mode())
                .unwrap_or(u32::MAX);
            (n, t, mode)
        })
        .collect()
}

/// Modes of the poolrun memfds the worker can see while it holds `b` and `a`.
fn memfd_modes_in_worker(arg: (SharedBytes, SharedArray<u64>)) -> Vec<(String, u32)> {
    let (b, a) = arg;
    assert_eq!(b.len(), 3);
    a.set(0, 42);
    own_fds(())
        .into_iter()
        .filter(|(_, t, _)| t.starts_with("/memfd:poolrun"))
        .map(|(_, t, m)| (t, m))
        .collect()
}

/// A worker makes a segment and returns it.
fn make_array(n: usize) -> SharedArray<u32> {
    let a = SharedArray::<u32>::new(n).expect("array in worker");
    a.set(0, 7);
    a
}

/// Socket inode → its path (`None`: anonymous) from `/proc/<who>/net/unix`.
fn unix_socket_paths(who: &str) -> HashMap<u64, Option<String>> {
    let mut out = HashMap::new();
    let Ok(s) = std::fs::read_to_string(format!("/proc/{who}/net/unix")) else {
        return out;
    };
    for line in s.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode [Path]
        if cols.len() < 7 {
            continue;
        }
        if let Ok(ino) = cols[6].parse::<u64>() {
            out.insert(ino, cols.get(7).map(|p| p.to_string()));
        }
    }
    out
}

/// Why an fd target is not an anonymous kernel object, if it is not.
fn named(target: &str, sockets: &HashMap<u64, Option<String>>) -> Option<String> {
    if let Some(ino) = target
        .strip_prefix("socket:[")
        .and_then(|r| r.strip_suffix(']'))
    {
        let ino: u64 = ino.parse().ok()?;
        return match sockets.get(&ino) {
            Some(Some(path)) => Some(format!("unix socket bound to {path}")),
            // Not a unix socket (or anonymous): nothing to connect to by name.
            _ => None,
        };
    }
    if target.starts_with("pipe:[") || target.starts_with("anon_inode:") {
        return None;
    }
    if target.starts_with("/memfd:") {
        return None;
    }
    Some(format!("named file {target}"))
}

#[test]
fn worker_and_parent_fds_are_anonymous_and_shm_is_private() {
    let _g = serial();
    // Fds this process had before any pool (the host's: stdio, cargo's jobserver, ...).
    {
        let warm = ProcessPool::new(PoolConfig::new().workers(1)).expect("warm-up pool");
        assert!(warm.submit(own_fds, ()).result_timeout(LIMIT).is_ok());
    }
    assert!(eventually(LIMIT, || children().is_empty()));
    let shm_before = dev_shm();
    let before: BTreeSet<String> = fds().into_iter().map(|(_, t)| t).collect();

    let pool = ProcessPool::new(PoolConfig::new().workers(3)).expect("pool");
    // Let the workers start and run tasks.
    let futs: Vec<_> = (0..12).map(|_| pool.submit(own_fds, ())).collect();
    for f in futs {
        assert!(f.result_timeout(LIMIT).is_ok());
    }
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 3);
    for pid in &pids {
        let who = pid.to_string();
        let sockets = unix_socket_paths(&who);
        let list = fds_of(&who).unwrap_or_else(|| panic!("cannot read /proc/{pid}/fd"));
        assert!(!list.is_empty(), "cannot read /proc/{pid}/fd");
        let mut bad = Vec::new();
        for (n, t) in &list {
            if *n <= 2 || before.contains(t) {
                continue; // stdio and the host's own fds, inherited through fork
            }
            if let Some(why) = named(t, &sockets) {
                bad.push(format!("fd {n}: {why}"));
            }
        }
        assert!(bad.is_empty(), "worker {pid} holds named objects: {bad:?}");
        println!(
            "SECURITY worker {pid}: {} fds, all anonymous beyond stdio/host: {:?}",
            list.len(),
            list.iter()
                .map(|(n, t)| format!("{n}={t}"))
                .collect::<Vec<_>>()
        );
    }

    // The pool's fds in the parent.
    let sockets = unix_socket_paths("self");
    let new: Vec<(u32, String)> = fds()
        .into_iter()
        .filter(|(_, t)| !before.contains(t))
        .collect();
    for (n, t) in &new {
        assert!(
            named(t, &sockets).is_none(),
            "parent fd {n} of the pool is named: {t}"
        );
    }

    // Shared memory: mode 0600 or stricter, seen from the parent and from a worker.
    let b = SharedBytes::from_slice(b"abc").expect("bytes");
    let a = SharedArray::<u64>::new(16).expect("array");
    let in_worker = pool
        .submit(memfd_modes_in_worker, (b.clone(), a.clone()))
        .result_timeout(LIMIT)
        .expect("memfd modes in worker");
    assert_eq!(a.get(0), 42, "the worker's write is visible in the parent");
    assert!(
        in_worker.len() >= 2,
        "the worker should hold both memfds: {in_worker:?}"
    );
    let from_worker = pool
        .submit(make_array, 8)
        .result_timeout(LIMIT)
        .expect("array made by a worker");
    assert_eq!(from_worker.get(0), 7);
    let mut checked = 0;
    for (n, t) in fds() {
        if !t.starts_with("/memfd:poolrun") {
            continue;
        }
        let mode = std::fs::metadata(format!("/proc/self/fd/{n}"))
            .expect("stat memfd")
            .mode();
        assert_eq!(mode & 0o077, 0, "parent memfd {t} has mode {mode:o}");
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected 3 poolrun memfds in the parent, saw {checked}"
    );
    for (t, mode) in &in_worker {
        assert_eq!(mode & 0o077, 0, "worker memfd {t} has mode {mode:o}");
    }
    println!(
        "SECURITY memfds: {checked} in the parent, {} in a worker, all mode 0600 or stricter",
        in_worker.len()
    );
    drop((b, a, from_worker));
    drop(pool);
    assert!(eventually(LIMIT, || children().is_empty()));
    assert_eq!(dev_shm(), shm_before, "/dev/shm changed");
}
