//! The fault-injection suite body shared by `tests/fault_process.rs` (plain pool) and
//! `tests/fault_recycle.rs` (the same faults with `max_tasks_per_child`, so workers are also
//! recycled all the time). What it does and asserts:
//!
//! One pool runs ≥ 20,000 tasks (submit with callbacks, then an ordered `map` with chunks)
//! while a killer thread SIGKILLs / SIGSEGVs / SIGTERMs random live workers, and the tasks
//! themselves panic, abort, segfault, `exit`, overrun `task_timeout`, exceed an `RLIMIT_AS`
//! memory cap and return results that fail to decode in the parent, and the test itself
//! `kill()`s about 1 % of the plain tasks from another thread at random moments. Asserted:
//!
//! - every submitted task ends exactly once, with the right value or the right
//!   [`TaskError`]; a task hit by the killer fails with `WorkerDied` naming the pid and
//!   the signal that was sent to it; a task whose `kill()` returned true ends `Cancelled`
//!   and no other task is hurt by it; no worker pid is blamed for two tasks (within a round:
//!   pids get reused across a long run); nothing is lost
//!   or duplicated (the `map` yields exactly one result per input, in order);
//! - every done-callback ran exactly once and saw the same outcome as the future;
//! - the pool still has all its workers, and after drop: no zombies, no children at all,
//!   the fd count and `/dev/shm` are back to their baseline, and parent RSS did not grow
//!   after the warm-up round.
//!
//! Short form (default, CI): 20,000 tasks, ~6 s on 2 cores (debug). Long form:
//! `POOLRUN_FAULT_LONG=1 cargo test --release --test fault_process -- --nocapture`
//! (200,000 tasks, 10× the injected faults). `POOLRUN_SEED=n` replays a run; the seed and a
//! one-line summary (the figures in RELIABILITY.md) are printed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use poolrun::shm::SharedArray;
use poolrun::{Executor, PoolConfig, ProcessPool, TaskError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a task is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Fault {
    /// Return `expected_value(idx)`.
    None,
    /// `panic!`.
    Panic,
    /// `std::process::abort()`.
    Abort,
    /// Write through a null pointer.
    Segv,
    /// `std::process::exit(code)`.
    Exit(i32),
    /// Sleep far past `task_timeout`.
    Hang,
    /// Cap `RLIMIT_AS`, then allocate 1 GiB.
    Oom,
    /// Return a value whose `Deserialize` fails in the parent.
    BadDecode,
}

const KINDS: [&str; 8] = [
    "none",
    "panic",
    "abort",
    "segv",
    "exit",
    "hang",
    "oom",
    "bad-decode",
];

fn kind_index(f: Fault) -> usize {
    match f {
        Fault::None => 0,
        Fault::Panic => 1,
        Fault::Abort => 2,
        Fault::Segv => 3,
        Fault::Exit(_) => 4,
        Fault::Hang => 5,
        Fault::Oom => 6,
        Fault::BadDecode => 7,
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct FaultCase {
    idx: u32,
    fault: Fault,
}

/// A result whose decoding fails in the parent when `v` has the poison bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Out {
    v: u64,
    pid: u32,
}

const POISON: u64 = 1 << 63;

impl Serialize for Out {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.v, self.pid).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Out {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (v, pid) = <(u64, u32)>::deserialize(d)?;
        if v & POISON != 0 {
            return Err(serde::de::Error::custom(format!("poisoned value {v:#x}")));
        }
        Ok(Out { v, pid })
    }
}

fn expected_value(idx: u32) -> u64 {
    u64::from(idx).wrapping_mul(0x9e37_79b9).wrapping_add(7) & !POISON
}

/// Per-task run counter in shared memory: the workers (forked after it was made) bump
/// their task's slot, so the parent can count re-executions after crashes. One writer per
/// slot at a time (a task is re-run only after the worker that ran it died).
static RUNS: OnceLock<SharedArray<u32>> = OnceLock::new();

/// Pids of workers running a `Hang` or `Oom` task (slot `idx % len`): the killer spares
/// them, so the `task_timeout` path is exercised rather than pre-empted by a random kill, and
/// an `Oom` worker reaches its abort (with `RUST_BACKTRACE` set, Rust's allocation-failure
/// handler first symbolizes a backtrace: ~75 ms in a debug build, plenty of time for the
/// killer to pre-empt most of them).
static HANGERS: OnceLock<SharedArray<u32>> = OnceLock::new();

/// RSS after glibc gave its free heap pages back (`malloc_trim(0)`): separates memory
/// that is still in use from free memory the allocator keeps (fragmentation across the
/// pool's threads' arenas).
fn trimmed_rss() -> u64 {
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    rss_bytes()
}

fn vm_size_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmSize:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn fault_task(j: FaultCase) -> Out {
    if let Some(runs) = RUNS.get() {
        let i = j.idx as usize;
        if i < runs.len() {
            runs.set(i, runs.get(i).wrapping_add(1));
        }
    }
    let pid = std::process::id();
    match j.fault {
        Fault::None => {
            // Every 16th task takes a millisecond, so the killer often hits a running task.
            if j.idx % 16 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            Out {
                v: expected_value(j.idx),
                pid,
            }
        }
        Fault::Panic => panic!("injected panic {}", j.idx),
        Fault::Abort => std::process::abort(),
        Fault::Segv => {
            // SAFETY: none: this deliberately writes through a null pointer so the worker
            // dies of a real SIGSEGV; it only ever runs inside a forked pool worker.
            unsafe { std::ptr::write_volatile(std::ptr::null_mut::<u64>(), 1) };
            Out { v: 0, pid }
        }
        Fault::Exit(code) => std::process::exit(code),
        Fault::Hang => {
            if let Some(h) = HANGERS.get() {
                h.set(j.idx as usize % h.len(), pid);
            }
            std::thread::sleep(Duration::from_secs(300));
            Out { v: 0, pid }
        }
        Fault::Oom => {
            if let Some(h) = HANGERS.get() {
                h.set(j.idx as usize % h.len(), pid);
            }
            let cap = vm_size_bytes().unwrap_or(1 << 30) + (64 << 20);
            let _ =
                nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, cap, cap);
            let big = vec![1u8; 1 << 30];
            Out {
                v: u64::from(std::hint::black_box(&big)[12345]),
                pid,
            }
        }
        Fault::BadDecode => Out {
            v: POISON | u64::from(j.idx),
            pid,
        },
    }
}

