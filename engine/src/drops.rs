//! Partner drops (`DESIGN.md` §4c, the `s3s2` workflow): partners write files
//! into the owner's repository that only the owner reads, through a store key
//! that may only PUT.
//!
//! - The owner makes a drop ([`create_drop`]): a sealed record
//!   ([`record::DropRecord`]: an age identity and a write key) and a
//!   [`DropToken`] for the partner (the age *recipient*, the write key, no
//!   repository key).
//! - The partner pushes ([`push_drop`]): chunks with its own dedup key, seals
//!   each pack's blobs under a fresh random key, and writes commits that carry
//!   those keys, encrypted with age to the drop's recipient and MACed with the
//!   write key. It only ever PUTs, under `drop/<drop id>/`, and keeps its
//!   state (dedup index, chain, outbox) in a local sled tree, so a killed push
//!   resumes.
//! - The owner reads ([`scan_drop`], [`pull_drop`]): every commit's MAC, chain
//!   link, sequence and contents are checked, every blob authenticated and its
//!   chunk id recomputed; what fails is reported by object name and nothing it
//!   carries is written. [`remove_drop`] and an expiry close the drop: the
//!   commits listed at that moment stay accepted, later ones are reported and
//!   ignored.

pub mod format;
pub mod pull;
pub mod push;
pub mod record;
pub mod token;

#[cfg(test)]
mod tests;

pub use pull::{DropDevice, DropPullReport, DropScan, Problem, pull_drop, scan_drop};
pub use push::{DropPushOptions, DropPushReport, push_drop};
pub use record::{CloseReason, Closure};
pub use token::DropToken;

use crate::error::{Error, Result};
use crate::format::id::DropId;
use crate::repo::Repository;
use crate::store::layout;
use record::DropRecord;

/// A drop as `coffer drop list` shows it (from the owner's records only).
#[derive(Debug, Clone)]
pub struct DropInfo {
    pub id: DropId,
    pub name: String,
    /// `None` once purged (the record is gone, only the closure is left).
    pub record: Option<DropRecord>,
    pub closure: Option<Closure>,
    /// Records that could not be read (`object: reason`).
    pub problem: Option<String>,
}

impl DropInfo {
    pub fn created_ms(&self) -> Option<u64> {
        self.record.as_ref().map(|r| r.created_ms)
    }

    pub fn expires_ms(&self) -> Option<u64> {
        self.record.as_ref().and_then(|r| r.expires_ms)
    }
}

/// A drop name: one path component of printable ASCII letters, digits, `-`,
/// `_` and `.`, 1–64 bytes, not starting with `.` (it names the owner's
/// directory of the drop in `drop pull`).
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad name {name:?}: 1-64 letters, digits, '-', '_' or '.', not starting with '.'"
        ))
    }
}

/// Makes a drop named `name` that stops accepting writes at `expires_ms`,
/// and returns the token for the partner. `store_url` is what the token
/// says the partner writes to.
pub async fn create_drop(
    repo: &Repository,
    name: &str,
    expires_ms: Option<u64>,
    store_url: &str,
) -> Result<DropToken> {
    check_name(name).map_err(Error::Config)?;
    if let Some(other) = list_drops(repo)
        .await?
        .into_iter()
        .find(|d| d.name == name && d.closure.is_none())
    {
        return Err(Error::Config(format!(
            "a drop named {name} exists ({}); remove it first or choose another name",
            other.id
        )));
    }
    let now = repo.clock().now_ms();
    let params = *repo.chunker().params();
    let record = DropRecord::new(name, now, expires_ms, params);
    let id = DropId::random();
    let object = layout::drop_record(&id);
    record::write_record(repo, &id, &record).await?;
    Ok(DropToken {
        store: store_url.to_string(),
        repo: repo.id(),
        drop: id,
        name: name.to_string(),
        recipient: record.recipient(&object)?,
        write_key: record.write_key.clone(),
        chunker: params,
        expires_ms,
    })
}

