//! PLACEHOLDER (local build copy).

/// Arguments of `poolrun compare` (placeholder: accepts anything).
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Arguments (ignored by the placeholder).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Run `poolrun compare` (placeholder: prints "not yet available", exit code 2).
pub fn run(_args: &CompareArgs) -> i32 {
    eprintln!("poolrun: compare: not yet available");
    2
}
