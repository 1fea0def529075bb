//! Reading every device's log into the journal.
//!
//! [`fetch`] lists `log/`, checks each device's listing against what this journal
//! saw before (a lower seq is a rollback, a hole is a hidden commit), then fetches
//! the new commits in order, checks the hash chain, and ingests them: their packs
//! become locatable and their versions enter the merge state. A rollback or fork
//! stops everything before anything is ingested; a corrupt commit stops only its
//! device's log and is reported.

use crate::error::{Error, Result};
use crate::format::commit::{Commit, commit_hash};
use crate::format::id::{CommitHash, DeviceId};
use crate::journal::{Head, Journal, Version};
use crate::progress::{Phase, Progress};
use crate::repo::Repository;
use crate::store::layout;
use crate::sync::pull::merge;
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeMap;

/// Commits fetched concurrently per device.
const FETCH_CONCURRENCY: usize = 16;
/// The most bytes of commits in flight at once: fewer commits are fetched
/// concurrently when the listing shows large ones.
const FETCH_BUDGET: u64 = 256 * 1024 * 1024;

/// What to tell a user about a log that could not be read to its end: which
/// device, which object, and what it means.
pub fn describe_damage(e: &Error) -> String {
    match e {
        Error::Corrupt { object, reason } => {
            let device = object
                .strip_prefix(layout::LOG_PREFIX)
                .and_then(|r| r.split('/').next())
                .unwrap_or("?");
            format!(
                "device {device}: {object} cannot be read ({reason}): damage or tampering in the store; its later commits are not applied"
            )
        }
        other => other.to_string(),
    }
}

/// What a fetch did.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Commits ingested.
    pub commits: usize,
    /// Devices whose log was read.
    pub devices: usize,
    /// Devices whose log could not be fully read (corrupt commits); everything before
    /// the bad commit was ingested.
    pub errors: Vec<Error>,
}

/// One device's log as listed: seq → the object's size, in seq order.
pub type Listed = BTreeMap<u64, u64>;

/// Lists every device's log.
pub async fn list_logs(repo: &Repository) -> Result<BTreeMap<DeviceId, Listed>> {
    let mut logs: BTreeMap<DeviceId, Listed> = BTreeMap::new();
    for meta in repo.store().list(layout::LOG_PREFIX).await? {
        let rest = &meta.key[layout::LOG_PREFIX.len()..];
        match layout::parse_device_seq(rest) {
            Some((device, seq)) => {
                logs.entry(device).or_default().insert(seq, meta.size);
            }
            None => tracing::warn!(key = %meta.key, "ignoring a foreign object in log/"),
        }
    }
    Ok(logs)
}

/// Checks one device's listing against its last seen head; returns the seqs to fetch.
fn plan_device(device: &DeviceId, head: Option<Head>, seqs: &[u64]) -> Result<Vec<u64>> {
    let seen = head.map(|h| h.seq).unwrap_or(0);
    let found = seqs.last().copied().unwrap_or(0);
    if found < seen {
        return Err(Error::Rollback {
            device: device.to_hex(),
            seen,
            found,
        });
    }
    let new: Vec<u64> = seqs.iter().copied().filter(|&s| s > seen).collect();
    for (i, s) in new.iter().enumerate() {
        let expected = seen + 1 + i as u64;
        if *s != expected {
            return Err(Error::Fork {
                device: device.to_hex(),
                seq: expected,
                reason: "commit missing from the store (hidden or deleted log object)".into(),
            });
        }
    }
    Ok(new)
}

/// Like [`fetch`], but a journal that has seen nothing yet first starts from the
/// checkpoint covering the most commits (see [`crate::format::checkpoint`]); `visit` then
/// sees only the commits after it.
pub async fn fetch_latest(
    repo: &Repository,
    journal: &Journal,
    visit: &mut (dyn FnMut(&Commit) + Send),
    progress: &dyn Progress,
) -> Result<Fetched> {
    let replay_all = journal.meta_get::<bool>(REPLAY_ALL)?.unwrap_or(false);
    if journal.all_heads()?.is_empty()
        && !replay_all
        && let Some(cp) = crate::format::checkpoint::newest(repo).await?
    {
        tracing::debug!(
            device = %cp.device,
            seq = cp.seq,
            commits = cp.coverage(),
            "starting from a checkpoint"
        );
        crate::format::checkpoint::load(journal, &cp)?;
    }
    let fetched = fetch(repo, journal, visit, progress).await?;
    if replay_all {
        journal.meta_remove(REPLAY_ALL)?;
    }
    Ok(fetched)
}

