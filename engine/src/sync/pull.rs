//! `pull`: the repository's merged state written into a folder.
//!
//! For every path of the merged view, the folder is brought to the merged entry
//! unless the local entry changed since it was last synced — a local change is
//! never overwritten or deleted (the next push makes it a version, and the merge a
//! conflict copy if needed). Directories are created first, files are written
//! through temp files and renamed, deletions run deepest first, and directory
//! modes and times are set last (so read-only directories can be filled).
//! Every file-system operation goes through the folder's [`RootFs`]: nothing
//! below the folder is reached through a symlink, and an operation under a
//! symlinked ancestor fails with "parent X is a symlink".

pub mod export;
pub mod logs;
pub mod merge;
pub mod restore;
pub mod rootfs;
pub mod view;

use crate::error::{Error, Result};
use crate::folder::Folder;
use crate::format::commit::Entry;
use crate::format::path::RepoPath;
use crate::format::version::now_millis;
use crate::journal::{Journal, LocalKind, StatEntry};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::sync::pull::merge::{MergedEntry, MergedWalk, Scope};
use crate::sync::pull::restore::{FileJob, Guard};
use crate::sync::pull::rootfs::RootFs;
use crate::sync::push::scan::LocalEntry;

/// What a pull did.
#[derive(Debug, Default)]
pub struct PullReport {
    /// Commits read from the store and applied (this device's own included).
    pub commits: usize,
    pub files_written: usize,
    pub bytes_written: u64,
    pub dirs_created: usize,
    pub deleted: usize,
    /// Conflict copies written.
    pub conflict_copies: usize,
    /// Each conflict copy written and the path it is a copy of.
    pub conflicts: Vec<(RepoPath, RepoPath)>,
    /// Local changes that were kept instead of being overwritten or deleted.
    pub kept_local: Vec<String>,
    /// Failures (corrupt data, unsafe paths, I/O); the command fails if any.
    pub errors: Vec<String>,
    /// Logs of other devices that could not be read to their end (damage or
    /// tampering in the store); what could be read was applied.
    pub damaged: Vec<String>,
}

/// Files written per batch of a pull: what a pull holds in memory per file
/// (the job, its temp file, where its chunks are) is bounded by this.
pub const WRITE_BATCH_FILES: usize = 8192;

/// Fetches new commits and applies the merged state to `folder`.
pub async fn pull(
    repo: &Repository,
    folder: &Folder,
    progress: &dyn Progress,
) -> Result<PullReport> {
    pull_with(repo, folder, progress, Fetch::All).await
}

/// [`pull`] right after `pushed`, a [`crate::push`] of the same folder by
/// this process. The push began by fetching every new commit: if it wrote
/// none, the merged state it fetched is applied as is; if it did, only the
/// logs are fetched again (not the key epochs). A step that finds nothing new
/// then costs two LISTs in all (`DESIGN.md` §6b); what another device
/// commits meanwhile is applied by the next step.
pub async fn pull_after_push(
    repo: &Repository,
    folder: &Folder,
    pushed: &crate::PushReport,
    progress: &dyn Progress,
) -> Result<PullReport> {
    let fetch = match pushed.commits {
        0 => Fetch::Nothing,
        _ => Fetch::Logs,
    };
    pull_with(repo, folder, progress, fetch).await
}

/// What a pull fetches before it applies the merged state.
enum Fetch {
    /// Key epochs and logs ([`Device::refresh`](crate::Device::refresh)).
    All,
    /// Logs only.
    Logs,
    /// Nothing: the journal is as current as the caller needs.
    Nothing,
}

async fn pull_with(
    repo: &Repository,
    folder: &Folder,
    progress: &dyn Progress,
    fetch: Fetch,
) -> Result<PullReport> {
    folder.check_config(repo.config())?;
    let journal = folder.journal();
    let device = folder.device();
    let fetched = match fetch {
        Fetch::All => device.refresh(repo, progress).await?,
        Fetch::Logs => device.refresh_logs(repo, progress).await?,
        Fetch::Nothing => crate::sync::pull::logs::Fetched::default(),
    };
    let mut report = PullReport {
        commits: fetched.commits,
        damaged: fetched
            .errors
            .iter()
            .map(crate::sync::pull::logs::describe_damage)
            .collect(),
        ..PullReport::default()
    };
    apply(repo, folder, progress, &mut report).await?;
    journal.meta_put("last_pull_ms", &now_millis())?;
    journal.flush_async().await?;
    Ok(report)
}

