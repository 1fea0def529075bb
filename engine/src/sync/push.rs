//! `push`: the folder's current state becomes commits of its device.
//!
//! 1. Commits left in the outbox by a killed run are written first.
//! 2. New commits of every device are ingested (so this device's seq and the merge
//!    state are current).
//! 3. The folder is compared with the stat cache as a stream ([`Diff`]); entries
//!    whose `lstat` matches are skipped without reading them.
//! 4. Changes are taken in batches of at most [`UploadOptions::batch_changes`]
//!    (new or changed entries and deletions). Each batch's changed files go
//!    through the upload pipeline; each result becomes a new version based on the
//!    version the folder last synced — unless it equals the merged state already
//!    (then it is adopted, no version is written). Synced paths that are gone
//!    become tombstones.
//! 5. Each batch becomes one commit: outbox (flushed), then the store, then
//!    ingested. A small push is one commit; a huge one is several, so memory
//!    stays bounded whatever the number of files, and a killed run keeps every
//!    batch committed before it.

pub mod diff;
pub mod join;
pub mod loose;
pub mod scan;
pub mod upload;
pub mod window;

use crate::device::{PendingChange, StatUpdate};
use crate::error::{Error, Result};
use crate::folder::Folder;
use crate::format::commit::{Entry, FileEntry};
use crate::format::id::ChunkId;
use crate::format::path::RepoPath;
use crate::format::version::{VersionVector, now_millis};
use crate::journal::{Journal, LocalKind, StatEntry};
use crate::progress::{Phase, Progress};
use crate::repo::Repository;
use crate::sync::pull::logs;
use crate::sync::pull::merge;
use crate::sync::push::diff::{Diff, DiffItem};
use crate::sync::push::scan::{Excluded, IgnoreRules, LocalEntry};
use crate::sync::push::upload::{FileOutcome, FileTask, UploadOptions, UploadStats};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What a push did.
#[derive(Debug, Default)]
pub struct PushReport {
    /// Entries found in the folder.
    pub scanned: usize,
    /// Files whose content was read.
    pub files_read: usize,
    /// New versions (including tombstones) in the commits.
    pub changes: usize,
    /// Of which tombstones.
    pub deleted: usize,
    pub upload: UploadStats,
    /// Seq of the last commit written, if any.
    pub commit: Option<u64>,
    /// Commits written (one per batch of changes).
    pub commits: usize,
    /// Commits read from the store before pushing (a push first catches up
    /// with the logs, so a pull after it may read none).
    pub commits_read: usize,
    /// Problems that did not stop the push (unreadable files...). A push with
    /// problems is incomplete: those paths stay pending.
    pub problems: Vec<String>,
    /// What the user should know but is not a problem: directories left out of
    /// the folder (a nested synced folder, the store itself), a renewed device.
    pub notices: Vec<String>,
    /// Logs of other devices that could not be read to their end (damage or
    /// tampering in the store); everything else was synced.
    pub damaged: Vec<String>,
    /// Local files kept as conflict copies on joining a repository that had
    /// their paths ([`crate::sync::push::join`]).
    pub joined: usize,
    /// Sockets, FIFOs and devices in the folder (not ignored by a rule), which
    /// are never synced, in walk order ([`special_notice`] tells them).
    pub skipped_special: Vec<RepoPath>,
}

/// Changes of the folder committed together.
#[derive(Debug, Default)]
struct Batch {
    tasks: Vec<FileTask>,
    pending: Vec<PendingChange>,
    /// Stat entries to refresh (content unchanged).
    stat_only: Vec<(RepoPath, StatEntry)>,
    scanned: usize,
    problems: Vec<String>,
    notices: Vec<String>,
    special: Vec<RepoPath>,
    /// The folder has been walked to the end.
    last: bool,
}

impl Batch {
    fn len(&self) -> usize {
        self.tasks.len() + self.pending.len() + self.stat_only.len()
    }
}

