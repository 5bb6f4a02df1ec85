//! The shared-memory rings under faults (issue 11): a worker killed while its results ring
//! is full loses and duplicates nothing; a host SIGKILLed in the middle of a stream of
//! tiny tasks leaves no worker behind.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use poolrun_core::shm::SharedArray;
use poolrun_core::{Executor, PoolConfig};
use poolrun_procpool::ProcessPool;

fn noop(x: u32) -> u32 {
    x
}

/// 4 KiB of `i`, counting its runs in `runs[i]` (one worker at a time runs these).
fn four_kib((runs, i): (SharedArray<u64>, u32)) -> Vec<u8> {
    runs.set(i as usize, runs.get(i as usize) + 1);
    vec![(i % 251) as u8; 4096]
}

fn wchan(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

#[test]
fn worker_killed_with_a_full_results_ring_loses_and_duplicates_nothing() {
    let pool = ProcessPool::new(PoolConfig::new().workers(1)).expect("pool");
    let worker = pool.worker_pids()[0];
    // Block the collector inside a done-callback, so nobody reads the results ring.
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let first = pool.submit(noop, 0);
    let g = gate.clone();
    first.add_done_callback(move |_| {
        let (m, c) = &*g;
        let mut open = m.lock().unwrap();
        while !*open {
            open = c.wait(open).unwrap();
        }
    });
    // One batch of 400 results of 4 KiB (1.6 MiB): far more than the 256 KiB ring.
    let n = 400u32;
    let runs = SharedArray::<u64>::new(n as usize).expect("array");
    let inputs: Vec<_> = (0..n).map(|i| (runs.clone(), i)).collect();
    let map = pool.map(four_kib, inputs).chunksize(n as usize).window(1);
    let results = std::thread::spawn(move || map.collect::<Vec<_>>());
    // The worker fills the ring and waits for space on its futex.
    let full = eventually(LIMIT, || {
        wchan(worker).contains("futex") && (0..n).filter(|&i| runs.get(i as usize) > 0).count() > 32
    });
    assert!(
        full,
        "the worker never blocked on a full ring (wchan {:?})",
        wchan(worker)
    );
    let ran_before_kill = (0..n).filter(|&i| runs.get(i as usize) > 0).count();
    assert!(
        ran_before_kill < n as usize,
        "all {n} ran: the ring was never full"
    );
    println!(
        "{ran_before_kill} of {n} items ran before the kill (worker wchan {})",
        wchan(worker)
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill worker");
    {
        let (m, c) = &*gate;
        *m.lock().unwrap() = true;
        c.notify_all();
    }
    let t = Instant::now();
    let out = results.join().expect("map thread");
    assert!(t.elapsed() < LIMIT);
    // One result per item, each the right one: the published results were delivered, the
    // rest re-ran on the replacement worker.
    assert_eq!(out.len(), n as usize);
    for (i, r) in out.iter().enumerate() {
        let v = r.as_ref().unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(v.len(), 4096);
        assert_eq!(v[0], (i % 251) as u8, "item {i}");
    }
    // Nothing ran more than twice (once before the kill, once after), and every item that
    // ran only after the kill ran exactly once.
    for i in 0..n as usize {
        let k = runs.get(i);
        assert!((1..=2).contains(&k), "item {i} ran {k} times");
    }
    assert_eq!(first.result(), Ok(0));
    assert!(!pool.worker_pids().contains(&worker));
}

fn helper() -> Command {
    Command::new(env!("CARGO_BIN_EXE_procpool-test-helper"))
}

/// A host SIGKILLed while a stream of tiny tasks flows through the rings: every worker
/// is gone within a second (the rings hold no one back).
#[test]
fn host_killed_mid_stream_leaves_no_worker() {
    let mut cmd = helper();
    cmd.arg("stream").stderr(Stdio::null());
    let (mut child, line) = start_and_read_line(cmd, "helper did not start streaming");
    let pids: Vec<u32> = line
        .trim()
        .strip_prefix("STREAMING ")
        .unwrap_or_else(|| panic!("bad helper line {line:?}"))
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    std::thread::sleep(Duration::from_millis(100)); // mid-stream
    child.kill().expect("SIGKILL helper");
    child.wait().expect("reap helper");
    let alive = |p: u32| matches!(stat(p), Some((s, _)) if s != 'Z');
    assert!(
        eventually(Duration::from_secs(1), || pids.iter().all(|&p| !alive(p))),
        "workers {pids:?} outlived the host"
    );
}
