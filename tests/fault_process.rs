//! Fault injection under sustained load, process mode.
//!
//! One pool runs ≥ 20,000 tasks (submit with callbacks, then an ordered `map` with chunks)
//! while a killer thread SIGKILLs / SIGSEGVs / SIGTERMs random live workers, and the tasks
//! themselves panic, abort, segfault, `exit`, overrun `task_timeout`, exceed an `RLIMIT_AS`
//! memory cap and return results that fail to decode in the parent. Asserted:
//!
//! - every submitted task ends exactly once, with the right value or the right
//!   [`TaskError`]; a task hit by the killer fails with `WorkerDied` naming the pid and
//!   the signal that was sent to it; no worker pid is blamed for two tasks (within a round:
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
//! one-line summary (the figures in RELIABILITY.md) are printed. The body is in
//! `tests/fault_util/faults.rs` (shared with `tests/fault_recycle.rs`).

mod fault_util;

#[test]
fn process_pool_survives_injected_faults_under_load() {
    fault_util::faults::run(fault_util::faults::Opts {
        name: "fault_process",
        max_tasks_per_child: None,
        tasks: 20_000,
    });
}
