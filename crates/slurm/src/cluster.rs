//! Talking to Slurm: `sbatch`, `squeue`, `scancel`, each run with a deadline (a command
//! that hangs — a controller that is down — fails instead of stalling the pool).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use poolrun_core::Deadline;

/// How long one Slurm command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// Run `cmd`; `(stdout, stderr)` if it exits 0, else a one-line reason.
fn run(mut cmd: Command) -> Result<(String, String), String> {
    let name = format!("{:?}", cmd.get_program());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{name} not found: is Slurm installed and on PATH?")
        } else {
            format!("cannot run {name}: {e}")
        }
    })?;
    fn reader<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    }
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Deadline::after(Some(COMMAND_LIMIT));
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if deadline.passed() => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{name} did not answer within {COMMAND_LIMIT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for {name}: {e}")),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        Ok((stdout, stderr))
    } else {
        let why = stderr
            .lines()
            .chain(stdout.lines())
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(no message)")
            .trim()
            .to_string();
        Err(format!("{name} failed ({status}): {why}"))
    }
}

/// Is `sbatch` available? (A missing Slurm is an error at pool start, not at the first task.)
pub(crate) fn check_available() -> Result<(), String> {
    let mut c = Command::new("sbatch");
    c.arg("--version");
    run(c).map(|_| ())
}

/// Would Slurm accept a job array with these options? (`sbatch --test-only`: checks the
/// partition, the time limit, the resources and the options' syntax; submits nothing.)
pub(crate) fn test_only(args: &[String]) -> Result<(), String> {
    let mut c = Command::new("sbatch");
    c.args(["--test-only", "--array=0-0"])
        .args(args)
        .args(["--wrap", "true"]);
    run(c).map(|_| ())
}

/// `sbatch --parsable <args> <script> <script_args>`; the job id.
pub(crate) fn sbatch(
    args: &[String],
    script: &Path,
    script_args: &[String],
) -> Result<String, String> {
    let mut c = Command::new("sbatch");
    c.arg("--parsable").args(args).arg(script).args(script_args);
    let (out, _) = run(c)?;
    // `--parsable` prints "<id>" or "<id>;<cluster>".
    let id = out
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("sbatch printed no job id: {out:?}"));
    }
    Ok(id)
}

/// One line of `squeue` about one of our array tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRow {
    /// The array's job id.
    pub array: String,
    /// The array task index (`None` for a line that groups pending tasks, `123_[4-9]`).
    pub index: Option<usize>,
    /// Slurm's state (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, …).
    pub state: String,
    /// The reason column.
    pub reason: String,
}

/// States after which an array task does nothing more.
pub(crate) fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "NODE_FAIL"
            | "OUT_OF_MEMORY"
            | "PREEMPTED"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "REVOKED"
            | "SPECIAL_EXIT"
    )
}

fn parse_rows(out: &str) -> Vec<TaskRow> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.trim().split('|');
            let array = f.next()?.trim().to_string();
            let index = f.next()?.trim().parse().ok();
            let state = f.next()?.split_whitespace().next()?.to_string();
            let reason = f.next().unwrap_or("").trim().to_string();
            Some(TaskRow {
                array,
                index,
                state,
                reason,
            })
        })
        .collect()
}

/// Every task of the arrays `ids`, finished ones too (until Slurm purges them). An id Slurm
/// no longer knows is left out (its tasks are then reported by nobody: the caller treats
/// them as gone).
pub(crate) fn squeue(ids: &[String]) -> Result<Vec<TaskRow>, String> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let query = |ids: &[String]| {
        let mut c = Command::new("squeue");
        c.args(["-h", "-t", "all", "-o", "%F|%K|%T|%r", "-j"])
            .arg(ids.join(","));
        run(c).map(|(out, _)| parse_rows(&out))
    };
    match query(ids) {
        Ok(rows) => Ok(rows),
        // One purged id fails the whole query ("Invalid job id specified"): ask one by one.
        Err(e) if e.contains("Invalid job id") && ids.len() > 1 => {
            let mut rows = Vec::new();
            for id in ids {
                match query(std::slice::from_ref(id)) {
                    Ok(r) => rows.extend(r),
                    Err(e) if e.contains("Invalid job id") => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(rows)
        }
        Err(e) if e.contains("Invalid job id") => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The job completion record of the arrays `ids` (`sacct`), for arrays `squeue` no
/// longer lists (purged after `MinJobAge`). Empty where the cluster keeps no accounting
/// (`sacct` then fails): the caller reports those tasks as gone.
pub(crate) fn sacct(ids: &[String]) -> Vec<TaskRow> {
    if ids.is_empty() {
        return Vec::new();
    }
    let mut c = Command::new("sacct");
    c.args(["-X", "-n", "-P", "-o", "JobID,State", "-j"])
        .arg(ids.join(","));
    match run(c) {
        Ok((out, _)) => parse_sacct(&out),
        Err(_) => Vec::new(),
    }
}

fn parse_sacct(out: &str) -> Vec<TaskRow> {
    out.lines()
        .filter_map(|l| {
            let (id, state) = l.trim().split_once('|')?;
            let (array, index) = id.split_once('_')?;
            Some(TaskRow {
                array: array.to_string(),
                index: index.parse().ok(),
                state: state.split_whitespace().next()?.to_string(),
                reason: String::new(),
            })
        })
        .collect()
}

/// Cancel the given jobs (ours only). Errors are reported, not returned: there is nothing
/// better to do at that point.
pub(crate) fn scancel(ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let mut c = Command::new("scancel");
    c.args(ids);
    if let Err(e) = run(c) {
        eprintln!("poolrun: scancel {}: {e}", ids.join(" "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows() {
        let out =
            "12|3|RUNNING|None\n12|[5-9%2]|PENDING|JobArrayTaskLimit\n12|0|CANCELLED by 0|None\n";
        let r = parse_rows(out);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].index, Some(3));
        assert_eq!(r[1].index, None);
        assert_eq!(r[2].state, "CANCELLED");
        assert!(is_terminal("TIMEOUT") && !is_terminal("RUNNING"));
    }

    #[test]
    fn sacct_rows() {
        let r = parse_sacct("12_3|FAILED\n12_[5-9]|PENDING\n12_0|CANCELLED by 0\n13|COMPLETED\n");
        assert_eq!(
            r.iter()
                .map(|r| (r.array.as_str(), r.index, r.state.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("12", Some(3), "FAILED"),
                ("12", None, "PENDING"),
                ("12", Some(0), "CANCELLED")
            ]
        );
    }
}
