//! [`PoolConfig`]: the builder shared by both pools, and [`Mode`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::gil::GilMode;
use crate::runtime::panic_message;
use crate::{codec, Payload, PoolError};

/// Which kind of pool runs the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Worker threads in this process (optionally under an emulated GIL).
    Thread,
    /// Forked worker processes.
    Process,
    /// Job arrays on a Slurm cluster (`sbatch`), each array task a local process pool.
    Slurm,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Thread => "thread",
            Mode::Process => "process",
            Mode::Slurm => "slurm",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "thread" | "threads" => Ok(Mode::Thread),
            "process" | "processes" => Ok(Mode::Process),
            "slurm" => Ok(Mode::Slurm),
            other => Err(format!(
                "unknown mode {other:?}: expected \"thread\", \"process\" or \"slurm\""
            )),
        }
    }
}

/// A worker initializer with its argument, type-erased so every backend can run it.
///
/// The argument is kept encoded and decoded afresh in every worker, so `A` need not be
/// `Clone` and a process worker gets exactly what a thread worker gets. It is kept as two
/// addresses — the initializer `fn(A)` and the monomorphized runner that decodes `A` and
/// calls it — plus the encoded argument, so a backend that runs workers in another process
/// of the same executable (the cluster backend) can carry it across `exec`
/// ([`portable`](Self::portable), [`from_portable`](Self::from_portable)).
#[derive(Clone)]
pub struct Initializer {
    runner: InitRunner,
    func: usize,
    arg: Arc<Result<Vec<u8>, String>>,
    name: &'static str,
}

/// The signature of every initializer runner: decode the argument, run the `fn` at the
/// address, catch a panic.
pub type InitRunner = fn(usize, &[u8]) -> Result<(), String>;

/// Decode `A` from `arg` and run the `fn(A)` at `func`, catching a panic.
fn run_init<A: Payload>(func: usize, arg: &[u8]) -> Result<(), String> {
    let a: A = codec::decode(arg).map_err(|e| e.to_string())?;
    // SAFETY: `func` is the address of an `fn(A)` of this executable image: made by
    // `PoolConfig::initializer::<A>` from a real `fn(A)` (in this process, or in the process
    // this one was forked from), or translated by a backend from such an address after it
    // proved the worker runs the identical image (`Initializer::from_portable`'s contract).
    // This is the matching monomorphization of `run_init`, so the types agree.
    let f = unsafe { std::mem::transmute::<usize, fn(A)>(func) };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(a)))
        .map_err(|p| panic_message(&*p))
}

impl Initializer {
    /// Run the initializer in the calling worker. A panic or an undecodable argument is
    /// returned as `Err(message)`.
    pub fn run(&self) -> Result<(), String> {
        match &*self.arg {
            Ok(bytes) => (self.runner)(self.func, bytes),
            Err(e) => Err(e.clone()),
        }
    }

    /// `(runner, func, encoded argument)`: what a backend carries to a worker in another
    /// process of the same executable.
    pub fn portable(&self) -> (usize, usize, Result<&[u8], &str>) {
        let arg = match &*self.arg {
            Ok(b) => Ok(&b[..]),
            Err(e) => Err(e.as_str()),
        };
        (self.runner as usize, self.func, arg)
    }

    /// Rebuild an initializer from [`portable`](Self::portable)'s parts.
    ///
    /// # Safety
    /// `runner` and `func` must be the addresses `portable` gave in a process running the
    /// identical executable image, translated to this process's addresses (the same offset
    /// from a known symbol): `runner` an `InitRunner` monomorphized for the `A` of the
    /// `fn(A)` at `func`.
    pub unsafe fn from_portable(runner: usize, func: usize, arg: Vec<u8>) -> Initializer {
        // SAFETY: the caller guarantees `runner` is the address of an `InitRunner` in this
        // image (see above).
        let runner = unsafe { std::mem::transmute::<usize, InitRunner>(runner) };
        Initializer {
            runner,
            func,
            arg: Arc::new(Ok(arg)),
            name: "(carried across exec)",
        }
    }
}

impl fmt::Debug for Initializer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initializer")
            .field("arg_type", &self.name)
            .finish()
    }
}

/// How a pool is built. A by-value builder: it never fails; the pool constructors validate
/// it and return [`PoolError::InvalidConfig`] naming the offending value.
///
/// ```
/// use std::time::Duration;
/// use poolrun_core::PoolConfig;
/// let cfg = PoolConfig::new()
///     .workers(4)
///     .task_timeout(Some(Duration::from_secs(10)))
///     .max_tasks_per_child(Some(100));
/// assert_eq!(cfg.get_workers(), 4);
/// ```
#[derive(Clone, Debug)]
pub struct PoolConfig {
    workers: usize,
    daemon: bool,
    gil: GilMode,
    task_timeout: Option<Duration>,
    max_tasks_per_child: Option<usize>,
    initializer: Option<Initializer>,
    max_queued: Option<usize>,
    context: Option<crate::context::ContextSpec>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The most workers a pool accepts; more is almost certainly a typo.
pub const MAX_WORKERS: usize = 4096;

impl PoolConfig {
    /// Defaults: `workers` = available parallelism, `daemon = true`, `gil = GilMode::Off`,
    /// no task timeout, no recycling, no initializer.
    pub fn new() -> Self {
        PoolConfig {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            daemon: true,
            gil: GilMode::Off,
            task_timeout: None,
            max_tasks_per_child: None,
            initializer: None,
            max_queued: None,
            context: None,
        }
    }

    /// Number of workers (threads or processes). Must be 1..=4096.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Daemon pools cancel queued work and stop workers when dropped; non-daemon pools wait
    /// for every submitted task first (like Python at exit with non-daemon threads).
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Run thread-mode tasks under an emulated CPython GIL.
    pub fn gil(mut self, gil: GilMode) -> Self {
        self.gil = gil;
        self
    }

