//! A parallel file hasher: SHA-256 of every file under a directory, in a process pool
//! (or threads), in input order, one failure not stopping the rest.
//!
//! `cargo run --release --example hasher -- [DIR] [process|thread]`
//!
//! What it shows: `map` over a lazy iterator with the automatic chunk size (many small
//! files batch up, big ones spread over every worker), per-item `Result`s, `stats()`.

use std::io::Read;
use std::path::PathBuf;

use poolrun::{Executor, Mode, Pool, PoolConfig};
use sha2::{Digest, Sha256};

/// The task: hash one file (the path travels to the worker; the bytes never cross).
fn sha256_file(path: PathBuf) -> Result<String, String> {
    let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Every regular file under `dir`, depth first, without following symlinks.
fn files(dir: PathBuf) -> impl Iterator<Item = PathBuf> {
    let mut stack = vec![dir];
    std::iter::from_fn(move || loop {
        let p = stack.pop()?;
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                if let Ok(rd) = std::fs::read_dir(&p) {
                    let mut kids: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                    kids.sort();
                    stack.extend(kids.into_iter().rev());
                }
            }
            Ok(m) if m.is_file() => return Some(p),
            _ => {}
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let mode: Mode = args.next().unwrap_or_else(|| "process".into()).parse()?;
    let pool = Pool::new(mode, PoolConfig::new())?;
    let mut failed = 0;
    for (path, r) in files(dir.clone()).zip(pool.map(sha256_file, files(dir))) {
        match r {
            Ok(Ok(digest)) => println!("{digest}  {}", path.display()),
            Ok(Err(e)) | Err(poolrun::TaskError::Codec(e)) => {
                failed += 1;
                eprintln!("hasher: {e}");
            }
            Err(e) => {
                failed += 1;
                eprintln!("hasher: {}: {e}", path.display());
            }
        }
    }
    let s = pool.stats();
    eprintln!(
        "hasher: {} files hashed, {failed} failed, on {} {} workers",
        s.completed,
        s.workers,
        pool.mode()
    );
    Ok(())
}
