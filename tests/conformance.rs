//! The Executor / TaskFuture conformance suite (README "The API" and "Semantics"; CPython's `concurrent.futures` behaviours), written once
//! and run against every `Mode`: `thread::*` and `process::*` are the same tests.

mod common;

macro_rules! conformance {
    ($modname:ident, $mode:expr) => {
        mod $modname {
            use super::common::*;
            // (`batch_submitter` submits one chunk and returns its futures, so a test can
            // kill items inside a chunk; it is the backend hook `map` is built on.)
            use poolrun::{
                as_completed, as_completed_ref, wait, Executor, Mode, Pool, PoolConfig, PoolError,
                ReturnWhen, TaskError, TaskOptions,
            };
            use poolrun_core::backend::Dispatch;
            use std::sync::atomic::{AtomicUsize, Ordering};
            use std::sync::{Arc, Mutex};
            use std::time::{Duration, Instant};

            const MODE: Mode = $mode;

            fn pool(workers: usize) -> Pool {
                Pool::new(MODE, PoolConfig::new().workers(workers)).expect("pool")
            }

            #[test]
            fn submit_and_result() {
                let p = pool(2);
                assert_eq!(p.mode(), MODE);
                assert_eq!(p.workers(), 2);
                let f = p.submit(square, 12);
                assert_eq!(f.result(), Ok(144));
            }

            #[test]
            fn future_states_and_cancel_rules() {
                let p = pool(1);
                let a = p.submit(sleep_ms, 300);
                let b = p.submit(sleep_ms, 1);
                let c = p.submit(sleep_ms, 1);
                assert!(eventually(T, || a.running()));
                // c is behind at most one task handed ahead to the worker: still pending.
                assert!(!c.running() && !c.done());
                assert!(!a.cancel(), "a running task cannot be cancelled");
                let calls = Arc::new(AtomicUsize::new(0));
                let caller = std::thread::current().id();
                let (c2, seen) = (calls.clone(), Arc::new(Mutex::new(None)));
                let seen2 = seen.clone();
                c.add_done_callback(move |r| {
                    assert_eq!(r, &Err(TaskError::Cancelled));
                    *seen2.lock().unwrap() = Some(std::thread::current().id());
                    c2.fetch_add(1, Ordering::SeqCst);
                });
                assert!(c.cancel());
                assert!(c.cancel(), "cancelling twice still reports cancelled");
                assert!(c.done() && c.cancelled() && !c.running());
                assert_eq!(calls.load(Ordering::SeqCst), 1);
                assert_eq!(
                    *seen.lock().unwrap(),
                    Some(caller),
                    "cancel runs callbacks in the cancelling thread"
                );
                assert_eq!(a.result(), Ok(300));
                assert_eq!(b.result(), Ok(1));
                assert_eq!(c.result(), Err(TaskError::Cancelled));
                assert_eq!(calls.load(Ordering::SeqCst), 1);
            }

            #[test]
            fn no_task_waits_behind_a_long_one_while_a_worker_idles() {
                // One long task, then short ones: a short task handed ahead to the long
                // task's worker must be taken back by the idle worker (process mode: the
                // withdraw gate), so every short one finishes while the long one runs.
                let p = pool(2);
                let long = p.submit(sleep_ms, 3000);
                assert!(eventually(T, || long.running()));
                let shorts: Vec<_> = (0..6).map(|_| p.submit(sleep_ms, 20)).collect();
                for f in shorts {
                    assert_eq!(f.result_timeout(T), Ok(20));
                }
                assert!(!long.done(), "a short task waited for the long one");
                assert_eq!(long.result_timeout(T), Ok(3000));
            }

            #[test]
            fn finished_cannot_be_cancelled() {
                let p = pool(1);
                let f = p.submit(square, 3);
                assert!(f.wait(Some(T)));
                assert!(!f.cancel());
                assert!(!f.cancelled());
                assert_eq!(f.result(), Ok(9));
            }

            #[test]
            fn result_timeout_then_value() {
                let p = pool(1);
                let f = p.submit(sleep_ms, 200);
                assert_eq!(
                    f.result_timeout(Duration::from_millis(10)),
                    Err(TaskError::WaitTimeout)
                );
                assert!(!f.done());
                assert_eq!(f.result_timeout(T), Ok(200));
                assert_eq!(f.result_timeout(T), Err(TaskError::ResultTaken));
                assert!(!f.wait(Some(Duration::ZERO)) || f.done());
            }

            #[test]
            fn callback_on_done_future_runs_immediately_in_caller() {
                let p = pool(1);
                let f = p.submit(square, 5);
                assert!(f.wait(Some(T)));
                let here = std::thread::current().id();
                let ran = Arc::new(Mutex::new(None));
                let r2 = ran.clone();
                f.add_done_callback(move |r| {
                    *r2.lock().unwrap() = Some((std::thread::current().id(), r.clone()));
                });
                let got = ran.lock().unwrap().clone();
                assert_eq!(
                    got,
                    Some((here, Ok(25))),
                    "ran before add_done_callback returned"
                );
                assert_eq!(f.result(), Ok(25));
            }

            #[test]
            fn callbacks_in_order_in_completing_thread_panics_isolated() {
                let p = pool(1);
                let f = p.submit(sleep_ms, 100);
                let log = Arc::new(Mutex::new(Vec::new()));
                let here = std::thread::current().id();
                for i in 0..4 {
                    let log = log.clone();
                    f.add_done_callback(move |r| {
                        assert_eq!(r, &Ok(100));
                        log.lock().unwrap().push((
                            i,
                            std::thread::current().id() != here,
                            std::process::id(),
                        ));
                        if i == 1 {
                            panic!("callback {i} panics on purpose");
                        }
                    });
                }
                assert_eq!(f.result(), Ok(100));
                let log = log.lock().unwrap().clone();
                assert_eq!(
                    log.iter().map(|e| e.0).collect::<Vec<_>>(),
                    vec![0, 1, 2, 3]
                );
                assert!(
                    log.iter().all(|e| e.1),
                    "callbacks run in the completing thread, not the caller"
                );
                assert!(
                    log.iter().all(|e| e.2 == std::process::id()),
                    "callbacks run in the parent process"
                );
                // The pool is undisturbed.
                assert_eq!(p.submit(square, 4).result(), Ok(16));
            }

            #[test]
            fn panic_fails_only_that_task() {
                let p = pool(2);
                let bad = p.submit(panics_on_odd, 3);
                let good = p.submit(panics_on_odd, 4);
                match bad.result() {
                    Err(TaskError::Panicked { message }) => {
                        assert!(message.contains("boom on 3"), "{message}")
                    }
                    other => panic!("expected Panicked, got {other:?}"),
                }
                assert_eq!(good.result(), Ok(4));
                assert_eq!(p.submit(square, 2).result(), Ok(4));
            }

            #[test]
            fn map_keeps_input_order_and_every_item_yields() {
                let p = pool(3);
                let inputs: Vec<(u64, u64)> = (0..12).map(|i| ((12 - i) * 5, i)).collect();
                let out: Vec<_> = p.map(sleep_then, inputs).collect();
                assert_eq!(out, (0..12).map(Ok).collect::<Vec<_>>());
                let out: Vec<_> = p.map(panics_on_odd, 0..6u64).collect();
                assert_eq!(out.len(), 6, "an error does not end the iteration");
                for (i, r) in out.iter().enumerate() {
                    if i % 2 == 1 {
                        assert!(matches!(r, Err(TaskError::Panicked { .. })), "{i}: {r:?}");
                    } else {
                        assert_eq!(r, &Ok(i as u64));
                    }
                }
            }

            #[test]
            fn map_chunksize_fails_only_the_failing_item() {
                let p = pool(2);
                let out: Vec<_> = p
                    .map(panics_on_odd, vec![2u64, 3, 4, 6, 8, 10, 12])
                    .chunksize(3)
                    .collect();
                assert_eq!(out[0], Ok(2));
                assert!(matches!(out[1], Err(TaskError::Panicked { .. })));
                assert_eq!(&out[2..], &[Ok(4), Ok(6), Ok(8), Ok(10), Ok(12)]);
                let big: Vec<u64> = p
                    .map(square, 0..1000u64)
                    .chunksize(64)
                    .map(|r| r.unwrap())
                    .collect();
                assert_eq!(big, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
            }

            #[test]
            fn map_is_lazy_and_bounded() {
                let p = pool(2);
                // An endless input: only what is consumed (plus a bounded window) is run.
                let first: Vec<u64> = p.map(square, 0u64..).take(20).map(|r| r.unwrap()).collect();
                assert_eq!(first, (0..20u64).map(|x| x * x).collect::<Vec<_>>());
            }

            #[test]
            fn map_timeout_is_one_deadline_from_the_call() {
                let p = pool(1);
                let t0 = Instant::now();
                let out: Vec<_> = p
                    .map(sleep_ms, vec![50u64, 50, 2000, 2000, 2000])
                    .timeout(Duration::from_millis(400))
                    .collect();
                assert_eq!(&out[..2], &[Ok(50), Ok(50)]);
                assert!(out.len() >= 3);
                assert_eq!(out[2], Err(TaskError::WaitTimeout));
                assert!(
                    out[3..].iter().all(|r| matches!(
                        r,
                        Err(TaskError::WaitTimeout) | Err(TaskError::Cancelled)
                    )),
                    "{out:?}"
                );
                assert!(t0.elapsed() < Duration::from_secs(5));
            }

            #[test]
            fn map_unordered_yields_each_index_once() {
                let p = pool(3);
                let inputs: Vec<(u64, u64)> = (0..9).map(|i| ((9 - i) * 10, i * 100)).collect();
                let mut got: Vec<(usize, Result<u64, TaskError>)> =
                    p.map_unordered(sleep_then, inputs).collect();
                got.sort_by_key(|(i, _)| *i);
                assert_eq!(
                    got,
                    (0..9).map(|i| (i, Ok(i as u64 * 100))).collect::<Vec<_>>()
                );
            }

            #[test]
            fn wait_variants_and_cancelled_is_done() {
                let p = pool(1);
                let fast = p.submit(sleep_ms, 10);
                let slow = p.submit(sleep_ms, 400);
                let queued = p.submit(sleep_ms, 400);
                assert!(queued.cancel());
                let fs = vec![fast, slow, queued];
                let t0 = Instant::now();
                let (done, pending) = wait(&fs, Some(T), ReturnWhen::FirstCompleted);
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "an already-cancelled future satisfies FirstCompleted"
                );
                assert!(done.contains(&2), "cancelled counts as done: {done:?}");
                assert!(pending.contains(&1));
                assert!(fs[0].wait(Some(T)));
                let (done, pending) = wait(
                    &fs,
                    Some(Duration::from_millis(10)),
                    ReturnWhen::AllCompleted,
                );
                assert_eq!(
                    (done.len(), pending.len()),
                    (2, 1),
                    "a timeout returns, never fails"
                );
                let (done, pending) = wait(&fs, Some(T), ReturnWhen::AllCompleted);
                assert_eq!((done, pending), (vec![0, 1, 2], vec![]));
            }

            #[test]
            fn wait_first_exception() {
                let p = pool(2);
                let fs = vec![p.submit(sleep_then, (400, 0)), p.submit(panics_on_odd, 1)];
                let (done, pending) = wait(&fs, Some(T), ReturnWhen::FirstException);
                assert_eq!((done, pending), (vec![1], vec![0]));
                let ok = vec![p.submit(square, 1), p.submit(square, 2)];
                let (done, _) = wait(&ok, Some(T), ReturnWhen::FirstException);
                assert_eq!(done, vec![0, 1], "no exception: behaves as AllCompleted");
            }

            #[test]
            fn as_completed_yields_everything_once() {
                let p = pool(2);
                let fs: Vec<_> = (0..6u64)
                    .map(|i| p.submit(sleep_then, ((6 - i) * 15, i)))
                    .collect();
                fs[5].cancel();
                let mut got: Vec<_> = as_completed(fs).collect();
                got.sort_by_key(|(i, _)| *i);
                assert_eq!(got.len(), 6);
                for (i, r) in got {
                    if i == 5 {
                        assert!(r == Ok(5) || r == Err(TaskError::Cancelled));
                    } else {
                        assert_eq!(r, Ok(i as u64));
                    }
                }
            }

            /// Issue 12: `as_completed_ref` borrows, so after its timeout the stragglers are
            /// still the caller's to kill.
            #[test]
            fn as_completed_ref_leaves_the_stragglers_to_kill() {
                let p = pool(2);
                let fs = vec![
                    p.submit(sleep_ms, 1),
                    p.submit(sleep_ms, 60_000),
                    p.submit(sleep_ms, 2),
                ];
                let mut done: Vec<usize> = as_completed_ref(&fs)
                    .timeout(Duration::from_millis(1500))
                    .map(|(i, f)| {
                        assert!(f.done());
                        i
                    })
                    .collect();
                done.sort();
                assert_eq!(done, vec![0, 2]);
                assert!(!fs[1].done());
                assert!(fs[1].kill());
                let mut fs = fs;
                assert_eq!(fs.remove(1).result(), Err(TaskError::Cancelled));
                assert_eq!(fs.remove(0).result(), Ok(1));
            }

            /// Issue 12: `stats()` in every mode — the live figures, and every outcome
            /// counted once.
            #[test]
            fn stats_count_every_outcome_once() {
                let p = pool(2);
                assert!(
                    eventually(T, || p.stats().workers_alive == 2),
                    "{:?}",
                    p.stats()
                );
                let s = p.stats();
                assert_eq!((s.workers, s.idle, s.running, s.queued), (2, 2, 0, 0));
                let a = p.submit(spin_forever, ());
                let b = p.submit(sleep_ms, 300);
                // Process mode hands one task ahead to each busy worker: the fourth of
                // these is surely still in the queue.
                let cs: Vec<_> = (0..4).map(|_| p.submit(sleep_ms, 1)).collect();
                assert!(eventually(T, || p.stats().running == 2), "{:?}", p.stats());
                let s = p.stats();
                assert_eq!(s.idle, 0);
                assert!(s.queued >= 1, "{s:?}");
                assert!(cs[3].cancel());
                assert!(a.kill());
                assert_eq!(b.result(), Ok(300));
                for c in cs.into_iter().take(3) {
                    assert_eq!(c.result(), Ok(1));
                }
                let ok: Vec<_> = (0..3).map(|i| p.submit(square, i)).collect();
                let bad = p.submit(panics_on_odd, 1);
                for f in ok {
                    assert!(f.result().is_ok());
                }
                assert!(matches!(bad.result(), Err(TaskError::Panicked { .. })));
                let s = p.stats();
                assert_eq!(
                    (s.completed, s.failed, s.cancelled, s.killed, s.timed_out),
                    (7, 1, 2, 1, 0),
                    "{s:?}"
                );
                assert!(
                    s.worker_restarts >= 1,
                    "the killed task's worker was replaced: {s:?}"
                );
                let t = Pool::new(
                    MODE,
                    PoolConfig::new()
                        .workers(1)
                        .task_timeout(Some(Duration::from_millis(100))),
                )
                .expect("pool");
                assert!(matches!(
                    t.submit(spin_forever, ()).result(),
                    Err(TaskError::TimedOut { .. })
                ));
                assert_eq!(t.stats().timed_out, 1);
            }

            /// Issue 12: backpressure. With `max_queued(Some(2))` and one worker, three
            /// unfinished tasks fill the pool: `try_submit` and `submit_timeout` hand the
            /// argument back, a cancel makes room, and a blocking `submit` returns only once
            /// a task has ended.
            #[test]
            fn max_queued_bounds_what_waits() {
                let p = Pool::new(MODE, PoolConfig::new().workers(1).max_queued(Some(2)))
                    .expect("pool");
                let running = p.submit(spin_ms, 400);
                let q1 = p.submit(sleep_ms, 1);
                let q2 = p.submit(sleep_ms, 2);
                assert!(matches!(p.try_submit(square, 7), Err(7)));
                assert!(matches!(
                    p.submit_timeout(square, 8, Duration::from_millis(30)),
                    Err(8)
                ));
                assert!(
                    q2.cancel() || q2.done(),
                    "q2 is queued behind a 400 ms task"
                );
                let f = match p.try_submit(square, 4) {
                    Ok(f) => f,
                    Err(_) => panic!("a cancelled task gives its slot back"),
                };
                // Full again: a blocking submit waits until a task ends.
                let g = p.submit(square, 5);
                // (a task's slot is given back by a done-callback, after the task is counted
                // and before its future reads as done: the counter is the causal witness)
                assert!(
                    p.stats().completed >= 1,
                    "submit returned before any task ended: {:?}",
                    p.stats()
                );
                assert_eq!(running.result(), Ok(400));
                assert_eq!(
                    (q1.result(), f.result(), g.result()),
                    (Ok(1), Ok(16), Ok(25))
                );
                // map is not gated: it has its own window.
                let v: Vec<_> = p.map(square, 0..50u64).collect();
                assert_eq!(v.len(), 50);
            }

            /// Issue 12: a timeout for one task, without a second pool; it replaces the
            /// pool's `task_timeout` for that task, shorter or longer.
            #[test]
            fn per_task_timeout_without_a_second_pool() {
                let p = pool(2);
                let limit = Duration::from_millis(100);
                let slow = p.submit_with(spin_forever, (), TaskOptions::new().timeout(limit));
                let other = p.submit(spin_ms, 300);
                assert_eq!(slow.result(), Err(TaskError::TimedOut { after: limit }));
                assert_eq!(
                    other.result(),
                    Ok(300),
                    "a task without one runs to its end"
                );
                assert_eq!(p.stats().timed_out, 1);
                let q = Pool::new(
                    MODE,
                    PoolConfig::new()
                        .workers(1)
                        .task_timeout(Some(Duration::from_millis(50))),
                )
                .expect("pool");
                let long = TaskOptions::new().timeout(Duration::from_secs(20));
                assert_eq!(q.submit_with(spin_ms, 200, long).result(), Ok(200));
                assert_eq!(
                    q.submit(spin_forever, ()).result(),
                    Err(TaskError::TimedOut {
                        after: Duration::from_millis(50)
                    })
                );
            }

            /// Issue 12: a per-pool context, built once per worker and lent to each task
            /// by reference; it survives worker replacement; a wrong type is refused.
            #[test]
            fn context_is_lent_to_every_task_and_survives_respawns() {
                // (the context's type is `Vec<u64>`: a context task takes `&C` exactly)
                #[allow(clippy::ptr_arg)]
                fn lookup(table: &Vec<u64>, i: usize) -> u64 {
                    table[i] * 10
                }
                #[allow(clippy::ptr_arg)]
                fn where_is(table: &Vec<u64>, _: ()) -> (u32, usize) {
                    (std::process::id(), table.as_ptr() as usize)
                }
                fn wrong(_: &String, _: ()) -> u8 {
                    0
                }
                let cfg = PoolConfig::new()
                    .workers(2)
                    .max_tasks_per_child(Some(3))
                    .context(vec![1u64, 2, 3]);
                let p = Pool::new(MODE, cfg).expect("pool");
                let fs: Vec<_> = (0..30).map(|i| p.submit_ctx(lookup, i % 3)).collect();
                for (i, f) in fs.into_iter().enumerate() {
                    assert_eq!(f.result(), Ok((i % 3 + 1) as u64 * 10));
                }
                let places: std::collections::HashSet<_> = (0..6)
                    .map(|_| p.submit_ctx(where_is, ()).result().unwrap())
                    .collect();
                if MODE == Mode::Thread {
                    let addrs: std::collections::HashSet<_> =
                        places.iter().map(|&(_, a)| a).collect();
                    assert_eq!(addrs.len(), 1, "thread mode shares one value: {places:?}");
                } else {
                    assert!(p.stats().worker_restarts >= 5, "recycled: {:?}", p.stats());
                }
                assert!(matches!(
                    p.submit_ctx(wrong, ()).result(),
                    Err(TaskError::Unsupported(_))
                ));
                assert!(matches!(
                    pool(1).submit_ctx(lookup, 0).result(),
                    Err(TaskError::Unsupported(_))
                ));
            }

            /// Issue 12: start notifications — once per task that starts, before its
            /// result; at once for a task already running; never for one cancelled first.
            #[test]
            fn start_callbacks_run_once_when_a_task_starts() {
                let p = pool(1);
                let a = p.submit(spin_ms, 200);
                assert!(eventually(T, || a.running()));
                let counts: Arc<Vec<AtomicUsize>> =
                    Arc::new((0..5).map(|_| AtomicUsize::new(0)).collect());
                let c = counts.clone();
                a.add_start_callback(move || {
                    c[0].fetch_add(1, Ordering::SeqCst);
                });
                assert_eq!(
                    counts[0].load(Ordering::SeqCst),
                    1,
                    "already running: at once"
                );
                let bs: Vec<_> = (1..5u64).map(|i| p.submit(square, i)).collect();
                for (k, b) in bs.iter().enumerate() {
                    let c = counts.clone();
                    b.add_start_callback(move || {
                        c[k + 1].fetch_add(1, Ordering::SeqCst);
                    });
                }
                assert!(bs[3].cancel(), "the last one is still queued");
                assert_eq!(a.result(), Ok(200));
                for (k, b) in bs.into_iter().enumerate().take(3) {
                    assert_eq!(b.result(), Ok((k as u64 + 1).pow(2)));
                    assert_eq!(counts[k + 1].load(Ordering::SeqCst), 1, "task {k}");
                }
                assert_eq!(
                    counts[4].load(Ordering::SeqCst),
                    0,
                    "cancelled: never started"
                );
                assert_eq!(counts[0].load(Ordering::SeqCst), 1);
            }

            #[test]
            fn shutdown_wait_runs_queued_work() {
                let p = pool(1);
                let fs: Vec<_> = (0..5).map(|_| p.submit(sleep_ms, 20)).collect();
                p.shutdown(true, false);
                assert!(fs.iter().all(|f| f.done()));
                assert!(fs.into_iter().all(|f| f.result() == Ok(20)));
                p.shutdown(true, false); // idempotent
                assert_eq!(p.submit(square, 2).result(), Err(TaskError::Shutdown));
            }

            #[test]
            fn shutdown_cancel_pending() {
                let p = pool(1);
                let running = p.submit(sleep_ms, 200);
                assert!(eventually(T, || running.running()));
                let queued: Vec<_> = (0..5).map(|_| p.submit(sleep_ms, 200)).collect();
                p.shutdown(true, true);
                assert_eq!(running.result(), Ok(200));
                // At most one task may have been handed to the worker ahead of the running one.
                let cancelled = queued.iter().filter(|f| f.cancelled()).count();
                assert!(cancelled >= 4, "{cancelled} of 5 cancelled");
                assert!(queued.iter().all(|f| f.done()));
                let (done, pending) = wait(&queued, Some(Duration::ZERO), ReturnWhen::AllCompleted);
                assert_eq!((done.len(), pending.len()), (5, 0));
            }

            #[test]
            fn shutdown_nowait_returns_and_work_still_runs() {
                let p = pool(1);
                let fs: Vec<_> = (0..3).map(|_| p.submit(sleep_ms, 50)).collect();
                let t0 = Instant::now();
                p.shutdown(false, false);
                assert!(t0.elapsed() < Duration::from_millis(100));
                assert_eq!(p.submit(square, 2).result(), Err(TaskError::Shutdown));
                for f in fs {
                    assert_eq!(f.result_timeout(T), Ok(50));
                }
                assert!(p.shutdown_timeout(false, T));
            }

            #[test]
            fn initializer_runs_in_every_worker() {
                let p = Pool::new(
                    MODE,
                    PoolConfig::new().workers(2).initializer(init_set, 4242),
                )
                .unwrap();
                let out: Vec<_> = p.map(read_init, vec![(); 6]).collect();
                assert!(out.iter().all(|r| r == &Ok(4242)), "{out:?}");
            }

            #[test]
            fn failing_initializer_fails_tasks_without_respawn_loop() {
                let p = Pool::new(
                    MODE,
                    PoolConfig::new().workers(2).initializer(init_panics, 0),
                )
                .unwrap();
                let fs: Vec<_> = (0..4).map(|i| p.submit(square, i)).collect();
                for f in fs {
                    match f.result_timeout(T) {
                        Err(TaskError::Initializer(msg)) => {
                            assert!(msg.contains("initializer exploded"), "{msg}")
                        }
                        Err(TaskError::Broken(msg)) => {
                            assert!(msg.contains("initializer"), "{msg}")
                        }
                        other => panic!("expected Initializer, got {other:?}"),
                    }
                }
                assert!(p.shutdown_timeout(true, T));
            }

            #[test]
            fn max_tasks_per_child_recycles_without_deadlock() {
                let p = Pool::new(
                    MODE,
                    PoolConfig::new().workers(2).max_tasks_per_child(Some(1)),
                )
                .unwrap();
                let fs: Vec<_> = (0..10).map(|_| p.submit(whoami, ())).collect();
                let ids: Vec<_> = fs
                    .into_iter()
                    .map(|f| f.result_timeout(T).expect("all 10 finish"))
                    .collect();
                let mut uniq = ids.clone();
                uniq.sort();
                uniq.dedup();
                assert_eq!(uniq.len(), 10, "each task ran on a fresh worker: {ids:?}");
            }

            #[test]
            fn task_timeout_stops_the_task_and_pool_goes_on() {
                let p = Pool::new(
                    MODE,
                    PoolConfig::new()
                        .workers(1)
                        .task_timeout(Some(Duration::from_millis(150))),
                )
                .unwrap();
                let stuck = p.submit(spin_forever, ());
                let after = p.submit(square, 9);
                assert_eq!(
                    stuck.result_timeout(T),
                    Err(TaskError::TimedOut {
                        after: Duration::from_millis(150)
                    })
                );
                assert_eq!(after.result_timeout(T), Ok(81));
                assert!(p.shutdown_timeout(false, T));
            }

            /// Task `i` returns `i`; every `every`-th was a kill victim (`killed[i / every]`
            /// is what its `kill()` returned): victims end `Cancelled` exactly when their
            /// kill said so, every other task gets its own value.
            fn assert_kill_outcomes(
                futs: &[Arc<poolrun::TaskFuture<u64>>],
                every: usize,
                killed: &[bool],
            ) {
                for (i, f) in futs.iter().enumerate() {
                    assert!(f.wait(Some(T)), "task {i} finished");
                    let r = f.try_result().unwrap();
                    if i % every == 0 {
                        let k = killed[i / every];
                        let want = if k {
                            Err(TaskError::Cancelled)
                        } else {
                            Ok(i as u64)
                        };
                        assert_eq!(r, want, "victim {i} (kill returned {k})");
                    } else {
                        assert_eq!(r, Ok(i as u64), "task {i} was not killed");
                    }
                }
            }

            #[test]
            fn kill_stops_a_running_task_and_the_pool_goes_on() {
                let p = pool(1);
                let a = p.submit(spin_forever, ());
                assert!(eventually(T, || a.running()));
                assert!(!a.cancel(), "cancel() keeps Python's rule");
                let calls = Arc::new(AtomicUsize::new(0));
                let c2 = calls.clone();
                let caller = std::thread::current().id();
                a.add_done_callback(move |r| {
                    assert_eq!(r, &Err(TaskError::Cancelled));
                    assert_eq!(std::thread::current().id(), caller);
                    c2.fetch_add(1, Ordering::SeqCst);
                });
                assert!(a.kill());
                assert!(a.done() && a.cancelled() && !a.running());
                assert_eq!(calls.load(Ordering::SeqCst), 1);
                assert!(a.kill(), "killing twice still reports cancelled");
                assert_eq!(calls.load(Ordering::SeqCst), 1);
                assert_eq!(a.result(), Err(TaskError::Cancelled));
                // The worker was freed (process: killed and replaced; thread: stopped at its
                // checkpoint, with a replacement thread): the pool runs the next task.
                assert_eq!(p.submit(square, 5).result_timeout(T), Ok(25));
                assert!(p.shutdown_timeout(false, T));
                assert!(zombies().is_empty());
            }

            #[test]
            fn killed_task_that_cannot_stop_costs_no_capacity() {
                // A task blocked where no checkpoint is reached: process mode kills it;
                // thread mode cannot, so a replacement thread serves the queue meanwhile.
                let ev = poolrun::sync::Event::new().unwrap();
                let arr = poolrun::shm::SharedArray::<u64>::new(1).unwrap();
                let p = pool(1);
                let stuck = p.submit(block_on_event, (ev.clone(), arr.clone()));
                assert!(eventually(T, || stuck.running()));
                std::thread::sleep(Duration::from_millis(20)); // really blocked in the task
                assert!(stuck.kill());
                assert_eq!(p.submit(square, 6).result_timeout(T), Ok(36));
                ev.set();
                assert_eq!(stuck.result(), Err(TaskError::Cancelled));
                assert_eq!(p.submit(square, 7).result_timeout(T), Ok(49));
                assert!(p.shutdown_timeout(false, T));
                if MODE == Mode::Process {
                    assert_eq!(arr.get(0), 0, "the killed worker never got past the wait");
                }
            }

            #[test]
            fn kill_pending_is_cancel_and_finished_is_not_killed() {
                let p = pool(1);
                let a = p.submit(sleep_ms, 200);
                let b = p.submit(sleep_ms, 1);
                let c = p.submit(square, 3);
                assert!(eventually(T, || a.running()));
                assert!(!c.running());
                assert!(c.kill());
                assert!(c.cancelled());
                assert_eq!(a.result(), Ok(200));
                assert_eq!(b.result(), Ok(1));
                assert_eq!(c.result(), Err(TaskError::Cancelled));
                let d = p.submit(square, 4);
                assert!(d.wait(Some(T)));
                assert!(!d.kill(), "a finished task is not killed");
                assert!(!d.cancelled());
                assert_eq!(d.result(), Ok(16));
            }

            #[test]
            fn killed_task_handed_ahead_never_runs() {
                let arr = poolrun::shm::SharedArray::<u64>::new(2).unwrap();
                let p = pool(1);
                let a = p.submit(spin_ms, 300);
                assert!(eventually(T, || a.running()));
                // Process mode hands `b` to the worker ahead of `a`: the worker must skip it.
                let b = p.submit(mark, (arr.clone(), 0));
                if MODE == Mode::Process {
                    assert!(eventually(T, || b.running()), "handed to the worker");
                }
                assert!(b.kill());
                assert_eq!(a.result_timeout(T), Ok(300), "killing b never touches a");
                assert_eq!(b.result(), Err(TaskError::Cancelled));
                assert_eq!(p.submit(mark, (arr.clone(), 1)).result_timeout(T), Ok(1));
                assert_eq!(arr.get(0), 0, "the killed task never ran");
                assert_eq!(arr.get(1), 1);
            }

            #[test]
            fn kill_inside_a_chunk_fails_only_that_item() {
                let p = pool(1);
                let mut submit = p.batch_submitter(spin_then);
                let futs = submit(vec![(60_000, 0), (1, 1), (1, 2), (1, 3)]);
                assert!(eventually(T, || futs[0].running()));
                assert!(futs[0].kill());
                let got: Vec<_> = futs.into_iter().map(|f| f.result_timeout(T)).collect();
                assert_eq!(got, vec![Err(TaskError::Cancelled), Ok(1), Ok(2), Ok(3)]);
            }

            #[test]
            fn random_kills_never_hit_another_task() {
                // Short tasks on 2 workers; a killer thread kills every third one at a random
                // moment (queued, handed ahead, running, or just finished). Every task not
                // killed must get its own value; a stop must never leak into the next task.
                let p = pool(2);
                let futs: Vec<_> = (0..240u64)
                    .map(|i| Arc::new(p.submit(spin_then, (i % 3, i))))
                    .collect();
                let victims: Vec<_> = futs.iter().step_by(3).cloned().collect();
                let killer = std::thread::spawn(move || {
                    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
                    victims
                        .iter()
                        .map(|f| {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            std::thread::sleep(Duration::from_micros(seed % 1500));
                            f.kill()
                        })
                        .collect::<Vec<bool>>()
                });
                assert_kill_outcomes(&futs, 3, &killer.join().unwrap());
                assert!(p.shutdown_timeout(false, T));
                assert!(zombies().is_empty());
            }

            #[test]
            fn kills_at_item_boundaries_hit_only_their_item() {
                // One worker runs a chunk of 3,000 items of ~30 µs each while another thread
                // kills every tenth as soon as it counts as running: kills land on items
                // handed to the worker but not begun, on the running one, and on ones just
                // ending. No other item may ever be the one stopped. (The exact race at an
                // item boundary is proven in procpool's `sys::tests`.)
                let p = pool(1);
                let mut submit = p.batch_submitter(spin_us_then);
                let futs: Vec<_> = submit((0..3000u64).map(|i| (30, i)).collect())
                    .into_iter()
                    .map(Arc::new)
                    .collect();
                let victims: Vec<_> = futs.iter().step_by(10).cloned().collect();
                let killer = std::thread::spawn(move || {
                    victims
                        .iter()
                        .map(|f| {
                            while !f.running() && !f.done() {
                                std::hint::spin_loop();
                            }
                            f.kill()
                        })
                        .collect::<Vec<bool>>()
                });
                assert_kill_outcomes(&futs, 10, &killer.join().unwrap());
                assert!(p.shutdown_timeout(false, T));
            }

            #[test]
            fn daemon_drop_cancels_queue_and_returns() {
                let p = Pool::new(MODE, PoolConfig::new().workers(1).daemon(true)).unwrap();
                let running = p.submit(spin_ms, 1500);
                assert!(eventually(T, || running.running()));
                let queued: Vec<_> = (0..4).map(|_| p.submit(square, 3)).collect();
                let t0 = Instant::now();
                drop(p);
                assert!(
                    t0.elapsed() < Duration::from_millis(1000),
                    "daemon drop does not wait"
                );
                assert!(
                    queued
                        .iter()
                        .filter(|f| f.wait(Some(T)) && f.cancelled())
                        .count()
                        >= 3
                );
                // The running task is stopped (thread mode: at its next checkpoint; process
                // mode: its worker is killed) and its future completes with an error.
                assert!(running.wait(Some(T)));
                assert_eq!(running.result(), Err(TaskError::Shutdown));
            }

            #[test]
            fn non_daemon_drop_waits_for_everything() {
                let p = Pool::new(MODE, PoolConfig::new().workers(1).daemon(false)).unwrap();
                let fs: Vec<_> = (0..4).map(|_| p.submit(sleep_ms, 30)).collect();
                drop(p);
                assert!(fs.iter().all(|f| f.done()));
                assert!(fs.into_iter().all(|f| f.result() == Ok(30)));
            }

            #[test]
            fn invalid_config_is_an_error() {
                match Pool::new(MODE, PoolConfig::new().workers(0)) {
                    Err(PoolError::InvalidConfig(msg)) => assert!(msg.contains("workers(0)")),
                    other => panic!("expected InvalidConfig, got {other:?}"),
                }
                assert!(matches!(
                    Pool::new(MODE, PoolConfig::new().max_tasks_per_child(Some(0))),
                    Err(PoolError::InvalidConfig(_))
                ));
            }

            #[test]
            fn many_submitting_threads() {
                let p = Arc::new(pool(2));
                let hs: Vec<_> = (0..4u64)
                    .map(|t| {
                        let p = p.clone();
                        std::thread::spawn(move || {
                            let fs: Vec<_> = (0..200u64)
                                .map(|i| p.submit(square, t * 1000 + i))
                                .collect();
                            fs.into_iter()
                                .enumerate()
                                .all(|(i, f)| f.result() == Ok((t * 1000 + i as u64).pow(2)))
                        })
                    })
                    .collect();
                assert!(hs.into_iter().all(|h| h.join().unwrap()));
            }

            #[test]
            fn pool_is_send_sync_and_future_is_send() {
                fn assert_send_sync<T: Send + Sync>() {}
                fn assert_send<T: Send>() {}
                assert_send_sync::<Pool>();
                assert_send::<poolrun::TaskFuture<String>>();
            }
        }
    };
}

conformance!(thread, Mode::Thread);
conformance!(process, Mode::Process);