/// Pushes `folder` as one commit per batch of changes.
pub async fn push(
    repo: &Repository,
    folder: &Folder,
    opts: &UploadOptions,
    progress: &dyn Progress,
) -> Result<PushReport> {
    folder.check_config(repo.config())?;
    repo.check_writable()?;
    let journal = folder.journal();
    let mut report = PushReport::default();
    let fetched = folder.device().refresh(repo, progress).await?;
    report.damaged = fetched.errors.iter().map(logs::describe_damage).collect();
    report.commits_read = fetched.commits;

    let root = folder.root().to_path_buf();
    let rules = folder_rules(repo, &root)?;
    let mut diff = Diff::new(&root, rules, journal.clone())?;
    let joining = crate::sync::push::join::is_joining(journal)?;
    loop {
        progress.start(Phase::Scan, None, None);
        let (back, batch) = {
            let (root, journal) = (root.clone(), journal.clone());
            let limit = opts.batch_changes.max(1);
            tokio::task::spawn_blocking(move || {
                let batch = fill_batch(&mut diff, &root, &journal, limit);
                (diff, batch)
            })
            .await
            .map_err(|e| Error::Internal(format!("scan failed: {e}")))?
        };
        progress.finish(Phase::Scan);
        diff = back;
        let batch = batch?;
        let last = batch.last;
        push_batch(repo, folder, batch, opts, progress, &mut report, joining).await?;
        if last {
            break;
        }
    }
    if report.joined > 0 {
        report.notices.push(format!(
            "this folder joined a repository that already had {} of its paths with other content (or deleted): the local versions are kept as conflict copies, the repository's stay under the names",
            report.joined
        ));
    }
    crate::sync::push::join::joined(journal)?;
    journal.meta_put("last_push_ms", &now_millis())?;
    journal.flush_async().await?;
    Ok(report)
}

/// Takes changes off `diff` until `limit` of them are queued or the walk ends.
fn fill_batch(diff: &mut Diff, root: &Path, journal: &Journal, limit: usize) -> Result<Batch> {
    let mut b = Batch::default();
    while b.len() < limit {
        match diff.next().transpose()? {
            None => {
                b.last = true;
                break;
            }
            Some(DiffItem::Seen { entry, stat }) => {
                b.scanned += 1;
                classify(root, journal, entry, stat, &mut b)?;
            }
            Some(DiffItem::Gone { path, stat }) => b.pending.push(PendingChange {
                path,
                base: stat.synced,
                entry: Entry::Deleted,
                stat: StatUpdate::Remove,
            }),
        }
    }
    b.problems = diff.take_problems();
    b.special = diff.take_special();
    b.notices = diff
        .take_excluded()
        .into_iter()
        .map(|(path, why)| excluded_notice(&path, why))
        .collect();
    Ok(b)
}

/// The folder's ignore rules, with the repository's store left out if it is
/// a local directory inside the folder (it would upload itself on every push).
pub fn folder_rules(repo: &Repository, root: &Path) -> Result<IgnoreRules> {
    let mut rules = IgnoreRules::load(root)?;
    if let Some(dir) = repo.store().local_dir() {
        rules.exclude_store(dir);
    }
    Ok(rules)
}

/// What a push says about a directory it left out.
pub fn excluded_notice(path: &RepoPath, why: Excluded) -> String {
    match why {
        Excluded::NestedFolder => format!(
            "{path}/ is another synced folder (it has its own .coffer/): left out of this one"
        ),
        Excluded::Store => {
            format!("{path}/ is this repository's store: left out of the folder it stores")
        }
    }
}

/// Special files named by [`special_notice`]; the rest are counted.
const SPECIAL_NAMED: usize = 3;

/// What a push says about the sockets, FIFOs and devices it skipped (`None`
/// if there were none): how many, and the first few by name.
pub fn special_notice(paths: &[RepoPath]) -> Option<String> {
    let first = paths.first()?;
    let mut names = first.to_string();
    for p in paths.iter().take(SPECIAL_NAMED).skip(1) {
        names.push_str(", ");
        names.push_str(&p.to_string());
    }
    if paths.len() > SPECIAL_NAMED {
        names.push_str(&format!(" and {} more", paths.len() - SPECIAL_NAMED));
    }
    Some(format!(
        "skipped {} special file(s) (FIFO, socket or device), which are never synced: {names}",
        paths.len()
    ))
}

/// Uploads one batch's files and commits its changes.
async fn push_batch(
    repo: &Repository,
    folder: &Folder,
    batch: Batch,
    opts: &UploadOptions,
    progress: &dyn Progress,
    report: &mut PushReport,
    joining: bool,
) -> Result<()> {
    let journal = folder.journal();
    let Batch {
        tasks,
        mut pending,
        mut stat_only,
        scanned,
        problems,
        notices,
        special,
        ..
    } = batch;
    report.scanned += scanned;
    report.problems.extend(problems);
    report.notices.extend(notices);
    report.skipped_special.extend(special);
    report.files_read += tasks.len();
    if !tasks.is_empty() {
        let (outcomes, stats) = upload::upload_files(
            repo.keys().clone(),
            repo.chunker().clone(),
            repo.store().clone(),
            journal,
            tasks,
            opts,
            progress,
        )
        .await?;
        report.upload.add(&stats);
        for outcome in outcomes {
            match outcome {
                FileOutcome::Done {
                    chunks,
                    size,
                    after,
                } => file_result(journal, chunks, size, after, &mut pending, &mut stat_only)?,
                FileOutcome::Failed(why) => report.problems.push(why),
            }
        }
    }
    for (path, stat) in stat_only {
        journal.stat_put(&path, &stat)?;
    }
    if joining {
        report.joined += crate::sync::push::join::divert(folder, &mut pending)?;
    }
    report.deleted += pending.iter().filter(|p| p.entry.is_deleted()).count();
    report.changes += pending.len();
    if !pending.is_empty() {
        report.commit = Some(folder.device().commit(repo, pending).await?);
        report.commits += 1;
    }
    Ok(())
}

