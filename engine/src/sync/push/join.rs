//! A folder that joins a repository with files of its own: a folder bound for
//! the first time over existing files, or one whose journal was lost (`rm -rf
//! DIR/.coffer`, a restored backup of the files alone).
//!
//! Such a folder has synced nothing yet, so its files are not edits of what the
//! repository holds: pushing them as new versions would make a stale copy win
//! over another device's newer edit and bring back files other devices deleted.
//! Instead, on that first push: a file identical to the repository's version (by
//! keyed chunk ids) is in sync (adopted, see `push::decide`); a file or symlink
//! that differs, or whose path the repository deleted, is renamed to a conflict
//! copy and pushed under that name, so the repository's version (or deletion)
//! stays under the name and the next pull writes it. One summary line says what
//! happened.

use crate::device::PendingChange;
use crate::error::{Error, Result};
use crate::folder::Folder;
use crate::format::version::{Hlc, now_millis};
use crate::journal::Journal;
use crate::sync::pull::merge;

/// Whether `journal`'s folder has never pushed nor pulled: its first push joins.
pub fn is_joining(journal: &Journal) -> Result<bool> {
    Ok(journal.meta_get::<u64>("last_push_ms")?.is_none()
        && journal.meta_get::<u64>("last_pull_ms")?.is_none())
}

/// Turns the new local versions of `pending` whose path the repository already
/// has (with other content, or deleted) into conflict copies: the local entry
/// is renamed and its change moved to the new name. Returns how many were.
pub fn divert(folder: &Folder, pending: &mut [PendingChange]) -> Result<usize> {
    let journal = folder.journal();
    let device = folder.device().id();
    let mut diverted = 0;
    for p in pending.iter_mut() {
        if !p.base.is_empty()
            || p.entry.is_deleted()
            || matches!(p.entry, crate::format::commit::Entry::Dir { .. })
        {
            continue;
        }
        if journal.versions(&p.path)?.is_empty() {
            continue; // new to the repository too (a deleted path keeps its tombstone)
        }
        let hlc = Hlc::from_parts(now_millis(), 0);
        let Some(copy) = merge::conflict_name(&p.path, hlc, &device, None) else {
            continue;
        };
        let root = folder.root();
        let (from, to) = (p.path.to_fs_path(root)?, copy.to_fs_path(root)?);
        if std::fs::symlink_metadata(&to).is_ok() {
            continue; // an earlier copy of the same second: pushed as is
        }
        std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
        p.path = copy;
        diverted += 1;
    }
    Ok(diverted)
}
