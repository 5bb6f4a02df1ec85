//! [`WorkerRuntime`]: what one worker (a thread of a thread pool, or a forked process) does
//! around every task, identically in every backend.
//!
//! 1. Bind the worker's thread to its GIL (if any) and stop flag ([`WorkerBinding`]), so
//!    `gil::checkpoint()` sees them.
//! 2. Run the pool's initializer once, under the GIL; a failure (panic, undecodable
//!    argument) is kept: every task given to this worker then fails with
//!    [`TaskError::Initializer`], and the pool reports it once ([`InitReport`]) instead of
//!    spinning on respawns.
//! 3. Run each task under the GIL, caught: a panic becomes [`Caught::Panicked`], the
//!    unwind a checkpoint raises for a stopped task becomes [`Caught::Stopped`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::panic_message;
use crate::gil::{Gil, TaskStopped, WorkerBinding};
use crate::{Initializer, TaskError};

/// Why a task produced no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caught {
    /// The task panicked, with this message.
    Panicked(String),
    /// The pool stopped it at a checkpoint (a timeout, a kill or a daemon drop: the pool
    /// has already completed its future).
    Stopped,
}

impl Caught {
    /// The task error this becomes; `stopped` is what a stopped task reports (it is only
    /// seen when no one else completed the future first).
    pub fn into_task_error(self, stopped: TaskError) -> TaskError {
        match self {
            Caught::Panicked(message) => TaskError::Panicked { message },
            Caught::Stopped => stopped,
        }
    }
}

/// Run `f`, catching a panic (and a checkpoint stop) instead of unwinding further.
pub fn run_caught<R>(f: impl FnOnce() -> R) -> Result<R, Caught> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        if payload.is::<TaskStopped>() {
            Caught::Stopped
        } else {
            Caught::Panicked(panic_message(&*payload))
        }
    })
}

/// A worker's runtime: its GIL binding and the outcome of its initializer. Lives on the
/// worker's own thread (it is not `Send`).
#[derive(Debug)]
pub struct WorkerRuntime {
    binding: WorkerBinding,
    init_error: Option<String>,
}

impl WorkerRuntime {
    /// Bind the calling thread as a worker of `gil` (None: free-threaded) watching `stop`,
    /// and run `init` once under the GIL. Its failure is returned by
    /// [`init_error`](Self::init_error) and fails every task [`run`](Self::run) is given.
    pub fn start(gil: Option<Gil>, stop: Arc<AtomicBool>, init: Option<&Initializer>) -> Self {
        let binding = WorkerBinding::new(gil, stop);
        let init_error = init.and_then(|i| binding.run_task(|| i.run()).err());
        WorkerRuntime {
            binding,
            init_error,
        }
    }

    /// Lend `ctx` to this worker's `submit_ctx` tasks (`PoolConfig::context`): installed in
    /// the calling (worker) thread. An `Err` (the context did not decode in this worker)
    /// fails every task like a failed initializer.
    pub fn with_context(
        mut self,
        ctx: Option<Result<crate::context::SharedContext, String>>,
    ) -> Self {
        match ctx {
            Some(Ok(c)) => crate::context::install(Some(c)),
            Some(Err(msg)) => {
                crate::context::install(None);
                if self.init_error.is_none() {
                    self.init_error = Some(msg);
                }
            }
            None => crate::context::install(None),
        }
        self
    }

    /// The initializer's failure, if it failed in this worker.
    pub fn init_error(&self) -> Option<&str> {
        self.init_error.as_deref()
    }

    /// Run one task: under the GIL, caught. Fails with [`TaskError::Initializer`] without
    /// running `f` if this worker's initializer failed.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> Result<R, TaskError> {
        self.run_caught(f).map_err(|c| match c {
            Err(msg) => TaskError::Initializer(msg),
            Ok(c) => c.into_task_error(TaskError::Shutdown),
        })
    }

    /// Like [`run`](Self::run), keeping [`Caught`] apart: `Err(Err(init message))` if the
    /// initializer failed, `Err(Ok(caught))` if the task panicked or was stopped.
    pub fn run_caught<R>(&self, f: impl FnOnce() -> R) -> Result<R, Result<Caught, String>> {
        if let Some(msg) = &self.init_error {
            return Err(Err(msg.clone()));
        }
        let _span = crate::trace::task_span();
        self.binding.run_task(|| run_caught(f)).map_err(Ok)
    }

    /// Run `f` under the GIL, not caught (for a backend's own framing around a task).
    pub fn with_gil<T>(&self, f: impl FnOnce() -> T) -> T {
        self.binding.run_task(f)
    }

    /// The stop flag `gil::checkpoint()` watches on this worker.
    pub fn stop_flag(&self) -> &Arc<AtomicBool> {
        self.binding.stop_flag()
    }

    /// Lower the stop flag (after a stopped task, before the next one).
    pub fn clear_stop(&self) {
        self.binding.stop_flag().store(false, Ordering::SeqCst);
    }
}

/// Reports a pool's initializer failure once (one stderr line per pool, not one per
/// worker or respawn).
#[derive(Debug, Default)]
pub struct InitReport {
    reported: AtomicBool,
}

impl InitReport {
    /// Print `line()` on stderr the first time this is called; later calls do nothing.
    /// Returns true the first time.
    pub fn once(&self, line: impl FnOnce() -> String) -> bool {
        if self.reported.swap(true, Ordering::SeqCst) {
            return false;
        }
        eprintln!("{}", line());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PoolConfig;

    fn init_panics(_: u32) {
        panic!("init boom")
    }

    fn flag() -> Arc<AtomicBool> {
        Arc::new(AtomicBool::new(false))
    }

    #[test]
    fn failed_initializer_fails_every_task() {
        let cfg = PoolConfig::new().initializer(init_panics, 1u32);
        let rt = WorkerRuntime::start(None, flag(), cfg.get_initializer());
        assert_eq!(rt.init_error(), Some("init boom"));
        assert_eq!(
            rt.run(|| 1),
            Err(TaskError::Initializer("init boom".into()))
        );
    }

    #[test]
    fn panics_and_stops_are_caught() {
        let stop = flag();
        let rt = WorkerRuntime::start(
            Some(Gil::new(std::time::Duration::from_millis(5))),
            stop.clone(),
            None,
        );
        assert_eq!(rt.run(|| 2), Ok(2));
        assert_eq!(
            rt.run(|| -> u32 { panic!("task boom") }),
            Err(TaskError::Panicked {
                message: "task boom".into()
            })
        );
        stop.store(true, Ordering::SeqCst);
        assert_eq!(
            rt.run_caught(crate::gil::checkpoint),
            Err(Ok(Caught::Stopped))
        );
        rt.clear_stop();
        assert_eq!(rt.run(|| 3), Ok(3));
    }

    #[test]
    fn report_once() {
        let r = InitReport::default();
        assert!(r.once(|| "poolrun: test report (ignore)".into()));
        assert!(!r.once(|| unreachable!()));
    }
}
