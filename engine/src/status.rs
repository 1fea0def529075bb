//! What a folder has not synced yet, and how its last sync went.
//!
//! [`local_changes`] compares the folder with the journal's stat cache, without the
//! network: it is what the next push would send. [`FolderStatus`] adds the outcome
//! of the last sync step; `sync` and `watch` keep it in `.coffer/status.json`
//! (written atomically) so `coffer status DIR` can report it even while a daemon
//! holds the journal.

use crate::error::{Error, Result};
use crate::folder::Folder;
use crate::format::path::{RepoPath, STATE_DIR};
use crate::format::version::now_millis;
use crate::journal::LocalKind;
use crate::sync::pull::merge::is_conflict_copy;
use crate::sync::push::diff::{Diff, DiffItem};
use crate::sync::push::scan::IgnoreRules;
use serde::{Deserialize, Serialize};
use std::path::Path;

const STATUS_FILE: &str = "status.json";

/// Local changes the next push would record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalChanges {
    /// New or changed paths (files, directories, symlinks).
    pub changed: Vec<RepoPath>,
    /// Bytes of the new or changed files (an upper bound of what is queued).
    pub bytes: u64,
    /// Synced paths that are gone.
    pub deleted: Vec<RepoPath>,
    /// Conflict copies present in the folder.
    pub conflicts: Vec<RepoPath>,
    /// Directories left out without a rule (nested synced folders).
    pub excluded: Vec<(RepoPath, crate::sync::push::scan::Excluded)>,
}

/// Compares `folder` with its stat cache.
pub fn local_changes(folder: &Folder) -> Result<LocalChanges> {
    let rules = IgnoreRules::load(folder.root())?;
    let mut diff = Diff::new(folder.root(), rules, folder.journal().clone())?;
    let mut out = LocalChanges::default();
    for item in diff.by_ref() {
        match item? {
            DiffItem::Seen { entry, stat } => {
                if is_conflict_copy(&entry.path) {
                    out.conflicts.push(entry.path.clone());
                }
                if stat.is_some_and(|s| entry.unchanged_since(&s)) {
                    continue;
                }
                if entry.kind == LocalKind::File {
                    out.bytes += entry.size;
                }
                out.changed.push(entry.path);
            }
            DiffItem::Gone { path, .. } => out.deleted.push(path),
        }
    }
    out.deleted.sort();
    out.excluded = diff.take_excluded();
    Ok(out)
}

/// The state of a folder, as `coffer status DIR` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderStatus {
    /// Paths changed locally and not pushed yet.
    pub pending: usize,
    /// Their bytes (files only).
    pub pending_bytes: u64,
    /// Deletions not pushed yet.
    pub pending_deletes: usize,
    /// Conflict copies in the folder.
    pub conflicts: Vec<String>,
    /// When the last sync step succeeded (Unix ms).
    pub last_sync_ms: Option<u64>,
    /// The last failure, if the last step failed.
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    /// When this status was taken (Unix ms).
    pub taken_ms: u64,
    /// Directories left out of the folder without a rule, with why.
    #[serde(default)]
    pub excluded: Vec<String>,
}

impl FolderStatus {
    /// The local half of the status, now.
    pub fn local(folder: &Folder) -> Result<FolderStatus> {
        let c = local_changes(folder)?;
        Ok(FolderStatus {
            pending: c.changed.len(),
            pending_bytes: c.bytes,
            pending_deletes: c.deleted.len(),
            conflicts: c.conflicts.iter().map(|p| p.to_string()).collect(),
            excluded: c
                .excluded
                .iter()
                .map(|(p, why)| crate::sync::push::excluded_notice(p, *why))
                .collect(),
            taken_ms: now_millis(),
            ..FolderStatus::default()
        })
    }

    /// Records the outcome of a sync step (`error`: why it failed) in
    /// `.coffer/status.json`, with the local changes as they are now.
    pub fn record_step(folder: &Folder, error: Option<String>) -> Result<FolderStatus> {
        let before = Self::read(folder.root()).unwrap_or_default();
        let mut status = Self::local(folder)?;
        let now = status.taken_ms;
        match error {
            None => {
                status.last_sync_ms = Some(now);
            }
            Some(e) => {
                status.last_sync_ms = before.last_sync_ms;
                status.last_error = Some(e);
                status.last_error_ms = Some(now);
            }
        }
        Self::write(folder, &status)?;
        Ok(status)
    }

    /// Refreshes the local half of `.coffer/status.json` (changes journaled while
    /// no step finishes, e.g. while one waits on an unreachable store), keeping
    /// what the last step recorded.
    pub fn record_local(folder: &Folder) -> Result<FolderStatus> {
        let before = Self::read(folder.root()).unwrap_or_default();
        let status = FolderStatus {
            last_sync_ms: before.last_sync_ms,
            last_error: before.last_error,
            last_error_ms: before.last_error_ms,
            ..Self::local(folder)?
        };
        Self::write(folder, &status)?;
        Ok(status)
    }

    fn write(folder: &Folder, status: &FolderStatus) -> Result<()> {
        let dir = folder.root().join(STATE_DIR);
        let tmp = dir.join(format!("{STATUS_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(status)
            .map_err(|e| Error::Internal(format!("cannot encode the status: {e}")))?;
        std::fs::write(&tmp, json).map_err(|e| Error::io(&tmp, e))?;
        let file = dir.join(STATUS_FILE);
        std::fs::rename(&tmp, &file).map_err(|e| Error::io(&file, e))?;
        Ok(())
    }

    /// The status the last sync step recorded, if any.
    pub fn read(root: &Path) -> Option<FolderStatus> {
        let bytes = std::fs::read(root.join(STATE_DIR).join(STATUS_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}