/// Does `r` say what `fault` should produce?
fn is_expected(idx: u32, fault: Fault, r: &Result<Out, TaskError>, timeout: Duration) -> bool {
    match (fault, r) {
        (Fault::None, Ok(o)) => o.v == expected_value(idx),
        (Fault::Panic, Err(TaskError::Panicked { message })) => {
            message.contains(&format!("injected panic {idx}"))
        }
        (
            Fault::Abort | Fault::Oom,
            Err(TaskError::WorkerDied {
                signal: Some(6),
                exit_code: None,
                ..
            }),
        ) => true,
        (
            Fault::Segv,
            Err(TaskError::WorkerDied {
                signal: Some(11),
                exit_code: None,
                ..
            }),
        ) => true,
        (
            Fault::Exit(c),
            Err(TaskError::WorkerDied {
                signal: None,
                exit_code: Some(e),
                ..
            }),
        ) => *e == c,
        (Fault::Hang, Err(TaskError::TimedOut { after })) => *after == timeout,
        // postcard reports a custom `Deserialize` error without its message
        // ("Serde Deserialization Error"); the codec names the type that failed.
        (Fault::BadDecode, Err(TaskError::Codec(m))) => {
            m.starts_with("decode") && m.contains("faults::Out")
        }
        _ => false,
    }
}

/// A compact code of an outcome, to compare what a callback saw with the future.
fn code(r: &Result<Out, TaskError>) -> u8 {
    match r {
        Ok(_) => 1,
        Err(TaskError::Panicked { .. }) => 2,
        Err(TaskError::WorkerDied { .. }) => 3,
        Err(TaskError::TimedOut { .. }) => 4,
        Err(TaskError::Codec(_)) => 5,
        Err(_) => 6,
    }
}

/// What the killer thread did.
#[derive(Default)]
struct Kills {
    /// pid → the signal sent to it (each pid at most once).
    sent: HashMap<u32, i32>,
    by_signal: HashMap<i32, usize>,
    /// Longest time a child was seen as a zombie (sampled every killer tick).
    max_zombie_age: Duration,
}

/// Pids seen in results: workers that were ready and ran a task (the killer only picks
/// those, so it never hits a worker still starting: that is what the restart-intensity
/// limit is for, not what this suite measures).
type Seen = Arc<Mutex<HashSet<u32>>>;

