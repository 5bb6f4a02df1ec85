//! [`SlurmConfig`]: how array tasks are requested from Slurm. A by-value builder like
//! `PoolConfig`; [`SlurmConfig::from_env`] reads the `POOLRUN_SLURM_*` variables;
//! `SlurmPool::new` validates it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use poolrun_core::PoolError;

/// The largest `--array` index a default Slurm accepts is 1000 (`MaxArraySize=1001`).
pub const DEFAULT_MAX_ARRAY_SIZE: usize = 1000;

/// How a `SlurmPool` asks Slurm for resources.
///
/// `PoolConfig::workers` is how many array tasks may run at once (`--array=…%N`); each array
/// task runs its share of the tasks on a local process pool of
/// [`cpus_per_task`](Self::cpus_per_task) workers.
///
/// ```
/// use std::time::Duration;
/// use poolrun_slurm::SlurmConfig;
/// let s = SlurmConfig::new()
///     .partition("debug")
///     .time_limit(Duration::from_secs(600))
///     .cpus_per_task(4)
///     .sbatch_arg("--qos=short");
/// assert_eq!(s.get_cpus_per_task(), 4);
/// ```
#[derive(Debug, Clone)]
pub struct SlurmConfig {
    partition: Option<String>,
    time_limit: Option<Duration>,
    cpus_per_task: usize,
    mem_per_task_mb: Option<u64>,
    sbatch_args: Vec<String>,
    work_dir: Option<PathBuf>,
    poll_interval: Duration,
    max_array_size: usize,
    heartbeat_timeout: Duration,
    chunk_size: Option<usize>,
    batch_window: Duration,
    requeue: bool,
    keep_work_dir: bool,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SlurmConfig {
    /// Defaults: the cluster's default partition and time limit, 1 CPU and the default
    /// memory per array task, the work directory under `$HOME/.cache/poolrun/slurm`, a
    /// 1 s `squeue` interval, arrays of at most 1000 tasks, a 30 s heartbeat timeout,
    /// automatic chunking, a 50 ms batching window, no requeue.
    pub fn new() -> Self {
        SlurmConfig {
            partition: None,
            time_limit: None,
            cpus_per_task: 1,
            mem_per_task_mb: None,
            sbatch_args: Vec::new(),
            work_dir: None,
            poll_interval: Duration::from_secs(1),
            max_array_size: DEFAULT_MAX_ARRAY_SIZE,
            heartbeat_timeout: Duration::from_secs(30),
            chunk_size: None,
            batch_window: Duration::from_millis(50),
            requeue: false,
            keep_work_dir: false,
        }
    }

    /// The defaults, overridden by the environment: `POOLRUN_SLURM_PARTITION`,
    /// `POOLRUN_SLURM_TIME` (seconds), `POOLRUN_SLURM_CPUS_PER_TASK`, `POOLRUN_SLURM_MEM_MB`,
    /// `POOLRUN_SLURM_SBATCH_ARGS` (space-separated), `POOLRUN_SLURM_WORK_DIR`,
    /// `POOLRUN_SLURM_POLL_MS`, `POOLRUN_SLURM_MAX_ARRAY`, `POOLRUN_SLURM_HEARTBEAT_SECS`,
    /// `POOLRUN_SLURM_CHUNK`, `POOLRUN_SLURM_KEEP` (`1`: keep the work directory). A value that does not parse is an error naming the variable.
    pub fn from_env() -> Result<Self, PoolError> {
        let mut c = SlurmConfig::new();
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, PoolError> {
            v.trim()
                .parse()
                .map_err(|_| PoolError::InvalidConfig(format!("{k}={v:?}: not a valid number")))
        }
        if let Some(v) = var("POOLRUN_SLURM_PARTITION") {
            c = c.partition(&v);
        }
        if let Some(v) = var("POOLRUN_SLURM_TIME") {
            let secs: f64 = num("POOLRUN_SLURM_TIME", &v)?;
            let d = Duration::try_from_secs_f64(secs).map_err(|_| {
                PoolError::InvalidConfig(format!("POOLRUN_SLURM_TIME={v:?}: not a duration"))
            })?;
            c = c.time_limit(d);
        }
        if let Some(v) = var("POOLRUN_SLURM_CPUS_PER_TASK") {
            c = c.cpus_per_task(num("POOLRUN_SLURM_CPUS_PER_TASK", &v)?);
        }
        if let Some(v) = var("POOLRUN_SLURM_MEM_MB") {
            c = c.mem_per_task_mb(num("POOLRUN_SLURM_MEM_MB", &v)?);
        }
        if let Some(v) = var("POOLRUN_SLURM_SBATCH_ARGS") {
            for a in v.split_whitespace() {
                c = c.sbatch_arg(a);
            }
        }
        if let Some(v) = var("POOLRUN_SLURM_WORK_DIR") {
            c = c.work_dir(v);
        }
        if let Some(v) = var("POOLRUN_SLURM_POLL_MS") {
            c = c.poll_interval(Duration::from_millis(num("POOLRUN_SLURM_POLL_MS", &v)?));
        }
        if let Some(v) = var("POOLRUN_SLURM_MAX_ARRAY") {
            c = c.max_array_size(num("POOLRUN_SLURM_MAX_ARRAY", &v)?);
        }
        if let Some(v) = var("POOLRUN_SLURM_HEARTBEAT_SECS") {
            c = c.heartbeat_timeout(Duration::from_secs(num(
                "POOLRUN_SLURM_HEARTBEAT_SECS",
                &v,
            )?));
        }
        if let Some(v) = var("POOLRUN_SLURM_CHUNK") {
            c = c.chunk_size(Some(num("POOLRUN_SLURM_CHUNK", &v)?));
        }
        if let Some(v) = var("POOLRUN_SLURM_KEEP") {
            c = c.keep_work_dir(match v.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => {
                    return Err(PoolError::InvalidConfig(format!(
                        "POOLRUN_SLURM_KEEP={v:?}: expected 1 or 0"
                    )))
                }
            });
        }
        Ok(c)
    }

