//! The `poolrun` binary: the CLI with the built-in tasks.

fn main() {
    std::process::exit(poolrun_cli::main_with(poolrun_cli::Registry::builtin()));
}
