//! The emulated GIL's invariants and CPython-like behaviour (`poolrun::gil`).
//!
//! Threads here are plain `std::thread`s bound through `WorkerBinding`, as the thread pool
//! binds its workers; the last tests go through `ThreadPool` itself. Every wait has a
//! timeout (`join_within`), so a GIL bug fails a test instead of hanging it. Timing checks
//! are ratios with generous bounds, and the ones that need two cores skip on one.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use poolrun::gil::{self, Gil, TaskStopped, WorkerBinding};
use poolrun::{Executor, GilMode, PoolConfig, ThreadPool};

const LIMIT: Duration = Duration::from_secs(60);

/// Timing-sensitive tests take this so they do not compete with each other under
/// `cargo test`'s parallel threads (under nextest each test is its own process anyway).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// CPU time (user + system) the calling thread has used so far.
fn thread_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage(RUSAGE_THREAD)");
    let us = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    us(u.user_time()) + us(u.system_time())
}

/// `burn(n)`, returning the CPU time (µs) the calling thread spent on it.
fn burn_cpu_us(n: u64) -> u64 {
    let c0 = thread_cpu();
    burn(n);
    (thread_cpu().saturating_sub(c0)).as_micros() as u64
}

fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// Run `f` on a new thread bound to `gil` (inside one `run_task`); the receiver yields its
/// result (or the panic as Err).
fn spawn_bound<T: Send + 'static>(
    gil: Option<Gil>,
    f: impl FnOnce() -> T + Send + 'static,
) -> mpsc::Receiver<thread::Result<T>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let b = WorkerBinding::new(gil, Arc::new(AtomicBool::new(false)));
        let r = catch_unwind(AssertUnwindSafe(|| b.run_task(f)));
        let _ = tx.send(r);
    });
    rx
}

fn join_within<T>(rx: mpsc::Receiver<thread::Result<T>>, what: &str) -> T {
    match rx.recv_timeout(LIMIT) {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => panic!("{what}: the thread panicked"),
        Err(_) => panic!("{what}: not done within {LIMIT:?} (GIL deadlock?)"),
    }
}

/// CPU-bound loop with a checkpoint per iteration.
fn burn(iters: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..iters {
        x = (x + i.wrapping_mul(i)) % 1_000_003;
        gil::checkpoint();
    }
    std::hint::black_box(x)
}

/// Iterations of `burn` that take about `ms` on this machine (unbound thread).
fn calibrate(ms: u64) -> u64 {
    let mut n = 50_000u64;
    loop {
        let t0 = Instant::now();
        burn(n);
        let dt = t0.elapsed();
        if dt >= Duration::from_millis(20) {
            return (n as f64 * ms as f64 / (dt.as_secs_f64() * 1e3)).max(1.0) as u64;
        }
        n *= 2;
    }
}

#[test]
fn checkpoint_and_allow_threads_are_no_ops_off_pool() {
    assert!(!gil::holds_gil());
    for _ in 0..1_000_000 {
        gil::checkpoint();
    }
    assert_eq!(gil::allow_threads(|| 41 + 1), 42);
    assert!(!gil::holds_gil());
    // Bound without a GIL (GilMode::Off): still nothing to hold.
    let b = WorkerBinding::new(None, Arc::new(AtomicBool::new(false)));
    b.run_task(|| {
        gil::checkpoint();
        assert!(!gil::holds_gil());
        assert_eq!(gil::allow_threads(|| 7), 7);
    });
    drop(b);
    gil::checkpoint();
}

