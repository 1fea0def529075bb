//! Reading every device's log into the journal.
//!
//! [`fetch`] lists `log/` (or, between full listings, only the logs whose
//! [`heads`] marker grew), checks each device's listing against what this journal
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
use crate::format::version::now_millis;
use crate::sync::heads;
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

/// Keys per LIST page (S3's and Garage's most).
const LIST_PAGE: u64 = 1_000;

/// Device logs listed at once when they are listed one by one.
const LIST_CONCURRENCY: usize = 8;

/// Lists every device's log, each from the commit `known` saw on (that one
/// included, so that a log cut below it shows) or whole: in one listing of
/// `log/` — one request per 1,000 commits, one after the other — or, when the
/// commits seen outnumber the devices a thousandfold, with one LIST of the
/// device directories and one of each log's new part, eight at a time (at most
/// one request more, in a fraction of the round trips: a device that joined
/// from a checkpoint of 100,000 commits lists them in 101 small requests, not
/// 100 full pages in a row).
pub async fn list_logs(
    repo: &Repository,
    known: &BTreeMap<DeviceId, Head>,
) -> Result<BTreeMap<DeviceId, Listed>> {
    let pages = known.values().map(|h| h.seq).sum::<u64>().div_ceil(LIST_PAGE);
    if known.is_empty() || known.len() as u64 > pages {
        return Ok(parse_listing(repo.store().list(layout::LOG_PREFIX).await?));
    }
    let devices = list_devices(repo).await?.into_iter().map(|device| {
        let seen = known.get(&device).map_or(0, |h| h.seq);
        (device, seen)
    });
    list_devices_from(repo, devices).await
}

/// Each `(device, seen)`'s log from commit `seen` on ([`list_device_from`]),
/// eight at a time.
pub async fn list_devices_from(
    repo: &Repository,
    devices: impl IntoIterator<Item = (DeviceId, u64)>,
) -> Result<BTreeMap<DeviceId, Listed>> {
    futures::stream::iter(devices)
        .map(|(device, seen)| async move {
            Ok::<_, Error>((device, list_device_from(repo, &device, seen).await?))
        })
        .buffer_unordered(LIST_CONCURRENCY)
        .try_collect()
        .await
}

/// The devices with a directory under `log/` (one request per 1,000 devices).
async fn list_devices(repo: &Repository) -> Result<Vec<DeviceId>> {
    let dirs = repo.store().list_dirs(layout::LOG_PREFIX).await?;
    let parse = |dir: &str| {
        let hex = dir.strip_prefix(layout::LOG_PREFIX)?.strip_suffix('/')?;
        DeviceId::from_hex(hex)
    };
    Ok(dirs
        .iter()
        .filter_map(|dir| {
            let device = parse(dir);
            if device.is_none() {
                tracing::warn!(%dir, "ignoring a foreign directory in log/");
            }
            device
        })
        .collect())
}

/// `device`'s log from commit `seen` on (all of it when `seen` is 0): one
/// LIST page per 1,000 commits since.
async fn list_device_from(repo: &Repository, device: &DeviceId, seen: u64) -> Result<Listed> {
    let prefix = layout::device_log_prefix(device);
    let after = match seen {
        0 | 1 => prefix.clone(),
        _ => layout::commit(device, seen - 1),
    };
    let mut listed = parse_listing(repo.store().list_after(&prefix, &after).await?);
    Ok(listed.remove(device).unwrap_or_default())
}

/// The logs a listing of keys under `log/` shows (foreign keys are ignored).
pub fn parse_listing(listing: Vec<crate::store::ObjectMeta>) -> BTreeMap<DeviceId, Listed> {
    let mut logs: BTreeMap<DeviceId, Listed> = BTreeMap::new();
    for meta in listing {
        let rest = &meta.key[layout::LOG_PREFIX.len()..];
        match layout::parse_device_seq(rest) {
            Some((device, seq)) => {
                logs.entry(device).or_default().insert(seq, meta.size);
            }
            None => tracing::warn!(key = %meta.key, "ignoring a foreign object in log/"),
        }
    }
    logs
}

