//! The fault-injection suite of `tests/fault_process.rs` with `max_tasks_per_child(50)`:
//! the same injected faults and killer thread while every worker is also replaced after 50
//! tasks, so crashes, kills, timeouts and voluntary exits interleave. Short form (CI):
//! 10,000 tasks; long form: `POOLRUN_FAULT_LONG=1 cargo test --release --test
//! fault_recycle -- --nocapture` (100,000). Same assertions; see `tests/fault_util/faults.rs`.

mod fault_util;

#[test]
fn recycling_pool_survives_injected_faults_under_load() {
    fault_util::faults::run(fault_util::faults::Opts {
        name: "fault_recycle",
        max_tasks_per_child: Some(50),
        tasks: 10_000,
    });
}
