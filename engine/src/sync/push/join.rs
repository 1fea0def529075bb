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
use crate::error::Result;
use crate::folder::Folder;
use crate::format::commit::Entry;
use crate::format::version::{Hlc, now_millis};
use crate::journal::Journal;
use crate::sync::pull::merge;

/// Whether `journal` knows nothing of its folder's files yet (built anew or
/// reset, [`crate::journal::JOINING`]) or its folder has never pushed nor
/// pulled: then its push joins. A pull before it does not end this (it keeps
/// the local files it does not know as "changed locally").
pub fn is_joining(journal: &Journal) -> Result<bool> {
    Ok(journal
        .meta_get::<bool>(crate::journal::JOINING)?
        .unwrap_or(false)
        || (journal.meta_get::<u64>("last_push_ms")?.is_none()
            && journal.meta_get::<u64>("last_pull_ms")?.is_none()))
}

/// Ends joining (after a push completed).
pub fn joined(journal: &Journal) -> Result<()> {
    journal.meta_remove(crate::journal::JOINING)
}

/// Turns the new local versions of `pending` whose path the repository already
/// has (with other content, or deleted) into conflict copies: the local entry
/// is renamed and its change moved to the new name. Returns how many were.
pub fn divert(folder: &Folder, pending: &mut [PendingChange]) -> Result<usize> {
    let journal = folder.journal();
    let device = folder.device().id();
    let mut diverted = 0;
    for p in pending.iter_mut() {
        if !p.base.is_empty() || p.entry.is_deleted() || matches!(p.entry, Entry::Dir { .. }) {
            continue;
        }
        let versions = journal.versions(&p.path)?;
        if versions.is_empty() {
            continue; // new to the repository too (a deleted path keeps its tombstone)
        }
        if merge::resolve(&versions).is_some_and(|r| r.entry.same_content(&p.entry)) {
            continue; // only the mode or times differ: an ordinary change
        }
        if let Some(copy) = keep_as_copy(folder, &p.path, &device)? {
            p.path = copy;
            diverted += 1;
        }
    }
    Ok(diverted)
}

/// Renames the local `path` to a free conflict-copy name (a numbered one if
/// an earlier copy of the same second has the first); `None` if no name fits.
fn keep_as_copy(
    folder: &Folder,
    path: &crate::format::path::RepoPath,
    device: &crate::format::id::DeviceId,
) -> Result<Option<crate::format::path::RepoPath>> {
    let hlc = Hlc::from_parts(now_millis(), 0);
    for n in std::iter::once(None).chain((2..100).map(Some)) {
        let Some(copy) = merge::conflict_name(path, hlc, device, n) else {
            return Ok(None);
        };
        if folder.fs().rename_sibling(path, &copy)? {
            return Ok(Some(copy));
        }
    }
    Ok(None)
}
