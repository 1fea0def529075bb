//! `check`: is every object a reader needs present and intact?
//!
//! Without `read_data`: every log opens and chains, every pack a commit names
//! exists with the size the commit recorded, and every chunk of every version is
//! locatable. With `read_data`: every byte of every referenced pack is verified
//! ([`pack::verify`]) and its trailer must match the commit's record.

use crate::error::{Error, Result};
use crate::format::commit::Entry;
use crate::format::id::PackId;
use crate::format::pack;
use crate::progress::{Phase, Progress};
use crate::repo::Repository;
use crate::store::layout;
use crate::sync::pull::view::RepoView;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};

/// Packs verified concurrently with `read_data`.
const VERIFY_CONCURRENCY: usize = 3;

/// What `check` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub devices: usize,
    pub commits: usize,
    pub packs_referenced: usize,
    pub packs_in_store: usize,
    pub packs_verified: usize,
    pub bytes_verified: u64,
    pub paths: usize,
    /// Damage: the check fails if there is any.
    pub errors: Vec<String>,
    /// Harmless findings (unreferenced packs of interrupted runs...).
    pub warnings: Vec<String>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks the repository.
pub async fn check(
    repo: &Repository,
    read_data: bool,
    scratch: Option<&std::path::Path>,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let view = RepoView::load(repo, scratch, progress).await?;
    let mut r = CheckReport {
        devices: view.journal.all_heads()?.len(),
        commits: view.commits.len(),
        packs_referenced: view.packs.len(),
        errors: view.errors.iter().map(|e| e.to_string()).collect(),
        ..CheckReport::default()
    };
    let stored = list_packs(repo, &mut r).await?;
    r.packs_in_store = stored.len();
    for (id, rec) in &view.packs {
        match stored.get(id) {
            None => r
                .errors
                .push(format!("{}: missing (named by a commit)", layout::pack(id))),
            Some(&size) if size != u64::from(rec.size) => r.errors.push(format!(
                "{}: {size} bytes, but its commit recorded {} (truncated or replaced)",
                layout::pack(id),
                rec.size
            )),
            Some(_) => {}
        }
    }
    let unreferenced = stored
        .keys()
        .filter(|id| !view.packs.contains_key(id))
        .count();
    if unreferenced > 0 && view.errors.is_empty() {
        r.warnings.push(format!(
            "{unreferenced} pack(s) named by no commit (left by interrupted pushes; harmless)"
        ));
    } else if unreferenced > 0 {
        // Some commits could not be read: these packs may be theirs, so they are
        // not called harmless (and must not be deleted by anyone).
        r.warnings.push(format!(
            "{unreferenced} pack(s) named by no commit that could be read; {} commit(s) or \
             log(s) could not be read and may name them",
            view.errors.len()
        ));
    }
    report_marks(repo, &view, &mut r).await?;
    check_chunks(&view, &mut r)?;
    if read_data {
        verify_packs(repo, &view, &stored, progress, &mut r).await;
    }
    Ok(r)
}

/// Lists the whole store once: returns the packs, and warns of every object
/// that is not a coffer object, under any prefix (DESIGN.md §1).
async fn list_packs(repo: &Repository, r: &mut CheckReport) -> Result<BTreeMap<PackId, u64>> {
    let mut out = BTreeMap::new();
    for meta in repo.store().list("").await? {
        if let Some(id) = layout::parse_pack(&meta.key) {
            out.insert(id, meta.size);
        } else if !layout::is_coffer_key(&meta.key) {
            r.warnings
                .push(format!("{}: not a coffer object", meta.key));
        }
    }
    Ok(out)
}

/// Marks of `prune` (DESIGN.md §11): harmless, but a marked pack a commit
/// names is kept by the sweep, and an unreadable mark is never swept.
async fn report_marks(repo: &Repository, view: &RepoView, r: &mut CheckReport) -> Result<()> {
    let (marks, unreadable) = crate::gc::marks::read_all(&**repo.store()).await?;
    let packs: BTreeSet<PackId> = marks.iter().flat_map(|m| m.packs.iter().map(|p| p.0)).collect();
    if !packs.is_empty() {
        let named = packs.iter().filter(|p| view.packs.contains_key(p)).count();
        r.warnings.push(format!(
            "{} pack(s) marked for deletion by prune in {} mark(s) ({named} of them named by a commit since, which prune keeps)",
            packs.len(),
            marks.len()
        ));
    }
    r.warnings.extend(unreadable.into_iter().map(|e| format!("{e} (prune never deletes its packs)")));
    Ok(())
}

/// Every chunk of every version (winners and conflict candidates) is locatable.
fn check_chunks(view: &RepoView, r: &mut CheckReport) -> Result<()> {
    let mut missing = BTreeSet::new();
    let versions = view.journal.all_versions()?;
    r.paths = versions.len();
    for (path, set) in versions {
        for v in set {
            if let Entry::File(f) = &v.entry {
                for c in &f.chunks {
                    if !view.journal.has_chunk(c)? && missing.insert(*c) {
                        r.errors
                            .push(format!("{path}: chunk {c} is in no pack any commit names"));
                    }
                }
            }
        }
    }
    Ok(())
}

async fn verify_packs(
    repo: &Repository,
    view: &RepoView,
    stored: &BTreeMap<PackId, u64>,
    progress: &dyn Progress,
    r: &mut CheckReport,
) {
    let todo: Vec<_> = view
        .packs
        .values()
        .filter(|p| stored.contains_key(&p.id))
        .cloned()
        .collect();
    let total: u64 = todo.iter().map(|p| u64::from(p.size)).sum();
    progress.start(Phase::Verify, Some(total), Some(todo.len() as u64));
    let mut results = futures::stream::iter(todo)
        .map(|rec| {
            let (store, keys) = (repo.store().clone(), repo.keys().clone());
            async move {
                let key = layout::pack(&rec.id);
                let bytes = crate::store::get_at_most(
                    &*store,
                    &key,
                    u64::from(rec.size),
                    "pack of this size",
                )
                .await?;
                let len = bytes.len() as u64;
                tokio::task::spawn_blocking(move || {
                    let blobs = pack::verify(&keys, &rec.id, &bytes)?;
                    if blobs != rec.blobs {
                        return Err(Error::corrupt(
                            layout::pack(&rec.id),
                            "trailer differs from the commit's record",
                        ));
                    }
                    Ok(len)
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
            }
        })
        .buffer_unordered(VERIFY_CONCURRENCY);
    while let Some(res) = results.next().await {
        match res {
            Ok(len) => {
                r.packs_verified += 1;
                r.bytes_verified += len;
                progress.advance(len, 1);
            }
            Err(e) => r.errors.push(e.to_string()),
        }
    }
    progress.finish(Phase::Verify);
}