    /// The partition (`--partition`).
    pub fn partition(mut self, p: &str) -> Self {
        self.partition = Some(p.to_string());
        self
    }

    /// The time limit of each array task (`--time`; Slurm counts whole minutes, so this is
    /// rounded up to one).
    pub fn time_limit(mut self, d: Duration) -> Self {
        self.time_limit = Some(d);
        self
    }

    /// CPUs per array task (`--cpus-per-task`): also the number of local worker processes
    /// each array task runs its tasks on.
    pub fn cpus_per_task(mut self, n: usize) -> Self {
        self.cpus_per_task = n;
        self
    }

    /// Memory per array task in MiB (`--mem`).
    pub fn mem_per_task_mb(mut self, mb: u64) -> Self {
        self.mem_per_task_mb = Some(mb);
        self
    }

    /// One more `sbatch` argument, passed as is, an option with its value in one word
    /// (`--qos=short`, `--account=x`). poolrun's own (`--array`, `--output`, `--error`,
    /// `--parsable`, `--wrap`, `--export`) are refused by `validate`.
    pub fn sbatch_arg(mut self, arg: &str) -> Self {
        self.sbatch_args.push(arg.to_string());
        self
    }

    /// Where job files, results and logs go: a directory on a file system every node
    /// shares (a pool makes its own subdirectory in it, mode 0700).
    pub fn work_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.work_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// How often the pool asks Slurm (`squeue`, one call for all its arrays) how its array
    /// tasks are doing — what detects a failed, cancelled or timed-out array task. Results
    /// do not wait for it: the work directory is read every 50 ms (or this, if shorter).
    pub fn poll_interval(mut self, d: Duration) -> Self {
        self.poll_interval = d;
        self
    }

    /// The most array tasks in one `sbatch --array` (the cluster's `MaxArraySize` − 1).
    pub fn max_array_size(mut self, n: usize) -> Self {
        self.max_array_size = n;
        self
    }

    /// An array task whose submitter has not shown a sign of life for this long (it died,
    /// even by SIGKILL) cancels its whole array and exits.
    pub fn heartbeat_timeout(mut self, d: Duration) -> Self {
        self.heartbeat_timeout = d;
        self
    }

    /// Tasks per chunk, the unit an array task claims (`None`: automatic — about eight
    /// chunks per array task, so uneven tasks still spread and many small ones cost a few
    /// files each). Each array of `n` tasks runs as at most `workers` array tasks, which
    /// claim its chunks one by one.
    pub fn chunk_size(mut self, n: Option<usize>) -> Self {
        self.chunk_size = n;
        self
    }

    /// How long submissions gather before they go to `sbatch` as one job array.
    pub fn batch_window(mut self, d: Duration) -> Self {
        self.batch_window = d;
        self
    }

    /// Let Slurm requeue an array task after a node failure (default: `--no-requeue`, and
    /// its unfinished tasks fail with `TaskError::JobFailed`).
    pub fn requeue(mut self, on: bool) -> Self {
        self.requeue = on;
        self
    }

    /// Keep the pool's work directory (job files, results, Slurm's logs) after shutdown,
    /// for inspection. Without it the directory is removed unless a task failed for a
    /// cluster reason (then it is kept and its path printed).
    pub fn keep_work_dir(mut self, on: bool) -> Self {
        self.keep_work_dir = on;
        self
    }

    /// Whether the work directory is kept after shutdown.
    pub fn get_keep_work_dir(&self) -> bool {
        self.keep_work_dir
    }

