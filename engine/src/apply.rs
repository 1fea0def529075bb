//! `pull`: the repository's merged state written into a folder.
//!
//! For every path of the merged view, the folder is brought to the merged entry
//! unless the local entry changed since it was last synced — a local change is
//! never overwritten or deleted (the next push makes it a version, and the merge a
//! conflict copy if needed). Directories are created first, files are written
//! through temp files and renamed, deletions run deepest first, and directory
//! modes and times are set last (so read-only directories can be filled).
//! No write ever goes through a symlink: every parent is checked to be a real
//! directory under the folder root.

use crate::commit::Entry;
use crate::error::{Error, Result};
use crate::folder::Folder;
use crate::journal::{Journal, LocalKind, StatEntry};
use crate::logs;
use crate::merge::{self, MergedEntry};
use crate::path::RepoPath;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::{self, FileJob, Guard, ensure_dir, ensure_parents, writable_parent};
use crate::scan::LocalEntry;
use crate::version::now_millis;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// What a pull did.
#[derive(Debug, Default)]
pub struct PullReport {
    pub files_written: usize,
    pub bytes_written: u64,
    pub dirs_created: usize,
    pub deleted: usize,
    /// Conflict copies written.
    pub conflict_copies: usize,
    /// Local changes that were kept instead of being overwritten or deleted.
    pub kept_local: Vec<String>,
    /// Failures (corrupt data, unsafe paths, I/O); the command fails if any.
    pub errors: Vec<String>,
}

/// Fetches new commits and applies the merged state to `folder`.
pub async fn pull(
    repo: &Repository,
    folder: &Folder,
    progress: &dyn Progress,
) -> Result<PullReport> {
    let journal = folder.journal();
    let fetched = logs::fetch_latest(repo, journal, &mut |_| {}, progress).await?;
    let mut report = PullReport {
        errors: fetched.errors.iter().map(|e| e.to_string()).collect(),
        ..PullReport::default()
    };
    let view = merge::merged_view(journal.all_versions()?);
    apply(repo, folder, &view, progress, &mut report).await?;
    journal.meta_put("last_pull_ms", &now_millis())?;
    journal.flush_async().await?;
    Ok(report)
}

