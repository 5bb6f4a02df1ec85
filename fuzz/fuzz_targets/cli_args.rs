//! `cargo fuzz run cli_args`: arbitrary argument vectors through the CLI's two-phase parsing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    poolrun_fuzz::cli_args::run(data);
});