#[test]
fn never_two_holders_under_contention() {
    let g = Gil::new(Duration::from_micros(100));
    let inside = Arc::new(AtomicUsize::new(0));
    let violations = Arc::new(AtomicUsize::new(0));
    let rxs: Vec<_> = (0..4)
        .map(|_| {
            let inside = inside.clone();
            let violations = violations.clone();
            spawn_bound(Some(g.clone()), move || {
                let t0 = Instant::now();
                let mut k = 0u64;
                while t0.elapsed() < Duration::from_millis(150) {
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        violations.fetch_add(1, Ordering::SeqCst);
                    }
                    for _ in 0..50 {
                        std::hint::spin_loop();
                    }
                    inside.fetch_sub(1, Ordering::SeqCst);
                    gil::checkpoint();
                    // Now and then release around "blocking" work, too.
                    k += 1;
                    if k % 4096 == 0 {
                        gil::allow_threads(thread::yield_now);
                    }
                }
            })
        })
        .collect();
    for rx in rxs {
        join_within(rx, "contending thread");
    }
    assert_eq!(
        violations.load(Ordering::SeqCst),
        0,
        "two threads held the GIL"
    );
    let s = g.stats();
    assert!(s.switches > 4, "threads took turns: {s:?}");
    assert!(s.wait > Duration::ZERO, "{s:?}");
}

#[test]
fn forced_switching_alternates_cpu_bound_threads() {
    let _serial = serial();
    // Two CPU-bound threads that only ever meet at checkpoints: without forced switching the
    // one that drops would re-take at once; with it they alternate about once per interval.
    // Run until 100 hand-overs were seen (10 s at most, however loaded the machine is).
    let g = Gil::new(Duration::from_millis(1));
    let last = Arc::new(AtomicU64::new(0));
    let changes = Arc::new(AtomicU64::new(0));
    let progress: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let rxs: Vec<_> = (0..2u64)
        .map(|id| {
            let (last, changes, p) = (last.clone(), changes.clone(), progress[id as usize].clone());
            spawn_bound(Some(g.clone()), move || {
                let t0 = Instant::now();
                while changes.load(Ordering::SeqCst) < 100 && t0.elapsed() < Duration::from_secs(10)
                {
                    if last.swap(id + 1, Ordering::SeqCst) != id + 1 {
                        changes.fetch_add(1, Ordering::SeqCst);
                    }
                    p.fetch_add(1, Ordering::Relaxed);
                    gil::checkpoint();
                }
            })
        })
        .collect();
    for rx in rxs {
        join_within(rx, "CPU-bound thread");
    }
    let s = g.stats();
    let changes = changes.load(Ordering::SeqCst);
    assert!(changes >= 100, "only {changes} hand-overs in 10 s ({s:?})");
    // Each hand-over between two CPU-bound threads is a drop request honoured.
    assert!(s.forced_drops >= 90, "{s:?}");
    for p in &progress {
        assert!(p.load(Ordering::Relaxed) > 0);
    }
}

#[test]
fn a_waiter_asks_only_after_one_interval() {
    let _serial = serial();
    // The holder never blocks; the waiter can only get the GIL through a drop request,
    // which it may set after one full interval — not before.
    let interval = Duration::from_millis(60);
    let g = Gil::new(interval);
    let holding = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = {
        let (holding, stop) = (holding.clone(), stop.clone());
        spawn_bound(Some(g.clone()), move || {
            holding.store(true, Ordering::SeqCst);
            while !stop.load(Ordering::SeqCst) {
                gil::checkpoint();
            }
        })
    };
    let t = Instant::now();
    while !holding.load(Ordering::SeqCst) {
        assert!(t.elapsed() < LIMIT, "CPU thread never started");
        thread::sleep(Duration::from_millis(1));
    }
    let waiter = spawn_bound(Some(g.clone()), Instant::now);
    let asked = Instant::now();
    let got = join_within(waiter, "waiter");
    stop.store(true, Ordering::SeqCst);
    join_within(cpu, "CPU thread");
    let waited = got.duration_since(asked);
    assert!(
        waited >= interval - Duration::from_millis(5),
        "got the GIL after {waited:?}, before one interval ({interval:?})"
    );
    assert!(g.stats().forced_drops >= 1);
    assert!(g.stats().wait >= interval - Duration::from_millis(5));
}