fn killer(
    pool: Arc<ProcessPool>,
    seen: Seen,
    kills: Arc<Mutex<Kills>>,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
    every_ms: u64,
) {
    let me = std::process::id();
    let signals = [Signal::SIGKILL, Signal::SIGSEGV, Signal::SIGTERM];
    let mut zombie_since: HashMap<u32, Instant> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(every_ms / 2 + rng.below(every_ms)));
        // Zombie-free at all times: a dead worker is reaped within milliseconds.
        let now_z: HashSet<u32> = zombies().into_iter().collect();
        zombie_since.retain(|p, _| now_z.contains(p));
        for p in now_z {
            let since = *zombie_since.entry(p).or_insert_with(Instant::now);
            let mut k = kills.lock().unwrap_or_else(|p| p.into_inner());
            k.max_zombie_age = k.max_zombie_age.max(since.elapsed());
        }
        let live = pool.worker_pids();
        let hanging: HashSet<u32> = HANGERS
            .get()
            .map(|h| h.to_vec().into_iter().collect())
            .unwrap_or_default();
        let cands: Vec<u32> = {
            let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            let k = kills.lock().unwrap_or_else(|p| p.into_inner());
            live.into_iter()
                .filter(|p| seen.contains(p) && !k.sent.contains_key(p) && !hanging.contains(p))
                .collect()
        };
        if cands.is_empty() {
            continue;
        }
        let pid = cands[rng.below(cands.len() as u64) as usize];
        // Still our running child (not reaped, so the pid cannot have been reused)?
        match stat(pid) {
            Some((state, ppid)) if ppid == me && state != 'Z' => {}
            _ => continue,
        }
        let sig = signals[rng.below(signals.len() as u64) as usize];
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        {
            let mut k = kills.lock().unwrap_or_else(|p| p.into_inner());
            k.sent.insert(pid, sig as i32);
            *k.by_signal.entry(sig as i32).or_default() += 1;
        }
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

/// Place `counts[k]` faults of kind `k` at random positions among `n` jobs.
fn plan_jobs(first_idx: u32, n: usize, counts: &[(Fault, usize)], rng: &mut Rng) -> Vec<FaultCase> {
    let mut faults = vec![Fault::None; n];
    for &(f, c) in counts {
        let mut placed = 0;
        while placed < c.min(n) {
            let i = rng.below(n as u64) as usize;
            if faults[i] == Fault::None {
                faults[i] = match f {
                    Fault::Exit(_) => Fault::Exit(1 + rng.below(100) as i32),
                    other => other,
                };
                placed += 1;
            }
        }
    }
    faults
        .into_iter()
        .enumerate()
        .map(|(i, fault)| FaultCase {
            idx: first_idx + i as u32,
            fault,
        })
        .collect()
}

/// Checks outcomes against their faults and the killer, and tallies them.
struct Checker {
    timeout: Duration,
    kills: Arc<Mutex<Kills>>,
    seen: Seen,
    /// Worker pid → the task its death was blamed on (cleared per round: pids get reused).
    blamed: HashMap<u32, u32>,
    /// Tasks failed by the external killer.
    ext_hits: usize,
    /// Tasks that ended as their fault kind should, per kind.
    outcomes: [usize; 8],
}

impl Checker {
    /// Check one outcome; panics unless its fault or the killer explains it.
    fn check(&mut self, job: FaultCase, r: &Result<Out, TaskError>) {
        if let Ok(o) = r {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(o.pid);
            let ran = RUNS.get().map_or(1, |a| a.get(job.idx as usize));
            assert!(ran >= 1, "task {} has a value but never ran", job.idx);
        }
        if let Err(TaskError::WorkerDied { pid, .. }) = r {
            if let Some(other) = self.blamed.insert(*pid, job.idx) {
                panic!(
                    "worker {pid} blamed for two tasks: {other} and {} ({r:?})",
                    job.idx
                );
            }
        }
        if is_expected(job.idx, job.fault, r, self.timeout) {
            self.outcomes[kind_index(job.fault)] += 1;
            return;
        }
        if let Err(TaskError::WorkerDied {
            pid,
            signal: Some(s),
            exit_code: None,
        }) = r
        {
            let k = self.kills.lock().unwrap_or_else(|p| p.into_inner());
            if k.sent.get(pid) == Some(s) {
                self.ext_hits += 1;
                return;
            }
        }
        panic!(
            "task {} ({:?}) ended with {r:?}, which neither its fault nor the killer explains",
            job.idx, job.fault
        );
    }
}

