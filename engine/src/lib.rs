//! coffer's engine: encrypted, deduplicated folder sync through object stores.
//!
//! # Core types
//! - [`store::ObjectStore`] — a flat namespace of immutable objects ([`store::MemoryStore`],
//!   [`store::LocalStore`]; the S3 store lives in the binary's store stack).
//! - [`repo::Repository`] — a store plus its config and unlocked [`crypto::Keys`].
//! - [`folder::Folder`] — a local directory bound to a repository as one device, with
//!   its sled [`journal::Journal`].
//! - [`commit::Commit`] — what a device appends to its log: new packs and versions.
//! - [`merge`] — the pure function from all versions to one folder state.
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
//! use coffer_engine::{repo::Repository, store::{DynStore, MemoryStore}, upload::UploadOptions};
//! use std::sync::Arc;
//!
//! let store: DynStore = Arc::new(MemoryStore::new());
//! let repo = Repository::init(store, b"passphrase", KdfParams::MINIMUM, None).await?;
//! let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
//! std::fs::write(src.path().join("hello.txt"), "hello").unwrap();
//!
//! let a = Folder::open(src.path(), repo.id(), "memory://", false)?;
//! coffer_engine::push::push(&repo, &a, &UploadOptions::default(), &NoProgress).await?;
//! let b = Folder::open(dst.path(), repo.id(), "memory://", false)?;
//! coffer_engine::apply::pull(&repo, &b, &NoProgress).await?;
//! assert_eq!(std::fs::read(dst.path().join("hello.txt")).unwrap(), b"hello");
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod apply;
pub mod buffers;
pub mod check;
pub mod checkpoint;
pub mod chunker;
pub mod clock;
pub mod codec;
pub mod commit;
pub mod config;
pub mod crypto;
pub mod device;
pub mod diff;
pub mod error;
pub mod export;
pub mod folder;
pub mod id;
pub mod join;
pub mod journal;
pub mod keyring;
pub mod logs;
pub mod loose;
pub mod merge;
pub mod pack;
pub mod path;
pub mod progress;
pub mod push;
pub mod repo;
pub mod restore;
pub mod rootfs;
pub mod scan;
pub mod status;
pub mod store;
pub mod upload;
pub mod version;
pub mod view;
pub mod window;

pub use error::{Error, Result, StoreError};
