//! The facade tests' helpers: everything comes from `poolrun-testkit` (the one shared test
//! support crate); this file only brings it into scope for `mod common;`.
#![allow(unused_imports)]

pub use poolrun_testkit::tasks::*;
pub use poolrun_testkit::*;
