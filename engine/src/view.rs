//! A read-only view of a repository without a folder: every log replayed into a
//! temporary journal. Used by `ls`, `get`, `check`, `log` and `restore`.

use crate::commit::{Commit, Entry, PackRecord};
use crate::error::{Error, Result};
use crate::id::{DeviceId, PackId};
use crate::journal::Journal;
use crate::logs;
use crate::merge::{self, MergedEntry};
use crate::path::RepoPath;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::version::Hlc;
use std::collections::BTreeMap;
use std::path::Path;

/// One commit, summarized for `coffer log`.
#[derive(Debug, Clone)]
pub struct CommitSummary {
    pub device: DeviceId,
    pub seq: u64,
    pub hlc: Hlc,
    pub time_ms: u64,
    pub packs: usize,
    pub pack_bytes: u64,
    /// Changed paths and whether each was deleted.
    pub changes: Vec<(RepoPath, bool)>,
}

/// A replayed repository.
#[derive(Debug)]
pub struct RepoView {
    pub journal: Journal,
    pub commits: Vec<CommitSummary>,
    /// Every pack named by a commit.
    pub packs: BTreeMap<PackId, PackRecord>,
    /// Logs that could not be read completely.
    pub errors: Vec<Error>,
}

impl RepoView {
    /// The latest merged state, starting from the best checkpoint (see
    /// [`crate::checkpoint`]): `commits` and `packs` then hold only what came after
    /// it. For `ls`, `get` and the like; history needs [`RepoView::load`].
    pub async fn load_latest(
        repo: &Repository,
        scratch: Option<&Path>,
        progress: &dyn Progress,
    ) -> Result<RepoView> {
        let journal = Journal::temporary_in(scratch)?;
        let mut commits = Vec::new();
        let mut packs = BTreeMap::new();
        let fetched = {
            let mut visit = |c: &Commit| {
                for p in &c.packs {
                    packs.insert(p.id, p.clone());
                }
                commits.push(summarize(c));
            };
            logs::fetch_latest(repo, &journal, &mut visit, progress).await?
        };
        commits.sort_by_key(|c| (c.hlc, c.device, c.seq));
        Ok(RepoView {
            journal,
            commits,
            packs,
            errors: fetched.errors,
        })
    }

    /// Replays every log; with `at` (Unix ms), only commits stamped at or before it.
    /// The temporary journal lives under `scratch` (else the system temp dir).
    pub async fn load(
        repo: &Repository,
        at: Option<u64>,
        scratch: Option<&Path>,
        progress: &dyn Progress,
    ) -> Result<RepoView> {
        let all = Journal::temporary_in(scratch)?;
        let mut commits = Vec::new();
        let mut packs = BTreeMap::new();
        let mut kept: Vec<Commit> = Vec::new();
        let fetched = {
            let mut visit = |c: &Commit| {
                for p in &c.packs {
                    packs.insert(p.id, p.clone());
                }
                commits.push(summarize(c));
                if at.is_some_and(|t| c.hlc.millis() <= t) {
                    kept.push(c.clone());
                }
            };
            logs::fetch(repo, &all, &mut visit, progress).await?
        };
        let journal = match at {
            None => all,
            Some(_) => {
                let past = Journal::temporary_in(scratch)?;
                for c in &kept {
                    logs::ingest(&past, c, crate::id::CommitHash([0; 32]))?;
                }
                past
            }
        };
        commits.sort_by_key(|c| (c.hlc, c.device, c.seq));
        Ok(RepoView {
            journal,
            commits,
            packs,
            errors: fetched.errors,
        })
    }

    /// The merged folder state.
    pub fn merged(&self) -> Result<BTreeMap<RepoPath, MergedEntry>> {
        merge::merged_view_of(&self.journal)
    }

    /// The merged entries at or below `prefix` (a subtree or one path).
    pub fn merged_under(
        &self,
        prefix: Option<&RepoPath>,
    ) -> Result<BTreeMap<RepoPath, MergedEntry>> {
        let view = self.merged()?;
        Ok(match prefix {
            None => view,
            Some(p) => view.into_iter().filter(|(k, _)| k.starts_with(p)).collect(),
        })
    }

    /// The merged entry of one path.
    pub fn entry(&self, path: &RepoPath) -> Result<MergedEntry> {
        self.merged_under(Some(path))?
            .remove(path)
            .ok_or_else(|| Error::NotFound(path.display()))
    }
}

fn summarize(c: &Commit) -> CommitSummary {
    CommitSummary {
        device: c.device,
        seq: c.seq,
        hlc: c.hlc,
        time_ms: c.time_ms,
        packs: c.packs.len(),
        pack_bytes: c.packs.iter().map(|p| u64::from(p.size)).sum(),
        changes: c
            .changes
            .iter()
            .map(|ch| (ch.path.clone(), matches!(ch.entry, Entry::Deleted)))
            .collect(),
    }
}
