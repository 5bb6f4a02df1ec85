//! The task [`Registry`]: the named tasks a `poolrun` command line can run, and the one
//! trampoline every pool runs ([`run_one`]).
//!
//! Tasks are plain `fn` pointers, never closures: in process mode they run in forked workers,
//! which inherit this process's memory image, so the registry (kept in a process-global set by
//! [`crate::main_with`] *before* any pool is created) and every function pointer in it are
//! valid there too. Pools are handed one fixed, monomorphic function, [`run_one`], plus a
//! small request naming the task by its index; no function pointer ever crosses a process
//! boundary in this crate.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A task that takes one argument: `f(arg)`; `Ok(output)` or `Err(message)`.
pub type TaskFn = fn(&str) -> Result<String, String>;

/// A task that takes a parameter given once on the command line (the first positional after
/// the task name, e.g. `exec`'s shell command) and one argument per task: `f(param, arg)`.
pub type ParamTaskFn = fn(&str, &str) -> Result<String, String>;

/// Names that are subcommands of `poolrun` and so cannot name a task.
pub const RESERVED_NAMES: &[&str] = &["tasks", "compare", "demo", "help"];

#[derive(Clone, Copy, Debug)]
pub(crate) enum TaskKind {
    Simple(TaskFn),
    WithParam(ParamTaskFn),
}

/// One registered task: its name, how its argument is shown, a one-line description and
/// its function. Build one with [`TaskDef::new`] or [`TaskDef::with_param`].
#[derive(Clone, Debug)]
pub struct TaskDef {
    name: String,
    arg_name: String,
    param_name: Option<String>,
    description: String,
    kind: TaskKind,
}

impl TaskDef {
    /// A task run as `poolrun NAME ARG...`: one call `f(arg)` per argument.
    pub fn new(name: impl Into<String>, description: impl Into<String>, f: TaskFn) -> Self {
        TaskDef {
            name: name.into(),
            arg_name: "ARG".into(),
            param_name: None,
            description: description.into(),
            kind: TaskKind::Simple(f),
        }
    }

    /// A task run as `poolrun NAME PARAM ARG...`: PARAM is given once, then one call
    /// `f(param, arg)` per argument (this is how `exec CMD ARG...` is built).
    pub fn with_param(
        name: impl Into<String>,
        param_name: impl Into<String>,
        description: impl Into<String>,
        f: ParamTaskFn,
    ) -> Self {
        TaskDef {
            name: name.into(),
            arg_name: "ARG".into(),
            param_name: Some(param_name.into()),
            description: description.into(),
            kind: TaskKind::WithParam(f),
        }
    }

    /// How the per-task argument is shown in `poolrun tasks` (default `ARG`).
    pub fn arg_name(mut self, name: impl Into<String>) -> Self {
        self.arg_name = name.into();
        self
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The one-line description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The parameter's name, for tasks built with [`TaskDef::with_param`].
    pub fn param_name(&self) -> Option<&str> {
        self.param_name.as_deref()
    }

    /// How the task is invoked, e.g. `primes N` or `exec CMD ARG`.
    pub fn usage(&self) -> String {
        match &self.param_name {
            Some(p) => format!("{} {} {}", self.name, p, self.arg_name),
            None => format!("{} {}", self.name, self.arg_name),
        }
    }

    pub(crate) fn kind(&self) -> TaskKind {
        self.kind
    }
}

/// Why [`Registry::register`] refused a task.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryError {
    /// The name is empty, too long (over 32 bytes), or has characters other than ASCII
    /// letters, digits, `-` and `_` (or starts with `-`).
    InvalidName(String),
    /// The name is one of `poolrun`'s subcommands ([`RESERVED_NAMES`]).
    Reserved(String),
    /// A task of that name is already registered.
    Duplicate(String),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::InvalidName(n) => write!(
                f,
                "invalid task name {n:?}: use 1 to 32 ASCII letters, digits, '-' or '_', not starting with '-'"
            ),
            RegistryError::Reserved(n) => {
                write!(f, "task name {n:?} is reserved for a poolrun subcommand")
            }
            RegistryError::Duplicate(n) => write!(f, "a task named {n:?} is already registered"),
        }
    }
}

impl std::error::Error for RegistryError {}

