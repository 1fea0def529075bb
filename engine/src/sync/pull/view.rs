//! A read-only view of a repository without a folder: every log replayed into a
//! temporary journal (`check`, `log`, `restore`), or the latest state kept in a
//! cache journal that each use brings up to date with only the commits since the
//! last (`ls`, `get`, `list`).

use crate::error::{Error, Result};
use crate::format::commit::{Commit, Entry, PackRecord};
use crate::format::id::{DeviceId, PackId};
use crate::format::path::RepoPath;
use crate::format::version::Hlc;
use crate::journal::Journal;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::sync::pull::logs;
use crate::sync::pull::merge::{self, MergedEntry, MergedWalk};
use std::collections::BTreeMap;
use std::path::Path;

/// Opens the cache journal of `repo` under `cache`: `all/` when every device
/// is trusted, else one named after the distrusted set (what a journal holds
/// depends on which logs it read).
fn open_cache(repo: &Repository, cache: &Path) -> Result<Journal> {
    let distrusted: Vec<DeviceId> = repo.distrusted().copied().collect();
    let name = if distrusted.is_empty() {
        "all".to_string()
    } else {
        let mut h = blake3::Hasher::new();
        for d in &distrusted {
            h.update(&d.0);
        }
        format!("distrust-{}", &h.finalize().to_hex()[..16])
    };
    private_dir(cache)?;
    Ok(Journal::open(&cache.join(name))?.0)
}

/// Creates `dir` readable by its owner only (it holds file names).
fn private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| Error::io(dir, e))
}

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
    /// [`crate::format::checkpoint`]), kept in a journal under `cache` (a directory of this machine's, one per repository) so that
    /// the next call reads only the commits since: `ls` of a repository of
    /// millions of files replays them once, not at every call. The journal is
    /// checked and grown like a folder's (rollbacks, holes and hash chains are
    /// caught against what it saw before). A machine that distrusts devices
    /// keeps a journal of its own for that set. A cache that cannot be opened
    /// (another `ls` holds it, a read-only home) is passed over for a temporary
    /// journal under `scratch`. For `ls`, `get` and the like: no history
    /// (`commits` and `packs` stay empty); that needs [`RepoView::load`].
    pub async fn load_cached(
        repo: &Repository,
        cache: &Path,
        scratch: Option<&Path>,
        progress: &dyn Progress,
    ) -> Result<RepoView> {
        let journal = match open_cache(repo, cache) {
            Ok(journal) => journal,
            Err(e) => {
                tracing::info!("not using the view cache {}: {e}", cache.display());
                Journal::temporary_in(scratch)?
            }
        };
        let fetched = logs::fetch_latest(repo, &journal, &mut |_| {}, progress).await?;
        Ok(RepoView {
            journal,
            commits: Vec::new(),
            packs: BTreeMap::new(),
            errors: fetched.errors,
        })
    }

    /// Replays every log, keeping a summary of every commit and every pack
    /// record (`log`, `check`). The temporary journal lives under `scratch`
    /// (else the system temp dir).
    pub async fn load(
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
            logs::fetch(repo, &journal, &mut visit, progress).await?
        };
        commits.sort_by_key(|c| (c.hlc, c.device, c.seq));
        Ok(RepoView {
            journal,
            commits,
            packs,
            errors: fetched.errors,
        })
    }

    /// The merged state as of `at` (Unix ms): every log is fetched and its chain
    /// checked (a journal of heads only), and the commits their device wrote at
    /// or before `at` by its own clock (`time_ms`, not the HLC, which a device
    /// with a fast clock can push ahead; up to its first commit after `at`) are ingested, as they arrive, into the
    /// view's journal. No history is kept in memory. Every commit's packs are
    /// recorded whatever its time: a version before `at` may use chunks of a
    /// pack that a commit stamped later by a skewed clock named first.
    pub async fn load_at(
        repo: &Repository,
        at: u64,
        scratch: Option<&Path>,
        progress: &dyn Progress,
    ) -> Result<RepoView> {
        let heads = Journal::temporary_in(scratch)?;
        let past = Journal::temporary_in(scratch)?;
        let mut failed = None;
        // Each device's log is a prefix: from its first commit after `at` on,
        // its later ones are out too (their times never go backwards, but
        // older versions' may have).
        let mut past_at = std::collections::HashSet::new();
        let fetched = {
            let mut visit = |c: &Commit| {
                if failed.is_some() {
                    return;
                }
                if c.time_ms > at {
                    past_at.insert(c.device);
                }
                failed = if !past_at.contains(&c.device) {
                    // Chain checks happened on `heads`; the hash is not needed here.
                    let hash = crate::format::id::CommitHash([0; 32]);
                    logs::ingest(&past, c, hash).err()
                } else {
                    past.record_committed_packs(&c.packs).err()
                };
            };
            logs::fetch_recording(repo, &heads, logs::Record::HeadsOnly, &mut visit, progress)
                .await?
        };
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(RepoView {
            journal: past,
            commits: Vec::new(),
            packs: BTreeMap::new(),
            errors: fetched.errors,
        })
    }

    /// The merged folder state, in memory (listings).
    pub fn merged(&self) -> Result<BTreeMap<RepoPath, MergedEntry>> {
        merge::merged_view_of(&self.journal)
    }

    /// The merged entry of one path.
    pub fn entry(&self, path: &RepoPath) -> Result<MergedEntry> {
        merge::entry_at(&self.journal, path)?.ok_or_else(|| Error::NotFound(path.display()))
    }

    /// How many live paths (conflict copies included) the merged folder has.
    pub fn count(&self) -> Result<usize> {
        let mut n = 0;
        for item in MergedWalk::new(&self.journal) {
            item?;
            n += 1;
        }
        Ok(n)
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
