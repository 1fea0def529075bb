//! coffer's integration tests, by topic. They run the real program
//! (`coffer-it`, built from the same library as `coffer`) in sandboxes.
// Test code: a failed unwrap is a failed assertion, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bandwidth;
mod cluster;
mod drops_cli;
mod grants_cli;
mod keys_cli;
mod keys_kms;
mod keys_rotate;
mod local_cli;
mod ops_cli;
mod polling;
mod prune;
mod s3;
mod sync_cli;

mod convergence;
mod crash;
mod identity;
mod ops;
mod safety;
mod tamper;
mod tools_selfcheck;
mod trees;
mod watch_cli;

use coffer_tests::env::Env;

/// The program under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_coffer-it");

/// A fresh sandbox.
pub fn env() -> Env {
    Env::new(BIN)
}

/// `path` as a string argument.
pub fn arg(path: &std::path::Path) -> String {
    path.to_str().expect("test paths are UTF-8").to_string()
}
