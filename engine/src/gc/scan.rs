//! The packs the commits of `log/` name, read with bounded memory: commits are
//! fetched 16 at a time and dropped once their pack ids are taken.

use crate::error::{Error, Result};
use crate::format::commit::Commit;
use crate::format::id::{DeviceId, PackId};
use crate::repo::Repository;
use crate::store::{get_at_most, layout};
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};

/// Commits fetched at once.
const FETCH_CONCURRENCY: usize = 16;

/// What the logs name.
#[derive(Debug, Default)]
pub struct Referenced {
    /// Every pack some commit names.
    pub packs: HashSet<PackId>,
    /// Commits read.
    pub commits: u64,
}

/// Reads every commit of every device. Any commit that cannot be read, and any
/// gap in a device's seqs, is an error: an unreadable or missing commit may
/// name any pack, so nothing may be deleted (DESIGN.md §11).
pub async fn referenced_packs(repo: &Repository) -> Result<Referenced> {
    // Key epochs made before the listing open the commits it lists (a later
    // rotation's commit fails to open, and prune refuses: it deletes nothing).
    repo.refresh_keys().await?;
    let keys = commit_keys(repo).await?;
    let mut out = Referenced::default();
    let mut fetched = futures::stream::iter(keys)
        .map(|(device, seq, key, size)| async move {
            let bytes = get_at_most(&**repo.store(), &key, size.min(layout::COMMIT_MAX), "commit")
                .await?;
            let keys = repo.keys().clone();
            tokio::task::spawn_blocking(move || Commit::open(&keys, &device, seq, &bytes))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
        })
        .buffer_unordered(FETCH_CONCURRENCY);
    while let Some(commit) = fetched.next().await {
        let commit = commit.map_err(|e| refused(format!("{e}")))?;
        out.commits += 1;
        out.packs.extend(commit.packs.iter().map(|p| p.id));
    }
    Ok(out)
}

/// `(device, seq, key, listed size)` of every commit, after checking that each
/// device's seqs run from 1 without a gap.
async fn commit_keys(repo: &Repository) -> Result<Vec<(DeviceId, u64, String, u64)>> {
    let listed = repo.store().list(layout::LOG_PREFIX).await?;
    let mut last: BTreeMap<DeviceId, u64> = BTreeMap::new();
    let mut out = Vec::with_capacity(listed.len());
    for meta in listed {
        let Some(rest) = meta.key.strip_prefix(layout::LOG_PREFIX) else {
            continue;
        };
        let Some((device, seq)) = layout::parse_device_seq(rest) else {
            continue;
        };
        if meta.size > layout::COMMIT_MAX {
            return Err(refused(format!(
                "{}: listed larger than a commit may weigh",
                meta.key
            )));
        }
        // Keys are listed sorted, so one device's seqs come in order.
        let prev = last.insert(device, seq).unwrap_or(0);
        if seq != prev + 1 {
            return Err(refused(format!(
                "the log of device {device} has no commit {} (seq {seq} follows {prev}); run `coffer check`",
                prev + 1
            )));
        }
        out.push((device, seq, meta.key, meta.size));
    }
    Ok(out)
}

fn refused(reason: String) -> Error {
    Error::PruneRefused(reason)
}
