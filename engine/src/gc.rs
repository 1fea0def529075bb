//! Garbage collection without a lock (`DESIGN.md` §11): `prune` marks the packs
//! no commit names, and a later run deletes those still unnamed once the mark's
//! grace and safety margin have passed.
//!
//! - [`scan`] reads every commit (bounded memory) for the packs they name;
//! - [`marks`] are the immutable `gc/` objects that announce a deletion;
//! - [`writer`] is what every push does about them (drop, resurrect or fail).

pub mod marks;
pub mod scan;
pub mod writer;

use crate::error::{Error, Result};
use crate::format::id::PackId;
use crate::progress::{Phase, Progress};
use crate::repo::Repository;
use crate::store::layout;
use marks::Mark;
use std::collections::{BTreeMap, HashSet};

const MINUTE_MS: u64 = 60_000;
/// The most two clocks (a writer's and prune's) are taken to be apart (§7b).
pub const CLOCK_BOUND_MS: u64 = 5 * MINUTE_MS;
/// The longest one commit step may take between its mark check and its
/// acknowledged PUT; a writer that took longer verifies its packs after the PUT.
pub const PUT_BOUND_MS: u64 = 10 * MINUTE_MS;
/// The default wait between marking a pack and deleting it.
pub const DEFAULT_GRACE_MS: u64 = 24 * 60 * MINUTE_MS;
/// The shortest grace allowed outside tests.
pub const MIN_GRACE_MS: u64 = 60 * MINUTE_MS;
/// What a sweep waits after a mark's `not_before_ms`.
pub const SAFETY_MS: u64 = 2 * CLOCK_BOUND_MS + PUT_BOUND_MS;

/// How `prune` runs.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Between a mark and the deletion of its packs (default 24 h).
    pub grace_ms: u64,
    /// Added to the grace before a sweep (default [`SAFETY_MS`]; only tests
    /// shorten it).
    pub safety_ms: u64,
    /// Report what would be marked and deleted; write and delete nothing.
    pub dry_run: bool,
    /// Prune's clock (Unix ms); `None` is [`Repository::now_ms`]. Injected by tests.
    pub now_ms: Option<u64>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace_ms: DEFAULT_GRACE_MS,
            safety_ms: SAFETY_MS,
            dry_run: false,
            now_ms: None,
        }
    }
}

impl PruneOptions {
    /// Refuses a grace or safety margin shorter than the protocol needs, unless
    /// `short_allowed` (tests: `COFFER_TEST_SHORT_GRACE=1` in the CLI).
    pub fn validate(&self, short_allowed: bool) -> Result<()> {
        if !short_allowed && (self.grace_ms < MIN_GRACE_MS || self.safety_ms < SAFETY_MS) {
            return Err(Error::Config(format!(
                "--grace must be at least {} min: a push in flight must finish within it",
                MIN_GRACE_MS / MINUTE_MS
            )));
        }
        Ok(())
    }
}

/// What a run did (or, with `dry_run`, would do).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub commits_read: u64,
    pub packs_in_store: u64,
    pub bytes_in_store: u64,
    pub packs_referenced: u64,
    /// Packs deleted by this run's sweep, and their bytes.
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    /// Marked packs a commit now names: kept, their marks done with.
    pub packs_resurrected: u64,
    /// Packs newly marked by this run, and their bytes.
    pub packs_marked: u64,
    pub bytes_marked: u64,
    /// Packs in marks not yet due (deleted by a run after `next_sweep_ms`).
    pub packs_waiting: u64,
    pub bytes_waiting: u64,
    /// When the earliest waiting mark becomes due (Unix ms), if any.
    pub next_sweep_ms: Option<u64>,
    pub marks_written: u64,
    pub marks_deleted: u64,
    /// Every unreferenced pack's bytes: what marking and sweeping reclaim if no
    /// commit resurrects them (deleted + marked + waiting).
    pub reclaimable_bytes: u64,
    /// Marks that could not be read (their packs are never deleted).
    pub warnings: Vec<String>,
}