/// What varies between the fault suites that share this body.
#[derive(Debug, Clone, Copy)]
pub struct Opts {
    /// Printed with the seed and in the summary.
    pub name: &'static str,
    /// `PoolConfig::max_tasks_per_child` (recycling under faults).
    pub max_tasks_per_child: Option<usize>,
    /// Tasks in the short (CI) form; the long form runs 10x.
    pub tasks: usize,
}

/// Run the fault-injection suite with `o` (see the module docs).
pub fn run(o: Opts) {
    let _g = serial();
    no_core_dumps();
    let quiet_default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if !text.starts_with("injected panic") {
            quiet_default(info);
        }
    }));

    let long = env_flag("POOLRUN_FAULT_LONG");
    let total = env_num(
        "POOLRUN_FAULT_TASKS",
        (if long { o.tasks * 10 } else { o.tasks }) as u64,
    ) as usize;
    let mut rng = Rng::from_env(o.name);
    let timeout = Duration::from_millis(800);
    let workers = 4;

    // Baselines after a warm-up pool was created and dropped once (lazy globals such as
    // the spawner thread allocate their fds once).
    {
        let warm = ProcessPool::new(PoolConfig::new().workers(2)).expect("warm-up pool");
        assert_eq!(
            warm.submit(
                fault_task,
                FaultCase {
                    idx: u32::MAX,
                    fault: Fault::None
                }
            )
            .result_timeout(Duration::from_secs(20))
            .map(|o| o.v),
            Ok(expected_value(u32::MAX))
        );
    }
    assert!(eventually(Duration::from_secs(10), || children().is_empty()));
    let runs = SharedArray::<u32>::new(total).expect("run counters");
    let _ = RUNS.set(runs.clone());
    let _ = HANGERS.set(SharedArray::<u32>::new(256).expect("hang pids"));
    let shm_base = dev_shm();
    let fd_base = fd_count();

    let pool = Arc::new(
        ProcessPool::new(
            PoolConfig::new()
                .workers(workers)
                .task_timeout(Some(timeout))
                .max_tasks_per_child(o.max_tasks_per_child),
        )
        .expect("pool"),
    );
    let seen: Seen = Arc::new(Mutex::new(HashSet::new()));
    let kills = Arc::new(Mutex::new(Kills::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let killer_thread = {
        let (pool, seen, kills, stop) = (pool.clone(), seen.clone(), kills.clone(), stop.clone());
        let krng = Rng::new(rng.next_u64());
        std::thread::spawn(move || killer(pool, seen, kills, stop, krng, 25))
    };

    // Injected faults per round of `per_round` tasks.
    let submit_share = total * 3 / 5;
    let rounds = 6usize;
    let per_round = submit_share / rounds;
    let counts_for = |n: usize| -> Vec<(Fault, usize)> {
        let f = |per_10k: usize| (per_10k * n).div_ceil(10_000);
        vec![
            (Fault::Panic, f(60)),
            (Fault::Abort, f(12)),
            (Fault::Segv, f(12)),
            (Fault::Exit(0), f(12)),
            (Fault::Hang, if long { 2 } else { 1 }),
            (Fault::Oom, f(6)),
            (Fault::BadDecode, f(60)),
        ]
    };
    let mut checker = Checker {
        timeout,
        kills: kills.clone(),
        seen: seen.clone(),
        blamed: HashMap::new(),
        ext_hits: 0,
        outcomes: [0; 8],
    };
    let mut killed_by_user = 0usize;
    let mut injected = [0usize; 8];
    let mut rss_after = Vec::new();
    let mut rss_trimmed = Vec::new();
    let mut next_idx = 0u32;
    let wait_limit = Duration::from_secs(30);

    // Phase 1: submit + callbacks, in rounds (round 0 is the RSS warm-up).
    for _round in 0..rounds {
        // "No pid blamed twice" holds within a round: across rounds a pid may have been
        // reaped and reused (pid_max is 32768 here, and the long form forks thousands).
        checker.blamed.clear();
        let jobs = plan_jobs(next_idx, per_round, &counts_for(per_round), &mut rng);
        next_idx += per_round as u32;
        for j in &jobs {
            injected[kind_index(j.fault)] += 1;
        }
        let calls: Arc<Vec<AtomicU8>> =
            Arc::new((0..jobs.len()).map(|_| AtomicU8::new(0)).collect());
        let seen_code: Arc<Vec<AtomicU8>> =
            Arc::new((0..jobs.len()).map(|_| AtomicU8::new(0)).collect());
        let futs: Vec<_> = jobs
            .iter()
            .enumerate()
            .map(|(k, &j)| {
                let f = pool.submit(fault_task, j);
                let (calls, seen_code) = (calls.clone(), seen_code.clone());
                f.add_done_callback(move |r| {
                    calls[k].fetch_add(1, Ordering::SeqCst);
                    seen_code[k].store(code(r), Ordering::SeqCst);
                });
                Arc::new(f)
            })
            .collect();
        // The user's own kills: `TaskFuture::kill` of about 1 % of the plain tasks, at random
        // moments (queued, handed ahead, running or finished), from another thread.
        let victims: Vec<(usize, Arc<poolrun::TaskFuture<Out>>)> = jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| j.fault == Fault::None && rng.below(100) == 0)
            .map(|(k, _)| (k, futs[k].clone()))
            .collect();
        let user_killer = {
            let mut krng = Rng::new(rng.next_u64());
            std::thread::spawn(move || {
                victims
                    .into_iter()
                    .map(|(k, f)| {
                        std::thread::sleep(Duration::from_micros(krng.below(2000)));
                        (k, f.kill())
                    })
                    .collect::<HashMap<usize, bool>>()
            })
        };
        let user_kills = user_killer.join().expect("user killer");
        killed_by_user += user_kills.values().filter(|k| **k).count();
        for (k, (j, f)) in jobs.iter().zip(futs).enumerate() {
            if !f.wait(Some(wait_limit)) {
                let k = kills.lock().unwrap_or_else(|p| p.into_inner());
                panic!(
                    "task {} ({:?}) never finished (running: {}); pool pending {}, workers {:?}, \
                     children {:?}, kills {:?}, hangers {:?}",
                    j.idx,
                    j.fault,
                    f.running(),
                    pool.pending(),
                    pool.worker_pids(),
                    children(),
                    k.sent,
                    HANGERS.get().map(|h| h
                        .to_vec()
                        .into_iter()
                        .filter(|p| *p != 0)
                        .collect::<Vec<_>>()),
                );
            }
            let r = f.try_result().expect("done");
            if user_kills.get(&k) == Some(&true) {
                assert_eq!(r, Err(TaskError::Cancelled), "task {} was killed", j.idx);
                checker.outcomes[kind_index(j.fault)] += 1;
            } else {
                checker.check(*j, &r);
            }
            // The callback ran in the completing thread before `wait` returned.
            assert!(
                eventually(Duration::from_secs(10), || calls[k].load(Ordering::SeqCst)
                    >= 1),
                "callback of task {} did not run",
                j.idx
            );
            assert_eq!(
                seen_code[k].load(Ordering::SeqCst),
                code(&r),
                "callback of task {} saw another outcome",
                j.idx
            );
        }
        // Exactly once each (late duplicates would show up now).
        for (k, c) in calls.iter().enumerate() {
            assert_eq!(
                c.load(Ordering::SeqCst),
                1,
                "callback of task {} ran {} times",
                jobs[k].idx,
                c.load(Ordering::SeqCst)
            );
        }
        // Measured with nothing of this round left alive in the test itself.
        drop((jobs, calls, seen_code));
        rss_after.push(rss_bytes());
        rss_trimmed.push(trimmed_rss());
    }

    // Phase 2: an ordered map with chunks over the rest.
    checker.blamed.clear();
    let map_n = total - next_idx as usize;
    let jobs = plan_jobs(next_idx, map_n, &counts_for(map_n), &mut rng);
    for j in &jobs {
        injected[kind_index(j.fault)] += 1;
    }
    let mut got = 0usize;
    let mut results = pool
        .map(fault_task, jobs.clone())
        .chunksize(8)
        .timeout(Duration::from_secs(600));
    for (j, r) in jobs.iter().zip(results.by_ref()) {
        checker.check(*j, &r);
        got += 1;
    }
    assert_eq!(results.count(), 0, "map yielded more results than inputs");
    assert_eq!(got, map_n, "map lost results");
    drop(jobs);
    rss_after.push(rss_bytes());
    rss_trimmed.push(trimmed_rss());
    let elapsed = t0.elapsed();
    let Checker {
        ext_hits, outcomes, ..
    } = checker;

    stop.store(true, Ordering::SeqCst);
    killer_thread.join().expect("killer thread");
    assert!(
        eventually(Duration::from_secs(20), || pool.worker_pids().len()
            == workers),
        "the pool did not keep {workers} workers: {:?}",
        pool.worker_pids()
    );
    let pending = pool.pending();
    assert_eq!(
        pending, 0,
        "tasks still outstanding after all results arrived"
    );

    // Re-executions: a task whose worker died after it finished but before its result was
    // flushed runs again (at-least-once execution, exactly-once completion).
    let mut reruns = 0u64;
    for i in 0..total {
        reruns += u64::from(runs.get(i).saturating_sub(1));
    }

    drop(pool);
    assert!(
        eventually(Duration::from_secs(20), || children().is_empty()),
        "children left after drop: {:?}",
        children()
    );
    let zombies_left = zombies().len();
    assert_eq!(zombies_left, 0);
    drop(runs);
    assert!(
        eventually(Duration::from_secs(10), || fd_count() <= fd_base),
        "fd leak: {} open now, {fd_base} before; now: {:?}",
        fd_count(),
        fds()
    );
    assert_eq!(dev_shm(), shm_base, "/dev/shm changed");

    let warm_rss = rss_after[0];
    let max_rss = rss_after.iter().copied().max().unwrap_or(warm_rss);
    let growth = max_rss.saturating_sub(warm_rss);
    let trim_growth = rss_trimmed
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .saturating_sub(rss_trimmed.first().copied().unwrap_or(0));
    let k = kills.lock().unwrap_or_else(|p| p.into_inner());
    let injected_s: Vec<String> = (1..8)
        .map(|i| format!("{}={}", KINDS[i], injected[i]))
        .collect();
    println!(
        "FAULT-SUMMARY suite={} mode=process workers={workers} max_tasks_per_child={:?} tasks={total} elapsed={:.1}s injected[{}] \
         killer[SIGKILL={} SIGSEGV={} SIGTERM={} tasks_hit={ext_hits}] user_kill()s_that_stopped_a_task={killed_by_user} expected_outcomes={} \
         lost=0 duplicated=0 callbacks_exactly_once={} reruns={reruns} zombies={zombies_left} \
         max_zombie_age={:?} fd_leak=0 shm_leak=0 rss_after_warmup={:.1}MiB rss_growth={:.2}MiB (rounds: {:?}) trimmed_rss_growth={:.2}MiB (rounds: {:?})",
        o.name,
        o.max_tasks_per_child,
        elapsed.as_secs_f64(),
        injected_s.join(" "),
        k.by_signal.get(&9).unwrap_or(&0),
        k.by_signal.get(&11).unwrap_or(&0),
        k.by_signal.get(&15).unwrap_or(&0),
        outcomes.iter().sum::<usize>(),
        submit_share / rounds * rounds,
        k.max_zombie_age,
        mib(warm_rss),
        mib(growth),
        rss_after
            .iter()
            .map(|b| format!("{:.1}", mib(*b)))
            .collect::<Vec<_>>(),
        mib(trim_growth),
        rss_trimmed
            .iter()
            .map(|b| format!("{:.1}", mib(*b)))
            .collect::<Vec<_>>(),
    );
    assert!(outcomes.iter().sum::<usize>() + ext_hits == total);
    // The killer must not have pre-empted whole kinds of faults: most of each kind ended
    // the way that kind should.
    for i in 0..8 {
        assert!(
            outcomes[i] * 2 >= injected[i],
            "only {} of {} `{}` tasks ended as that fault should",
            outcomes[i],
            injected[i],
            KINDS[i]
        );
    }
    assert!(ext_hits <= k.sent.len());
    assert!(
        k.max_zombie_age < Duration::from_secs(3),
        "a dead worker stayed a zombie for {:?}",
        k.max_zombie_age
    );
    assert!(
        growth < 16 << 20,
        "parent RSS grew {:.1} MiB after warm-up: {:?}",
        mib(growth),
        rss_after
    );
}
