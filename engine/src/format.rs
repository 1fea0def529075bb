//! Everything that is bytes in a store and specified in `engine/DESIGN.md`: ids,
//! paths, version vectors and clocks, packs, commits, checkpoints and the
//! repository config. The golden-fixture tests (`engine/tests/it/golden.rs`)
//! keep every format readable.

pub mod checkpoint;
pub mod commit;
pub mod config;
pub mod id;
pub mod pack;
pub mod path;
pub mod version;
