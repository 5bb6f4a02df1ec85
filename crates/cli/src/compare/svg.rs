//! `--plot`: an SVG line chart of speedup against worker count, one line per contender.

use std::fmt::Write as _;

use super::measure::{Contender, Report, PARALLEL};
use super::report::trim_num;

impl Report {
    /// An SVG line chart: speedup over serial against worker count, one line per mode, plus
    /// the ideal (speedup = workers, capped at the core count) as a dashed line.
    pub(super) fn svg(&self) -> String {
        let (w, h) = (720.0f64, 440.0f64);
        let (l, r, t, b) = (70.0, 190.0, 50.0, 60.0);
        let jobs = &self.plan.jobs;
        let n = jobs.len().max(1);
        let xs = |i: usize| {
            if n == 1 {
                l + (w - l - r) / 2.0
            } else {
                l + (w - l - r) * i as f64 / (n - 1) as f64
            }
        };
        let ideal = |j: usize| j.min(self.plan.cores.max(1)) as f64;
        let max_y = self
            .rows
            .iter()
            .filter_map(|r| self.speedup(r))
            .chain(jobs.iter().map(|&j| ideal(j)))
            .fold(1.0f64, f64::max)
            * 1.1;
        let ys = |v: f64| t + (h - t - b) * (1.0 - v / max_y);
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
            (w - r + l) / 2.0,
            xml_escape(&format!(
                "poolrun compare: {} workload, {} tasks, {} cores",
                self.plan.workload.name(),
                self.plan.tasks,
                self.plan.cores
            ))
        );
        // Axes, grid and ticks.
        let _ = writeln!(
            s,
            r#"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="black"/>"#,
            h - b,
            w - r,
            h - b,
            h - b
        );
        let step = nice_step(max_y);
        let mut v = 0.0;
        while v <= max_y + 1e-9 {
            let y = ys(v);
            let _ = writeln!(
                s,
                r##"<line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{}" y="{:.1}" text-anchor="end">{}×</text>"##,
                w - r,
                l - 6.0,
                y + 4.0,
                trim_num(v)
            );
            v += step;
        }
        for (i, j) in jobs.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{j}</text>"#,
                xs(i),
                h - b + 18.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">workers</text>"#,
            (w - r + l) / 2.0,
            h - 14.0
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">speedup over serial</text>"#,
            (h - b + t) / 2.0,
            (h - b + t) / 2.0
        );
        // Ideal and serial baselines.
        let pts: Vec<String> = jobs
            .iter()
            .enumerate()
            .map(|(i, &j)| format!("{:.1},{:.1}", xs(i), ys(ideal(j))))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#2ca02c" stroke-dasharray="6 4"/>"##,
            pts.join(" ")
        );
        let _ = writeln!(
            s,
            r#"<line x1="{l}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="{2}" stroke-dasharray="2 3"/>"#,
            ys(1.0),
            w - r,
            Contender::Serial.color()
        );
        // One line per mode.
        for kind in PARALLEL {
            let pts: Vec<(f64, f64)> = jobs
                .iter()
                .enumerate()
                .filter_map(|(i, &j)| {
                    let row = self
                        .rows
                        .iter()
                        .find(|r| r.kind == kind && r.workers == j)?;
                    Some((xs(i), ys(self.speedup(row)?)))
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                p.join(" "),
                kind.color()
            );
            for (x, y) in pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{}"/>"#,
                    kind.color()
                );
            }
        }
        // Legend.
        let legend: Vec<(String, &str, &str)> = PARALLEL
            .iter()
            .map(|k| {
                let label = if self.best(*k).is_some() {
                    k.label().to_string()
                } else {
                    format!("{} (unavailable)", k.label())
                };
                (label, k.color(), "")
            })
            .chain([
                ("ideal".to_string(), "#2ca02c", "6 4"),
                ("serial".to_string(), Contender::Serial.color(), "2 3"),
            ])
            .collect();
        for (i, (label, color, dash)) in legend.iter().enumerate() {
            let y = t + 10.0 + 20.0 * i as f64;
            let x = w - r + 15.0;
            let _ = writeln!(
                s,
                r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="{}">{}</text>"#,
                x + 24.0,
                x + 30.0,
                y + 4.0,
                xml_escape(label)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="8" y="{}" font-size="10">{}</text>"#,
            h - 2.0,
            xml_escape(&self.verdict())
        );
        s.push_str("</svg>\n");
        s
    }
}

pub(super) fn nice_step(max: f64) -> f64 {
    let raw = max / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if raw <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

pub(super) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
