//! The report: the verdict, the text table and the JSON object.

use std::fmt::Write as _;
use std::time::Duration;

use super::args::Workload;
use poolrun::gil::GilStats;

use super::measure::{Contender, Report, Row};

impl Report {
    pub(super) fn serial_secs(&self) -> Option<f64> {
        self.serial.as_ref().ok().map(Duration::as_secs_f64)
    }

    pub(super) fn speedup(&self, row: &Row) -> Option<f64> {
        let s = self.serial_secs()?;
        let w = row.wall.as_ref().ok()?.as_secs_f64();
        (w > 0.0).then(|| s / w)
    }

    /// The best speedup a mode reached, with the worker count it reached it at.
    pub(super) fn best(&self, kind: Contender) -> Option<(f64, usize)> {
        self.rows
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| Some((self.speedup(r)?, r.workers)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    pub(super) fn verdict(&self) -> String {
        let p = self.plan.cores;
        let head = match self.plan.workload {
            Workload::Cpu => format!("cpu-bound on {p} cores"),
            Workload::Io => format!("io-bound on {p} cores"),
            Workload::Mixed => format!("mixed workload on {p} cores"),
        };
        let pr = self.best(Contender::Process);
        let gl = self.best(Contender::ThreadGil);
        let fr = self.best(Contender::ThreadFree);
        let show = |x: Option<(f64, usize)>| {
            x.map_or("unavailable".to_string(), |(s, _)| format!("{s:.1}×"))
        };
        // CPU work that does not speed up even on free threads or processes, with more
        // than one worker tried on a multi-core machine: no core was free to use.
        let max_j = self.plan.jobs.last().copied().unwrap_or(1);
        let nothing_scaled = self.plan.workload != Workload::Io
            && self.plan.cores >= 2
            && max_j >= 2
            && [pr, fr].iter().all(|b| b.is_none_or(|(s, _)| s < 1.25))
            && (pr.is_some() || fr.is_some());
        let advice = match (pr, gl) {
            _ if nothing_scaled => "inconclusive: not even free threads or processes sped up, \
                so no core was free (a busy machine?); rerun when it is idle"
                .to_string(),
            (Some((ps, _)), Some((gs, _))) => {
                if ps > gs * 1.15 {
                    "use processes".to_string()
                } else if gs > ps * 1.15 {
                    "use threads".to_string()
                } else {
                    "use threads (as fast as processes, and cheaper)".to_string()
                }
            }
            (Some(_), None) => "thread+GIL could not be measured".to_string(),
            (None, Some(_)) => "processes could not be measured".to_string(),
            (None, None) => "no parallel mode could be measured".to_string(),
        };
        let free = fr.map_or(String::new(), |(s, _)| format!(" (free-threaded: {s:.1}×)"));
        format!(
            "{head}: process {}, thread+GIL {} → {advice}{free}",
            show(pr),
            show(gl)
        )
    }

    /// A warning when other programs were already using the CPU before the run.
    pub(super) fn busy_note(&self) -> Option<String> {
        let load = self.load_before?;
        (load > 0.25 * self.plan.cores as f64 + 0.25).then(|| {
            format!(
                "note: the load average was {load:.2} on {} cores before this run: other \
                 programs were using the CPU, so speedups may be understated (rerun when \
                 the machine is idle, or with --repeat 3)",
                self.plan.cores
            )
        })
    }

    pub(super) fn text(&self) -> String {
        let p = &self.plan;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "poolrun compare: {} workload, {} tasks ({}), {} cores, GIL switch interval {} ms",
            p.workload.name(),
            p.tasks,
            p.workload.describe(),
            p.cores,
            fmt_ms(p.interval)
        );
        let _ = writeln!(
            o,
            "wall = one map() of all tasks on a started pool (start-up excluded){}\n",
            if p.repeat > 1 {
                format!(", fastest of {} round-robin rounds", p.repeat)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            o,
            "{:<16} {:>7} {:>10} {:>8} {:>10}  {:>8} {:>7} {:>9}",
            "mode", "workers", "wall", "speedup", "efficiency", "switches", "forced", "GIL wait"
        );
        let serial_line = match &self.serial {
            Ok(d) => format!(
                "{:<16} {:>7} {:>8.3} s {:>7.2}× {:>9.0}%",
                Contender::Serial.label(),
                1,
                d.as_secs_f64(),
                1.0,
                100.0
            ),
            Err(e) => format!("{:<16} {:>7} {e}", Contender::Serial.label(), 1),
        };
        let _ = writeln!(o, "{serial_line}");
        for r in &self.rows {
            match (&r.wall, self.speedup(r)) {
                (Ok(d), Some(s)) => {
                    let _ = write!(
                        o,
                        "{:<16} {:>7} {:>8.3} s {:>7.2}× {:>9.0}%",
                        r.kind.label(),
                        r.workers,
                        d.as_secs_f64(),
                        s,
                        100.0 * s / r.workers as f64
                    );
                    if let Some(g) = &r.gil {
                        let _ = write!(
                            o,
                            "  {:>8} {:>7} {:>7.3} s",
                            g.switches,
                            g.forced_drops,
                            g.wait.as_secs_f64()
                        );
                    }
                    o.push('\n');
                }
                (Err(e), _) => {
                    let _ = writeln!(o, "{:<16} {:>7}   {e}", r.kind.label(), r.workers);
                }
                (Ok(_), None) => {
                    let _ = writeln!(
                        o,
                        "{:<16} {:>7}   (no serial baseline)",
                        r.kind.label(),
                        r.workers
                    );
                }
            }
        }
        let _ = writeln!(o, "\nverdict: {}", self.verdict());
        if let Some(n) = self.busy_note() {
            let _ = writeln!(o, "{n}");
        }
        o
    }

    pub(super) fn json(&self) -> serde_json::Value {
        let row = |kind: Contender,
                   workers: usize,
                   wall: &Result<Duration, String>,
                   s: Option<f64>,
                   g: Option<&GilStats>| {
            let mut v = serde_json::json!({
                "mode": kind.key(),
                "workers": workers,
                "available": wall.is_ok(),
            });
            match wall {
                Ok(d) => {
                    v["wall_s"] = serde_json::json!(d.as_secs_f64());
                    if let Some(s) = s {
                        v["speedup"] = serde_json::json!(s);
                        v["efficiency"] = serde_json::json!(s / workers as f64);
                    }
                }
                Err(e) => v["error"] = serde_json::json!(e),
            }
            if let Some(g) = g {
                v["gil"] = serde_json::json!({
                    "switches": g.switches,
                    "forced_drops": g.forced_drops,
                    "wait_s": g.wait.as_secs_f64(),
                });
            }
            v
        };
        let mut rows = vec![row(
            Contender::Serial,
            1,
            &self.serial,
            self.serial.is_ok().then_some(1.0),
            None,
        )];
        rows.extend(
            self.rows
                .iter()
                .map(|r| row(r.kind, r.workers, &r.wall, self.speedup(r), r.gil.as_ref())),
        );
        serde_json::json!({
            "workload": self.plan.workload.name(),
            "task": self.plan.workload.describe(),
            "tasks": self.plan.tasks,
            "jobs": self.plan.jobs,
            "cores": self.plan.cores,
            "switch_interval_ms": self.plan.interval.as_secs_f64() * 1000.0,
            "repeat": self.plan.repeat,
            "load_average_before": self.load_before,
            "note": self.busy_note(),
            "rows": rows,
            "verdict": self.verdict(),
        })
    }
}

pub(super) fn fmt_ms(d: Duration) -> String {
    trim_num(d.as_secs_f64() * 1000.0)
}

pub(super) fn trim_num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
