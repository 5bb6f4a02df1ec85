//! Every interleaving of the kill handshake (`poolrun_core::backend::RunWord`, the protocol
//! in poolrun-core's `runtime/handshake.rs`), in both of its uses:
//!
//! - thread pool: the worker checks "was the future killed?" after publishing the task;
//!   a successful claim raises the worker's stop flag, which must be consumed before the
//!   next task (it must never stop another task);
//! - process pool: the killer marks the item, then claims it; a successful claim is
//!   followed by a SIGKILL of the process, which must never land on a later item.
//!
//! Each step below is one atomic operation of the real code: `begin` (a store), `end` (a
//! swap), `claim` (a compare-exchange), and the flag or mark accesses around them.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use poolrun_core::backend::RunWord;
use poolrun_testkit::model::{explore, Actor, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    WorkerChecked,
    Ran(u64),
    Began(u64),
    KillVisible,
    Claimed,
    StopSeenBy(u64),
    SigKill,
}

#[derive(Default)]
struct Shared {
    run: AtomicU64,
    /// Thread flavour: the future is done (claimed by `kill`). Process flavour: the mark.
    killed: AtomicBool,
    stop: AtomicBool,
    dead: AtomicBool,
    log: RefCell<Vec<Ev>>,
}

impl Shared {
    fn word(&self) -> RunWord<'_> {
        RunWord::new(&self.run)
    }
    fn log(&self, e: Ev) {
        self.log.borrow_mut().push(e);
    }
}

/// The thread pool's worker (`threadpool/src/work.rs::run_one`), running task 1 then 2.
struct ThreadWorker {
    pc: u8,
}

impl Actor<Shared> for ThreadWorker {
    fn step(&mut self, s: &Shared) -> Step {
        match self.pc {
            0 => {
                s.word().begin(1); // W1
                self.pc = 1;
            }
            1 => {
                s.log(Ev::WorkerChecked); // W2: the future done?
                self.pc = if s.killed.load(Ordering::SeqCst) {
                    3
                } else {
                    2
                };
            }
            2 => {
                s.log(Ev::Ran(1)); // W3: task code; a checkpoint would see `stop`
                self.pc = 3;
            }
            3 => {
                self.pc = if s.word().end() { 4 } else { 5 }; // W4
            }
            4 => {
                // consume_stop: the claimer raises the flag right after its claim.
                if !s.stop.load(Ordering::SeqCst) {
                    return Step::Blocked;
                }
                s.stop.store(false, Ordering::SeqCst);
                self.pc = 5;
            }
            5 => {
                s.word().begin(2);
                s.log(Ev::Began(2));
                self.pc = 6;
            }
            6 => {
                if s.stop.load(Ordering::SeqCst) {
                    s.log(Ev::StopSeenBy(2));
                }
                self.pc = 7;
            }
            _ => {
                s.word().end();
                return Step::Finished;
            }
        }
        Step::Ran
    }
}

/// `TaskFuture::kill` then the thread pool's kill route, for task 1.
struct ThreadKiller {
    pc: u8,
}

impl Actor<Shared> for ThreadKiller {
    fn step(&mut self, s: &Shared) -> Step {
        match self.pc {
            0 => {
                s.killed.store(true, Ordering::SeqCst); // K1: the future is claimed
                s.log(Ev::KillVisible);
                self.pc = 1;
                Step::Ran
            }
            1 => {
                if s.word().claim(1) {
                    // K2
                    s.log(Ev::Claimed);
                    self.pc = 2;
                    Step::Ran
                } else {
                    Step::Finished
                }
            }
            _ => {
                s.stop.store(true, Ordering::SeqCst);
                Step::Finished
            }
        }
    }
}

fn position(log: &[Ev], e: Ev) -> Option<usize> {
    log.iter().position(|x| *x == e)
}

#[test]
fn thread_kill_stops_only_its_task_in_every_interleaving() {
    let e = explore(
        || {
            (
                Shared::default(),
                vec![
                    Box::new(ThreadWorker { pc: 0 }) as Box<dyn Actor<Shared>>,
                    Box::new(ThreadKiller { pc: 0 }),
                ],
            )
        },
        |s, schedule| {
            let log = s.log.borrow();
            assert!(
                position(&log, Ev::StopSeenBy(2)).is_none(),
                "the stop for task 1 reached task 2: {schedule:?} {log:?}"
            );
            // Task 1's code ran although the kill was visible before the worker looked,
            // and nobody claimed it: it would run on unstopped. Never.
            let ran = position(&log, Ev::Ran(1)).is_some();
            let kill_first = match (
                position(&log, Ev::KillVisible),
                position(&log, Ev::WorkerChecked),
            ) {
                (Some(k), Some(w)) => k < w,
                _ => false,
            };
            let claimed = position(&log, Ev::Claimed).is_some();
            assert!(
                !(ran && kill_first && !claimed),
                "task 1 ran unstopped after its kill: {schedule:?} {log:?}"
            );
        },
        10_000,
    );
    assert!(e.schedules > 20, "{e:?}");
}

/// The process pool's worker (`procpool/src/child.rs::run_batch`), items 1 and 2.
struct ProcessWorker {
    pc: u8,
}

