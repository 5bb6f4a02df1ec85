//! Embedding: a program registers its own tasks and runs the whole CLI in-process through
//! `poolrun_cli::run_with_args` (what `main_with` does with the real arguments).

use poolrun_cli::{run_with_args, Registry};

fn double(arg: &str) -> Result<String, String> {
    let n: i64 = arg.parse().map_err(|_| format!("not a number: {arg:?}"))?;
    Ok((n * 2).to_string())
}

fn whoami(_arg: &str) -> Result<String, String> {
    Ok(std::process::id().to_string())
}

fn explode(arg: &str) -> Result<String, String> {
    panic!("boom on {arg}")
}

fn registry() -> Registry {
    let mut r = Registry::builtin();
    r.register("double", "twice ARG", double)
        .expect("register double");
    r.register("whoami", "the pid that runs the task", whoami)
        .expect("register whoami");
    r.register("explode", "panics", explode)
        .expect("register explode");
    r
}

// One test function: `main_with` installs a process-wide registry and signal handlers, so
// the runs must not overlap.
#[test]
fn custom_tasks_run_in_both_modes() {
    for mode in ["thread", "process"] {
        let args = [
            "poolrun",
            "--mode",
            mode,
            "--progress",
            "never",
            "double",
            "1",
            "21",
        ];
        assert_eq!(run_with_args(registry(), args), 0, "{mode}");
        let args = ["poolrun", "--mode", mode, "double", "1", "x"];
        assert_eq!(run_with_args(registry(), args), 1, "{mode}");
        assert_eq!(
            run_with_args(registry(), ["poolrun", "--mode", mode, "whoami", "a"]),
            0
        );
        assert_eq!(
            run_with_args(registry(), ["poolrun", "--mode", mode, "nosuch", "a"]),
            2
        );
        // A panicking task fails only itself (its message is the task's error).
        let args = ["poolrun", "--mode", mode, "explode", "a", "b"];
        assert_eq!(run_with_args(registry(), args), 1, "{mode}");
    }
    assert_eq!(run_with_args(registry(), ["poolrun", "tasks"]), 0);
    assert_eq!(
        run_with_args(registry(), ["poolrun", "-j", "0", "double", "1"]),
        2
    );
}