/// The logs to read this step, and whether they were all listed. With
/// [`Record::All`] and a recent full listing, only the logs whose head marker
/// grew are listed (`DESIGN.md` §6b); otherwise every log is, and a log seen
/// before that is gone is a rollback.
async fn logs_to_read(
    repo: &Repository,
    journal: &Journal,
    what: Record,
    known: &BTreeMap<DeviceId, Head>,
) -> Result<(BTreeMap<DeviceId, Listed>, bool)> {
    if what == Record::All && heads::suffice(journal, now_millis())? {
        return Ok((heads::grown_logs(repo, known).await?, false));
    }
    let mut logs = list_logs(repo, known).await?;
    logs.retain(|d, _| repo.trusts(d));
    if let Some((device, head)) = known.iter().find(|(d, _)| !logs.contains_key(*d)) {
        return Err(Error::Rollback {
            device: device.to_hex(),
            seen: head.seq,
            found: 0,
        });
    }
    Ok((logs, true))
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
    let mut known: BTreeMap<DeviceId, Head> = journal.all_heads()?.into_iter().collect();
    known.retain(|d, _| repo.trusts(d));
    let started = now_millis();
    let (logs, all) = logs_to_read(repo, journal, what, &known).await?;
    let mut plans = Vec::new();
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
    let prevs = plans
        .iter()
        .map(|(d, _)| (*d, known.get(d).map_or(CommitHash([0; 32]), |h| h.hash)))
        .collect();
    let mut chains = Chains {
        repo,
        journal,
        what,
        prevs,
        broken: Default::default(),
    };
    chains.fetch(&plans, visit, progress, &mut out).await?;
    if all && what == Record::All && out.errors.is_empty() {
        heads::listed_all(journal, started)?;
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

/// The logs being fetched: where each device's chain stands.
struct Chains<'a> {
    repo: &'a Repository,
    journal: &'a Journal,
    what: Record,
    /// The hash each device's next commit must follow.
    prevs: BTreeMap<DeviceId, CommitHash>,
    /// Devices whose log stopped at a corrupt commit or a fork.
    broken: std::collections::BTreeSet<DeviceId>,
}

impl Chains<'_> {
    /// Fetches the commits of `plans` (each device's seqs with their listed
    /// sizes, in order) as one ordered stream, up to [`concurrency`] GETs in
    /// flight across devices, and ingests each in its log's order. A corrupt
    /// commit or a fork stops its device's log (reported in `out.errors`);
    /// any other error stops the fetch.
    async fn fetch(
        &mut self,
        plans: &[(DeviceId, Vec<(u64, u64)>)],
        visit: &mut (dyn FnMut(&Commit) + Send),
        progress: &dyn Progress,
        out: &mut Fetched,
    ) -> Result<()> {
        let items: Vec<(DeviceId, u64, u64)> = plans
            .iter()
            .flat_map(|(d, seqs)| seqs.iter().map(move |(seq, size)| (*d, *seq, *size)))
            .collect();
        let sizes: Vec<(u64, u64)> = items.iter().map(|(_, s, z)| (*s, *z)).collect();
        let repo = self.repo;
        let mut stream = futures::stream::iter(items)
            .map(|(device, seq, size)| async move {
                (device, seq, get_commit(repo, device, seq, size).await)
            })
            .buffered(concurrency(&sizes));
        while let Some((device, seq, got)) = stream.next().await {
            if self.broken.contains(&device) {
                continue;
            }
            match self.apply(device, seq, got, visit, progress).await {
                Ok(()) => out.commits += 1,
                Err(e @ (Error::Corrupt { .. } | Error::Fork { .. })) => {
                    self.broken.insert(device);
                    out.errors.push(e);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Opens fetched commit `seq` of `device`, checks that it follows the
    /// device's chain, and records it.
    async fn apply(
        &mut self,
        device: DeviceId,
        seq: u64,
        got: Result<bytes::Bytes>,
        visit: &mut (dyn FnMut(&Commit) + Send),
        progress: &dyn Progress,
    ) -> Result<()> {
        let bytes = got?;
        let commit = open_commit(self.repo, device, seq, &bytes).await?;
        let prev = self.prevs.entry(device).or_insert(CommitHash([0; 32]));
        if commit.prev != *prev {
            return Err(Error::Fork {
                device: device.to_hex(),
                seq,
                reason: "hash chain broken: the commit does not follow the one seen before".into(),
            });
        }
        let hash = commit_hash(&bytes);
        match self.what {
            Record::All => ingest(self.journal, &commit, hash)?,
            Record::HeadsOnly => self.journal.put_head(&device, &Head { seq, hash })?,
        }
        *prev = hash;
        visit(&commit);
        progress.commit_seen(&device, seq, commit.time_ms);
        progress.advance(bytes.len() as u64, 1);
        Ok(())
    }
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
