//! Process-pool benchmarks, each beside its peer in the same run (BENCHMARKS.md):
//!
//! - `roundtrip`: one tiny task, submit → result, on a 1-worker pool, against the floor: a
//!   raw `ipc-channel` ping-pong between this process and a forked child.
//! - `tiny_tasks_<N>`: N no-op tasks on 2 workers: submit-then-result, `map` with chunksize 1,
//!   with no chunksize (automatic) and with 256. CPython's `ProcessPoolExecutor` and `multiprocessing.Pool` run the same shapes
//!   in `benches/python_process_peer.py`, which this bench runs at the end (if `python3` is
//!   on PATH) so both land in the same run.
//! - `startup`: `ProcessPool::new` with 2 and 16 workers (forked, channels up), and "ready":
//!   `new` plus one task answered by every worker.
//! - `kill_running`: `TaskFuture::kill` of a running task on a 1-worker pool until the next
//!   task is answered, against dropping the pool and starting a new one (all CPython offers).
//!
//! `cargo bench --bench procpool` (`POOLRUN_BENCH_N` sets N, default 20,000;
//! `POOLRUN_BENCH_NO_PYTHON=1` skips the CPython peers).

use std::hint::black_box;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender};
use poolrun::{Executor, PoolConfig, ProcessPool};

fn noop(x: u64) -> u64 {
    black_box(x)
}

fn n_tasks() -> u64 {
    std::env::var("POOLRUN_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
}

/// A forked echo child over two ipc-channel byte channels: the round-trip floor.
struct PingPong {
    tx: IpcBytesSender,
    rx: Option<IpcBytesReceiver>,
    child: nix::unistd::Pid,
}

impl PingPong {
    fn start() -> PingPong {
        let (to_child, child_rx) = ipc::bytes_channel().expect("channel");
        let (child_tx, from_child) = ipc::bytes_channel().expect("channel");
        // SAFETY: called from main before criterion starts any thread; the child only runs
        // the echo loop below and ends with `_exit`, never returning into the bench.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                drop(to_child);
                drop(from_child);
                while let Ok(msg) = child_rx.recv() {
                    if child_tx.send(&msg).is_err() {
                        break;
                    }
                }
                // SAFETY: `_exit` ends the child without running the parent's destructors.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(child_rx);
                drop(child_tx);
                PingPong {
                    tx: to_child,
                    rx: Some(from_child),
                    child,
                }
            }
        }
    }

    fn round_trip(&self, x: u64) -> u64 {
        self.tx.send(&x.to_le_bytes()).expect("send");
        let b = self.rx.as_ref().expect("receiver").recv().expect("recv");
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
    }

    fn stop(self) {
        let child = self.child;
        drop(self);
        let _ = nix::sys::wait::waitpid(child, None);
    }
}

fn roundtrip(c: &mut Criterion, pp: &mut PingPong) {
    let mut g = c.benchmark_group("roundtrip");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    g.bench_function("raw_ipc_channel_pingpong", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(pp.round_trip(i))
        })
    });
    // The floor for any design where a parent thread receives the reply and hands it to
    // the waiting caller (as a pool must, to complete futures and run callbacks): the same
    // ping-pong, with the reply received by a second thread and handed over via a condvar.
    let handoff = Arc::new((Mutex::new(None::<u64>), Condvar::new()));
    let (req_tx, req_rx) = std::sync::mpsc::channel::<u64>();
    let receiver = {
        let handoff = handoff.clone();
        let rx = pp.rx.take().expect("receiver");
        std::thread::spawn(move || {
            while req_rx.recv().is_ok() {
                let Ok(b) = rx.recv() else { break };
                let v = u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8]));
                *handoff.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                handoff.1.notify_all();
            }
            rx
        })
    };
    g.bench_function("raw_pingpong_reply_via_receiver_thread", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            let _ = req_tx.send(i); // lets the receiver thread block in recv first
            pp.tx.send(&i.to_le_bytes()).expect("send");
            let mut g = handoff.0.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(v) = g.take() {
                    break black_box(v);
                }
                g = handoff.1.wait(g).unwrap_or_else(|p| p.into_inner());
            }
        })
    });
    drop(req_tx);
    pp.rx = receiver.join().ok();
    g.finish();
    let pool = ProcessPool::new(PoolConfig::new().workers(1)).expect("pool");
    let mut g = c.benchmark_group("roundtrip");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    g.bench_function("poolrun_submit_result_1_worker", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(pool.submit(noop, i).result().unwrap_or(0))
        })
    });
    g.finish();
}

