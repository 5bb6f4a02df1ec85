//! The bodies of poolrun's fuzz targets, as plain functions so that stable Rust can replay
//! the corpus in ordinary tests (`tests/fault_fuzz_codec.rs` at the root and
//! `crates/cli/tests/fuzz_replay_cli.rs` include these files by path).

pub mod cli_args;
pub mod codec_decode;
