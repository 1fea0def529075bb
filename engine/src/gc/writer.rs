//! What a writer does about marks (DESIGN.md §11, "Writers"): at the start of a
//! step it drops its uncommitted packs that are marked or gone; just before a
//! commit's PUT it resurrects marked packs still within their grace, and fails
//! the step for those past it.

use super::marks::{self, Mark};
use crate::error::{Error, Result};
use crate::format::commit::{Commit, PackRecord};
use crate::format::id::{DeviceId, PackId};
use crate::journal::Journal;
use crate::repo::Repository;
use crate::store::layout;
use std::collections::HashMap;

/// The packs named by readable marks, each with its mark's `not_before_ms`
/// (the earliest, when several marks name it).
async fn marked(repo: &Repository) -> Result<HashMap<PackId, u64>> {
    let (all, unreadable) = marks::read_all(&**repo.store()).await?;
    for e in unreadable {
        tracing::warn!("a garbage-collection mark is unreadable (prune never deletes its packs): {e}");
    }
    let mut out: HashMap<PackId, u64> = HashMap::new();
    for Mark {
        packs,
        not_before_ms,
        ..
    } in all
    {
        for (id, _) in packs {
            let t = out.entry(id).or_insert(not_before_ms);
            *t = (*t).min(not_before_ms);
        }
    }
    Ok(out)
}

/// Whether the store still lists pack `id`.
async fn exists(repo: &Repository, id: &PackId) -> Result<bool> {
    let key = layout::pack(id);
    Ok(repo.store().list(&key).await?.iter().any(|m| m.key == key))
}

/// At the start of a step: drops every uncommitted pack that is marked, or
/// that the store no longer lists, with the outbox commits naming it (before
/// the outbox is written again). Returns how many packs were dropped.
pub async fn drop_marked_at_start(repo: &Repository, journal: &Journal, device: &DeviceId) -> Result<usize> {
    let uncommitted = journal.uncommitted_packs()?;
    if uncommitted.is_empty() {
        return Ok(0);
    }
    let marked = marked(repo).await?;
    let mut dropped = Vec::new();
    for rec in uncommitted {
        if marked.contains_key(&rec.id) || !exists(repo, &rec.id).await? {
            dropped.push(rec);
        }
    }
    drop_packs(repo, journal, device, &dropped)?;
    Ok(dropped.len())
}

/// Just before a commit naming the uncommitted packs is PUT, at writer time
/// `now_ms`: a marked pack within its grace is resurrected by the commit; one
/// past it is dropped and the step fails ([`Error::PackExpired`]).
pub async fn check_before_put(repo: &Repository, journal: &Journal, device: &DeviceId, now_ms: u64) -> Result<()> {
    let uncommitted = journal.uncommitted_packs()?;
    if uncommitted.is_empty() {
        return Ok(());
    }
    let marked = marked(repo).await?;
    let expired: Vec<PackRecord> = uncommitted
        .into_iter()
        .filter(|r| marked.get(&r.id).is_some_and(|&t| now_ms >= t))
        .collect();
    let Some(first) = expired.first() else {
        return Ok(());
    };
    let pack = layout::pack(&first.id);
    drop_packs(repo, journal, device, &expired)?;
    Err(Error::PackExpired { pack })
}

/// After a commit's PUT that took longer than [`super::PUT_BOUND_MS`] since its
/// check: every pack it names must still be listed, else the commit needs data
/// a sweep may have deleted, which is reported (never silent).
pub async fn verify_after_slow_put(repo: &Repository, commit: &Commit) -> Result<()> {
    for rec in &commit.packs {
        if !exists(repo, &rec.id).await? {
            return Err(Error::corrupt(
                layout::commit(&commit.device, commit.seq),
                format!(
                    "its pack {} was deleted by prune while this commit was being written (the write took longer than the garbage-collection bound); run `coffer check`",
                    layout::pack(&rec.id)
                ),
            ));
        }
    }
    Ok(())
}

/// Drops `packs` from the journal: outbox commits naming any of them first
/// (their changes were never recorded as synced), then the packs.
fn drop_packs(repo: &Repository, journal: &Journal, device: &DeviceId, packs: &[PackRecord]) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    let ids: std::collections::HashSet<PackId> = packs.iter().map(|p| p.id).collect();
    // A later outbox commit chains onto an earlier one: from the first that
    // names a dropped pack on, none may be written.
    let mut from: Option<u64> = None;
    let outbox = journal.outbox_all()?;
    for (seq, bytes) in &outbox {
        let names_one = match Commit::open(&repo.keys(), device, *seq, bytes) {
            Ok(c) => c.packs.iter().any(|p| ids.contains(&p.id)),
            Err(_) => true, // unreadable: it cannot be trusted to name none
        };
        if names_one {
            from = Some(from.map_or(*seq, |f| f.min(*seq)));
        }
    }
    for (seq, _) in &outbox {
        if from.is_some_and(|f| *seq >= f) {
            journal.outbox_remove(*seq)?;
        }
    }
    journal.flush()?;
    for rec in packs {
        tracing::info!("dropping uncommitted pack {} (marked or deleted by prune)", layout::pack(&rec.id));
        journal.drop_uncommitted_pack(rec)?;
    }
    journal.flush()
}
