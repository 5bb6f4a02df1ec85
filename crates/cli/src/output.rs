//! Result lines (text or JSON) and the progress bar.
//!
//! Text: `INPUT<TAB>OUTPUT` or `INPUT<TAB>ERROR: MESSAGE`, exactly one line per task: tabs,
//! newlines and other control characters inside INPUT/OUTPUT are escaped (`\t`, `\n`, …),
//! and an INPUT longer than 200 characters is shortened.
//!
//! JSON lines: `{"index","input","ok","output"|"error","worker","ms"}`; `worker` is the pid
//! (a number) in process mode and the thread's name (a string) in thread mode, `null` when
//! the task never reached a worker; `ms` is measured inside the task (`null` likewise).

use std::io::{self, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use serde::Serialize;

use crate::plan::OutputFormat;
use crate::registry::Worker;

/// The outcome of one task, ready to print.
#[derive(Debug)]
pub(crate) struct Record {
    pub index: usize,
    pub input: String,
    pub result: Result<String, String>,
    pub worker: Option<Worker>,
    pub ms: Option<f64>,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    index: usize,
    input: &'a str,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    worker: serde_json::Value,
    ms: Option<f64>,
}

/// Escape control characters so `s` stays on one line and its tabs cannot be confused with
/// the separator.
#[cfg(test)]
pub(crate) fn escape_line(s: &str, max_chars: Option<usize>) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s, max_chars);
    out
}

/// [`escape_line`], appended to `out`.
fn escape_into(out: &mut String, s: &str, max_chars: Option<usize>) {
    use std::fmt::Write as _;
    if max_chars.is_none_or(|m| s.len() <= m)
        && !s.bytes().any(|b| b.is_ascii_control() || b == b'\\')
        && s.is_ascii()
    {
        out.push_str(s); // the common case: nothing to escape
        return;
    }
    for (n, c) in s.chars().enumerate() {
        if max_chars.is_some_and(|m| n >= m) {
            let _ = write!(out, "… ({} bytes)", s.len());
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "{}", c.escape_unicode());
            }
            c => out.push(c),
        }
    }
}

/// Append one outcome's line (with its newline) to `out`.
pub(crate) fn push_line(out: &mut String, o: &Record, format: OutputFormat) {
    match format {
        OutputFormat::Text => {
            escape_into(out, &o.input, Some(200));
            match &o.result {
                Ok(v) => {
                    out.push('\t');
                    escape_into(out, v, None);
                }
                Err(e) => {
                    out.push_str("\tERROR: ");
                    escape_into(out, e, None);
                }
            }
        }
        OutputFormat::Json => out.push_str(&format_line(o, format)),
    }
    out.push('\n');
}

/// OutputFormat one outcome as a line (without the newline).
pub(crate) fn format_line(o: &Record, format: OutputFormat) -> String {
    match format {
        OutputFormat::Text => {
            let mut s = String::new();
            push_line(&mut s, o, format);
            s.pop();
            s
        }
        OutputFormat::Json => {
            let worker = match &o.worker {
                Some(Worker::Pid(p)) => serde_json::Value::from(*p),
                Some(Worker::Thread(t)) => serde_json::Value::from(t.as_str()),
                None => serde_json::Value::Null,
            };
            let line = JsonLine {
                index: o.index,
                input: &o.input,
                ok: o.result.is_ok(),
                output: o.result.as_ref().ok().map(String::as_str),
                error: o.result.as_ref().err().map(String::as_str),
                worker,
                ms: o.ms.map(|m| (m * 1000.0).round() / 1000.0),
            };
            serde_json::to_string(&line)
                .unwrap_or_else(|e| format!("{{\"index\":{},\"ok\":false,\"error\":\"cannot encode the result as JSON: {e}\"}}", o.index))
        }
    }
}

/// Print lines already joined (each ending in a newline) in one write, and flush.
pub(crate) fn print_block(block: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(block.as_bytes())?;
    out.flush()
}