/// Decides what to do with one entry of the folder.
fn classify(
    root: &Path,
    journal: &Journal,
    e: LocalEntry,
    stat: Option<StatEntry>,
    b: &mut Batch,
) -> Result<()> {
    if let Some(s) = &stat
        && e.unchanged_since(s)
    {
        return Ok(());
    }
    match e.kind {
        LocalKind::File => b.tasks.push(FileTask {
            path: e.path.clone(),
            fs_path: e.path.to_fs_path(root)?,
            previous: match &stat {
                Some(s) if s.kind == LocalKind::File => journal.chunk_ends(&s.chunks)?,
                _ => Vec::new(),
            },
            before: e,
        }),
        LocalKind::Dir => {
            let entry = Entry::Dir {
                mode: e.mode,
                mtime_ns: e.mtime_ns,
            };
            // A directory's mode and mtime are synced like a file's: `chmod 700 d`
            // must not leave `d` world-readable on the other machines.
            let unchanged = stat.as_ref().is_some_and(|s| {
                s.kind == LocalKind::Dir && s.mode == e.mode && s.mtime_ns == e.mtime_ns
            });
            decide(
                journal,
                &e,
                entry,
                stat,
                Vec::new(),
                unchanged,
                &mut b.pending,
                &mut b.stat_only,
            )?;
        }
        LocalKind::Symlink => {
            let fs_path: PathBuf = e.path.to_fs_path(root)?;
            let target = match read_link_deep(root, &fs_path, &e.path) {
                Ok(t) => t,
                Err(err) => {
                    // Gone or replaced since the walk: it stays pending.
                    b.problems.push(Error::io(fs_path, err).to_string());
                    return Ok(());
                }
            };
            let entry = Entry::Symlink {
                target,
                mtime_ns: e.mtime_ns,
            };
            decide(
                journal,
                &e,
                entry,
                stat,
                Vec::new(),
                false,
                &mut b.pending,
                &mut b.stat_only,
            )?;
        }
    }
    Ok(())
}

/// The target of the symlink `path` (at `fs_path` below `root`); a path too
/// long for the kernel as a whole is resolved from the root's handle.
fn read_link_deep(root: &Path, fs_path: &Path, path: &RepoPath) -> std::io::Result<Vec<u8>> {
    match std::fs::read_link(fs_path) {
        Ok(t) => Ok(t.as_os_str().as_bytes().to_vec()),
        Err(e) if crate::sync::pull::rootfs::too_long(&e) => {
            let found = crate::sync::pull::rootfs::RootFs::open(root).and_then(|fs| fs.read_link(path));
            found
                .map_err(std::io::Error::other)?
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        }
        Err(e) => Err(e),
    }
}

/// A file was read: decide whether it is a new version.
fn file_result(
    journal: &Journal,
    chunks: Vec<ChunkId>,
    size: u64,
    after: LocalEntry,
    pending: &mut Vec<PendingChange>,
    stat_only: &mut Vec<(RepoPath, StatEntry)>,
) -> Result<()> {
    let stat = journal.stat_get(&after.path)?;
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
        (
            Entry::Dir {
                mode: a,
                mtime_ns: ma,
            },
            Entry::Dir {
                mode: b,
                mtime_ns: mb,
            },
        ) => a == b && ma == mb,
        _ => a.same_content(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_special_notice_counts_all_and_names_a_few() {
        let paths: Vec<RepoPath> = ["a/fifo", "b.sock", "c", "d", "e"]
            .iter()
            .map(|p| RepoPath::new(p.as_bytes().to_vec()).unwrap())
            .collect();
        assert_eq!(special_notice(&[]), None);
        let one = special_notice(&paths[..1]).unwrap();
        assert!(one.starts_with("skipped 1 special file(s)"), "{one}");
        assert!(one.ends_with(": a/fifo"), "{one}");
        let five = special_notice(&paths).unwrap();
        assert!(five.starts_with("skipped 5 special file(s)"), "{five}");
        assert!(five.ends_with(": a/fifo, b.sock, c and 2 more"), "{five}");
    }
}
