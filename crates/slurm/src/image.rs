//! The executable image: array tasks run a copy of the submitter's own executable, and
//! function addresses travel between the two as offsets from a known symbol.
//!
//! ## Invariant S1 (same image)
//! An address (a task's `fn`, its trampoline, an initializer) is sent as its offset from
//! [`anchor`], a function of this crate. Code of one executable image moves as a whole
//! under ASLR, so the offset names the same function in every process running that image.
//! An array task honours offsets only after it proved that it runs the identical image:
//! the pool copies its executable into the work directory and records the copy's SHA-256;
//! the array task (which runs that copy) hashes its own executable and refuses to run
//! anything on a mismatch — every task then fails with a clear error, never a jump into the
//! wrong code.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The symbol offsets are measured from (never inlined, so it has an address).
#[inline(never)]
pub(crate) fn anchor() {
    std::hint::black_box(());
}

/// `addr` as an offset from [`anchor`] (invariant S1).
pub(crate) fn to_offset(addr: usize) -> i64 {
    (addr as i64).wrapping_sub(anchor as fn() as usize as i64)
}

/// The address an offset names in this process (invariant S1: only meaningful once the
/// image is proven identical).
pub(crate) fn from_offset(offset: i64) -> usize {
    (anchor as fn() as usize as i64).wrapping_add(offset) as usize
}

/// Copy this process's executable to `dst` (mode 0700) and return the copy's SHA-256.
pub(crate) fn copy_self(dst: &Path) -> io::Result<[u8; 32]> {
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(dst)?;
    let hash = read_self(|chunk| out.write_all(chunk))?;
    out.sync_all()?;
    Ok(hash)
}

/// SHA-256 of this process's executable.
pub(crate) fn hash_self() -> io::Result<[u8; 32]> {
    read_self(|_| Ok(()))
}

/// Read this process's executable in 1 MiB chunks, handing each to `each`; its SHA-256.
fn read_self(mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<[u8; 32]> {
    let mut src = File::open("/proc/self/exe")?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        each(&buf[..n])?;
    }
    Ok(hasher.finalize().into())
}

/// A hash as hex (for messages).
pub(crate) fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(x: u32) -> u32 {
        x + 1
    }

    #[test]
    fn offsets_round_trip_and_the_copy_hashes_like_the_original() {
        let f = probe as fn(u32) -> u32 as usize;
        assert_eq!(from_offset(to_offset(f)), f);
        let dir = std::env::temp_dir().join(format!("poolrun-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("exe");
        let h = copy_self(&copy).unwrap();
        assert_eq!(h, hash_self().unwrap());
        assert_eq!(hex(&h).len(), 64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
