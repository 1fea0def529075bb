//! Head markers (`DESIGN.md` §6b): after each commit a device writes the empty
//! object `head/<device>/<seq>` and deletes its previous marker, so that a step
//! finds which logs grew with one LIST of `head/` (one object per device)
//! instead of listing every commit of every device.
//!
//! Markers are hints, never trusted for safety: a device lists a grown log in
//! full and checks it as always (rollback, holes, hash chain), and at least
//! every [`RELIST_MS`] it lists all of `log/` anyway. That full listing is what
//! catches a store that rolled a log back or lost a marker, and commits of
//! coffer versions that write no markers.

use crate::error::Result;
use crate::format::id::DeviceId;
use crate::journal::{Head, Journal};
use crate::repo::Repository;
use crate::store::layout;
use crate::sync::pull::logs::{self, Listed};
use bytes::Bytes;
use std::collections::BTreeMap;

/// The longest a device goes on finding new commits through markers alone
/// before it lists every log again.
pub const RELIST_MS: u64 = 10 * 60 * 1000;

/// The journal's `meta` key of when every log was last listed and read
/// without error.
const LISTED_ALL: &str = "logs_listed_ms";

/// After commit `seq` of `device` is in the store: writes its marker, then
/// deletes the one before (a marker left behind by a failed delete is
/// harmless: readers take the highest).
pub async fn mark(repo: &Repository, device: &DeviceId, seq: u64) -> Result<()> {
    let store = repo.store();
    store
        .put(&layout::head_marker(device, seq), Bytes::new())
        .await?;
    if seq > 1
        && let Err(e) = store.delete(&layout::head_marker(device, seq - 1)).await
    {
        tracing::debug!("could not delete the previous head marker of commit {seq}: {e}");
    }
    Ok(())
}

/// The highest marked seq of each device (one LIST of `head/`).
pub async fn list(repo: &Repository) -> Result<BTreeMap<DeviceId, u64>> {
    let mut out: BTreeMap<DeviceId, u64> = BTreeMap::new();
    for meta in repo.store().list(layout::HEAD_PREFIX).await? {
        let rest = &meta.key[layout::HEAD_PREFIX.len()..];
        match layout::parse_device_seq(rest) {
            Some((device, seq)) => {
                let top = out.entry(device).or_default();
                *top = (*top).max(seq);
            }
            None => tracing::warn!(key = %meta.key, "ignoring a foreign object in head/"),
        }
    }
    Ok(out)
}

/// The logs of the trusted devices whose marker is above what `known` saw,
/// each listed from the commit it saw on (that one included, so that a log
/// cut below it shows); the others are not listed.
pub async fn grown_logs(
    repo: &Repository,
    known: &BTreeMap<DeviceId, Head>,
) -> Result<BTreeMap<DeviceId, Listed>> {
    let grown: Vec<(DeviceId, u64)> = list(repo)
        .await?
        .into_iter()
        .filter_map(|(d, top)| {
            let seen = known.get(&d).map_or(0, |h| h.seq);
            (repo.trusts(&d) && top > seen).then_some((d, seen))
        })
        .collect();
    logs::list_devices_from(repo, grown).await
}

/// Whether markers suffice for this step: the journal has seen logs, and it
/// listed all of them within [`RELIST_MS`] before `now_ms`.
pub fn suffice(journal: &Journal, now_ms: u64) -> Result<bool> {
    let Some(listed) = journal.meta_get::<u64>(LISTED_ALL)? else {
        return Ok(false);
    };
    // A clock that went back is no proof of a recent listing.
    let recent = listed <= now_ms && now_ms - listed < RELIST_MS;
    Ok(recent && !journal.all_heads()?.is_empty())
}

/// Records that every log was listed and read without error at `now_ms`.
pub fn listed_all(journal: &Journal, now_ms: u64) -> Result<()> {
    journal.meta_put(LISTED_ALL, &now_ms)
}

/// Makes the next fetch list every log (as [`RELIST_MS`] passing would).
#[cfg(any(test, feature = "testing"))]
pub fn forget_listing(journal: &Journal) -> Result<()> {
    journal.meta_remove(LISTED_ALL)
}

#[cfg(test)]
mod tests;
