//! SIGINT / SIGTERM while a run is in progress.
//!
//! The first signal is forwarded to the run loop (a channel), which cancels the pending
//! tasks, stops the workers (dropping the daemon pool kills and reaps process workers), prints
//! a summary on stderr and exits with 128 + the signal (130 / 143). A second signal exits at
//! once with the same status: process workers then die through their own parent-death
//! lifelines, and commands started by `exec` through `PR_SET_PDEATHSIG`.
//!
//! Handlers are registered with `signal-hook` (a self-pipe read by one thread) after the pool
//! is created, and removed again when the run ends, so a program that embeds the CLI gets its
//! default dispositions back.

use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Receiver};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

/// Watches SIGINT and SIGTERM until dropped.
#[derive(Debug)]
pub(crate) struct SignalWatch {
    rx: Receiver<i32>,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl SignalWatch {
    /// Register the handlers. `on_second` runs (in the watcher thread) before an immediate
    /// exit on a second signal.
    pub(crate) fn start(on_second: fn()) -> std::io::Result<SignalWatch> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let handle = signals.handle();
        let (tx, rx) = unbounded();
        let thread = std::thread::Builder::new()
            .name("poolrun-signals".into())
            .spawn(move || {
                let mut seen = 0;
                for sig in signals.forever() {
                    seen += 1;
                    if seen >= 2 {
                        eprintln!("poolrun: second signal: exiting now");
                        on_second();
                        std::process::exit(128 + sig);
                    }
                    let _ = tx.send(sig);
                }
            })?;
        Ok(SignalWatch {
            rx,
            handle,
            thread: Some(thread),
        })
    }

    /// The first signal arrives here.
    pub(crate) fn receiver(&self) -> &Receiver<i32> {
        &self.rx
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The conventional name of a signal the run handles.
pub(crate) fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}
