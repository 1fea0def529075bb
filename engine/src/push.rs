//! `push`: the folder's current state becomes one commit of its device.
//!
//! 1. Commits left in the outbox by a killed run are written first.
//! 2. New commits of every device are ingested (so this device's seq and the merge
//!    state are current).
//! 3. The folder is scanned; entries whose `lstat` matches the stat cache are skipped
//!    without reading them.
//! 4. Changed files go through the upload pipeline; each result becomes a new
//!    version based on the version the folder last synced — unless it equals the
//!    merged state already (then it is adopted, no version is written).
//! 5. Paths synced before and now gone become tombstones.
//! 6. The commit goes to the outbox (flushed), then to the store, then is ingested.

use crate::commit::{Entry, FileEntry};
use crate::device::{PendingChange, StatUpdate};
use crate::error::{Error, Result};
use crate::folder::Folder;
use crate::id::ChunkId;
use crate::journal::{Journal, LocalKind, StatEntry};
use crate::logs;
use crate::merge;
use crate::path::RepoPath;
use crate::progress::{Phase, Progress};
use crate::repo::Repository;
use crate::scan::{self, IgnoreRules, LocalEntry, ScanOutcome};
use crate::upload::{self, FileOutcome, FileTask, UploadOptions, UploadStats};
use crate::version::{VersionVector, now_millis};
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;

/// What a push did.
#[derive(Debug, Default)]
pub struct PushReport {
    /// Entries found in the folder.
    pub scanned: usize,
    /// Files whose content was read.
    pub files_read: usize,
    /// New versions (including tombstones) in the commit.
    pub changes: usize,
    /// Of which tombstones.
    pub deleted: usize,
    pub upload: UploadStats,
    /// Seq of the commit written, if any.
    pub commit: Option<u64>,
    /// Problems that did not stop the push (unreadable files...). A push with
    /// problems is incomplete: those paths stay pending.
    pub problems: Vec<String>,
}

/// Pushes `folder` as one commit.
pub async fn push(
    repo: &Repository,
    folder: &Folder,
    opts: &UploadOptions,
    progress: &dyn Progress,
) -> Result<PushReport> {
    let journal = folder.journal();
    let mut report = PushReport::default();
    folder.device().flush_outbox(repo).await?;
    let fetched = logs::fetch_latest(repo, journal, &mut |_| {}, progress).await?;
    report
        .problems
        .extend(fetched.errors.iter().map(|e| e.to_string()));

    progress.start(Phase::Scan, None, None);
    let root = folder.root().to_path_buf();
    let rules = IgnoreRules::load(&root)?;
    let scanned = {
        let (root, rules) = (root.clone(), rules.clone());
        tokio::task::spawn_blocking(move || scan::scan(&root, &rules))
            .await
            .map_err(|e| Error::Internal(format!("scan failed: {e}")))??
    };
    progress.finish(Phase::Scan);
    report.scanned = scanned.entries.len();
    report.problems.extend(scanned.problems.iter().cloned());

    let mut pending = Vec::new();
    let mut stat_only = Vec::new();
    let mut tasks = Vec::new();
    for e in &scanned.entries {
        classify(folder, e, &mut pending, &mut stat_only, &mut tasks)?;
    }
    deletions(journal, &scanned, &rules, &mut pending)?;

    report.files_read = tasks.len();
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
    for (task, outcome) in tasks.into_iter().zip(outcomes) {
        match outcome {
            FileOutcome::Done {
                chunks,
                size,
                after,
            } => {
                file_result(
                    journal,
                    task,
                    chunks,
                    size,
                    after,
                    &mut pending,
                    &mut stat_only,
                )?;
            }
            FileOutcome::Failed(why) => report.problems.push(why),
        }
    }
    for (path, stat) in stat_only {
        journal.stat_put(&path, &stat)?;
    }
    report.deleted = pending.iter().filter(|p| p.entry.is_deleted()).count();
    report.changes = pending.len();
    if !pending.is_empty() {
        report.commit = Some(folder.device().commit(repo, pending).await?);
    }
    journal.meta_put("last_push_ms", &now_millis())?;
    journal.flush_async().await?;
    Ok(report)
}

