//! Soak, thread mode: 100,000 tiny tasks by default (CI), 1,000,000
//! with `POOLRUN_SOAK=1`; RSS sampled every 10,000 tasks must not grow by 10 MiB or more
//! after the warm-up. The long form, as recorded in RELIABILITY.md:
//! `POOLRUN_SOAK=1 cargo test --release --test soak_thread -- --nocapture`.

mod fault_util;

#[test]
fn soak_thread_rss_flat() {
    fault_util::soak::run(poolrun::Mode::Thread);
}
