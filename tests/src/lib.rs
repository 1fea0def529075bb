//! Support for coffer's integration tests: deterministic trees and their exact
//! comparison, a sandboxed environment to run the real binary in, and the
//! external tools (headless browser, Prometheus parser) some tests drive, and the
//! S3 (Garage) and KMS (moto) servers they reach.
//!
//! Test-support code: a failed `unwrap` here is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod env;
pub mod http;
pub mod kms;
pub mod proxy;
pub mod s3;
pub mod tools;
pub mod tree;
