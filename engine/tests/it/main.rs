//! The engine's integration tests, by topic.
// Test code: a failed unwrap is a failed assertion, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod checkpoints;
mod decoders;
mod gc;
mod gc_model;
mod golden;
mod golden_drop;
mod golden_grant;
mod packing;
mod props;
mod stores;
mod vectors;

/// Path of a pinned fixture.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name)
}
