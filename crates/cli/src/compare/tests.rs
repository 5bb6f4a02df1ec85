//! Unit tests of `compare`: flag parsing and validation, the tasks, the report formats.

use super::args::*;
use super::experiment::*;
use super::measure::*;
use super::workload::*;
use super::*;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use poolrun::gil::GilStats;

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    args: CompareArgs,
}

fn parse(argv: &[&str]) -> CompareArgs {
    let mut v = vec!["compare"];
    v.extend_from_slice(argv);
    Cli::try_parse_from(v).expect("arguments parse").args
}

#[test]
fn parses_flags() {
    let a = parse(&[
        "--workload",
        "io",
        "--tasks",
        "7",
        "-j",
        "1,2,4",
        "--format",
        "json",
        "--plot",
        "x.svg",
        "--switch-interval",
        "0.1",
    ]);
    assert_eq!(a.workload, Workload::Io);
    assert_eq!(a.tasks, Some(7));
    assert_eq!(a.jobs, vec![1, 2, 4]);
    assert_eq!(a.format, ReportFormat::Json);
    assert_eq!(a.plot, Some(PathBuf::from("x.svg")));
    assert_eq!(a.switch_interval, 0.1);
    let d = parse(&[]);
    assert_eq!(d.workload, Workload::Cpu);
    assert_eq!(d.format, ReportFormat::Text);
    assert_eq!(d.switch_interval, 5.0);
    assert!(d.jobs.is_empty());
    assert!(Cli::try_parse_from(["compare", "--workload", "gpu"]).is_err());
    assert!(Cli::try_parse_from(["compare", "-j", "1,x"]).is_err());
}

#[test]
fn defaults_and_validation() {
    assert_eq!(default_jobs(1), vec![1]);
    assert_eq!(default_jobs(2), vec![1, 2]);
    assert_eq!(default_jobs(6), vec![1, 2, 4, 6]);
    assert_eq!(default_jobs(16), vec![1, 2, 4, 8, 16]);
    let p = plan(&parse(&[]), 2).expect("defaults are valid");
    assert_eq!(p.jobs, vec![1, 2]);
    assert_eq!(p.tasks, 16);
    assert_eq!(p.interval, Duration::from_millis(5));
    let p = plan(&parse(&["-j", "4,1,4"]), 2).expect("valid");
    assert_eq!(p.jobs, vec![1, 4], "sorted and deduplicated");
    assert_eq!(default_tasks(Workload::Cpu, 6), 18);
    assert_eq!(default_tasks(Workload::Io, 16), 64);
    for bad in [
        &["-j", "0"][..],
        &["--tasks", "0"],
        &["--switch-interval", "0"],
        &["--switch-interval", "-1"],
        &["--switch-interval", "NaN"],
        &["-j", "99999"],
        &["--repeat", "0"],
    ] {
        let e = plan(&parse(bad), 2).expect_err("must be rejected");
        assert!(e.contains("--"), "message names the flag: {e}");
        assert_eq!(run_to(&parse(bad), &mut Vec::new()), 2, "{bad:?}");
    }
}

#[test]
fn task_functions() {
    assert_eq!(cpu_task(100), 25);
    assert_eq!(cpu_task(10), 4);
    assert_eq!(mixed_task((10, 0)), 4);
    assert_eq!(io_task(0), 0);
}

#[test]
fn bad_plot_path_is_a_usage_error() {
    let a = parse(&[
        "--workload",
        "io",
        "--tasks",
        "1",
        "-j",
        "1",
        "--plot",
        "/nonexistent-dir/x.svg",
    ]);
    assert_eq!(run_to(&a, &mut Vec::new()), 2);
}