/// Sweeps the marks that are due, then marks the unreferenced packs not yet
/// marked (DESIGN.md §11). Never deletes a pack a commit names.
pub async fn prune(repo: &Repository, opts: &PruneOptions, progress: &dyn Progress) -> Result<PruneReport> {
    let now = match opts.now_ms {
        Some(t) => t,
        None => repo.now_ms().await,
    };
    let store = &**repo.store();
    let mut r = PruneReport {
        dry_run: opts.dry_run,
        ..PruneReport::default()
    };
    let (all_marks, unreadable) = marks::read_all(store).await?;
    r.warnings = unreadable;
    // The logs are read after `now`: a sweep's listing must follow the moment
    // its marks were found due.
    progress.start(Phase::Logs, None, None);
    let referenced = scan::referenced_packs(repo).await?;
    progress.finish(Phase::Logs);
    r.commits_read = referenced.commits;
    r.packs_referenced = referenced.packs.len() as u64;
    let stored = list_packs(repo, &mut r).await?;
    let (due, waiting): (Vec<Mark>, Vec<Mark>) = all_marks.into_iter().partition(|m| m.is_due(now));
    sweep(repo, &due, &referenced.packs, &stored, opts.dry_run, &mut r).await?;
    let mut marked: HashSet<PackId> = HashSet::new();
    for m in &waiting {
        r.next_sweep_ms = Some(r.next_sweep_ms.map_or(m.not_before_ms + m.safety_ms, |t| t.min(m.not_before_ms + m.safety_ms)));
        for (id, _) in &m.packs {
            if let Some(&size) = stored.get(id).filter(|_| !referenced.packs.contains(id))
                && marked.insert(*id)
            {
                r.packs_waiting += 1;
                r.bytes_waiting += size;
            }
        }
    }
    let swept: HashSet<PackId> = due.iter().flat_map(|m| m.packs.iter().map(|p| p.0)).collect();
    let new: Vec<(PackId, u64)> = stored
        .iter()
        .filter(|(id, _)| !referenced.packs.contains(id) && !marked.contains(id) && !swept.contains(id))
        .map(|(id, size)| (*id, *size))
        .collect();
    r.packs_marked = new.len() as u64;
    r.bytes_marked = new.iter().map(|p| p.1).sum();
    if !opts.dry_run && !new.is_empty() {
        r.marks_written = marks::write(store, new, now, opts.grace_ms, opts.safety_ms).await?.len() as u64;
    }
    r.reclaimable_bytes = r.bytes_deleted + r.bytes_marked + r.bytes_waiting;
    Ok(r)
}

/// DELETEs in flight at once during a sweep.
const DELETE_CONCURRENCY: usize = 16;

/// Deletes the packs of `due` marks that no commit names, then the marks.
async fn sweep(
    repo: &Repository,
    due: &[Mark],
    referenced: &HashSet<PackId>,
    stored: &BTreeMap<PackId, u64>,
    dry_run: bool,
    r: &mut PruneReport,
) -> Result<()> {
    use futures::StreamExt;
    let store = &**repo.store();
    let mut doomed: BTreeMap<PackId, u64> = BTreeMap::new();
    for (id, _) in due.iter().flat_map(|m| m.packs.iter()) {
        if referenced.contains(id) {
            r.packs_resurrected += 1;
        } else if let Some(&size) = stored.get(id) {
            doomed.insert(*id, size);
        }
    }
    r.packs_deleted = doomed.len() as u64;
    r.bytes_deleted = doomed.values().sum();
    r.marks_deleted = due.len() as u64;
    if dry_run {
        return Ok(());
    }
    let mut deletions = futures::stream::iter(doomed.keys())
        .map(|id| async move { store.delete(&layout::pack(id)).await })
        .buffer_unordered(DELETE_CONCURRENCY);
    while let Some(done) = deletions.next().await {
        done?;
    }
    // Only after every deletion of their packs was acknowledged (§11).
    for m in due {
        store.delete(&m.key).await?;
    }
    Ok(())
}

/// Every pack in the store with its size.
async fn list_packs(repo: &Repository, r: &mut PruneReport) -> Result<BTreeMap<PackId, u64>> {
    let mut out = BTreeMap::new();
    for meta in repo.store().list(layout::DATA_PREFIX).await? {
        if let Some(id) = layout::parse_pack(&meta.key) {
            r.packs_in_store += 1;
            r.bytes_in_store += meta.size;
            out.insert(id, meta.size);
        }
    }
    Ok(out)
}