#[test]
fn allow_threads_lets_sleepers_overlap() {
    let _serial = serial();
    let g = Gil::new(Duration::from_millis(5));
    let sleep = Duration::from_millis(100);
    let t0 = Instant::now();
    let rxs: Vec<_> = (0..8)
        .map(|_| {
            spawn_bound(Some(g.clone()), move || {
                gil::allow_threads(|| {
                    assert!(!gil::holds_gil());
                    thread::sleep(sleep)
                });
                assert!(gil::holds_gil());
            })
        })
        .collect();
    for rx in rxs {
        join_within(rx, "sleeper");
    }
    let wall = t0.elapsed();
    // Serialised would be 800 ms; overlapped ~100 ms. Generous: under 4 sleeps.
    assert!(wall < sleep * 4, "8 sleeps under the GIL took {wall:?}");
}

#[test]
fn stop_flag_unwinds_at_checkpoint_and_frees_the_gil() {
    let g = Gil::new(Duration::from_millis(5));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    {
        let (g, stop) = (g.clone(), stop.clone());
        thread::spawn(move || {
            let b = WorkerBinding::new(Some(g), stop);
            let r = catch_unwind(AssertUnwindSafe(|| {
                b.run_task(|| loop {
                    gil::checkpoint();
                })
            }));
            let stopped = matches!(&r, Err(p) if p.is::<TaskStopped>());
            let _ = tx.send((stopped, gil::holds_gil()));
        });
    }
    thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::SeqCst);
    let (stopped, still_holding) = rx.recv_timeout(LIMIT).expect("task never stopped");
    assert!(stopped, "checkpoint did not unwind with TaskStopped");
    assert!(!still_holding);
    // The GIL was released by the unwinding: another thread takes it at once.
    join_within(spawn_bound(Some(g), || ()), "next task");
}

#[test]
fn allow_threads_retakes_the_gil_when_f_panics() {
    let g = Gil::new(Duration::from_millis(5));
    let r = spawn_bound(Some(g), || {
        let r = catch_unwind(|| gil::allow_threads(|| panic!("boom")));
        (r.is_err(), gil::holds_gil())
    });
    let (panicked, holds) = join_within(r, "panicking allow_threads");
    assert!(panicked);
    assert!(
        holds,
        "the GIL must be held again after allow_threads unwinds"
    );
}

/// Run 2 CPU-bound threads (`n` iterations each) on one shared GIL or on one GIL each;
/// returns (wall time, total CPU time of both threads).
fn two_cpu_threads(n: u64, shared: bool) -> (Duration, Duration) {
    let one = Gil::new(Duration::from_millis(5));
    let t0 = Instant::now();
    let rxs: Vec<_> = (0..2)
        .map(|_| {
            let g = if shared {
                one.clone()
            } else {
                Gil::new(Duration::from_millis(5))
            };
            spawn_bound(Some(g), move || burn_cpu_us(n))
        })
        .collect();
    let cpu_us: u64 = rxs.into_iter().map(|rx| join_within(rx, "CPU task")).sum();
    (t0.elapsed(), Duration::from_micros(cpu_us))
}

#[test]
fn cpu_bound_threads_do_not_run_in_parallel_under_the_gil() {
    if cores() < 2 {
        eprintln!("skipped: needs 2 cores");
        return;
    }
    let _serial = serial();
    let n = calibrate(150);
    // Parallelism = CPU time used / wall time. Other load on the machine can only lower
    // it, so "≤ 1 under a shared GIL" holds however busy the machine is.
    let (wall, cpu) = two_cpu_threads(n, true);
    let shared_par = cpu.as_secs_f64() / wall.as_secs_f64();
    assert!(
        shared_par < 1.25,
        "2 CPU-bound threads on one GIL ran {shared_par:.2}× in parallel ({cpu:?} CPU in {wall:?})"
    );
    // One GIL each (what processes get): they can run in parallel. Only assert the contrast
    // when the machine had a second core free for us.
    let (wall2, cpu2) = two_cpu_threads(n, false);
    let free_par = cpu2.as_secs_f64() / wall2.as_secs_f64();
    eprintln!("parallelism: shared GIL {shared_par:.2}, one GIL each {free_par:.2}");
    if free_par > 1.6 {
        let ratio = wall.as_secs_f64() / wall2.as_secs_f64();
        assert!(
            ratio > 1.3,
            "shared GIL {wall:?} vs one GIL each {wall2:?}: ratio {ratio:.2}, expected ~2"
        );
    }
}

