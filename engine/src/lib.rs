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
//! # The API (what the CLI and the watcher use; the modules are private)
//! - [`Repository`] — open, create, unlock a repository ([`Unlock`], [`FirstSlot`]);
//!   its key slots ([`SlotInfo`], [`SlotId`]: list, add, remove); [`KdfParams`],
//!   [`Keyring`] / [`keyring`]; KMS slots through a [`KeyWrapper`] the program
//!   supplies ([`KmsContext`], [`KmsError`]); key epochs ([`Rotate`],
//!   [`RotateReport`], [`EpochName`]).
//! - [`Folder`] — a directory bound as one device; [`Device`] — a device (also the loose one).
//! - [`push`] / [`PushReport`], [`pull`] / [`PullReport`] — the two directions;
//!   [`UploadOptions`], [`UploadWindow`], [`IgnoreRules`].
//! - [`add_files`], [`remove_paths`] — the hcs3 commands on the loose device.
//! - [`RepoView`] / [`CommitSummary`], [`MergedWalk`] / [`MergedEntry`] / [`Scope`],
//!   [`export_tree`], [`stream_file`] — reading a repository (`ls`, `log`, `get`, `restore`).
//! - [`check`] / [`CheckReport`], [`FolderStatus`] — verification and status.
//! - Partner drops: [`create_drop`] / [`DropToken`], [`push_drop`] (the
//!   partner, PUT only), [`list_drops`], [`find_drop`], [`scan_drop`],
//!   [`pull_drop`], [`remove_drop`] (the owner).
//! - [`store`] — the object-store trait and its back-ends (memory, local, S3, retries).
//! - [`Error`], [`Result`], [`Progress`] / [`Phase`] / [`NoProgress`], ids ([`RepoId`],
//!   [`DeviceId`]), [`RepoPath`], [`Entry`], [`now_millis`], [`system_time`], [`REPO_FORMAT`].
//!
//! With the `testing` feature every internal module is public, for the
//! integration tests and benches.
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
//! use coffer_engine::{Folder, KdfParams, NoProgress, Repository, UploadOptions};
//! use coffer_engine::store::{DynStore, MemoryStore};
//! use std::sync::Arc;
//!
//! let store: DynStore = Arc::new(MemoryStore::new());
//! let repo = Repository::init(store, b"passphrase", KdfParams::MINIMUM, None).await?;
//! let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
//! std::fs::write(src.path().join("hello.txt"), "hello").unwrap();
//!
//! let a = Folder::open(src.path(), repo.id(), "memory://", false)?;
//! coffer_engine::push(&repo, &a, &UploadOptions::default(), &NoProgress).await?;
//! let b = Folder::open(dst.path(), repo.id(), "memory://", false)?;
//! coffer_engine::pull(&repo, &b, &NoProgress).await?;
//! assert_eq!(std::fs::read(dst.path().join("hello.txt")).unwrap(), b"hello");
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

/// Declares the internal modules: crate-private, public only with the
/// `testing` feature (the integration tests, benches and examples that check
/// internals). Everything else goes through the re-exports below.
macro_rules! internal {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(feature = "testing")]
            pub mod $name;
            #[cfg(not(feature = "testing"))]
            pub(crate) mod $name;
        )*
    };
}

// The house, following the data path (see each module's doc): chunk (cutting,
// compressing, buffers), crypto (keys, sealing, key slots, keyring), format
// (every object's bytes), journal (a device's sled journal), sync (push and
// pull), and the entry points.
internal!(
    chunk, crypto, format, journal, sync, check, clock, device, drops, epochs, folder, gc, grants,
    progress, repo, slots, status, unlock
);
pub mod error;
pub mod store; // object stores are an extension point: the trait and its back-ends

// The API the CLI and the watcher use.
pub use check::{CheckReport, check};
pub use crypto::epoch::EpochName;
pub use crypto::epoch::SlotIdentity;
pub use crypto::keyring::{self, Keyring};
pub use crypto::keyslot::KdfParams;
pub use crypto::kms::{Context as KmsContext, KeyWrapper, KmsError};
pub use device::Device;
pub use drops::{
    CloseReason, Closure, DropDevice, DropInfo, DropPullReport, DropPushOptions, DropPushReport,
    DropScan, DropToken, Problem as DropProblem, create_drop, find_drop, list_drops, pull_drop,
    push_drop, remove_drop, scan_drop,
};
pub use epochs::{ReencryptReport, Rotate, RotateReport};
pub use folder::Folder;
pub use format::commit::Entry;
pub use format::id::{DeviceId, RepoId, SlotId};
pub use format::path::{RepoPath, STATE_DIR};
pub use format::version::now_millis;
pub use gc::{PruneOptions, PruneReport, prune};
pub use grants::{Grantee, ManualClock, SweepReport, SystemClock, WallClock};

/// The margin a sweep waits after a mark's grace ([`gc::SAFETY_MS`]).
pub fn gc_safety_ms() -> u64 {
    gc::SAFETY_MS
}
pub use progress::{NoProgress, Phase, Progress};
pub use repo::{Access, FirstSlot, PassphraseSource, REPO_FORMAT, Repository, Unlock};
pub use slots::SlotInfo;
pub use status::{FolderStatus, LastStep, StepOutcome};
pub use sync::pull::export::{ExportReport, export_tree};
pub use sync::pull::merge::{MergedEntry, MergedWalk, Scope};
pub use sync::pull::restore::{stream_file, system_time};
pub use sync::pull::view::{CommitSummary, RepoView};
pub use sync::pull::{PullReport, pull, pull_after_push};
pub use sync::push::loose::{add_files, remove_paths};
pub use sync::push::scan::IgnoreRules;
pub use sync::push::upload::UploadOptions;
pub use sync::push::window::UploadWindow;
pub use sync::push::{PushReport, push, special_notice};

pub use error::{Error, Result, StoreError, Transient};
