//! PLACEHOLDER for `poolrun demo` (helper "shm" replaces this file with the real demos).

/// Arguments of `poolrun demo` (placeholder: accepts anything).
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Arguments (ignored by the placeholder).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Run `poolrun demo` (placeholder: prints "not yet available", exit code 2).
pub fn run(_args: &DemoArgs) -> i32 {
    eprintln!("poolrun: demo: not yet available");
    2
}