/// Decides what to do with one scanned entry.
fn classify(
    folder: &Folder,
    e: &LocalEntry,
    pending: &mut Vec<PendingChange>,
    stat_only: &mut Vec<(RepoPath, StatEntry)>,
    tasks: &mut Vec<FileTask>,
) -> Result<()> {
    let journal = folder.journal();
    let stat = journal.stat_get(&e.path)?;
    if let Some(s) = &stat
        && e.unchanged_since(s)
    {
        return Ok(());
    }
    match e.kind {
        LocalKind::File => tasks.push(FileTask {
            path: e.path.clone(),
            fs_path: e.path.to_fs_path(folder.root())?,
            before: e.clone(),
            previous: match &stat {
                Some(s) if s.kind == LocalKind::File => journal.chunk_ends(&s.chunks)?,
                _ => Vec::new(),
            },
        }),
        LocalKind::Dir => {
            let entry = Entry::Dir {
                mode: e.mode,
                mtime_ns: e.mtime_ns,
            };
            let unchanged = stat
                .as_ref()
                .is_some_and(|s| s.kind == LocalKind::Dir && s.mode == e.mode);
            decide(
                journal,
                e,
                entry,
                stat,
                Vec::new(),
                unchanged,
                pending,
                stat_only,
            )?;
        }
        LocalKind::Symlink => {
            let fs_path = e.path.to_fs_path(folder.root())?;
            let target = match std::fs::read_link(&fs_path) {
                Ok(t) => t.as_os_str().as_bytes().to_vec(),
                Err(err) => return Err(Error::io(fs_path, err)),
            };
            let entry = Entry::Symlink {
                target,
                mtime_ns: e.mtime_ns,
            };
            decide(
                journal,
                e,
                entry,
                stat,
                Vec::new(),
                false,
                pending,
                stat_only,
            )?;
        }
    }
    Ok(())
}

/// A file was read: decide whether it is a new version.
fn file_result(
    journal: &Journal,
    task: FileTask,
    chunks: Vec<ChunkId>,
    size: u64,
    after: LocalEntry,
    pending: &mut Vec<PendingChange>,
    stat_only: &mut Vec<(RepoPath, StatEntry)>,
) -> Result<()> {
    let stat = journal.stat_get(&task.path)?;
    let entry = Entry::File(FileEntry {
        size,
        mode: after.mode,
        mtime_ns: after.mtime_ns,
        chunks: chunks.clone(),
    });
    let unchanged = stat
        .as_ref()
        .is_some_and(|s| s.kind == LocalKind::File && s.chunks == chunks && s.mode == after.mode);
    decide(
        journal, &after, entry, stat, chunks, unchanged, pending, stat_only,
    )
}

/// New version, adoption of the merged state, or a stat refresh.
#[allow(clippy::too_many_arguments)]
fn decide(
    journal: &Journal,
    local: &LocalEntry,
    entry: Entry,
    stat: Option<StatEntry>,
    chunks: Vec<ChunkId>,
    unchanged: bool,
    pending: &mut Vec<PendingChange>,
    stat_only: &mut Vec<(RepoPath, StatEntry)>,
) -> Result<()> {
    let record = |synced: VersionVector| StatEntry {
        kind: local.kind,
        size: local.size,
        mtime_ns: local.mtime_ns,
        ctime_ns: local.ctime_ns,
        ino: local.ino,
        mode: local.mode,
        chunks: chunks.clone(),
        synced,
    };
    if unchanged && let Some(s) = &stat {
        stat_only.push((local.path.clone(), record(s.synced.clone())));
        return Ok(());
    }
    if let Some(r) = merge::resolve(&journal.versions(&local.path)?)
        && same_state(&r.entry, &entry)
    {
        // The folder already holds the merged state (e.g. a rebuilt journal).
        stat_only.push((local.path.clone(), record(r.vv)));
        return Ok(());
    }
    let base = stat.map(|s| s.synced).unwrap_or_default();
    pending.push(PendingChange {
        path: local.path.clone(),
        base: base.clone(),
        entry,
        stat: StatUpdate::Record(record(base)),
    });
    Ok(())
}

/// Same content and permissions: nothing to commit.
pub(crate) fn same_state(a: &Entry, b: &Entry) -> bool {
    match (a, b) {
        (Entry::File(x), Entry::File(y)) => {
            x.size == y.size && x.chunks == y.chunks && x.mode == y.mode
        }
        (Entry::Dir { .. }, Entry::Dir { .. }) => true,
        _ => a.same_content(b),
    }
}

/// Synced paths that are gone become tombstones.
fn deletions(
    journal: &Journal,
    scanned: &ScanOutcome,
    rules: &IgnoreRules,
    pending: &mut Vec<PendingChange>,
) -> Result<()> {
    let present: HashSet<&RepoPath> = scanned.entries.iter().map(|e| &e.path).collect();
    for (path, stat) in journal.stat_all()? {
        if present.contains(&path)
            || scanned.is_unseen(&path)
            || rules.is_ignored(&path, stat.kind == LocalKind::Dir)
        {
            continue;
        }
        pending.push(PendingChange {
            path,
            base: stat.synced,
            entry: Entry::Deleted,
            stat: StatUpdate::Remove,
        });
    }
    Ok(())
}