/// Brings `folder` to `view`.
pub async fn apply(
    repo: &Repository,
    folder: &Folder,
    view: &BTreeMap<RepoPath, MergedEntry>,
    progress: &dyn Progress,
    report: &mut PullReport,
) -> Result<()> {
    let journal = folder.journal();
    let root = folder.root();
    let stats: BTreeMap<RepoPath, StatEntry> = journal.stat_all()?.into_iter().collect();
    let mut jobs: Vec<(FileJob, &MergedEntry)> = Vec::new();
    for (path, m) in view {
        let res = match &m.entry {
            Entry::Dir { .. } => apply_dir(root, journal, path, m, stats.get(path), report),
            Entry::File(f) => plan_file(root, path, f, m, stats.get(path), report).map(|job| {
                if let Some(job) = job {
                    jobs.push((job, m));
                }
            }),
            Entry::Symlink { target, .. } => {
                apply_symlink(root, journal, path, m, target, stats.get(path), report)
            }
            Entry::Deleted => Ok(()),
        };
        if let Err(e) = res {
            report.errors.push(e.to_string());
        }
    }
    delete_gone(root, journal, view, &stats, report)?;
    let (jobs, entries): (Vec<FileJob>, Vec<&MergedEntry>) = jobs.into_iter().unzip();
    let paths: Vec<RepoPath> = jobs.iter().map(|j| j.path.clone()).collect();
    let results = restore::write_files(repo, journal, jobs, &folder.tmp_dir(), progress).await;
    for ((path, m), res) in paths.iter().zip(entries).zip(results) {
        match res {
            Ok(local) => {
                report.files_written += 1;
                report.bytes_written += local.size;
                if m.conflict_of.is_some() {
                    // A new local file: the next push makes it a real version.
                    report.conflict_copies += 1;
                } else if let Entry::File(f) = &m.entry {
                    journal.stat_put(path, &stat_of(&local, f.chunks.clone(), m))?;
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    finish_dirs(root, journal, view, report)?;
    Ok(())
}

fn stat_of(local: &LocalEntry, chunks: Vec<crate::id::ChunkId>, m: &MergedEntry) -> StatEntry {
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
    root: &Path,
    path: &RepoPath,
    file: &crate::commit::FileEntry,
    m: &MergedEntry,
    stat: Option<&StatEntry>,
    report: &mut PullReport,
) -> Result<Option<FileJob>> {
    let local = LocalEntry::stat(root, path)?;
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
        (Some(_), Some(s)) if untouched(&local, Some(s)) && s.kind == LocalKind::File => {
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
    ensure_parents(root, path)?;
    Ok(Some(FileJob {
        path: path.clone(),
        dest: path.to_fs_path(root)?,
        entry: file.clone(),
        guard,
    }))
}

/// A synced, empty directory may give way to a file of the same name.
fn replace_empty_dir(root: &Path, path: &RepoPath, stat: Option<&StatEntry>) -> Result<bool> {
    if stat.is_none_or(|s| s.kind != LocalKind::Dir) {
        return Ok(false);
    }
    let fs_path = path.to_fs_path(root)?;
    Ok(fs::remove_dir(&fs_path).is_ok())
}

fn apply_dir(
    root: &Path,
    journal: &Journal,
    path: &RepoPath,
    m: &MergedEntry,
    stat: Option<&StatEntry>,
    report: &mut PullReport,
) -> Result<()> {
    let local = LocalEntry::stat(root, path)?;
    match &local {
        Some(l) if l.kind == LocalKind::Dir => {}
        Some(_) if untouched(&local, stat) => {
            let fs_path = path.to_fs_path(root)?;
            fs::remove_file(&fs_path).map_err(|e| Error::io(&fs_path, e))?;
            ensure_dir(root, path)?;
            report.dirs_created += 1;
        }
        Some(_) => {
            report.kept_local.push(format!(
                "{path}: changed locally; not replaced by a directory"
            ));
            return Ok(());
        }
        None => {
            ensure_dir(root, path)?;
            report.dirs_created += 1;
        }
    }
    if stat.is_none_or(|s| s.synced != m.vv) {
        // Recorded now; its final mode and times are recorded by `finish_dirs`.
        let l = LocalEntry::stat(root, path)?
            .ok_or_else(|| Error::Internal("directory vanished".into()))?;
        journal.stat_put(path, &stat_of(&l, Vec::new(), m))?;
    }
    Ok(())
}

fn apply_symlink(
    root: &Path,
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
    let local = LocalEntry::stat(root, path)?;
    let dest = path.to_fs_path(root)?;
    if local.is_some() {
        let same = fs::read_link(&dest).is_ok_and(|t| t.as_os_str().as_bytes() == target);
        if !same && !untouched(&local, stat) {
            report
                .kept_local
                .push(format!("{path}: changed locally; not overwritten"));
            return Ok(());
        }
    }
    ensure_parents(root, path)?;
    let tmp = root
        .join(crate::path::STATE_DIR)
        .join("tmp")
        .join(format!("{}.link", crate::id::ChunkId::random().to_hex()));
    std::os::unix::fs::symlink(OsStr::from_bytes(target), &tmp).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    let l =
        LocalEntry::stat(root, path)?.ok_or_else(|| Error::Internal("symlink vanished".into()))?;
    journal.stat_put(path, &stat_of(&l, Vec::new(), m))?;
    report.files_written += 1;
    Ok(())
}

/// Removes synced entries the merged state no longer has, unless changed locally.
fn delete_gone(
    root: &Path,
    journal: &Journal,
    view: &BTreeMap<RepoPath, MergedEntry>,
    stats: &BTreeMap<RepoPath, StatEntry>,
    report: &mut PullReport,
) -> Result<()> {
    let mut gone: Vec<(&RepoPath, &StatEntry)> = stats
        .iter()
        .filter(|(p, _)| !view.contains_key(*p))
        .collect();
    gone.sort_by_key(|(p, _)| std::cmp::Reverse(p.depth()));
    for (path, stat) in gone {
        let local = LocalEntry::stat(root, path)?;
        if local.is_none() {
            journal.stat_remove(path)?;
            continue;
        }
        if !untouched(&local, Some(stat)) && stat.kind != LocalKind::Dir {
            report
                .kept_local
                .push(format!("{path}: deleted elsewhere but changed here; kept"));
            continue;
        }
        let fs_path = path.to_fs_path(root)?;
        writable_parent(root, path)?;
        let res = if stat.kind == LocalKind::Dir {
            fs::remove_dir(&fs_path)
        } else {
            fs::remove_file(&fs_path)
        };
        match res {
            Ok(()) => {
                journal.stat_remove(path)?;
                report.deleted += 1;
            }
            Err(_) if stat.kind == LocalKind::Dir => {
                report.kept_local.push(format!(
                    "{path}: deleted elsewhere but holds local files; kept"
                ));
            }
            Err(e) => report.errors.push(Error::io(&fs_path, e).to_string()),
        }
    }
    Ok(())
}

/// Sets directory modes and times, deepest first, and records them.
fn finish_dirs(
    root: &Path,
    journal: &Journal,
    view: &BTreeMap<RepoPath, MergedEntry>,
    report: &mut PullReport,
) -> Result<()> {
    let mut dirs: Vec<(&RepoPath, &MergedEntry)> = view
        .iter()
        .filter(|(_, m)| matches!(m.entry, Entry::Dir { .. }))
        .collect();
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.depth()));
    for (path, m) in dirs {
        let Entry::Dir { mode, mtime_ns } = m.entry else {
            continue;
        };
        let Some(stat) = journal.stat_get(path)? else {
            continue;
        };
        if stat.synced != m.vv {
            continue; // not ours to set (a kept local entry)
        }
        let fs_path = path.to_fs_path(root)?;
        let res = (|| -> std::io::Result<()> {
            if mtime_ns != 0 {
                fs::File::open(&fs_path)?.set_modified(restore::system_time(mtime_ns))?;
            }
            fs::set_permissions(&fs_path, fs::Permissions::from_mode(mode & 0o7777))
        })();
        if let Err(e) = res {
            report.errors.push(Error::io(&fs_path, e).to_string());
            continue;
        }
        if let Some(l) = LocalEntry::stat(root, path)? {
            journal.stat_put(path, &stat_of(&l, Vec::new(), m))?;
        }
    }
    Ok(())
}