/// A terminal stand-in for `--progress always` when stderr is not a terminal: the bar is
/// drawn on stderr as plain `\r`-separated updates.
#[derive(Debug)]
struct PlainStderr;

impl TermLike for PlainStderr {
    fn width(&self) -> u16 {
        80
    }
    fn move_cursor_up(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        let mut e = io::stderr().lock();
        e.write_all(s.as_bytes())?;
        e.write_all(b"\n")
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        io::stderr().lock().write_all(s.as_bytes())
    }
    fn clear_line(&self) -> io::Result<()> {
        io::stderr().lock().write_all(b"\r")
    }
    fn flush(&self) -> io::Result<()> {
        io::stderr().lock().flush()
    }
}

/// The progress bar (hidden unless asked for).
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub(crate) fn new(enabled: bool, total: Option<u64>) -> Self {
        if !enabled {
            return Progress { bar: None };
        }
        use std::io::IsTerminal;
        let target = if io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::term_like_with_hz(Box::new(PlainStderr), 2)
        };
        let bar = ProgressBar::with_draw_target(total, target);
        let template = if total.is_some() {
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta}) {msg}"
        } else {
            "{spinner} [{elapsed_precise}] {pos} done, {len} read ({per_sec}) {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        if total.is_none() {
            bar.set_length(0);
        }
        bar.enable_steady_tick(Duration::from_millis(250));
        Progress { bar: Some(bar) }
    }

    /// Another task was read (stdin input: the total grows).
    pub(crate) fn add_total(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc_length(n);
        }
    }

    /// A task finished; `failed` so far goes into the message.
    pub(crate) fn finished_one(&self, failed: u64) {
        if let Some(b) = &self.bar {
            b.inc(1);
            if failed > 0 {
                b.set_message(format!("{failed} failed"));
            }
        }
    }

    /// A cluster's view: tasks waiting for Slurm and running in array tasks (the bar's
    /// position counts the done ones).
    pub(crate) fn cluster(&self, queued: usize, running: usize, failed: u64) {
        if let Some(b) = &self.bar {
            let mut msg = format!("queued {queued}, running {running}");
            if failed > 0 {
                msg.push_str(&format!(", {failed} failed"));
            }
            b.set_message(msg);
        }
    }

    /// Run `f` (which prints to stdout) with the bar hidden, so lines don't mix.
    pub(crate) fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    pub(crate) fn clear(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: Result<&str, &str>, worker: Option<Worker>) -> Record {
        Record {
            index: 3,
            input: "in\tput".into(),
            result: result.map(str::to_string).map_err(str::to_string),
            worker,
            ms: Some(1.23456),
        }
    }

    #[test]
    fn text_lines() {
        let o = outcome(Ok("a\nb"), None);
        assert_eq!(format_line(&o, OutputFormat::Text), "in\\tput\ta\\nb");
        let o = outcome(Err("bad"), None);
        assert_eq!(format_line(&o, OutputFormat::Text), "in\\tput\tERROR: bad");
        let long = "x".repeat(500);
        assert!(escape_line(&long, Some(200)).ends_with("… (500 bytes)"));
    }

    #[test]
    fn json_lines() {
        let o = outcome(Ok("out"), Some(Worker::Pid(42)));
        let v: serde_json::Value =
            serde_json::from_str(&format_line(&o, OutputFormat::Json)).unwrap();
        assert_eq!(v["index"], 3);
        assert_eq!(v["input"], "in\tput");
        assert_eq!(v["ok"], true);
        assert_eq!(v["output"], "out");
        assert_eq!(v["worker"], 42);
        assert_eq!(v["ms"], 1.235);
        assert!(v.get("error").is_none());
        let o = outcome(Err("e"), Some(Worker::Thread("w-1".into())));
        let v: serde_json::Value =
            serde_json::from_str(&format_line(&o, OutputFormat::Json)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "e");
        assert_eq!(v["worker"], "w-1");
    }
}
