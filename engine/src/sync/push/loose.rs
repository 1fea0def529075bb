//! Files added to and removed from a repository one by one, outside any synced
//! folder — `coffer add` and `coffer rm`, the hcs3-style commands — through the
//! machine's loose [`Device`].
//!
//! An added file supersedes every current version of its path (its base is the join
//! of them all), so re-adding a name replaces it instead of making a conflict; the
//! same holds for removal. Adding content identical to the current version writes
//! nothing.

use crate::device::{Device, PendingChange, StatUpdate};
use crate::error::{Error, Result};
use crate::format::commit::{Entry, FileEntry};
use crate::format::path::RepoPath;
use crate::format::version::VersionVector;
use crate::journal::Journal;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::sync::pull::merge;
use crate::sync::push::same_state;
use crate::sync::push::scan::LocalEntry;
use crate::sync::push::upload::{self, FileOutcome, FileTask, UploadOptions, UploadStats};
use std::path::PathBuf;

/// What `add` did.
#[derive(Debug, Default)]
pub struct AddReport {
    /// Paths that got a new version.
    pub added: Vec<RepoPath>,
    /// Paths whose content was already current.
    pub unchanged: Vec<RepoPath>,
    pub commit: Option<u64>,
    pub upload: UploadStats,
    /// Logs of other devices that could not be read (the add still happened).
    pub warnings: Vec<String>,
}

/// The join of every current version of `path`: what a replacing change must dominate.
fn current_vv(journal: &Journal, path: &RepoPath) -> Result<VersionVector> {
    Ok(journal
        .versions(path)?
        .iter()
        .fold(VersionVector::new(), |acc, v| acc.join(&v.vv)))
}

async fn refresh(
    repo: &Repository,
    device: &Device,
    progress: &dyn Progress,
) -> Result<Vec<String>> {
    repo.check_writable()?;
    let fetched = device.refresh(repo, progress).await?;
    Ok(fetched.errors.iter().map(|e| e.to_string()).collect())
}

/// Uploads each local file under its repository path, as one commit.
pub async fn add_files(
    repo: &Repository,
    device: &Device,
    files: Vec<(RepoPath, PathBuf)>,
    opts: &UploadOptions,
    progress: &dyn Progress,
) -> Result<AddReport> {
    let mut report = AddReport {
        warnings: refresh(repo, device, progress).await?,
        ..AddReport::default()
    };
    let tasks = files
        .into_iter()
        .map(|(path, fs_path)| file_task(device.journal(), path, fs_path))
        .collect::<Result<Vec<_>>>()?;
    let journal = device.journal();
    let (outcomes, stats) = upload::upload_files(
        repo.keys().clone(),
        repo.chunker().clone(),
        repo.store().clone(),
        journal,
        tasks.clone(),
        opts,
        progress,
    )
    .await?;
    report.upload = stats;
    let mut pending = Vec::new();
    for (task, outcome) in tasks.into_iter().zip(outcomes) {
        let (chunks, size, after) = match outcome {
            FileOutcome::Done {
                chunks,
                size,
                after,
            } => (chunks, size, after),
            FileOutcome::Failed(why) => return Err(Error::Config(why)),
        };
        let entry = Entry::File(FileEntry {
            size,
            mode: after.mode,
            mtime_ns: after.mtime_ns,
            chunks,
        });
        let current = merge::resolve(&journal.versions(&task.path)?);
        if current.is_some_and(|r| same_state(&r.entry, &entry)) {
            report.unchanged.push(task.path);
            continue;
        }
        pending.push(PendingChange {
            base: current_vv(journal, &task.path)?,
            path: task.path.clone(),
            entry,
            stat: StatUpdate::None,
        });
        report.added.push(task.path);
    }
    if !pending.is_empty() {
        report.commit = Some(device.commit(repo, pending).await?);
    }
    Ok(report)
}

/// What to upload for the local file `fs_path`, to be stored as `path`.
fn file_task(
    journal: &crate::journal::Journal,
    path: RepoPath,
    fs_path: PathBuf,
) -> Result<FileTask> {
    let not_a_file = || Error::Config(format!("{}: not a regular file", fs_path.display()));
    let meta = std::fs::metadata(&fs_path).map_err(|e| Error::io(&fs_path, e))?;
    if !meta.is_file() {
        return Err(not_a_file());
    }
    let before = LocalEntry::from_metadata(path.clone(), &meta).ok_or_else(not_a_file)?;
    let previous = match merge::resolve(&journal.versions(&path)?) {
        Some(r) => match &r.entry {
            Entry::File(f) => journal.chunk_ends(&f.chunks)?,
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    Ok(FileTask {
        path,
        fs_path,
        before,
        previous,
    })
}

/// Removes files (or symlinks) from the repository, as one commit.
pub async fn remove_paths(
    repo: &Repository,
    device: &Device,
    paths: &[RepoPath],
    progress: &dyn Progress,
) -> Result<u64> {
    refresh(repo, device, progress).await?;
    let journal = device.journal();
    let mut pending = Vec::new();
    for path in paths {
        match merge::resolve(&journal.versions(path)?) {
            None => return Err(Error::NotFound(path.display())),
            Some(r) if matches!(r.entry, Entry::Dir { .. }) => {
                return Err(Error::Config(format!(
                    "{path} is a directory; only files can be removed"
                )));
            }
            Some(_) => pending.push(PendingChange {
                base: current_vv(journal, path)?,
                path: path.clone(),
                entry: Entry::Deleted,
                stat: StatUpdate::None,
            }),
        }
    }
    device.commit(repo, pending).await
}
