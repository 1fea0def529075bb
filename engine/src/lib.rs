//! coffer's engine: encrypted, deduplicated folder sync through object stores.
//!
//! # The map of the house
//! The modules follow the data path:
//! - [`sync::push`] — a push: [`sync::push::scan`] walks the folder,
//!   [`sync::push::diff`] compares it with the stat cache, [`sync::push::upload`]
//!   runs the pipeline ([`chunk`]: FastCDC cut, zstd; [`crypto`]: keyed BLAKE3
//!   ids, XChaCha20-Poly1305 seal; [`format::pack`]) under an adaptive
//!   [`sync::push::window`]; [`device::Device`] writes the commit.
//! - [`sync::pull`] — a pull: [`sync::pull::logs`] fetches and verifies every
//!   device's log, [`sync::pull::merge`] resolves the versions,
//!   [`sync::pull::restore`] writes verified files through
//!   [`sync::pull::rootfs::RootFs`]; [`sync::pull::export`] and
//!   [`sync::pull::view`] serve `get`, `ls`, `log` and `restore --at`.
//! - [`format`](mod@format) — every object's bytes ([`format::commit::Commit`],
//!   [`format::checkpoint`], [`format::config`], ids, paths, version vectors).
//! - [`store::ObjectStore`] — a flat namespace of immutable objects
//!   ([`store::MemoryStore`], [`store::LocalStore`], [`store::s3`], retries).
//! - [`journal::Journal`] — a device's sled journal.
//! - Entry points: [`repo::Repository`] (a store plus its config and unlocked
//!   [`crypto::Keys`]), [`folder::Folder`] (a directory bound as one device),
//!   [`device::Device`], [`check`], [`status`], [`clock`], [`error`], [`progress`].
//!
//! # Data flow
//! ```text
//! push:  scan (stat cache) → chunker → keyed BLAKE3 id → dedup → zstd? → seal → pack
//!        → store (data/..) → commit (log/<device>/<seq>) → journal
//! pull:  list log/ → fetch + verify commits → journal (index, versions) → merge
//!        → restore (packs → verified blobs → temp files → rename) → folder
//! ```
//! The byte-level format is specified in `engine/DESIGN.md`.
//!
//! # Example
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> coffer_engine::Result<()> {
//! use coffer_engine::{crypto::keyslot::KdfParams, folder::Folder, progress::NoProgress};
//! use coffer_engine::{repo::Repository, store::{DynStore, MemoryStore}, sync::push::upload::UploadOptions};
//! use std::sync::Arc;
//!
//! let store: DynStore = Arc::new(MemoryStore::new());
//! let repo = Repository::init(store, b"passphrase", KdfParams::MINIMUM, None).await?;
//! let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
//! std::fs::write(src.path().join("hello.txt"), "hello").unwrap();
//!
//! let a = Folder::open(src.path(), repo.id(), "memory://", false)?;
//! coffer_engine::sync::push::push(&repo, &a, &UploadOptions::default(), &NoProgress).await?;
//! let b = Folder::open(dst.path(), repo.id(), "memory://", false)?;
//! coffer_engine::sync::pull::pull(&repo, &b, &NoProgress).await?;
//! assert_eq!(std::fs::read(dst.path().join("hello.txt")).unwrap(), b"hello");
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

// The house, following the data path (see each module's doc):
pub mod chunk; // cutting files into chunks, compressing them, buffers
pub mod crypto; // keys, sealing, ids' keyed derivation, key slots, the keyring
pub mod format; // every object in the store and its bytes (DESIGN.md)
pub mod journal; // the sled journal of a device
pub mod store; // object stores: memory, local directory, S3, retries
pub mod sync; // push (folder → store) and pull (store → folder)

// Entry points.
pub mod check;
pub mod clock;
pub mod device;
pub mod error;
pub mod folder;
pub mod progress;
pub mod repo;
pub mod status;

pub use error::{Error, Result, StoreError};
