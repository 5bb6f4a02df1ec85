//! Embed the whole `poolrun` command line in your own program, with your own tasks.
//!
//! ```text
//! cargo run -p poolrun-cli --example embed_cli -- tasks
//! cargo run -p poolrun-cli --example embed_cli -- --mode process -j 2 wordcount README.md Cargo.toml
//! seq 1 5 | cargo run -p poolrun-cli --example embed_cli -- --format json collatz
//! cargo run -p poolrun-cli --example embed_cli -- repeat 3 ab cd
//! ```
//!
//! Tasks are plain `fn`s (never closures): in process mode they run in forked workers, which
//! inherit the registry that `main_with` installs before it starts the pool.

use poolrun_cli::{Registry, TaskDef};

/// Count the words of a file. Blocking I/O goes through `allow_threads`, like CPython's
/// `Py_BEGIN_ALLOW_THREADS`, so it does not hold an emulated GIL (`--gil on`).
fn wordcount(path: &str) -> Result<String, String> {
    let text = poolrun::gil::allow_threads(|| std::fs::read_to_string(path))
        .map_err(|e| format!("cannot read {path:?}: {e}"))?;
    Ok(text.split_whitespace().count().to_string())
}

/// Steps of the Collatz sequence from N to 1. CPU-bound: calls `checkpoint()` in its loop so
/// a GIL can switch threads and a thread-mode `--timeout` can stop it.
fn collatz(arg: &str) -> Result<String, String> {
    let mut n: u64 = arg
        .trim()
        .parse()
        .map_err(|_| format!("N must be a positive whole number, got {arg:?}"))?;
    if n == 0 {
        return Err("N must be at least 1".into());
    }
    let mut steps = 0u64;
    while n != 1 {
        poolrun::gil::checkpoint();
        n = if n % 2 == 0 {
            n / 2
        } else {
            n.checked_mul(3)
                .and_then(|m| m.checked_add(1))
                .ok_or("overflow")?
        };
        steps += 1;
    }
    Ok(steps.to_string())
}

/// A task with a parameter: `repeat COUNT ARG...` repeats every ARG COUNT times.
fn repeat(count: &str, arg: &str) -> Result<String, String> {
    let n: usize = count
        .parse()
        .map_err(|_| format!("COUNT must be a whole number, got {count:?}"))?;
    if n > 1000 {
        return Err("COUNT must be at most 1000".into());
    }
    Ok(arg.repeat(n))
}

fn main() {
    let mut registry = Registry::builtin();
    let added = registry
        .register("wordcount", "count the words in the file ARG", wordcount)
        .and_then(|()| {
            registry.add(
                TaskDef::new(
                    "collatz",
                    "Collatz steps from N down to 1 (CPU-bound)",
                    collatz,
                )
                .arg_name("N"),
            )
        })
        .and_then(|()| {
            registry.register_with_param("repeat", "COUNT", "repeat ARG COUNT times", repeat)
        });
    if let Err(e) = added {
        eprintln!("embed_cli: {e}");
        std::process::exit(2);
    }
    std::process::exit(poolrun_cli::main_with(registry));
}
