//! Run a `poolrun` binary (the CLI, or a program embedding it) with a deadline and capture
//! what it printed. The binary path is the caller's: `env!("CARGO_BIN_EXE_poolrun")` exists
//! only inside the CLI crate's own tests.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished run produced.
#[derive(Debug)]
pub struct Out {
    /// The exit status (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Out {
    /// Standard output, line by line.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// `bin args` with stdout and stderr piped and `RUST_BACKTRACE` unset.
pub fn cmd(bin: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Read a pipe to its end on a thread.
fn reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Wait for `child` at most `limit`; kill it (and fail the test) if it takes longer.
pub fn wait_deadline(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.code(),
            Ok(None) => {}
            Err(e) => panic!("wait failed: {e}"),
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{:?} did not finish within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Run `c` with `stdin` bytes (None: /dev/null), at most `limit`.
pub fn run_command(mut c: Command, stdin: Option<&[u8]>, limit: Duration) -> Out {
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().expect("spawn the binary under test");
    let out = reader(child.stdout.take().expect("stdout"));
    let err = reader(child.stderr.take().expect("stderr"));
    if let Some(data) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        // Write on a thread: the binary reads lazily, so a big input must not block us.
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    let code = wait_deadline(&mut child, limit);
    let stdout = String::from_utf8_lossy(&out.join().expect("stdout reader")).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().expect("stderr reader")).into_owned();
    Out {
        code,
        stdout,
        stderr,
    }
}

/// Assert nothing in stderr looks like a panic or a backtrace.
pub fn assert_no_panic(o: &Out) {
    assert!(
        !o.stderr.contains("panicked") && !o.stderr.contains("RUST_BACKTRACE"),
        "stderr shows a panic: {}",
        o.stderr
    );
}
