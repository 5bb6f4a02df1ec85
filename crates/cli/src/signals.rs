//! SIGINT / SIGTERM while a run is in progress.
//!
//! The first signal is forwarded to the run loop (a channel), which cancels the pending
//! tasks, stops the workers (dropping the daemon pool kills and reaps process workers), prints
//! a summary on stderr and exits with 128 + the signal (130 / 143). A second signal exits at
//! once with the same status: process workers then die through their own parent-death
//! lifelines, and commands started by `exec` through their guard process.
//!
//! The handlers are installed (with `signal-hook`: a self-pipe read by one thread) when the
//! first run starts, after its pool exists, and stay for the life of the process, because
//! signal-hook cannot restore a default disposition once it has replaced it. Between runs —
//! for a program that embeds the CLI and carries on after `main_with` returns — the watcher
//! emulates the default action (the process terminates by that signal), so Ctrl-C works as it
//! would without poolrun.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use crossbeam_channel::{unbounded, Receiver, Sender};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// True while a run loop listens.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Signals received during the current run.
static SEEN: AtomicU32 = AtomicU32::new(0);
/// Called before the immediate exit on a second signal.
static ON_SECOND: Mutex<Option<fn()>> = Mutex::new(None);

struct SignalWatcher {
    rx: Receiver<i32>,
}

static WATCHER: OnceLock<Result<SignalWatcher, String>> = OnceLock::new();

fn watcher() -> &'static Result<SignalWatcher, String> {
    WATCHER.get_or_init(|| {
        let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(|e| e.to_string())?;
        let (tx, rx): (Sender<i32>, Receiver<i32>) = unbounded();
        std::thread::Builder::new()
            .name("poolrun-signals".into())
            .spawn(move || {
                for sig in signals.forever() {
                    if !ACTIVE.load(Ordering::SeqCst) {
                        // No run in progress: behave as if we had never installed a handler.
                        let _ = signal_hook::low_level::emulate_default_handler(sig);
                        continue;
                    }
                    let n = SEEN.fetch_add(1, Ordering::SeqCst) + 1;
                    if n >= 2 {
                        eprintln!("poolrun: second signal: exiting now");
                        let f = *ON_SECOND.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(f) = f {
                            f();
                        }
                        std::process::exit(128 + sig);
                    }
                    let _ = tx.send(sig);
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(SignalWatcher { rx })
    })
}

/// Forwards SIGINT and SIGTERM to the run loop until dropped.
#[derive(Debug)]
pub(crate) struct SignalWatch {
    rx: Receiver<i32>,
}

impl SignalWatch {
    /// Start listening. `on_second` runs (in the watcher thread) before an immediate exit on
    /// a second signal.
    pub(crate) fn start(on_second: fn()) -> Result<SignalWatch, String> {
        let w = watcher().as_ref().map_err(Clone::clone)?;
        *ON_SECOND.lock().unwrap_or_else(|p| p.into_inner()) = Some(on_second);
        while w.rx.try_recv().is_ok() {} // nothing stale from an earlier run
        SEEN.store(0, Ordering::SeqCst);
        ACTIVE.store(true, Ordering::SeqCst);
        Ok(SignalWatch { rx: w.rx.clone() })
    }

    /// The first signal arrives here.
    pub(crate) fn receiver(&self) -> &Receiver<i32> {
        &self.rx
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        ACTIVE.store(false, Ordering::SeqCst);
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