/// Brings `folder` to the merged state of its journal, streaming it
/// ([`MergedWalk`]): first what the merged state no longer has is removed
/// (children before parents), then each path is brought up to date in path
/// order — directories and symlinks at once, files in batches of
/// [`WRITE_BATCH_FILES`] — and last the directories get their modes and times
/// (children before parents). Memory does not grow with the folder.
pub async fn apply(
    repo: &Repository,
    folder: &Folder,
    progress: &dyn Progress,
    report: &mut PullReport,
) -> Result<()> {
    let journal = folder.journal();
    let root = folder.fs();
    delete_gone(root, journal, report)?;
    let mut batch: Vec<(FileJob, MergedEntry)> = Vec::new();
    let walk = MergedWalk::new(journal);
    for item in walk {
        let (path, m) = item?;
        if path.in_state_dir() {
            // Uploaded by a coffer that did not leave nested folders' state out:
            // never written (it would make this folder another device's copy).
            continue;
        }
        let stat = journal.stat_get(&path)?;
        let res = match &m.entry {
            Entry::Dir { .. } => apply_dir(root, journal, &path, &m, stat.as_ref(), report),
            Entry::File(f) => plan_file(root, &path, f, &m, stat.as_ref(), report).map(|job| {
                if let Some(job) = job {
                    batch.push((job, m.clone()));
                }
            }),
            Entry::Symlink { target, .. } => apply_symlink(
                (root, folder.tmp()),
                journal,
                &path,
                &m,
                target,
                stat.as_ref(),
                report,
            ),
            Entry::Deleted => Ok(()),
        };
        if let Err(e) = res {
            report.errors.push(e.to_string());
        }
        if batch.len() >= WRITE_BATCH_FILES {
            write_batch(repo, folder, std::mem::take(&mut batch), progress, report).await?;
        }
    }
    write_batch(repo, folder, batch, progress, report).await?;
    finish_dirs(root, journal, report)?;
    Ok(())
}