/// The set of tasks a `poolrun` command line offers.
///
/// [`Registry::builtin`] has `primes`, `spin`, `sleep`, `sha256`, `exec` and `echo`; a program
/// embedding the CLI adds its own and hands the registry to [`crate::main_with`]:
///
/// ```
/// use poolrun_cli::Registry;
///
/// fn shout(arg: &str) -> Result<String, String> {
///     Ok(arg.to_uppercase())
/// }
///
/// let mut registry = Registry::builtin();
/// registry.register("shout", "upper-case ARG", shout).unwrap();
/// assert!(registry.get("shout").is_some());
/// assert!(registry.register("shout", "again", shout).is_err());
/// // in main(): std::process::exit(poolrun_cli::main_with(registry));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Registry {
    tasks: Vec<TaskDef>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Register a one-argument task: `poolrun NAME ARG...` runs `f(arg)` for every ARG.
    pub fn register(
        &mut self,
        name: &str,
        description: &str,
        f: TaskFn,
    ) -> Result<(), RegistryError> {
        self.add(TaskDef::new(name, description, f))
    }

    /// Register a task with a parameter: `poolrun NAME PARAM ARG...` runs `f(param, arg)`.
    pub fn register_with_param(
        &mut self,
        name: &str,
        param_name: &str,
        description: &str,
        f: ParamTaskFn,
    ) -> Result<(), RegistryError> {
        self.add(TaskDef::with_param(name, param_name, description, f))
    }

    /// Register a fully described task.
    pub fn add(&mut self, def: TaskDef) -> Result<(), RegistryError> {
        let name = def.name.as_str();
        let valid = !name.is_empty()
            && name.len() <= 32
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(RegistryError::InvalidName(name.to_string()));
        }
        if RESERVED_NAMES.contains(&name) {
            return Err(RegistryError::Reserved(name.to_string()));
        }
        if self.get(name).is_some() {
            return Err(RegistryError::Duplicate(name.to_string()));
        }
        self.tasks.push(def);
        Ok(())
    }

    /// The task called `name`.
    pub fn get(&self, name: &str) -> Option<&TaskDef> {
        self.tasks.iter().find(|t| t.name == name)
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }

    pub(crate) fn by_index(&self, i: usize) -> Option<&TaskDef> {
        self.tasks.get(i)
    }

    /// Every task, in registration order.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskDef> {
        self.tasks.iter()
    }

    /// The registered name closest to `name` (for "did you mean" hints).
    pub(crate) fn suggest(&self, name: &str) -> Option<&str> {
        self.tasks
            .iter()
            .map(|t| (edit_distance(&t.name, name), t.name.as_str()))
            .filter(|(d, n)| *d <= 2.max(n.len() / 3))
            .min_by_key(|(d, _)| *d)
            .map(|(_, n)| n)
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().take(64).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().take(64).enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------
// The process-global registry and the trampoline.

/// The registry the running command line uses. Written only by `main_with` before a pool is
/// created (so forked workers inherit it), read by [`run_one`] in the workers.
static CURRENT: RwLock<Option<Arc<Registry>>> = RwLock::new(None);

/// The pid of the process that called `main_with`: a task running in another pid runs in a
/// forked worker.
static MAIN_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub(crate) fn install(registry: Registry) -> Arc<Registry> {
    let reg = Arc::new(registry);
    let mut slot = CURRENT.write().unwrap_or_else(|p| p.into_inner());
    *slot = Some(reg.clone());
    MAIN_PID.store(std::process::id(), std::sync::atomic::Ordering::Relaxed);
    reg
}

fn current() -> Option<Arc<Registry>> {
    CURRENT.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// One task as it travels to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Req {
    /// Index into the registry.
    pub task: usize,
    /// The task's parameter (e.g. `exec`'s command), if it takes one.
    pub param: Option<String>,
    /// The argument.
    pub input: String,
    /// Set when the input could not be read (invalid UTF-8, too long): the task fails with
    /// this message without running.
    pub bad_input: Option<String>,
}

/// Who ran a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Worker {
    /// A worker process (process mode).
    Pid(u32),
    /// A worker thread, by name or id (thread mode).
    Thread(String),
}

/// What a task produced, measured inside the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskOutput {
    pub result: Result<String, String>,
    pub worker: Worker,
    pub ms: f64,
}

fn current_worker() -> Worker {
    let pid = std::process::id();
    if pid != MAIN_PID.load(std::sync::atomic::Ordering::Relaxed) {
        return Worker::Pid(pid);
    }
    let t = std::thread::current();
    match t.name() {
        Some(n) => Worker::Thread(n.to_string()),
        None => Worker::Thread(format!("{:?}", t.id())),
    }
}

thread_local! {
    /// True while this thread runs task code (the panic hook stays quiet then: the pool
    /// reports the panic as the task's error).
    pub(crate) static IN_TASK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

struct InTask;
impl InTask {
    fn enter() -> Self {
        IN_TASK.with(|c| c.set(true));
        InTask
    }
}
impl Drop for InTask {
    fn drop(&mut self) {
        IN_TASK.with(|c| c.set(false));
    }
}

/// The one function every pool runs: look the task up in the process-global registry and
/// call it, timing it and recording who ran it.
pub(crate) fn run_one(req: Req) -> TaskOutput {
    let worker = current_worker();
    let start = Instant::now();
    let result = match req.bad_input {
        Some(msg) => Err(msg),
        None => match current() {
            None => Err("internal error: no task registry in this worker".to_string()),
            Some(reg) => match reg.by_index(req.task) {
                None => Err(format!(
                    "internal error: no task #{} in the registry",
                    req.task
                )),
                Some(def) => {
                    let _in_task = InTask::enter();
                    match (def.kind(), req.param.as_deref()) {
                        (TaskKind::Simple(f), _) => f(&req.input),
                        (TaskKind::WithParam(f), Some(p)) => f(p, &req.input),
                        (TaskKind::WithParam(_), None) => Err(format!(
                            "internal error: task {} needs a parameter",
                            def.name
                        )),
                    }
                }
            },
        },
    };
    TaskOutput {
        result,
        worker,
        ms: start.elapsed().as_secs_f64() * 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(a: &str) -> Result<String, String> {
        Ok(a.to_string())
    }

    #[test]
    fn names_are_checked() {
        let mut r = Registry::new();
        assert!(r.register("ok-task_1", "d", ok).is_ok());
        assert_eq!(
            r.register("ok-task_1", "d", ok),
            Err(RegistryError::Duplicate("ok-task_1".into()))
        );
        assert!(matches!(
            r.register("tasks", "d", ok),
            Err(RegistryError::Reserved(_))
        ));
        for bad in ["", "-x", "a b", "é", &"x".repeat(33)] {
            assert!(
                matches!(r.register(bad, "d", ok), Err(RegistryError::InvalidName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn builtin_has_the_spec_tasks() {
        let r = Registry::builtin();
        for n in ["primes", "spin", "sleep", "sha256", "exec", "echo"] {
            assert!(r.get(n).is_some(), "{n}");
        }
        assert_eq!(r.get("exec").and_then(|d| d.param_name()), Some("CMD"));
        assert_eq!(r.suggest("prime"), Some("primes"));
        assert_eq!(r.suggest("zzzzzzzz"), None);
    }
}
