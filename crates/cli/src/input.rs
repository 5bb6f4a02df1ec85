//! Task arguments from stdin: one per line, read on a separate thread into a bounded channel
//! (so an endless stdin runs in bounded memory, and the main loop never blocks on a read and
//! can always react to Ctrl-C).
//!
//! - A line is split at `\n`; a trailing `\r` is removed; empty lines are skipped.
//! - A line that is not UTF-8 becomes a failed task ("not valid UTF-8"), shown lossily.
//! - A line longer than [`MAX_LINE`] bytes is not buffered beyond that: it becomes a failed
//!   task ("longer than 1 MiB"), so a file without newlines cannot exhaust memory.
//! - A read error ends the input; it is reported, and `poolrun` exits with status 2 after the
//!   tasks already read have run.

use std::io::BufRead;

use crossbeam_channel::{bounded, Receiver};

use crate::text::io_reason;

/// The longest stdin line accepted as a task argument.
pub const MAX_LINE: usize = 1 << 20;

/// One item read from stdin.
#[derive(Debug)]
pub(crate) enum StdinItem {
    /// A line (1-based number), possibly unusable (`bad` says why).
    Line { input: String, bad: Option<String> },
    /// Reading failed; nothing more will come.
    Error(String),
}

/// Start the reader thread. The channel closes at end of input.
pub(crate) fn spawn_stdin_reader(capacity: usize) -> Result<Receiver<StdinItem>, String> {
    let (tx, rx) = bounded(capacity.max(1));
    std::thread::Builder::new()
        .name("poolrun-stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            let mut r = stdin.lock();
            read_lines(&mut r, |item| tx.send(item).is_ok());
        })
        .map_err(|e| format!("cannot start the stdin reader: {}", io_reason(&e)))?;
    Ok(rx)
}

/// Read `r` line by line, handing each item to `emit` until it returns false.
pub(crate) fn read_lines<R: BufRead>(r: &mut R, mut emit: impl FnMut(StdinItem) -> bool) {
    let mut lineno = 0u64;
    loop {
        let mut line = Vec::new();
        let mut overflow = 0u64;
        let mut eof = false;
        // Read one line, keeping at most MAX_LINE bytes of it.
        loop {
            let buf = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    emit(StdinItem::Error(format!(
                        "cannot read stdin: {}",
                        io_reason(&e)
                    )));
                    return;
                }
            };
            if buf.is_empty() {
                eof = true;
                break;
            }
            let (chunk, found) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (&buf[..i], Some(i)),
                None => (buf, None),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            let take = room.min(chunk.len());
            line.extend_from_slice(&chunk[..take]);
            overflow += (chunk.len() - take) as u64;
            let used = found.map_or(chunk.len(), |i| i + 1);
            r.consume(used);
            if found.is_some() {
                break;
            }
        }
        if eof && line.is_empty() && overflow == 0 {
            return;
        }
        lineno += 1;
        if overflow == 0 && line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() && overflow == 0 {
            if eof {
                return;
            }
            continue;
        }
        let item = if overflow > 0 {
            let head: String = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
            StdinItem::Line {
                input: format!("{head}…"),
                bad: Some(format!(
                    "stdin line {lineno} is {} bytes long: longer than the limit of {MAX_LINE} bytes",
                    line.len() as u64 + overflow
                )),
            }
        } else {
            match String::from_utf8(line) {
                Ok(s) => StdinItem::Line {
                    input: s,
                    bad: None,
                },
                Err(e) => StdinItem::Line {
                    input: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    bad: Some(format!(
                        "stdin line {lineno} is not valid UTF-8 (at byte {})",
                        e.utf8_error().valid_up_to()
                    )),
                },
            }
        };
        if !emit(item) || eof {
            return;
        }
    }
}

/// Drain a reader into memory (for tests).
#[cfg(test)]
fn collect(bytes: &[u8]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut r = std::io::BufReader::with_capacity(7, bytes);
    read_lines(&mut r, |item| {
        match item {
            StdinItem::Line { input, bad } => out.push((input, bad)),
            StdinItem::Error(e) => out.push((String::new(), Some(e))),
        }
        true
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_and_skip_empty() {
        let v = collect(b"a\n\nbb\r\nccc");
        let inputs: Vec<&str> = v.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(inputs, ["a", "bb", "ccc"]);
        assert!(v.iter().all(|(_, b)| b.is_none()));
        assert!(collect(b"").is_empty());
        assert!(collect(b"\n\n").is_empty());
    }

    #[test]
    fn invalid_utf8_and_long_lines_fail_one_item() {
        let mut data = b"ok\n\xff\xfe\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        data.extend(b"\nlast\n");
        let v = collect(&data);
        assert_eq!(v.len(), 4);
        assert_eq!(v[0], ("ok".to_string(), None));
        assert!(v[1]
            .1
            .as_deref()
            .unwrap_or("")
            .contains("line 2 is not valid UTF-8"));
        assert!(v[2].1.as_deref().unwrap_or("").contains("longer than"));
        assert!(v[2].0.len() < 100);
        assert_eq!(v[3], ("last".to_string(), None));
    }
}