/// Writes one batch of files and records what was written.
async fn write_batch(
    repo: &Repository,
    folder: &Folder,
    batch: Vec<(FileJob, MergedEntry)>,
    progress: &dyn Progress,
    report: &mut PullReport,
) -> Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let journal = folder.journal();
    let (jobs, entries): (Vec<FileJob>, Vec<MergedEntry>) = batch.into_iter().unzip();
    let paths: Vec<RepoPath> = jobs.iter().map(|j| j.path.clone()).collect();
    let results =
        restore::write_files(repo, journal, jobs, folder.fs(), folder.tmp(), progress).await;
    for ((path, m), res) in paths.iter().zip(entries).zip(results) {
        match res {
            Ok(local) => {
                report.files_written += 1;
                report.bytes_written += local.size;
                if let Some(of) = &m.conflict_of {
                    // A new local file: the next push makes it a real version.
                    report.conflict_copies += 1;
                    report.conflicts.push((path.clone(), of.clone()));
                } else if let Entry::File(f) = &m.entry {
                    journal.stat_put(path, &stat_of(&local, f.chunks.clone(), &m))?;
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    Ok(())
}

fn stat_of(
    local: &LocalEntry,
    chunks: Vec<crate::format::id::ChunkId>,
    m: &MergedEntry,
) -> StatEntry {
    StatEntry {
        kind: local.kind,
        size: local.size,
        mtime_ns: local.mtime_ns,
        ctime_ns: local.ctime_ns,
        ino: local.ino,
        mode: local.mode,
        chunks,
        synced: m.vv.clone(),
    }
}

/// Whether the local entry is exactly what was last synced.
fn untouched(local: &Option<LocalEntry>, stat: Option<&StatEntry>) -> bool {
    match (local, stat) {
        (Some(l), Some(s)) => l.unchanged_since(s),
        (None, None) => true,
        _ => false,
    }
}

/// Decides whether a file must be written and under which guard.
fn plan_file(
    root: &RootFs,
    path: &RepoPath,
    file: &crate::format::commit::FileEntry,
    m: &MergedEntry,
    stat: Option<&StatEntry>,
    report: &mut PullReport,
) -> Result<Option<FileJob>> {
    let local = root.lstat(path)?;
    if let Some(s) = stat
        && s.synced == m.vv
    {
        return Ok(None); // up to date, or a local change that the next push sends
    }
    if m.conflict_of.is_some() && local.is_some() {
        return Ok(None); // already written here; the next push makes it real
    }
    let guard = match (&local, stat) {
        (None, _) => Guard::Absent,
        (Some(_), Some(s)) if untouched(&local, Some(s)) && s.kind != LocalKind::Dir => {
            // The synced file, or a synced symlink the file replaces (renamed over it).
            Guard::Unchanged(s.clone())
        }
        (Some(l), _) => {
            if !(l.kind == LocalKind::Dir && replace_empty_dir(root, path, stat)?) {
                report
                    .kept_local
                    .push(format!("{path}: changed locally; not overwritten"));
                return Ok(None);
            }
            Guard::Absent
        }
    };
    root.ensure_parents(path)?;
    Ok(Some(FileJob {
        path: path.clone(),
        dest: path.clone(),
        entry: file.clone(),
        guard,
    }))
}

/// Whether `local`, a directory, is the one last synced at its path: its mode
/// is (its times change whenever an entry below it does).
fn synced_dir(local: &LocalEntry, stat: Option<&StatEntry>) -> bool {
    stat.is_some_and(|s| s.kind == LocalKind::Dir && s.mode == local.mode)
}

/// A synced, empty directory may give way to a file of the same name.
fn replace_empty_dir(root: &RootFs, path: &RepoPath, stat: Option<&StatEntry>) -> Result<bool> {
    if stat.is_none_or(|s| s.kind != LocalKind::Dir) {
        return Ok(false);
    }
    Ok(root.remove_dir(path).unwrap_or(false))
}

fn apply_dir(
    root: &RootFs,
    journal: &Journal,
    path: &RepoPath,
    m: &MergedEntry,
    stat: Option<&StatEntry>,
    report: &mut PullReport,
) -> Result<()> {
    let local = root.lstat(path)?;
    match &local {
        Some(l) if l.kind == LocalKind::Dir => {
            if stat.is_some_and(|s| s.kind == LocalKind::Dir && s.mode != l.mode) {
                // A local chmod not pushed yet: the next push sends it.
                report
                    .kept_local
                    .push(format!("{path}: mode changed locally; kept"));
                return Ok(());
            }
        }
        Some(_) if untouched(&local, stat) => {
            root.remove_file(path)?;
            root.ensure_dir(path)?;
            report.dirs_created += 1;
        }
        Some(_) => {
            report.kept_local.push(format!(
                "{path}: changed locally; not replaced by a directory"
            ));
            return Ok(());
        }
        None => {
            root.ensure_dir(path)?;
            report.dirs_created += 1;
        }
    }
    // A conflict copy that must be a directory is a new local one: the next push
    // makes it real (recorded here, the next pull would find it synced but gone
    // from the merged state, and try to delete it).
    if m.conflict_of.is_none() && stat.is_none_or(|s| s.synced != m.vv) {
        // Recorded now; its final mode and times are recorded by `finish_dirs`.
        let l = root
            .lstat(path)?
            .ok_or_else(|| Error::Internal("directory vanished".into()))?;
        journal.stat_put(path, &stat_of(&l, Vec::new(), m))?;
    }
    Ok(())
}

fn apply_symlink(
    (root, tmp): (&RootFs, &crate::sync::pull::rootfs::TmpDir),
    journal: &Journal,
    path: &RepoPath,
    m: &MergedEntry,
    target: &[u8],
    stat: Option<&StatEntry>,
    report: &mut PullReport,
) -> Result<()> {
    if stat.is_some_and(|s| s.synced == m.vv) {
        return Ok(());
    }
    let local = root.lstat(path)?;
    if m.conflict_of.is_some() && local.is_some() {
        return Ok(()); // already written here; the next push makes it real
    }
    let kept = match &local {
        // A synced directory gives way if it is empty now (what was below it is
        // gone from the merged state and was removed first).
        Some(l) if l.kind == LocalKind::Dir => {
            (!synced_dir(l, stat) || !root.remove_dir(path)?).then_some("not replaced by a symlink")
        }
        Some(_) => {
            let same = root.read_link(path)?.is_some_and(|t| t == target);
            (!same && !untouched(&local, stat)).then_some("not overwritten")
        }
        None => None,
    };
    if let Some(why) = kept {
        report
            .kept_local
            .push(format!("{path}: changed locally; {why}"));
        return Ok(());
    }
    root.ensure_parents(path)?;
    root.symlink(target, path, tmp)?;
    report.files_written += 1;
    if let Some(of) = &m.conflict_of {
        // A new local symlink, like a file's copy: the next push makes it real.
        report.conflict_copies += 1;
        report.conflicts.push((path.clone(), of.clone()));
        return Ok(());
    }
    let l = root
        .lstat(path)?
        .ok_or_else(|| Error::Internal("symlink vanished".into()))?;
    journal.stat_put(path, &stat_of(&l, Vec::new(), m))?;
    Ok(())
}

/// Whether the merged state has `path` (as itself or as a directory made of a
/// blocked file). Virtual conflict copies (files, symlinks or directories) are
/// never recorded in the stat cache, so they need not be asked about.
fn in_merged_state(journal: &Journal, path: &RepoPath) -> Result<bool> {
    Ok(merge::resolve(&journal.versions(path)?).is_some())
}

/// Removes synced entries the merged state no longer has, unless changed
/// locally. The stat cache is read in descending key order, so children go
/// before their parents.
fn delete_gone(root: &RootFs, journal: &Journal, report: &mut PullReport) -> Result<()> {
    for kv in journal.stat_iter_from(&[]).rev() {
        let (key, value) = kv?;
        let path = RepoPath::new(key.to_vec())?;
        if path.in_state_dir() || in_merged_state(journal, &path)? {
            continue;
        }
        let stat = Journal::decode_stat(&value)?;
        let local = root.lstat(&path)?;
        if local.is_none() {
            journal.stat_remove(&path)?;
            continue;
        }
        if !untouched(&local, Some(&stat)) && stat.kind != LocalKind::Dir {
            report
                .kept_local
                .push(format!("{path}: deleted elsewhere but changed here; kept"));
            continue;
        }
        let res = if stat.kind == LocalKind::Dir {
            root.remove_dir(&path)
        } else {
            root.remove_file(&path).map(|()| true)
        };
        match res {
            Ok(true) => {
                journal.stat_remove(&path)?;
                report.deleted += 1;
            }
            Ok(false) => {
                report.kept_local.push(format!(
                    "{path}: deleted elsewhere but holds local files; kept"
                ));
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    Ok(())
}

/// Sets directory modes and times, deepest first, and records them.
fn finish_dirs(root: &RootFs, journal: &Journal, report: &mut PullReport) -> Result<()> {
    for item in merge::dirs_descending(journal, &Scope::all()) {
        let (path, m) = item?;
        let Entry::Dir { mode, mtime_ns } = m.entry else {
            continue;
        };
        if path.in_state_dir() {
            continue;
        }
        let Some(stat) = journal.stat_get(&path)? else {
            continue;
        };
        if stat.synced != m.vv {
            continue; // not ours to set (a kept local entry)
        }
        if let Err(e) = root.set_dir_meta(Some(&path), mode, mtime_ns) {
            report.errors.push(e.to_string());
            continue;
        }
        if let Some(l) = root.lstat(&path)? {
            journal.stat_put(&path, &stat_of(&l, Vec::new(), &m))?;
        }
    }
    Ok(())
}
