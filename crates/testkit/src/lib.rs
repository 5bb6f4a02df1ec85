//! poolrun's shared test support (a dev-dependency of every crate's tests; never published).
//!
//! - [`procfs`]: what `/proc` says about this process and others — children, zombies,
//!   descendants, open fds, resident memory. A probe that cannot read `/proc` panics: a
//!   leak check must never pass because it could not look.
//! - [`wait`]: bounded polling ([`eventually`]) and [`assert_reaped`].
//! - [`tasks`]: the plain `fn` tasks the conformance and fault suites run in every mode.
//! - [`cli`]: run a `poolrun` binary with a deadline and capture its output.
//! - [`model`]: an exhaustive-interleaving checker for the lock-free handshakes.
//! - [`slurm`]: the Slurm test cluster: whether one answers, what is left in its queue.
//! - [`rng`]: a seedable generator and env knobs for the randomized suites.

#![warn(missing_docs)]

pub mod cli;
pub mod model;
pub mod procfs;
pub mod rng;
pub mod slurm;
pub mod tasks;
pub mod wait;

pub use procfs::*;
pub use rng::{env_flag, env_num, Rng};
pub use wait::{assert_reaped, eventually, LIMIT, T};

use std::sync::{Mutex, MutexGuard};

/// Serialises the resource-counting tests of one binary (`cargo test` runs tests in
/// parallel threads; nextest gives each its own process, where this is free).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Send `sig` to `pid` (a process the test was just told about).
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
    nix::sys::signal::kill(pid, sig).expect("kill");
}

/// SIGKILL `pid`, ignoring a process that is already gone.
pub fn sigkill(pid: u32) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// No core files from the crashes tests provoke (workers inherit the limit through fork).
pub fn no_core_dumps() {
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
}

/// Start `cmd` with its stdout piped and wait up to [`LIMIT`] for its first line (a helper
/// process reporting what the test should look at). If no line comes, the process is
/// killed and reaped, and the test fails with `what`.
pub fn start_and_read_line(
    mut cmd: std::process::Command,
    what: &str,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start helper");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(LIMIT) {
        Ok(l) => (child, l),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}");
        }
    }
}
