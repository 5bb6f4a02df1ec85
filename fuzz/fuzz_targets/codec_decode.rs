//! `cargo fuzz run codec_decode`: arbitrary bytes through poolrun's decoding path.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    poolrun_fuzz::codec_decode::run(data);
});