fn tiny_tasks(c: &mut Criterion) {
    let n = n_tasks();
    let mut g = c.benchmark_group(format!("tiny_tasks_{n}_on_2_processes"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(6));
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(n));
    let pool = ProcessPool::new(PoolConfig::new().workers(2)).expect("pool");
    g.bench_function("poolrun_submit_then_result", |b| {
        b.iter(|| {
            let fs: Vec<_> = (0..n).map(|i| pool.submit(noop, i)).collect();
            black_box(fs.into_iter().filter_map(|f| f.result().ok()).sum::<u64>())
        })
    });
    g.bench_function("poolrun_map_chunksize_1", |b| {
        b.iter(|| {
            black_box(
                pool.map(noop, 0..n)
                    .chunksize(1)
                    .filter_map(Result::ok)
                    .sum::<u64>(),
            )
        })
    });
    g.bench_function("poolrun_map_auto_chunksize", |b| {
        b.iter(|| black_box(pool.map(noop, 0..n).filter_map(Result::ok).sum::<u64>()))
    });
    g.bench_function("poolrun_map_chunksize_256", |b| {
        b.iter(|| {
            black_box(
                pool.map(noop, 0..n)
                    .chunksize(256)
                    .filter_map(Result::ok)
                    .sum::<u64>(),
            )
        })
    });
    g.finish();
}

fn startup(c: &mut Criterion) {
    let mut g = c.benchmark_group("startup");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    for w in [2usize, 16] {
        g.bench_function(format!("new_{w}_workers"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let pool = ProcessPool::new(PoolConfig::new().workers(w)).expect("pool");
                    total += t.elapsed();
                    drop(pool);
                }
                total
            })
        });
        g.bench_function(format!("ready_{w}_workers"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let pool = ProcessPool::new(PoolConfig::new().workers(w)).expect("pool");
                    // one task per worker, all answered (the idle-first dispatch spreads them)
                    let fs: Vec<_> = (0..w as u64).map(|i| pool.submit(noop, i)).collect();
                    for f in fs {
                        black_box(f.result().unwrap_or(0));
                    }
                    total += t.elapsed();
                    drop(pool);
                }
                total
            })
        });
    }
    g.finish();
}

fn spin_forever(_: ()) -> u64 {
    loop {
        poolrun::gil::checkpoint();
        std::hint::spin_loop();
    }
}

/// Stopping a runaway task: `kill()` of a running task on a 1-worker pool until the next task
/// is answered (the worker is killed, reaped and replaced), against what a CPython user must
/// do instead — drop the whole pool and start a new one.
fn kill_running(c: &mut Criterion) {
    let mut g = c.benchmark_group("kill_running");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    let pool = ProcessPool::new(PoolConfig::new().workers(1)).expect("pool");
    g.bench_function("poolrun_kill_then_next_result", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let stuck = pool.submit(spin_forever, ());
                while !stuck.running() {
                    std::thread::yield_now();
                }
                std::thread::sleep(Duration::from_millis(1)); // really running in the worker
                let t = Instant::now();
                stuck.kill();
                black_box(pool.submit(noop, i).result().unwrap_or(0));
                total += t.elapsed();
            }
            total
        })
    });
    g.bench_function("new_pool_then_result", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let t = Instant::now();
                let fresh = ProcessPool::new(PoolConfig::new().workers(1)).expect("pool");
                black_box(fresh.submit(noop, i).result().unwrap_or(0));
                total += t.elapsed();
                drop(fresh);
            }
            total
        })
    });
    g.finish();
}

fn python_peers() {
    if std::env::var_os("POOLRUN_BENCH_NO_PYTHON").is_some() {
        return;
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/python_process_peer.py"
    );
    let n = n_tasks().to_string();
    match std::process::Command::new("python3")
        .args([script, &n, "2"])
        .output()
    {
        Ok(out) => {
            println!(
                "\n--- CPython peers (same run): python3 benches/python_process_peer.py {n} 2"
            );
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Err(e) => println!("CPython peers skipped: cannot run python3: {e}"),
    }
}

criterion_group!(benches, tiny_tasks, startup, kill_running);

fn main() {
    // Fork the ping-pong child before criterion (or anything else) starts a thread.
    let mut pp = PingPong::start();
    let mut c = Criterion::default().configure_from_args();
    roundtrip(&mut c, &mut pp);
    pp.stop();
    benches();
    c.final_summary();
    python_peers();
}