    /// The configured CPUs per array task.
    pub fn get_cpus_per_task(&self) -> usize {
        self.cpus_per_task
    }
    /// The configured poll interval.
    pub fn get_poll_interval(&self) -> Duration {
        self.poll_interval
    }
    /// The configured heartbeat timeout.
    pub fn get_heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout
    }
    /// The configured batching window.
    pub fn get_batch_window(&self) -> Duration {
        self.batch_window
    }
    /// The configured maximum array size.
    pub fn get_max_array_size(&self) -> usize {
        self.max_array_size
    }
    /// The configured tasks per chunk.
    pub fn get_chunk_size(&self) -> Option<usize> {
        self.chunk_size
    }
    /// The configured work directory (None: the default).
    pub fn get_work_dir(&self) -> Option<&Path> {
        self.work_dir.as_deref()
    }

    /// Check every value; `SlurmPool::new` calls this.
    pub fn validate(&self) -> Result<(), PoolError> {
        let bad = |m: String| Err(PoolError::InvalidConfig(m));
        if self.cpus_per_task == 0 || self.cpus_per_task > poolrun_core::MAX_WORKERS {
            return bad(format!(
                "cpus_per_task({}): must be 1 to {}",
                self.cpus_per_task,
                poolrun_core::MAX_WORKERS
            ));
        }
        if self.max_array_size == 0 {
            return bad("max_array_size(0): must be at least 1".into());
        }
        if self.poll_interval.is_zero() || self.poll_interval > Duration::from_secs(60) {
            return bad(format!(
                "poll_interval({:?}): must be more than 0 and at most 60 s",
                self.poll_interval
            ));
        }
        if self.heartbeat_timeout < Duration::from_secs(2) {
            return bad(format!(
                "heartbeat_timeout({:?}): must be at least 2 s",
                self.heartbeat_timeout
            ));
        }
        if self.chunk_size == Some(0) {
            return bad("chunk_size(Some(0)): must be at least 1".into());
        }
        if let Some(t) = self.time_limit {
            if t.is_zero() {
                return bad("time_limit(0s): must be positive".into());
            }
        }
        if self.mem_per_task_mb == Some(0) {
            return bad("mem_per_task_mb(0): must be positive".into());
        }
        if let Some(p) = &self.partition {
            if p.trim().is_empty() || p.contains(char::is_whitespace) {
                return bad(format!("partition({p:?}): not a partition name"));
            }
        }
        for a in &self.sbatch_args {
            if !a.starts_with('-') {
                return bad(format!(
                    "sbatch_arg({a:?}): an sbatch option starts with '-'"
                ));
            }
            for (ours, short) in [
                ("--array", Some("-a")),
                ("--output", Some("-o")),
                ("--error", Some("-e")),
                ("--parsable", None),
                ("--wrap", None),
                ("--export", None),
            ] {
                let long = a == ours || a.starts_with(&format!("{ours}="));
                if long || short.is_some_and(|s| a.starts_with(s) && !a.starts_with("--")) {
                    return bad(format!("sbatch_arg({a:?}): poolrun sets {ours} itself"));
                }
            }
        }
        Ok(())
    }

    /// The `sbatch` options these settings ask for (besides poolrun's own).
    pub(crate) fn sbatch_options(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(p) = &self.partition {
            v.push(format!("--partition={p}"));
        }
        if let Some(t) = self.time_limit {
            let minutes = t.as_secs().div_ceil(60).max(1);
            v.push(format!("--time={minutes}"));
        }
        v.push(format!("--cpus-per-task={}", self.cpus_per_task));
        if let Some(mb) = self.mem_per_task_mb {
            v.push(format!("--mem={mb}M"));
        }
        v.push(
            if self.requeue {
                "--requeue"
            } else {
                "--no-requeue"
            }
            .into(),
        );
        v.extend(self.sbatch_args.iter().cloned());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_validation() {
        let c = SlurmConfig::new()
            .partition("debug")
            .time_limit(Duration::from_secs(61))
            .mem_per_task_mb(512)
            .sbatch_arg("--qos=x");
        assert!(c.validate().is_ok());
        assert_eq!(
            c.sbatch_options(),
            [
                "--partition=debug",
                "--time=2",
                "--cpus-per-task=1",
                "--mem=512M",
                "--no-requeue",
                "--qos=x"
            ]
        );
        for (bad, needle) in [
            (SlurmConfig::new().cpus_per_task(0), "cpus_per_task(0)"),
            (SlurmConfig::new().sbatch_arg("--array=1-3"), "--array"),
            (SlurmConfig::new().sbatch_arg("qos"), "starts with '-'"),
            (SlurmConfig::new().sbatch_arg("-o/tmp/x"), "--output"),
            (SlurmConfig::new().sbatch_arg("-a0-3"), "--array"),
            (SlurmConfig::new().partition("a b"), "partition"),
            (
                SlurmConfig::new().heartbeat_timeout(Duration::from_secs(1)),
                "heartbeat_timeout",
            ),
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        // Another option starting with one of those letters is fine.
        assert!(SlurmConfig::new()
            .sbatch_arg("--exclusive")
            .validate()
            .is_ok());
        assert!(SlurmConfig::new().sbatch_arg("-A").validate().is_ok());
    }
}