impl Actor<Shared> for ProcessWorker {
    fn step(&mut self, s: &Shared) -> Step {
        if s.dead.load(Ordering::SeqCst) {
            return Step::Finished; // SIGKILLed
        }
        match self.pc {
            0 => {
                s.word().begin(1); // W1
                s.log(Ev::Began(1));
                self.pc = 1;
            }
            1 => {
                // W2: take the mark (skip the item if it was marked)
                let marked = s.killed.swap(false, Ordering::SeqCst);
                s.log(Ev::WorkerChecked);
                self.pc = if marked { 3 } else { 2 };
            }
            2 => {
                s.log(Ev::Ran(1));
                self.pc = 3;
            }
            3 => {
                // W4: claimed → the SIGKILL is coming: flush and exit, begin nothing.
                if s.word().end() {
                    return Step::Finished;
                }
                self.pc = 4;
            }
            4 => {
                s.word().begin(2);
                s.log(Ev::Began(2));
                self.pc = 5;
            }
            _ => {
                s.word().end();
                return Step::Finished;
            }
        }
        Step::Ran
    }
}

/// `StatusPage::doom(1)` then the SIGKILL, as the scheduler does under its lock.
struct ProcessKiller {
    pc: u8,
}

impl Actor<Shared> for ProcessKiller {
    fn step(&mut self, s: &Shared) -> Step {
        match self.pc {
            0 => {
                s.killed.store(true, Ordering::SeqCst); // K1: the mark
                s.log(Ev::KillVisible);
                self.pc = 1;
                Step::Ran
            }
            1 => {
                if s.word().claim(1) {
                    s.log(Ev::Claimed);
                    self.pc = 2;
                    Step::Ran
                } else {
                    Step::Finished
                }
            }
            _ => {
                s.log(Ev::SigKill);
                s.dead.store(true, Ordering::SeqCst);
                Step::Finished
            }
        }
    }
}

#[test]
fn process_kill_never_lands_on_a_later_item_in_every_interleaving() {
    let e = explore(
        || {
            (
                Shared::default(),
                vec![
                    Box::new(ProcessWorker { pc: 0 }) as Box<dyn Actor<Shared>>,
                    Box::new(ProcessKiller { pc: 0 }),
                ],
            )
        },
        |s, schedule| {
            let log = s.log.borrow();
            if let (Some(kill), Some(b2)) =
                (position(&log, Ev::SigKill), position(&log, Ev::Began(2)))
            {
                assert!(
                    kill < b2,
                    "the SIGKILL for item 1 hit item 2: {schedule:?} {log:?}"
                );
            }
            let ran = position(&log, Ev::Ran(1)).is_some();
            let kill_first = match (
                position(&log, Ev::KillVisible),
                position(&log, Ev::WorkerChecked),
            ) {
                (Some(k), Some(w)) => k < w,
                _ => false,
            };
            let claimed = position(&log, Ev::Claimed).is_some();
            assert!(
                !(ran && kill_first && !claimed),
                "item 1 ran unstopped after its kill: {schedule:?} {log:?}"
            );
        },
        10_000,
    );
    assert!(e.schedules > 10, "{e:?}");
}

/// S1 (`FutureState::start` / `TaskFuture::add_start_callback`): a start callback
/// registered while the task starts runs exactly once — by the registrar if it saw
/// `started`, else by the starter, which then sees `has_on_start` — in every interleaving
/// of the starter's three steps (CAS, store `started`, load `has_on_start` and, if set,
/// drain under the lock) and the registrar's (store `has_on_start`, then under the lock:
/// load `started`, run or push). And never for a task that does not start.
#[test]
fn start_callback_runs_exactly_once_in_every_interleaving() {
    #[derive(Default)]
    struct S {
        status_running: AtomicBool,
        started: AtomicBool,
        has_on_start: AtomicBool,
        pushed: RefCell<usize>,
        ran: RefCell<usize>,
    }
    struct Starter {
        pc: u8,
        starts: bool,
    }
    impl Actor<S> for Starter {
        fn step(&mut self, s: &S) -> Step {
            if !self.starts {
                return Step::Finished; // cancelled before it started
            }
            match self.pc {
                0 => s.status_running.store(true, Ordering::SeqCst),
                1 => s.started.store(true, Ordering::SeqCst),
                _ => {
                    if s.has_on_start.load(Ordering::SeqCst) {
                        // (under the lock) drain and run what was pushed
                        let n = std::mem::take(&mut *s.pushed.borrow_mut());
                        *s.ran.borrow_mut() += n;
                    }
                    return Step::Finished;
                }
            }
            self.pc += 1;
            Step::Ran
        }
    }
    struct Registrar {
        pc: u8,
    }
    impl Actor<S> for Registrar {
        fn step(&mut self, s: &S) -> Step {
            match self.pc {
                0 => {
                    s.has_on_start.store(true, Ordering::SeqCst);
                    self.pc = 1;
                    Step::Ran
                }
                _ => {
                    // (under the lock) run now if started, else push
                    if s.started.load(Ordering::SeqCst) {
                        *s.ran.borrow_mut() += 1;
                    } else {
                        *s.pushed.borrow_mut() += 1;
                    }
                    Step::Finished
                }
            }
        }
    }
    for starts in [true, false] {
        let stats = explore(
            || {
                let actors: Vec<Box<dyn Actor<S>>> = vec![
                    Box::new(Starter { pc: 0, starts }),
                    Box::new(Registrar { pc: 0 }),
                ];
                (S::default(), actors)
            },
            |s, sched| {
                let want = usize::from(starts);
                assert_eq!(*s.ran.borrow(), want, "schedule {sched:?}");
            },
            10_000,
        );
        assert!(stats.schedules >= 1);
    }
}