    /// Stop a task that runs longer than this (process mode: kill its worker; thread mode:
    /// fail the future at the deadline and stop the task at its next `gil::checkpoint()`).
    pub fn task_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.task_timeout = timeout;
        self
    }

    /// Backpressure: at most `n` tasks wait while every worker is busy. `submit` then
    /// blocks until a task ends, `try_submit` hands the argument back, `submit_timeout`
    /// waits a bounded time (`Executor`). Precisely: at most `workers + n` tasks submitted
    /// that way are unfinished at once. `map` is not affected (its window is its bound).
    /// Default `None`: unbounded.
    ///
    /// A task that submits to its own pool while the pool is full waits for a task to end,
    /// which may be itself: give such pools room, or use `try_submit` there.
    pub fn max_queued(mut self, n: Option<usize>) -> Self {
        self.max_queued = n;
        self
    }

    /// A context every `submit_ctx` task gets by reference, built once per worker: thread
    /// mode shares this very value, process mode gives each worker (and each replacement)
    /// its own copy, decoded once at its start. For configuration, lookup tables, clients —
    /// what a CPython program keeps in a module global set by its initializer.
    ///
    /// ```
    /// use poolrun_core::PoolConfig;
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Settings { scale: u64 }
    /// let cfg = PoolConfig::new().context(Settings { scale: 10 });
    /// // tasks: fn(&Settings, A) -> R, submitted with `pool.submit_ctx(f, arg)`
    /// ```
    pub fn context<C: Payload + Sync>(mut self, value: C) -> Self {
        self.context = Some(crate::context::ContextSpec::new(value));
        self
    }

    /// Replace a worker after it has run this many tasks.
    pub fn max_tasks_per_child(mut self, n: Option<usize>) -> Self {
        self.max_tasks_per_child = n;
        self
    }

    /// Run `f(arg)` once in every worker before its first task. A panic fails that worker's
    /// tasks with [`TaskError::Initializer`](crate::TaskError::Initializer).
    pub fn initializer<A: Payload>(mut self, f: fn(A), arg: A) -> Self {
        self.initializer = Some(Initializer {
            runner: run_init::<A>,
            func: f as usize,
            arg: Arc::new(codec::encode(&arg).map_err(|e| e.to_string())),
            name: std::any::type_name::<A>(),
        });
        self
    }

    /// Set a prebuilt initializer (a backend rebuilding a pool's configuration in another
    /// process: see [`Initializer::from_portable`]).
    #[doc(hidden)]
    pub fn initializer_from(mut self, init: Initializer) -> Self {
        self.initializer = Some(init);
        self
    }

    /// The configured worker count.
    pub fn get_workers(&self) -> usize {
        self.workers
    }
    /// The configured daemon flag.
    pub fn get_daemon(&self) -> bool {
        self.daemon
    }
    /// The configured GIL mode.
    pub fn get_gil(&self) -> GilMode {
        self.gil
    }
    /// The configured task timeout.
    pub fn get_task_timeout(&self) -> Option<Duration> {
        self.task_timeout
    }
    /// The configured recycling limit.
    pub fn get_max_tasks_per_child(&self) -> Option<usize> {
        self.max_tasks_per_child
    }
    /// The configured context.
    pub fn get_context(&self) -> Option<&crate::context::ContextSpec> {
        self.context.as_ref()
    }
    /// The configured bound on waiting tasks.
    pub fn get_max_queued(&self) -> Option<usize> {
        self.max_queued
    }
    /// The configured initializer.
    pub fn get_initializer(&self) -> Option<&Initializer> {
        self.initializer.as_ref()
    }

    /// Check every value; the pool constructors call this.
    pub fn validate(&self) -> Result<(), PoolError> {
        if self.workers == 0 {
            return Err(PoolError::InvalidConfig(
                "workers(0): a pool needs at least 1 worker".into(),
            ));
        }
        if self.workers > MAX_WORKERS {
            return Err(PoolError::InvalidConfig(format!(
                "workers({}): at most {MAX_WORKERS} workers are supported",
                self.workers
            )));
        }
        if let Some(t) = self.task_timeout {
            if t.is_zero() {
                return Err(PoolError::InvalidConfig(
                    "task_timeout(Some(0s)): a timeout must be positive".into(),
                ));
            }
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(PoolError::InvalidConfig(
                "max_tasks_per_child(Some(0)): must be at least 1".into(),
            ));
        }
        if let GilMode::On { switch_interval } = self.gil {
            if switch_interval.is_zero() {
                return Err(PoolError::InvalidConfig(
                    "gil(On { switch_interval: 0 }): the switch interval must be at least 1µs"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_parse_display() {
        assert_eq!("thread".parse::<Mode>().unwrap(), Mode::Thread);
        assert_eq!("Process".parse::<Mode>().unwrap(), Mode::Process);
        assert!("fiber".parse::<Mode>().unwrap_err().contains("fiber"));
        assert_eq!(Mode::Process.to_string(), "process");
    }

    #[test]
    fn validate_names_value() {
        let e = PoolConfig::new().workers(0).validate().unwrap_err();
        assert!(e.to_string().contains("workers(0)"));
        let e = PoolConfig::new()
            .max_tasks_per_child(Some(0))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("max_tasks_per_child"));
        assert!(PoolConfig::new().workers(3).validate().is_ok());
    }

    fn init_panics(_: u32) {
        panic!("init boom")
    }

    #[test]
    fn initializer_catches_panic() {
        let cfg = PoolConfig::new().initializer(init_panics, 1u32);
        let e = cfg.get_initializer().unwrap().run().unwrap_err();
        assert!(e.contains("init boom"));
    }
}