fn fake_report(process_ok: bool) -> Report {
    let plan = plan(
        &parse(&["--workload", "cpu", "-j", "1,2", "--tasks", "4"]),
        2,
    )
    .expect("valid");
    let mk = |kind, workers, ms: Option<u64>| Row {
        kind,
        workers,
        wall: ms
            .map(Duration::from_millis)
            .ok_or_else(|| "unavailable: not yet".to_string()),
        gil: (kind == Contender::ThreadGil).then(GilStats::default),
    };
    Report {
        plan,
        load_before: Some(0.0),
        serial: Ok(Duration::from_millis(1000)),
        rows: vec![
            mk(Contender::ThreadGil, 1, Some(1000)),
            mk(Contender::ThreadGil, 2, Some(1050)),
            mk(Contender::ThreadFree, 1, Some(1000)),
            mk(Contender::ThreadFree, 2, Some(520)),
            mk(Contender::Process, 1, process_ok.then_some(1000)),
            mk(Contender::Process, 2, process_ok.then_some(526)),
        ],
    }
}

#[test]
fn verdict_text_json_svg() {
    let r = fake_report(true);
    let v = r.verdict();
    assert!(
        v.starts_with("cpu-bound on 2 cores: process 1.9×, thread+GIL 1.0×"),
        "{v}"
    );
    assert!(v.contains("use processes"), "{v}");
    let t = r.text();
    assert!(t.contains("thread+GIL") && t.contains("verdict:"), "{t}");
    assert!(t.contains("95%"), "efficiency of process×2: {t}");
    let j = r.json();
    assert_eq!(j["rows"].as_array().map(Vec::len), Some(7));
    assert_eq!(j["rows"][0]["mode"], "serial");
    let svg = r.svg();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 4, "3 modes + ideal");

    let r = fake_report(false);
    let v = r.verdict();
    assert!(v.contains("process unavailable"), "{v}");
    assert!(r.text().contains("unavailable: not yet"));
    assert_eq!(r.json()["rows"][5]["available"], false);
    assert!(r.svg().contains("process (unavailable)"));

    // Nothing scaled, not even processes: the verdict does not pretend to know.
    let mut r = fake_report(true);
    for row in &mut r.rows {
        if row.wall.is_ok() {
            row.wall = Ok(Duration::from_millis(990));
        }
    }
    assert!(r.verdict().contains("inconclusive"), "{}", r.verdict());

    let mut r = fake_report(true);
    assert!(r.busy_note().is_none());
    r.load_before = Some(3.0);
    assert!(r.busy_note().is_some_and(|n| n.contains("3.00 on 2 cores")));
    assert!(r.text().contains("note: the load average"));
}

#[test]
fn end_to_end_tiny_io_run() {
    // Runs whatever modes are available; unavailable ones become rows, not failures.
    let dir = std::env::temp_dir().join(format!("poolrun-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let svg = dir.join("c.svg");
    let a = parse(&[
        "--workload",
        "io",
        "--tasks",
        "4",
        "-j",
        "1,2",
        "--format",
        "json",
        "--repeat",
        "2",
        "--plot",
        svg.to_str().expect("utf-8 temp path"),
    ]);
    let mut out = Vec::new();
    assert_eq!(run_to(&a, &mut out), 0);
    let j: serde_json::Value = serde_json::from_slice(&out).expect("one JSON object");
    assert_eq!(j["workload"], "io");
    assert_eq!(j["tasks"], 4);
    assert_eq!(j["repeat"], 2);
    let rows = j["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 7, "serial + 3 modes × 2 worker counts");
    for r in rows {
        // Available rows have a positive wall time; unavailable ones say why.
        if r["available"] == true {
            assert!(r["wall_s"].as_f64().is_some_and(|w| w > 0.0), "{r}");
        } else {
            assert!(r["error"].is_string(), "{r}");
        }
    }
    assert!(j["verdict"]
        .as_str()
        .is_some_and(|v| v.starts_with("io-bound")));
    let body = std::fs::read_to_string(&svg).expect("plot written");
    assert!(body.contains("</svg>"));
    let _ = std::fs::remove_dir_all(&dir);
}