/// The journal's `meta` key that makes the next [`fetch_latest`] replay every
/// log instead of starting from a checkpoint (set when this device lost a
/// commit: its own checkpoints may hold the lost versions).
pub const REPLAY_ALL: &str = "replay_all";

/// What a fetch records of each verified commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Everything: its packs, its versions, the device's head.
    All,
    /// Only the device's head (for the chain checks): the visitor decides what
    /// else to keep (`restore --at` ingests only the commits before a time).
    HeadsOnly,
}

/// Fetches and ingests every commit not yet seen. `visit` sees each new commit.
pub async fn fetch(
    repo: &Repository,
    journal: &Journal,
    visit: &mut (dyn FnMut(&Commit) + Send),
    progress: &dyn Progress,
) -> Result<Fetched> {
    fetch_recording(repo, journal, Record::All, visit, progress).await
}

/// [`fetch`], recording `what` of each commit in `journal`.
pub async fn fetch_recording(
    repo: &Repository,
    journal: &Journal,
    what: Record,
    visit: &mut (dyn FnMut(&Commit) + Send),
    progress: &dyn Progress,
) -> Result<Fetched> {
    let mut logs = list_logs(repo).await?;
    logs.retain(|d, _| repo.trusts(d));
    let mut known: BTreeMap<DeviceId, Head> = journal.all_heads()?.into_iter().collect();
    known.retain(|d, _| repo.trusts(d));
    let mut plans = Vec::new();
    for (device, head) in &known {
        if !logs.contains_key(device) {
            return Err(Error::Rollback {
                device: device.to_hex(),
                seen: head.seq,
                found: 0,
            });
        }
    }
    for (device, listed) in &logs {
        let seqs: Vec<u64> = listed.keys().copied().collect();
        let todo = plan_device(device, known.get(device).copied(), &seqs)?;
        if !todo.is_empty() {
            let sized: Vec<(u64, u64)> = todo.iter().map(|s| (*s, listed[s])).collect();
            plans.push((*device, sized));
        }
    }
    let total: usize = plans.iter().map(|(_, t)| t.len()).sum();
    progress.start(Phase::Logs, None, Some(total as u64));
    let mut out = Fetched {
        devices: logs.len(),
        ..Fetched::default()
    };
    for (device, seqs) in plans {
        let prev = known
            .remove(&device)
            .map(|h| h.hash)
            .unwrap_or(CommitHash([0; 32]));
        match fetch_device(repo, journal, what, device, &seqs, prev, visit, progress).await {
            Ok(n) => out.commits += n,
            Err((n, e @ (Error::Corrupt { .. } | Error::Fork { .. }))) => {
                out.commits += n;
                out.errors.push(e);
            }
            Err((_, e)) => return Err(e),
        }
    }
    journal.flush()?;
    progress.finish(Phase::Logs);
    Ok(out)
}

/// Reads commit `seq` of `device`, listed at `size` bytes: an object larger than
/// a commit may weigh is refused from its listing, and no more than the listed
/// size (plus one byte) is ever read.
async fn get_commit(
    repo: &Repository,
    device: DeviceId,
    seq: u64,
    size: u64,
) -> Result<bytes::Bytes> {
    let key = layout::commit(&device, seq);
    if size > layout::COMMIT_MAX {
        return Err(Error::corrupt(
            key,
            format!("listed at {size} bytes, more than a commit may weigh; not read"),
        ));
    }
    crate::store::get_at_most(&**repo.store(), &key, size, "listed commit").await
}

/// How many commits of `seqs` to fetch at once: [`FETCH_CONCURRENCY`], fewer
/// when the largest would put more than [`FETCH_BUDGET`] bytes in flight.
fn concurrency(seqs: &[(u64, u64)]) -> usize {
    let largest = seqs.iter().map(|(_, size)| *size).max().unwrap_or(0).max(1);
    usize::try_from(FETCH_BUDGET / largest)
        .unwrap_or(usize::MAX)
        .clamp(1, FETCH_CONCURRENCY)
}

