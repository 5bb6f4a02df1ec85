//! Shared memory through pools, both modes: workers' writes seen by the parent, a segment
//! created in a worker and returned, big buffers as O(1) handles, nothing left behind.

use std::time::{Duration, Instant};

use poolrun::shm::{SharedArray, SharedBytes};
use poolrun::{Executor, Mode, Pool, PoolConfig};

const MODES: [Mode; 2] = [Mode::Thread, Mode::Process];

fn pool(mode: Mode, n: usize) -> Pool {
    Pool::new(mode, PoolConfig::new().workers(n)).expect("pool")
}

fn fill((arr, lo, hi): (SharedArray<u64>, usize, usize)) -> u32 {
    for i in lo..hi {
        arr.set(i, (i * i) as u64);
    }
    std::process::id()
}

#[test]
fn shared_array_writes_are_seen_by_the_parent() {
    for mode in MODES {
        let p = pool(mode, 2);
        let arr = SharedArray::<u64>::new(1000).unwrap();
        let futs: Vec<_> = (0..4)
            .map(|k| p.submit(fill, (arr.clone(), k * 250, (k + 1) * 250)))
            .collect();
        for f in futs {
            let pid = f.result().unwrap();
            if mode == Mode::Process {
                assert_ne!(pid, std::process::id());
            }
        }
        assert!((0..1000).all(|i| arr.get(i) == (i * i) as u64), "{mode}");
    }
}

fn make(n: usize) -> Result<SharedArray<u32>, String> {
    let a = SharedArray::<u32>::new(n).map_err(|e| e.to_string())?;
    for i in 0..n {
        a.set(i, i as u32 * 3);
    }
    Ok(a)
}

#[test]
fn a_worker_creates_one_and_returns_it() {
    for mode in MODES {
        let p = pool(mode, 2);
        // Several in a row: the worker drops its handle right after sending it.
        for n in [1usize, 1000, 100_000] {
            let a = p.submit(make, n).result().unwrap().unwrap();
            assert_eq!(a.len(), n);
            assert_eq!(a.get(n - 1), (n as u32 - 1) * 3, "{mode}");
        }
    }
}

fn checksum(b: SharedBytes) -> (usize, u64) {
    (b.len(), b.iter().map(|&x| x as u64).sum())
}

#[test]
fn big_bytes_travel_as_a_handle() {
    let data: Vec<u8> = (0..16 << 20).map(|i| (i % 253) as u8).collect();
    let want: u64 = data.iter().map(|&x| x as u64).sum();
    let b = SharedBytes::from_slice(&data).unwrap();
    let encoded = poolrun::codec::encode(&b).unwrap();
    assert!(
        encoded.len() < 64,
        "a handle, not the data: {} bytes",
        encoded.len()
    );
    for mode in MODES {
        let p = pool(mode, 2);
        // The only handle is moved into submit: the sender's pin must keep it alive.
        let only = SharedBytes::from_slice(&data).unwrap();
        assert_eq!(
            p.submit(checksum, only).result(),
            Ok((16 << 20, want)),
            "{mode}"
        );
        assert_eq!(
            p.submit(checksum, b.clone()).result(),
            Ok((16 << 20, want)),
            "{mode}"
        );
    }
}

fn dev_shm() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn roundtrip(b: SharedBytes) -> SharedBytes {
    b
}

