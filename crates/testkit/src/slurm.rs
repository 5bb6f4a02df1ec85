//! The Slurm test cluster as the Slurm suites see it: whether one answers, what is still in
//! its queue, and which processes run a pool's executable copy.
//!
//! The suites skip, with one line saying why, where no cluster answers; with
//! `POOLRUN_REQUIRE_SLURM` set (`.ci/run` sets it after starting the cluster of
//! `scripts/slurm/start.sh`) a missing cluster fails them instead.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// True if a Slurm cluster answers (`sbatch` runs and `squeue` reaches the controller).
/// Otherwise prints one line naming `test` and why, and returns false — or panics when
/// `POOLRUN_REQUIRE_SLURM` is set.
pub fn cluster_or_skip(test: &str) -> bool {
    let answers = |prog: &str, args: &[&str]| -> Result<(), String> {
        let o = Command::new(prog)
            .args(args)
            .output()
            .map_err(|e| format!("{prog}: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{prog}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    };
    let ok = answers("sbatch", &["--version"]).and_then(|()| answers("squeue", &["-h"]));
    match ok {
        Ok(()) => true,
        Err(e) if std::env::var_os("POOLRUN_REQUIRE_SLURM").is_some() => {
            panic!("{test}: POOLRUN_REQUIRE_SLURM is set but no Slurm cluster answers: {e}")
        }
        Err(e) => {
            eprintln!(
                "{test}: skipped: no Slurm cluster ({e}); start one with scripts/slurm/start.sh"
            );
            false
        }
    }
}

/// The lines of plain `squeue` (pending, running, completing jobs) that belong to the job
/// arrays `jobs`, as `array_task STATE`.
pub fn queued(jobs: &[String]) -> Vec<String> {
    squeue(&["-h", "-o", "%F|%i|%T"])
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|');
            let array = f.next()?;
            let id = f.next()?;
            let state = f.next()?;
            jobs.iter()
                .any(|j| j == array)
                .then(|| format!("{id} {state}"))
        })
        .collect()
}

/// Wait up to `limit` until nothing of the arrays `jobs` is in Slurm's queue; panics naming
/// what is left. Returns how long it took.
pub fn assert_left_queue(jobs: &[String], limit: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let left = queued(jobs);
        if left.is_empty() {
            return t.elapsed();
        }
        if t.elapsed() >= limit {
            panic!("still in squeue after {limit:?}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Processes whose executable is `exe` (a pool's copy), deleted or not.
pub fn running_image(exe: &Path) -> Vec<u32> {
    let want = exe.display().to_string();
    crate::procfs::processes()
        .into_iter()
        .map(|(pid, _, _)| pid)
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|l| {
                let l = l.display().to_string();
                l == want || l.strip_suffix(" (deleted)") == Some(want.as_str())
            })
        })
        .collect()
}

/// Lines of plain `squeue` (pending, running, completing) for jobs named `name`, as
/// `array_task STATE` (a pool names its arrays `poolrun-<submitter pid>`).
pub fn queued_named(name: &str) -> Vec<String> {
    squeue(&["-h", "-o", "%i|%T", "-n", name])
        .lines()
        .map(|l| l.replace('|', " "))
        .collect()
}

/// `squeue ARGS`'s output; panics (naming why) if it cannot run or fails.
fn squeue(args: &[&str]) -> String {
    let o = Command::new("squeue")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run squeue: {e}"));
    assert!(
        o.status.success(),
        "squeue failed: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
