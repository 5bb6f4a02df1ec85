//! Stable-Rust replay of the `cli_args` fuzz target (written by the
//! reliability suite, owner of `fuzz/`): runs the target body (`fuzz/src/cli_args.rs`,
//! included by path) over every file of `fuzz/corpus/cli_args/` plus a few thousand
//! pseudo-random argument vectors built from option names and odd values, so CI exercises
//! the argument-to-plan parsing without nightly Rust or libFuzzer. No task runs and no pool
//! starts. Longer: `POOLRUN_FUZZ_ITERS=200000 cargo test --release -p poolrun-cli --test
//! fuzz_replay_cli`. The libFuzzer run itself: see `fuzz/README.md`.

#[path = "../../../fuzz/src/cli_args.rs"]
mod cli_args;

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/cli_args");
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
fn cli_corpus_replays_clean() {
    let files = corpus();
    assert!(
        files.len() >= 10,
        "fuzz/corpus/cli_args is missing or nearly empty"
    );
    for (name, data) in &files {
        let r = std::panic::catch_unwind(|| cli_args::run(data));
        assert!(r.is_ok(), "corpus file {name} fails the cli_args target");
    }
}

const WORDS: &[&str] = &[
    "--mode",
    "process",
    "thread",
    "-j",
    "--jobs",
    "--gil",
    "on",
    "off",
    "--switch-interval",
    "--timeout",
    "--unordered",
    "--format",
    "json",
    "text",
    "--progress",
    "always",
    "never",
    "auto",
    "primes",
    "spin",
    "sleep",
    "sha256",
    "exec",
    "echo",
    "tasks",
    "compare",
    "demo",
    "--workload",
    "cpu",
    "io",
    "mixed",
    "--tasks",
    "-",
    "--",
    "0",
    "-1",
    "1e400",
    "nan",
    "inf",
    "-0",
    "4097",
    "18446744073709551616",
    "1,2,,3",
    "",
    " ",
    "{}",
    "\u{0}",
    "é",
    "-jx",
    "--mode=process",
    "--timeout=0.000001",
    "-j=2",
    "--help",
    "-V",
];

#[test]
fn cli_random_argument_vectors() {
    let iters: u64 = std::env::var("POOLRUN_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let mut x: u64 = std::env::var("POOLRUN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001);
    eprintln!("fuzz_replay_cli: POOLRUN_SEED={x}");
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..iters {
        let n = next() % 8;
        let mut data = Vec::new();
        for k in 0..n {
            if k > 0 {
                data.push(0);
            }
            match next() % 4 {
                0 => data.extend((0..next() % 6).map(|_| next() as u8)),
                _ => data.extend(WORDS[(next() % WORDS.len() as u64) as usize].as_bytes()),
            }
        }
        let r = std::panic::catch_unwind(|| cli_args::run(&data));
        assert!(
            r.is_ok(),
            "cli_args target failed on {:?}",
            String::from_utf8_lossy(&data)
        );
    }
}