/// Hundreds of handles through the process pool: no fd growth in the parent or the
/// workers once the handles are gone, and nothing ever in /dev/shm. (Its own test so it
/// can count fds; the other tests of this binary run their own pools in parallel but only
/// this one uses `roundtrip`.)
#[test]
fn no_fd_growth_and_nothing_in_dev_shm() {
    let shm_before = dev_shm();
    let p = pool(Mode::Process, 2);
    let Pool::Process(pp) = &p else {
        unreachable!()
    };
    let workers = pp.worker_pids();
    let mut ids = Vec::new();
    for i in 0..200u32 {
        let b = SharedBytes::from_slice(&i.to_le_bytes()).unwrap();
        ids.push(format!("{b:?}"));
        let back = p.submit(roundtrip, b).result().unwrap();
        assert_eq!(&back[..], &i.to_le_bytes());
    }
    // None of our 200 segments is still open anywhere (pins are released once the
    // receivers attached: a few ms).
    let mine = |pid: u32| -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .filter(|l| {
                        let l = l.to_string_lossy();
                        ids.iter().any(|id| {
                            id.split("id: ")
                                .nth(1)
                                .is_some_and(|x| l.contains(&x[..16.min(x.len())]))
                        })
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left: usize = std::iter::once(std::process::id())
            .chain(workers.iter().copied())
            .map(mine)
            .sum();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "{left} fds of dropped segments still open"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    p.shutdown(true, false);
    assert_eq!(dev_shm(), shm_before, "/dev/shm changed");
}

/// A process SIGKILLed while it holds segments (and a pool using them) leaves nothing in
/// /dev/shm and no process behind: memfds die with their last holder.
#[test]
fn sigkilled_owner_leaves_nothing_behind() {
    use nix::sys::signal::{kill, Signal};
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::{fork, pipe, ForkResult};
    use std::io::{Read, Write};
    let before = dev_shm();
    let (r, w) = pipe().unwrap();
    // SAFETY: the child only creates segments, reports its pid and sleeps; it never returns
    // into the test harness (it is killed, or _exits).
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let ok = SharedBytes::from_slice(&[7u8; 1 << 20]).is_ok()
                && SharedArray::<u64>::new(1 << 16).is_ok();
            let mut f = std::fs::File::from(w);
            let _ = f.write_all(&[ok as u8]);
            let keep = (
                SharedBytes::from_slice(&[1u8; 4096]),
                SharedArray::<u8>::new(10),
            );
            std::thread::sleep(Duration::from_secs(30));
            drop(keep);
            // SAFETY: _exit never returns.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut b = [0u8; 1];
            std::fs::File::from(r).read_exact(&mut b).unwrap();
            assert_eq!(b[0], 1);
            kill(child, Signal::SIGKILL).unwrap();
            let end = Instant::now() + Duration::from_secs(10);
            while let WaitStatus::StillAlive = waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                assert!(Instant::now() < end, "child not reaped");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    assert_eq!(dev_shm(), before);
}

/// A worker recycled right after returning a segment it created (max_tasks_per_child = 1):
/// the parent must still receive it.
#[test]
fn returned_segment_survives_worker_recycling() {
    let p = Pool::new(
        Mode::Process,
        PoolConfig::new().workers(1).max_tasks_per_child(Some(1)),
    )
    .unwrap();
    for n in 1..=20usize {
        let a = p.submit(make, n).result().unwrap().unwrap();
        assert_eq!(a.get(n - 1), (n as u32 - 1) * 3);
    }
    p.shutdown(true, false);
}

/// Minor page faults of this process so far.
fn minor_faults() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| u.minor_page_faults())
        .unwrap_or(0)
}

/// Touch every page of `b`; return (this worker's pid, the page faults that took, a
/// checksum so the reads are real).
fn touch_pages(b: SharedBytes) -> (u32, i64, u64) {
    let before = minor_faults();
    let sum: u64 = b.iter().step_by(4096).map(|&x| u64::from(x)).sum();
    (std::process::id(), minor_faults() - before, sum)
}

fn segments_mapped(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|m| m.lines().filter(|l| l.contains("memfd:poolrun-")).count())
        .unwrap_or(0)
}

/// Issue 11: handing the same big `SharedBytes` to a worker again costs no page faults
/// (the worker keeps the mapping it already has), and the worker lets go of it once the
/// parent dropped it.
#[test]
fn repeat_hand_off_keeps_the_mapping_and_releases_it_with_the_segment() {
    let p = pool(Mode::Process, 1);
    let Pool::Process(pp) = &p else {
        unreachable!()
    };
    let worker = pp.worker_pids()[0];
    // before: whatever other tests of this binary left mapped in this (own) worker: none
    let baseline = segments_mapped(worker);
    let b = SharedBytes::from_slice(&vec![1u8; 64 << 20]).unwrap();
    let (pid1, first, s1) = p.submit(touch_pages, b.clone()).result().unwrap();
    let (pid2, second, s2) = p.submit(touch_pages, b.clone()).result().unwrap();
    assert_eq!((pid1, pid2), (worker, worker));
    assert_eq!((s1, s2), (16384, 16384));
    assert!(
        first >= 500,
        "the first hand-off faulted only {first} times"
    );
    assert!(
        second < 100,
        "the repeat hand-off faulted {second} times (first: {first}): the mapping was not kept"
    );
    assert_eq!(segments_mapped(worker), baseline + 1);
    drop(b);
    let end = Instant::now() + Duration::from_secs(5);
    while segments_mapped(worker) > baseline {
        assert!(
            Instant::now() < end,
            "the worker still maps the segment 5 s after the parent dropped it"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn count_up((hits, n): (SharedArray<u64>, u64)) -> u64 {
    for _ in 0..n {
        hits.fetch_add(0, 1);
    }
    n
}

/// Issue 12: a shared counter without a Lock — atomic adds from every worker (threads or
/// processes) add up exactly.
#[test]
fn atomic_counter_across_workers() {
    for mode in MODES {
        let p = pool(mode, 2);
        let hits = SharedArray::<u64>::new(1).unwrap();
        let futs: Vec<_> = (0..8)
            .map(|_| p.submit(count_up, (hits.clone(), 20_000)))
            .collect();
        for f in futs {
            assert_eq!(f.result(), Ok(20_000));
        }
        assert_eq!(hits.get(0), 160_000, "{mode:?}");
    }
}
