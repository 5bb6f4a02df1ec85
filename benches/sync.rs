//! Sync-primitive benchmarks, each beside its peer in the same run (BENCHMARKS.md):
//!
//! - `lock_uncontended`: `Lock::acquire` + drop of the guard (one thread, never contended)
//!   against `std::sync::Mutex` lock + unlock, plus `RLock` and a `Semaphore(1)`. CPython's
//!   `multiprocessing.Lock` and `threading.Lock` run the same loop in
//!   `benches/python_sync_peer.py`, which this bench runs at the end (if `python3` is on
//!   PATH), so both land in the same run.
//! - `create`: `Lock::new` (a memfd segment) against `std::sync::Mutex::new`; the peer
//!   times `multiprocessing.Lock()`.
//! - `condition_pingpong`: one round trip between this process and a forked child that
//!   alternate strictly through one `Condition` (wait_for a turn flag in a `SharedArray`,
//!   flip it, notify) — the same protocol the peer script runs with
//!   `multiprocessing.Condition` + `multiprocessing.Value`. Also the same ping-pong between
//!   two threads of this process, with poolrun's Condition and with `std::sync::Condvar`.
//!
//! `cargo bench --bench sync` (`POOLRUN_BENCH_NO_PYTHON=1` skips the CPython peers).

use std::hint::black_box;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use poolrun::shm::SharedArray;
use poolrun::sync::{Condition, Lock, RLock, Semaphore};

fn lock_uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_uncontended");
    let lock = Lock::new().expect("Lock");
    g.bench_function("poolrun_Lock", |b| {
        b.iter(|| drop(black_box(lock.acquire(None).expect("acquire"))))
    });
    let rlock = RLock::new().expect("RLock");
    g.bench_function("poolrun_RLock", |b| {
        b.iter(|| drop(black_box(rlock.acquire(None).expect("acquire"))))
    });
    let sem = Semaphore::new(1).expect("Semaphore");
    g.bench_function("poolrun_Semaphore1", |b| {
        b.iter(|| drop(black_box(sem.acquire(None).expect("acquire"))))
    });
    let m = Mutex::new(0u64);
    g.bench_function("std_Mutex", |b| {
        b.iter(|| drop(black_box(m.lock().expect("lock"))))
    });
    g.finish();
}

const PATIENCE: Duration = Duration::from_secs(30);

/// One side of the ping-pong: `rounds` times, wait for `turn == me`, flip it, notify.
/// `patience` bounds each wait (the forked partner idles while other benches run).
fn play(cond: &Condition, turn: &SharedArray<u32>, me: u32, rounds: u64, patience: Duration) {
    for _ in 0..rounds {
        let mut g = cond.acquire(None).expect("acquire");
        let ok = cond
            .wait_for(&mut g, || turn.get(0) == me, Some(patience))
            .expect("wait_for");
        assert!(ok, "ping-pong partner gone");
        turn.set(0, 1 - me);
        cond.notify(1);
    }
}

/// A forked child that answers pings forever (until killed).
struct Partner {
    child: nix::unistd::Pid,
}

impl Partner {
    fn start(cond: &Condition, turn: &SharedArray<u32>) -> Partner {
        // SAFETY: called from main before criterion starts any thread; the child only plays
        // its side of the ping-pong and ends with `_exit`, never returning into the bench.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    play(cond, turn, 1, u64::MAX, Duration::from_secs(3600))
                }));
                // SAFETY: `_exit` ends the child without running the parent's destructors.
                unsafe { libc::_exit(r.is_err() as i32) }
            }
            nix::unistd::ForkResult::Parent { child } => Partner { child },
        }
    }
}

impl Drop for Partner {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.child, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.child, None);
    }
}

fn condition_pingpong(c: &mut Criterion, proc_pair: &(Condition, SharedArray<u32>)) {
    let mut g = c.benchmark_group("condition_pingpong");
    g.measurement_time(Duration::from_secs(4));
    let (cond, turn) = proc_pair;
    g.bench_function("poolrun_Condition_2_processes", |b| {
        b.iter_custom(|n| {
            let t = Instant::now();
            play(cond, turn, 0, n, PATIENCE);
            t.elapsed()
        })
    });
    // The same between two threads.
    let cond2 = Condition::new().expect("Condition");
    let turn2 = SharedArray::<u32>::new(1).expect("SharedArray");
    g.bench_function("poolrun_Condition_2_threads", |b| {
        b.iter_custom(|n| {
            turn2.set(0, 0);
            let (c2, t2) = (cond2.clone(), turn2.clone());
            let h = std::thread::spawn(move || play(&c2, &t2, 1, n, PATIENCE));
            let t = Instant::now();
            play(&cond2, &turn2, 0, n, PATIENCE);
            let e = t.elapsed();
            h.join().expect("partner thread");
            e
        })
    });
    g.bench_function("std_Condvar_2_threads", |b| {
        b.iter_custom(|n| {
            let pair = Arc::new((Mutex::new(0u32), Condvar::new()));
            let p2 = pair.clone();
            let side = move |p: &(Mutex<u32>, Condvar), me: u32| {
                for _ in 0..n {
                    let mut t = p.0.lock().expect("lock");
                    while *t != me {
                        t = p.1.wait(t).expect("wait");
                    }
                    *t = 1 - me;
                    p.1.notify_one();
                }
            };
            let h = std::thread::spawn(move || side(&p2, 1));
            let t = Instant::now();
            side(&pair, 0);
            let e = t.elapsed();
            h.join().expect("partner thread");
            e
        })
    });
    g.finish();
}

fn python_peer() {
    if std::env::var_os("POOLRUN_BENCH_NO_PYTHON").is_some() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_sync_peer.py");
    println!("\n== CPython peer: python3 benches/python_sync_peer.py");
    match std::process::Command::new("python3").arg(script).status() {
        Ok(s) if s.success() => {}
        Ok(s) => println!("(python peer failed: {s})"),
        Err(e) => println!("(python3 not available: {e})"),
    }
}

/// Creating a primitive: a memfd segment (memfd_create, ftruncate, seals, mmap) vs a std
/// Mutex (no system call). The peer script times `multiprocessing.Lock()`.
fn create(c: &mut Criterion) {
    let mut g = c.benchmark_group("create");
    g.bench_function("poolrun_Lock_new", |b| {
        b.iter(|| black_box(Lock::new().expect("Lock")))
    });
    g.bench_function("std_Mutex_new", |b| b.iter(|| black_box(Mutex::new(0u64))));
    g.finish();
}

criterion_group!(benches, lock_uncontended, create);

fn main() {
    // The partner is forked before criterion starts threads.
    let cond = Condition::new().expect("Condition");
    let turn = SharedArray::<u32>::new(1).expect("SharedArray");
    let partner = Partner::start(&cond, &turn);
    benches();
    let mut c = Criterion::default().configure_from_args();
    condition_pingpong(&mut c, &(cond, turn));
    drop(partner);
    Criterion::default().configure_from_args().final_summary();
    python_peer();
}
