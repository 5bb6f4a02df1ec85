//! The built-in tasks — `primes`, `spin`, `sleep`, `sha256`, `echo`, and `exec` (in
//! [`crate::exec`]) — and [`Registry::builtin`], which registers them.
//!
//! CPU-bound tasks call [`poolrun::gil::checkpoint`] in their loops (CPython's eval breaker:
//! under an emulated GIL that is where a waiting thread gets its turn, and where a thread-mode
//! `--timeout` stops the task); blocking work (sleeping, reading files, waiting for a child
//! process) runs inside [`poolrun::gil::allow_threads`], as CPython releases the GIL there.
//! Every argument is validated: a bad one fails that task with a one-line message.

use std::io::Read;
use std::time::{Duration, Instant};

use poolrun::gil::{allow_threads, checkpoint};
use sha2::{Digest, Sha256};

use crate::registry::{Registry, TaskDef};
use crate::text::{io_reason, show};

/// The longest `spin`/`sleep` accepted: one day.
const MAX_MS: f64 = 86_400_000.0;

impl Registry {
    /// The built-in tasks (see `poolrun tasks`).
    pub fn builtin() -> Self {
        let mut r = Registry::new();
        for def in builtin_defs() {
            // The built-in names are valid and distinct; `add` cannot fail for them, and if
            // a future edit broke that, the task is simply missing from the list.
            let _ = r.add(def);
        }
        r
    }
}

fn builtin_defs() -> Vec<TaskDef> {
    vec![
        TaskDef::new(
            "primes",
            "count the primes below N by trial division (CPU-bound)",
            primes,
        )
        .arg_name("N"),
        TaskDef::new("spin", "burn CPU for MS milliseconds (CPU-bound)", spin).arg_name("MS"),
        TaskDef::new(
            "sleep",
            "sleep MS milliseconds without holding the GIL (I/O-bound)",
            sleep,
        )
        .arg_name("MS"),
        TaskDef::new(
            "sha256",
            "SHA-256 of the file PATH, read without holding the GIL",
            sha256,
        )
        .arg_name("PATH"),
        TaskDef::with_param(
            "exec",
            "CMD",
            "run `sh -c CMD` per ARG ({} = the shell-quoted ARG, also $1); output = its stdout",
            crate::exec::exec,
        ),
        TaskDef::new("echo", "return ARG unchanged", echo),
    ]
}

fn parse_count(arg: &str, what: &str) -> Result<u64, String> {
    let t: String = arg.trim().chars().filter(|c| *c != '_').collect();
    t.parse::<u64>().map_err(|_| {
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            format!(
                "{what} is too large (at most {}), got {}",
                u64::MAX,
                show(arg)
            )
        } else {
            format!("{what} must be a whole number >= 0, got {}", show(arg))
        }
    })
}

fn parse_ms(arg: &str) -> Result<Duration, String> {
    let t = arg.trim();
    match t.parse::<f64>() {
        Ok(ms) if ms.is_finite() && (0.0..=MAX_MS).contains(&ms) => {
            Ok(Duration::from_secs_f64(ms / 1000.0))
        }
        Ok(_) => Err(format!(
            "MS must be between 0 and {MAX_MS} (one day), got {}",
            show(arg)
        )),
        Err(_) => Err(format!(
            "MS must be a number of milliseconds, got {}",
            show(arg)
        )),
    }
}

/// Is `n` prime? Trial division by 2, 3 and 6k ± 1 up to √n.
fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n % 2 == 0 || n % 3 == 0 {
        return false;
    }
    let mut d = 5u64;
    while d.saturating_mul(d) <= n {
        if n % d == 0 || n % (d + 2) == 0 {
            return false;
        }
        d += 6;
    }
    true
}

/// The number of primes below `n`, with a GIL checkpoint per candidate.
pub(crate) fn count_primes_below(n: u64) -> u64 {
    let mut count = 0;
    for k in 2..n {
        checkpoint();
        if is_prime(k) {
            count += 1;
        }
    }
    count
}

fn primes(arg: &str) -> Result<String, String> {
    let n = parse_count(arg, "N")?;
    Ok(count_primes_below(n).to_string())
}

fn spin(arg: &str) -> Result<String, String> {
    let d = parse_ms(arg)?;
    let start = Instant::now();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut rounds = 0u64;
    while start.elapsed() < d {
        checkpoint();
        for _ in 0..1000 {
            // xorshift: work the optimiser cannot remove.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        rounds += 1;
    }
    std::hint::black_box(x);
    Ok(format!(
        "spun {:.0} ms ({rounds}k rounds)",
        start.elapsed().as_secs_f64() * 1000.0
    ))
}

fn sleep(arg: &str) -> Result<String, String> {
    let d = parse_ms(arg)?;
    let start = Instant::now();
    // Sleep in slices so a stopped task (thread-mode timeout) ends at the next checkpoint.
    const SLICE: Duration = Duration::from_millis(50);
    loop {
        let left = d.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        allow_threads(|| std::thread::sleep(left.min(SLICE)));
        checkpoint();
    }
    Ok(format!(
        "slept {:.0} ms",
        start.elapsed().as_secs_f64() * 1000.0
    ))
}

fn sha256(arg: &str) -> Result<String, String> {
    if arg.is_empty() {
        return Err("PATH is empty".to_string());
    }
    let shown = show(arg);
    let mut file = allow_threads(|| std::fs::File::open(arg))
        .map_err(|e| format!("cannot open {shown}: {}", io_reason(&e)))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = allow_threads(|| file.read(&mut buf))
            .map_err(|e| format!("cannot read {shown}: {}", io_reason(&e)))?;
        if n == 0 {
            break;
        }
        allow_threads(|| hasher.update(&buf[..n]));
        checkpoint();
    }
    let digest = hasher.finalize();
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

fn echo(arg: &str) -> Result<String, String> {
    Ok(arg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_counts() {
        assert_eq!(primes("0"), Ok("0".into()));
        assert_eq!(primes("3"), Ok("1".into()));
        assert_eq!(primes("100"), Ok("25".into()));
        assert_eq!(primes(" 10_000 "), Ok("1229".into()));
        assert!(primes("abc").unwrap_err().contains("\"abc\""));
        assert!(primes("-5").is_err());
        assert!(primes(&"9".repeat(1000)).unwrap_err().contains("bytes"));
    }

    #[test]
    fn ms_parsing() {
        assert!(sleep("1").is_ok());
        assert!(sleep("0.5").is_ok());
        assert!(sleep("-1").unwrap_err().contains("between"));
        assert!(sleep("NaN").unwrap_err().contains("between"));
        assert!(spin("x").unwrap_err().contains("milliseconds"));
        assert!(spin("2").unwrap().starts_with("spun"));
    }

    #[test]
    fn sha256_of_file_and_errors() {
        let dir = std::env::temp_dir().join(format!("poolrun-cli-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("abc.txt");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256(p.to_str().unwrap()).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let e = sha256(dir.join("missing").to_str().unwrap()).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
        assert!(sha256(dir.to_str().unwrap()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
