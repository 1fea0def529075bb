//! What a folder has not synced yet, and how its last sync went.
//!
//! [`local_changes`] compares the folder with the journal's stat cache, without the
//! network: it is what the next push would send. [`FolderStatus`] adds how the
//! last push and the last pull went; `push`, `pull`, `sync` and `watch` keep it in
//! `.coffer/status.json` (written atomically) so `coffer status DIR` can report it
//! even while a daemon holds the journal.

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

/// How the last push or the last pull of a folder went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastStep {
    /// When it ended (Unix ms).
    pub at_ms: u64,
    /// Why it failed (or was incomplete); `None`: it succeeded.
    pub error: Option<String>,
    /// When one last succeeded (Unix ms): this one, or an earlier one.
    pub ok_ms: Option<u64>,
}

/// What one step ran: a push, a pull, or both (a sync step), each `Ok` or why it
/// failed. A half that did not run (the pull of a sync whose push failed) is
/// `None` and leaves its last record as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepOutcome {
    pub push: Option<std::result::Result<(), String>>,
    pub pull: Option<std::result::Result<(), String>>,
}

impl StepOutcome {
    /// The first failure, if any.
    pub fn error(&self) -> Option<&str> {
        [&self.push, &self.pull]
            .into_iter()
            .find_map(|h| h.as_ref().and_then(|r| r.as_ref().err()))
            .map(String::as_str)
    }
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
    /// When the last step (push, pull or sync) succeeded (Unix ms).
    pub last_sync_ms: Option<u64>,
    /// The last failure, if the last step failed.
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
    /// When this status was taken (Unix ms).
    pub taken_ms: u64,
    /// Directories left out of the folder without a rule, with why.
    #[serde(default)]
    pub excluded: Vec<String>,
    /// The last push, alone or as the first half of a sync step (`None` in a
    /// status file written before pushes and pulls were told apart).
    #[serde(default)]
    pub last_push: Option<LastStep>,
    /// The last pull, alone or as the second half of a sync step.
    #[serde(default)]
    pub last_pull: Option<LastStep>,
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

    /// Takes the outcomes of the last steps from `recorded` (a status read from
    /// the folder), keeping the local half of `self`.
    pub fn keep_steps_of(&mut self, recorded: &FolderStatus) {
        self.last_sync_ms = recorded.last_sync_ms;
        self.last_error = recorded.last_error.clone();
        self.last_error_ms = recorded.last_error_ms;
        self.last_push = recorded.last_push.clone();
        self.last_pull = recorded.last_pull.clone();
    }

    /// Records the outcome of a step in `.coffer/status.json`, with the local
    /// changes as they are now.
    pub fn record_step(folder: &Folder, outcome: &StepOutcome) -> Result<FolderStatus> {
        let before = Self::read(folder.root()).unwrap_or_default();
        let mut status = Self::local(folder)?;
        status.keep_steps_of(&before);
        status.apply(outcome, status.taken_ms);
        Self::write(folder, &status)?;
        Ok(status)
    }

    /// Folds the outcome of a step that ended at `now` into the recorded ones.
    fn apply(&mut self, outcome: &StepOutcome, now: u64) {
        match outcome.error() {
            None => {
                self.last_sync_ms = Some(now);
                self.last_error = None;
                self.last_error_ms = None;
            }
            Some(e) => {
                self.last_error = Some(e.to_string());
                self.last_error_ms = Some(now);
            }
        }
        for (half, last) in [
            (&outcome.push, &mut self.last_push),
            (&outcome.pull, &mut self.last_pull),
        ] {
            let Some(result) = half else { continue };
            let before_ok = last.as_ref().and_then(|l| l.ok_ms);
            *last = Some(LastStep {
                at_ms: now,
                error: result.as_ref().err().cloned(),
                ok_ms: if result.is_ok() { Some(now) } else { before_ok },
            });
        }
    }

    /// Refreshes the local half of `.coffer/status.json` (changes journaled while
    /// no step finishes, e.g. while one waits on an unreachable store), keeping
    /// what the last step recorded.
    pub fn record_local(folder: &Folder) -> Result<FolderStatus> {
        let before = Self::read(folder.root()).unwrap_or_default();
        let mut status = Self::local(folder)?;
        status.keep_steps_of(&before);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_file_from_before_the_split_still_reads() {
        let old = r#"{"pending":1,"pending_bytes":3,"pending_deletes":0,"conflicts":[],
            "last_sync_ms":5,"last_error":null,"last_error_ms":null,"taken_ms":6}"#;
        let s: FolderStatus = serde_json::from_str(old).unwrap();
        assert_eq!((s.last_sync_ms, s.last_push, s.last_pull), (Some(5), None, None));
    }

    #[test]
    fn pushes_and_pulls_are_recorded_apart() {
        let mut s = FolderStatus::default();
        let push_ok = StepOutcome {
            push: Some(Ok(())),
            pull: None,
        };
        s.apply(&push_ok, 10);
        assert_eq!(s.last_push.as_ref().map(|l| (l.at_ms, l.ok_ms)), Some((10, Some(10))));
        assert_eq!((s.last_pull.as_ref(), s.last_sync_ms), (None, Some(10)));

        // A sync whose push fails runs no pull: the pull's record stays.
        let failed = StepOutcome {
            push: Some(Err("store gone".into())),
            pull: None,
        };
        s.apply(&failed, 20);
        let push = s.last_push.clone().unwrap();
        assert_eq!(
            (push.at_ms, push.error.as_deref(), push.ok_ms),
            (20, Some("store gone"), Some(10))
        );
        assert_eq!((s.last_error.as_deref(), s.last_sync_ms), (Some("store gone"), Some(10)));
        assert_eq!(s.last_pull, None);

        let sync_ok = StepOutcome {
            push: Some(Ok(())),
            pull: Some(Ok(())),
        };
        s.apply(&sync_ok, 30);
        for last in [&s.last_push, &s.last_pull] {
            assert_eq!(last.clone().unwrap().ok_ms, Some(30));
        }
        assert_eq!((s.last_error, s.last_sync_ms), (None, Some(30)));
    }
}