#[test]
fn convoy_effect_short_io_waits_an_interval_beside_cpu() {
    if cores() < 2 {
        eprintln!("skipped: needs 2 cores");
        return;
    }
    let _serial = serial();
    // CPython: a loop of 1 ms sleeps runs ~5.7× slower beside one CPU-bound thread at the
    // default 5 ms interval (each return waits out a drop request).
    fn io_loop(g: Option<Gil>) -> Duration {
        join_within(
            spawn_bound(g, || {
                let t0 = Instant::now();
                for _ in 0..30 {
                    gil::allow_threads(|| thread::sleep(Duration::from_millis(1)));
                }
                t0.elapsed()
            }),
            "I/O loop",
        )
    }
    let g = Gil::new(Duration::from_millis(5));
    let alone = io_loop(Some(g.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = {
        let stop = stop.clone();
        spawn_bound(Some(g.clone()), move || {
            while !stop.load(Ordering::Relaxed) {
                gil::checkpoint();
            }
        })
    };
    thread::sleep(Duration::from_millis(10));
    let beside = io_loop(Some(g.clone()));
    stop.store(true, Ordering::Relaxed);
    join_within(cpu, "CPU thread");
    let ratio = beside.as_secs_f64() / alone.as_secs_f64();
    assert!(
        ratio > 2.5,
        "I/O loop alone {alone:?}, beside a CPU thread {beside:?}: ratio {ratio:.2}, CPython ~5.7"
    );
}

fn pool_burn(n: u64) -> u64 {
    burn_cpu_us(n)
}

#[test]
fn thread_pool_with_gil_counts_switches_and_serialises_cpu_work() {
    if cores() < 2 {
        eprintln!("skipped: needs 2 cores");
        return;
    }
    let _serial = serial();
    let n = calibrate(100);
    // (wall, total CPU time of the tasks, the pool's GIL counters)
    let run = |mode: GilMode| {
        let pool = ThreadPool::new(PoolConfig::new().workers(2).gil(mode)).expect("thread pool");
        let _ = pool.map(pool_burn, vec![1u64; 4]).count(); // warm
        let t0 = Instant::now();
        let cpu_us: Vec<u64> = pool
            .map(pool_burn, vec![n; 4])
            .timeout(LIMIT)
            .map(|r| r.expect("task failed"))
            .collect();
        let wall = t0.elapsed();
        let stats = pool.gil().map(Gil::stats);
        pool.shutdown(true, false);
        (wall, Duration::from_micros(cpu_us.iter().sum()), stats)
    };
    let (wall, cpu, stats) = run(GilMode::cpython());
    let stats = stats.expect("GilMode::On has a GIL");
    assert!(stats.switches >= 2, "{stats:?}");
    assert!(stats.forced_drops >= 1, "{stats:?}");
    let par = cpu.as_secs_f64() / wall.as_secs_f64();
    assert!(
        par < 1.25,
        "GIL-bound workers ran {par:.2}× in parallel ({cpu:?} CPU in {wall:?})"
    );
    let (wall2, cpu2, none) = run(GilMode::Off);
    assert!(none.is_none(), "GilMode::Off has no GIL");
    let free_par = cpu2.as_secs_f64() / wall2.as_secs_f64();
    eprintln!("pool parallelism: GIL {par:.2}, no GIL {free_par:.2}");
    if free_par > 1.6 {
        let ratio = wall.as_secs_f64() / wall2.as_secs_f64();
        assert!(
            ratio > 1.3,
            "with GIL {wall:?}, without {wall2:?}: ratio {ratio:.2}, expected ~2"
        );
    }
}
