//! Stable-Rust replay of the `codec_decode` fuzz target: runs the target
//! body (`fuzz/src/codec_decode.rs`, included by path) over every file of
//! `fuzz/corpus/codec_decode/` and over a few thousand pseudo-random mutations of them, so
//! CI exercises the decoding path without nightly Rust or libFuzzer. Longer:
//! `POOLRUN_FUZZ_ITERS=1000000 cargo test --release --test fault_fuzz_codec`.
//! The libFuzzer run itself: see `fuzz/README.md`.

mod fault_util;

#[allow(dead_code)]
#[path = "../fuzz/src/codec_decode.rs"]
mod codec_decode;

use fault_util::{env_num, Rng};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/codec_decode");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let data = std::fs::read(e.path()).ok()?;
                    Some((e.file_name().to_string_lossy().into_owned(), data))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn codec_corpus_replays_clean() {
    let files = corpus();
    assert!(
        files.len() >= 10,
        "fuzz/corpus/codec_decode is missing or nearly empty"
    );
    for (name, data) in &files {
        let r = std::panic::catch_unwind(|| codec_decode::run(data));
        assert!(
            r.is_ok(),
            "corpus file {name} fails the codec_decode target"
        );
    }
}

/// Byte-level mutations of corpus entries (flip, insert, delete, splice, big varints).
#[test]
fn codec_random_mutations() {
    let files = corpus();
    assert!(!files.is_empty());
    let iters = env_num("POOLRUN_FUZZ_ITERS", 20_000);
    let mut rng = Rng::from_env("fault_fuzz_codec");
    for _ in 0..iters {
        let (_, base) = &files[rng.below(files.len() as u64) as usize];
        let mut d = base.clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(d.len() as u64 + 1) as usize;
            match rng.below(5) {
                0 if at < d.len() => d[at] ^= 1 << rng.below(8),
                1 => d.insert(at, rng.next_u64() as u8),
                2 if at < d.len() => {
                    d.remove(at);
                }
                3 => {
                    let (_, other) = &files[rng.below(files.len() as u64) as usize];
                    let from = rng.below(other.len() as u64 + 1) as usize;
                    d.splice(at..at, other[from..].iter().copied());
                }
                _ => {
                    d.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
                }
            }
        }
        let r = std::panic::catch_unwind(|| codec_decode::run(&d));
        assert!(r.is_ok(), "codec_decode target failed on input {d:?}");
    }
}