/// Opens a fetched commit. One that does not open may be sealed under a key
/// epoch this machine has not picked up yet (a rotation since the step began):
/// the epochs are listed again, and it is opened once more if that brought a
/// new key (`DESIGN.md` §4a).
async fn open_commit(repo: &Repository, device: DeviceId, seq: u64, bytes: &[u8]) -> Result<Commit> {
    match Commit::open(&repo.keys(), &device, seq, bytes) {
        Err(e @ Error::Corrupt { .. }) => match repo.refresh_keys().await? {
            true => Commit::open(&repo.keys(), &device, seq, bytes),
            false => Err(e),
        },
        other => other,
    }
}

/// Fetches `seqs` (with their listed sizes) of one device in order; on failure
/// also returns how many were ingested.
#[allow(clippy::too_many_arguments)]
async fn fetch_device(
    repo: &Repository,
    journal: &Journal,
    what: Record,
    device: DeviceId,
    seqs: &[(u64, u64)],
    mut prev: CommitHash,
    visit: &mut (dyn FnMut(&Commit) + Send),
    progress: &dyn Progress,
) -> std::result::Result<usize, (usize, Error)> {
    let mut stream = futures::stream::iter(seqs.iter().copied())
        .map(|(seq, size)| async move {
            let bytes = get_commit(repo, device, seq, size).await?;
            Ok::<_, Error>((seq, bytes))
        })
        .buffered(concurrency(seqs))
        .map_err(|e| (0usize, e));
    let mut done = 0usize;
    while let Some(item) = stream.next().await {
        let (seq, bytes) = item.map_err(|(_, e)| (done, e))?;
        let commit = open_commit(repo, device, seq, &bytes)
            .await
            .map_err(|e| (done, e))?;
        if commit.prev != prev {
            let reason =
                "hash chain broken: the commit does not follow the one seen before".to_string();
            return Err((
                done,
                Error::Fork {
                    device: device.to_hex(),
                    seq,
                    reason,
                },
            ));
        }
        let hash = commit_hash(&bytes);
        match what {
            Record::All => ingest(journal, &commit, hash),
            Record::HeadsOnly => journal.put_head(&device, &Head { seq, hash }),
        }
        .map_err(|e| (done, e))?;
        visit(&commit);
        progress.commit_seen(&device, seq, commit.time_ms);
        prev = hash;
        done += 1;
        progress.advance(bytes.len() as u64, 1);
    }
    Ok(done)
}

/// Applies one verified commit to the journal's merge state.
pub fn ingest(journal: &Journal, commit: &Commit, hash: CommitHash) -> Result<()> {
    journal.record_committed_packs(&commit.packs)?;
    for ch in &commit.changes {
        let v = Version {
            vv: ch.vv.clone(),
            hlc: commit.hlc,
            origin: commit.device,
            entry: ch.entry.clone(),
        };
        let mut set = journal.versions(&ch.path)?;
        if merge::insert_version(&mut set, v) {
            journal.put_versions(&ch.path, &set)?;
        }
    }
    journal.observe_hlc(commit.hlc)?;
    // Last: a crash before this line re-ingests the commit, which is idempotent.
    journal.put_head(
        &commit.device,
        &Head {
            seq: commit.seq,
            hash,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_detect_rollback_and_holes() {
        let d = DeviceId::random();
        let head = Some(Head {
            seq: 3,
            hash: CommitHash([0; 32]),
        });
        assert_eq!(plan_device(&d, head, &[1, 2, 3, 4, 5]).unwrap(), [4, 5]);
        assert!(plan_device(&d, head, &[1, 2, 3]).unwrap().is_empty());
        assert!(matches!(
            plan_device(&d, head, &[1, 2]),
            Err(Error::Rollback {
                seen: 3,
                found: 2,
                ..
            })
        ));
        assert!(matches!(
            plan_device(&d, head, &[1, 2, 3, 5]),
            Err(Error::Fork { seq: 4, .. })
        ));
        assert_eq!(plan_device(&d, None, &[1, 2]).unwrap(), [1, 2]);
        assert!(plan_device(&d, None, &[2]).is_err());
    }
}
