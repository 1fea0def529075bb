//! Support for coffer's integration tests: deterministic trees and their exact
//! comparison, and a sandboxed environment to run the real binary in.
//!
//! Test-support code: a failed `unwrap` here is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod env;
pub mod proxy;
pub mod s3;
pub mod tree;