/// Every drop of the repository, by creation time (records and closures;
/// no partner object is read).
pub async fn list_drops(repo: &Repository) -> Result<Vec<DropInfo>> {
    let mut ids: Vec<DropId> = Vec::new();
    for meta in repo.store().list(layout::DROPS_PREFIX).await? {
        if let Some((id, _)) = layout::parse_drop_record(&meta.key)
            && ids.last() != Some(&id)
        {
            ids.push(id);
        }
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.push(read_info(repo, id).await?);
    }
    out.sort_by_key(|d| (d.created_ms(), d.name.clone()));
    Ok(out)
}

/// One drop's record and closure; an unreadable one is reported in
/// [`DropInfo::problem`], a store failure is an error.
async fn read_info(repo: &Repository, id: DropId) -> Result<DropInfo> {
    let mut problem = None;
    let record = soft(record::read_record(repo, &id).await, &mut problem)?;
    let closure = soft(record::read_closure(repo, &id).await, &mut problem)?;
    let name = record
        .as_ref()
        .map(|r| r.name.clone())
        .or_else(|| closure.as_ref().map(|c| c.name.clone()))
        .unwrap_or_else(|| "?".to_string());
    Ok(DropInfo {
        id,
        name,
        record,
        closure,
        problem,
    })
}

/// A value, or `None` with the reason in `problem` (a store failure is an error).
fn soft<T>(r: Result<Option<T>>, problem: &mut Option<String>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(v),
        Err(e @ Error::Store(_)) => Err(e),
        Err(e) => {
            *problem = Some(e.to_string());
            Ok(None)
        }
    }
}

/// The drop named `name` (or whose id starts with `name`): an open one before
/// closed ones of the same name.
pub async fn find_drop(repo: &Repository, name: &str) -> Result<DropInfo> {
    let all = list_drops(repo).await?;
    let mut hits: Vec<&DropInfo> = all.iter().filter(|d| d.name == name).collect();
    // An open drop first, then the newest closed one.
    hits.sort_by_key(|d| (d.closure.is_some(), std::cmp::Reverse(d.created_ms())));
    if hits.is_empty() && name.len() >= 4 {
        hits = all.iter().filter(|d| d.id.to_hex().starts_with(name)).collect();
    }
    match hits.as_slice() {
        [] => Err(Error::NotFound(format!(
            "no drop named {name} (drops: {})",
            all.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        [one, ..] if hits.len() == 1 || hits[1].closure.is_some() => Ok((*one).clone()),
        _ => Err(Error::Config(format!("{name} names several drops; give its id"))),
    }
}

/// What [`remove_drop`] did.
#[derive(Debug, Clone)]
pub struct RemoveReport {
    pub closure: Closure,
    /// Objects deleted (`purge`).
    pub deleted: usize,
}

/// Closes the drop: the commits the store lists now stay accepted (and
/// pullable), anything written later is reported and ignored. With `purge`,
/// also deletes every object of the drop and its record (its keys).
pub async fn remove_drop(repo: &Repository, info: &DropInfo, purge: bool) -> Result<RemoveReport> {
    let mut closure = match &info.closure {
        Some(c) => c.clone(),
        None => {
            let heads = pull::listed_heads(repo, &info.id).await?;
            let now = repo.clock().now_ms();
            Closure::new(&info.name, now, CloseReason::Removed, heads)
        }
    };
    let mut deleted = 0;
    if purge {
        closure.purged = true;
        record::write_closure(repo, &info.id, &closure).await?;
        for meta in repo.store().list(&layout::drop_prefix(&info.id)).await? {
            repo.store().delete(&meta.key).await?;
            deleted += 1;
        }
        repo.store().delete(&layout::drop_record(&info.id)).await?;
    } else if info.closure.is_none() {
        record::write_closure(repo, &info.id, &closure).await?;
    }
    Ok(RemoveReport { closure, deleted })
}
