//! A device: one identity with its own log in the store, and the journal that
//! tracks it. A synced folder is a device ([`crate::folder::Folder`]); so is the
//! per-machine "loose" device that `coffer add`/`rm` use for files that live in no
//! synced folder ([`Device::open_loose`]).
//!
//! This module writes the device's commits: outbox first (flushed), then the PUT,
//! then ingestion (`DESIGN.md` §7).
//!
//! One device id has one writer (`DESIGN.md` §7a). Copies of a folder are told
//! apart when they open ([`crate::folder`]); what that cannot see (two clones of
//! one VM image) is caught here: a commit is written only where no object is,
//! read back before it counts, and a device that finds commits of its own id it
//! did not write, or its last commit replaced, becomes a new device
//! (`Device::renew`) that keeps what it has seen.

use crate::error::{Error, Result};
use crate::format::commit::{Change, Commit, Entry};
use crate::format::id::{CommitHash, DeviceId, RepoId};
use crate::format::path::RepoPath;
use crate::format::version::VersionVector;
use crate::journal::{Journal, StatEntry};
use crate::repo::Repository;
use crate::store::layout;
use crate::sync::heads;
use crate::sync::pull::logs;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A device's identity and journal.
#[derive(Debug)]
pub struct Device {
    id: Mutex<DeviceId>,
    journal: Journal,
    home: IdHome,
}

/// Where a device's id is kept, so that [`Device::renew`] can replace it.
#[derive(Debug)]
pub(crate) enum IdHome {
    /// A synced folder's `.coffer/` (its binding names the device).
    Folder {
        state: PathBuf,
        binding: Mutex<crate::folder::Binding>,
    },
    /// A loose device's `device.json`.
    Loose { file: PathBuf, repo: RepoId },
    /// Nowhere (a device of a test).
    Nowhere,
}

/// Why a device took a new id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// The store holds a commit of this device's id at the seq it was writing.
    SeqTaken(u64),
    /// The commit it wrote was replaced by another writer's before it counted.
    Overwritten(u64),
    /// The store has commits of this device's id that it did not write.
    ForeignCommits(u64),
    /// Its last commit in the store is not the one it wrote.
    HeadReplaced(u64),
    /// Its journal knows none of the commits of its id in the store (a lost
    /// journal, or a copy of the folder's binding without its journal).
    Unknown(u64),
}

impl std::fmt::Display for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claimed::SeqTaken(s) => write!(f, "the store already holds its commit {s}"),
            Claimed::Overwritten(s) => {
                write!(f, "its commit {s} was replaced by another writer's")
            }
            Claimed::ForeignCommits(s) => {
                write!(
                    f,
                    "the store has commits up to {s} of its id that it did not write"
                )
            }
            Claimed::HeadReplaced(s) => {
                write!(f, "its commit {s} in the store is not the one it wrote")
            }
            Claimed::Unknown(s) => write!(
                f,
                "its journal knows none of the {s} commits of its id in the store"
            ),
        }
    }
}

/// What to do with the stat cache once a change is committed.
#[derive(Debug, Clone)]
pub enum StatUpdate {
    /// Record this entry (its `synced` is set to the committed version).
    Record(StatEntry),
    /// Forget the path (it was deleted).
    Remove,
    /// The change has no local file (loose devices).
    None,
}

/// A change waiting for its commit's seq.
#[derive(Debug, Clone)]
pub struct PendingChange {
    pub path: RepoPath,
    /// The version this change replaces (empty for a new path).
    pub base: VersionVector,
    pub entry: Entry,
    pub stat: StatUpdate,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LooseFile {
    version: u32,
    device: String,
    repository: String,
}

impl Device {
    /// A device whose id is kept nowhere (tests).
    pub fn new(id: DeviceId, journal: Journal) -> Self {
        Self::with_home(id, journal, IdHome::Nowhere)
    }

    pub(crate) fn with_home(id: DeviceId, journal: Journal, home: IdHome) -> Self {
        Device {
            id: Mutex::new(id),
            journal,
            home,
        }
    }

    /// The loose device of `repo` on this machine: `<home>/devices/<repo id>/`.
    pub fn open_loose(home: &Path, repo: RepoId) -> Result<Device> {
        let dir = home.join("devices").join(repo.to_hex());
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let file = dir.join("device.json");
        let id = match fs::read(&file) {
            Ok(bytes) => {
                let lf: LooseFile = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::Config(format!("{}: {e}", file.display())))?;
                DeviceId::from_hex(&lf.device)
                    .filter(|_| lf.repository == repo.to_hex())
                    .ok_or_else(|| Error::Config(format!("{}: bad device", file.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = DeviceId::random();
                write_loose(&file, repo, id)?;
                id
            }
            Err(e) => return Err(Error::io(&file, e)),
        };
        let (journal, _) = Journal::open(&dir.join("journal"))?;
        let home = IdHome::Loose { file, repo };
        Ok(Self::with_home(id, journal, home))
    }

    /// Forgets the loose device of `repo` (after its bucket is deleted).
    pub fn remove_loose(home: &Path, repo: RepoId) -> Result<()> {
        let dir = home.join("devices").join(repo.to_hex());
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&dir, e)),
        }
    }

    pub fn id(&self) -> DeviceId {
        *self.id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes this device a new one, because its id has another writer (a copy
    /// of the folder, a clone of the machine). The journal stays: the new device
    /// has seen everything the old one had, so nothing is sent again and nothing
    /// becomes a false conflict; the old id's log is from now on another
    /// device's. Commits of the old id that were never written (the outbox) are
    /// dropped: their changes were not recorded as synced, so the next push
    /// sends them as the new device. Says so once, on stderr.
    pub(crate) fn renew(&self, why: &str) -> Result<DeviceId> {
        let old = self.id();
        let new = DeviceId::random();
        // The old id's unwritten commits go first: a crash after the binding
        // names the new id must not leave commits of the old one to write.
        for (seq, _) in self.journal.outbox_all()? {
            self.journal.outbox_remove(seq)?;
        }
        self.journal.flush()?;
        match &self.home {
            IdHome::Folder { state, binding } => {
                let mut b = binding.lock().unwrap_or_else(|p| p.into_inner());
                let mut next = b.clone();
                next.device = new.to_hex();
                crate::folder::write_binding(state, &next)?;
                *b = next;
            }
            IdHome::Loose { file, repo } => write_loose(file, *repo, new)?,
            IdHome::Nowhere => {}
        }
        *self.id.lock().unwrap_or_else(|p| p.into_inner()) = new;
        tracing::warn!(
            "{why}: it continues as the new device {new} (was {old}), keeping everything it has synced"
        );
        Ok(new)
    }

    /// The binding of a folder's device.
    pub(crate) fn binding(&self) -> Option<crate::folder::Binding> {
        match &self.home {
            IdHome::Folder { binding, .. } => {
                Some(binding.lock().unwrap_or_else(|p| p.into_inner()).clone())
            }
            _ => None,
        }
    }

    /// What to call this device in messages.
    fn name(&self) -> String {
        match &self.home {
            IdHome::Folder { state, .. } => state
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            _ => format!("device {}", self.id()),
        }
    }

    /// Renews the device for `why`, naming it in the message.
    fn renew_for(&self, why: Claimed) -> Result<DeviceId> {
        let what = match why {
            Claimed::Unknown(_) => "does not know the history of its device id",
            _ => "shares its device id with another writer",
        };
        self.renew(&format!("{} {what} ({why})", self.name()))
    }

    /// Brings the journal up to date with the store before a step: writes what a
    /// killed run left in the outbox, checks that this device's last commit is
    /// still the one it wrote, fetches every device's new commits, and renews the
    /// device if its own log grew by another writer's commits.
    pub async fn refresh(
        &self,
        repo: &Repository,
        progress: &dyn crate::progress::Progress,
    ) -> Result<logs::Fetched> {
        // A rotation made since the last step: seal under its key from now on.
        repo.refresh_keys_for_step().await?;
        self.sweep_grants(repo, progress).await?;
        self.refresh_logs(repo, progress).await
    }

    /// The step's grant check ([`Repository::check_grants`]): a grant this
    /// machine opened through refuses once expired; an owner removes expired
    /// grants and rotates before it writes anything. What the owner knows of
    /// the grants is kept in the journal, so that `keys/` is listed at most
    /// every [`crate::grants::RELIST_MS`] across processes, not once per
    /// process.
    async fn sweep_grants(
        &self,
        repo: &Repository,
        progress: &dyn crate::progress::Progress,
    ) -> Result<()> {
        if let Some(known) = self.journal.meta_get(GRANT_SWEEP)? {
            repo.recall_grants(known).await;
        }
        let swept = repo.check_grants().await?;
        match repo.known_grants().await {
            Some(known) => self.journal.meta_put(GRANT_SWEEP, &known)?,
            None => self.journal.meta_remove(GRANT_SWEEP)?,
        }
        for slot in &swept.removed {
            let why = match (&swept.epoch, &swept.not_rotated) {
                (Some(e), _) => format!("the key was rotated to epoch {}", e.level),
                (None, Some(why)) => format!("the key could not be rotated: {why}"),
                (None, None) => "the key was not rotated".into(),
            };
            progress.warn(&format!("removed expired grant {slot}; {why}"));
        }
        if let (true, Some(why)) = (swept.removed.is_empty(), &swept.not_rotated) {
            progress.warn(why);
        }
        Ok(())
    }

    /// [`Device::refresh`] but for the key epochs and grants, which the
    /// caller checked moments ago (a pull right after a push).
    pub async fn refresh_logs(
        &self,
        repo: &Repository,
        progress: &dyn crate::progress::Progress,
    ) -> Result<logs::Fetched> {
        // Before the outbox is written again: it may name a pack prune marked.
        crate::gc::writer::drop_marked_at_start(repo, &self.journal, &self.id()).await?;
        self.flush_outbox(repo).await?;
        self.verify_own_log(repo).await?;
        let before = self.journal.head(&self.id())?.map(|h| h.seq).unwrap_or(0);
        let fetched = logs::fetch_latest(repo, &self.journal, &mut |_| {}, progress).await?;
        let after = self.journal.head(&self.id())?.map(|h| h.seq).unwrap_or(0);
        if after > before {
            self.renew_for(if before == 0 {
                Claimed::Unknown(after)
            } else {
                Claimed::ForeignCommits(after)
            })?;
        }
        Ok(fetched)
    }

    /// Reads back this device's commits written since the last check
    /// (`meta["verified_through"]`), newest first, following the hash chain
    /// from the journal's head. If another writer replaced any of them, the
    /// journal holds versions the store does not: see [`Device::lost_commit`].
    async fn verify_own_log(&self, repo: &Repository) -> Result<()> {
        let device = self.id();
        let Some(head) = self.journal.head(&device)? else {
            return Ok(());
        };
        let from = match self.journal.meta_get::<(DeviceId, u64)>(VERIFIED_THROUGH)? {
            Some((d, seq)) if d == device => seq,
            Some(_) => 0,
            // Not checked before (a journal older than the check): the head only.
            None => head.seq.saturating_sub(1),
        };
        let mut expected = head.hash;
        for seq in (from.saturating_add(1).max(1)..=head.seq).rev() {
            let stored = match get_commit(repo, &layout::commit(&device, seq)).await {
                Ok(b) => b,
                // A missing commit is a rollback: the fetch reports it.
                Err(Error::Store(crate::error::StoreError::NotFound { .. })) => return Ok(()),
                Err(Error::Corrupt { .. }) => bytes::Bytes::new(),
                Err(e) => return Err(e),
            };
            if crate::format::commit::commit_hash(&stored) != expected {
                return self.lost_commit(seq);
            }
            match Commit::open(&repo.keys(), &device, seq, &stored) {
                Ok(c) => expected = c.prev,
                Err(_) => return self.lost_commit(seq),
            }
        }
        self.journal.meta_put(VERIFIED_THROUGH, &(device, head.seq))
    }

    /// Commit `seq` of this device was replaced by another writer's after it
    /// counted: the journal is cleared (the next fetch replays every log
    /// without a checkpoint, which could hold the lost versions, and the next
    /// push rescans the folder, so what only it has is sent again) and the
    /// device renewed. A loose device has no folder to rescan: what its `add`
    /// or `rm` sent in that commit must be done again, and it says so.
    fn lost_commit(&self, seq: u64) -> Result<()> {
        self.journal.reset()?;
        self.journal
            .meta_put(crate::sync::pull::logs::REPLAY_ALL, &true)?;
        self.renew_for(Claimed::HeadReplaced(seq))?;
        if matches!(self.home, IdHome::Loose { .. }) {
            tracing::warn!(
                "files added or removed by this machine's commit {seq} may be missing from the repository: run those `add`/`rm` again"
            );
        }
        Ok(())
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Seals, journals (outbox), uploads and ingests a commit of `pending`;
    /// records the stat updates. Returns its seq. If the device's id turns out
    /// to have another writer, the device is renewed and the commit written as
    /// the new device's (at most [`RENEW_ATTEMPTS`] times).
    pub async fn commit(&self, repo: &Repository, pending: Vec<PendingChange>) -> Result<u64> {
        let mut attempts = 0;
        loop {
            match self.try_commit(repo, &pending).await? {
                Ok(seq) => break self.finish_commit(repo, seq, pending).await,
                Err(Claimed::HeadReplaced(lost)) => {
                    self.lost_commit(lost)?;
                    return Err(Error::Config(format!(
                        "this device's commit {lost} was replaced in the store by another writer of its id (a clone of this folder or machine?); it continues as a new device: run the command again to send its changes"
                    )));
                }
                Err(claimed) if attempts < RENEW_ATTEMPTS => {
                    attempts += 1;
                    self.renew_for(claimed)?;
                }
                Err(claimed) => {
                    return Err(Error::Internal(format!(
                        "device id taken by another writer {attempts} times in a row: {claimed}"
                    )));
                }
            }
        }
    }

    /// Writes one commit of `pending` as this device: outbox, flush, a check that
    /// the key is free, the PUT, a read-back, ingestion. `Ok(Err(_))` when the
    /// id turned out to have another writer (nothing of the commit counts).
    async fn try_commit(
        &self,
        repo: &Repository,
        pending: &[PendingChange],
    ) -> Result<std::result::Result<u64, Claimed>> {
        let journal = &self.journal;
        let device = self.id();
        let head = journal.head(&device)?;
        let seq = head.map(|h| h.seq).unwrap_or(0) + 1;
        // Commit times never go backwards, whatever the clock or its offset do:
        // `restore --at` takes a prefix of each device's log.
        let last: u64 = journal.meta_get(LAST_COMMIT_MS)?.unwrap_or(0);
        let now = repo.now_ms().await.max(last.saturating_add(1));
        journal.meta_put(LAST_COMMIT_MS, &now)?;
        // Marks are checked by the clock that a sweep's bound assumes (§11).
        let checked = std::time::Instant::now();
        crate::gc::writer::check_before_put(repo, journal, &device, repo.now_ms().await).await?;
        let commit = Commit {
            device,
            seq,
            prev: head.map(|h| h.hash).unwrap_or(CommitHash([0; 32])),
            hlc: journal.next_hlc(now)?,
            time_ms: now,
            packs: journal.uncommitted_packs()?,
            changes: pending
                .iter()
                .map(|p| Change {
                    path: p.path.clone(),
                    vv: p.base.advanced(device, seq),
                    entry: p.entry.clone(),
                })
                .collect(),
        };
        let sealed = commit.seal(&repo.keys())?;
        journal.outbox_put(seq, &sealed.bytes)?;
        journal.flush_async().await?;
        if let Err(claimed) = write_once(repo, &device, seq, commit.prev, &sealed.bytes).await? {
            journal.outbox_remove(seq)?;
            return Ok(Err(claimed));
        }
        heads::mark(repo, &device, seq).await?;
        if checked.elapsed().as_millis() > u128::from(crate::gc::PUT_BOUND_MS) {
            crate::gc::writer::verify_after_slow_put(repo, &commit).await?;
        }
        logs::ingest(journal, &commit, sealed.hash)?;
        Ok(Ok(seq))
    }

    /// After commit `seq` is ingested: records the stat updates, empties the
    /// outbox, maybe writes a checkpoint.
    async fn finish_commit(
        &self,
        repo: &Repository,
        seq: u64,
        pending: Vec<PendingChange>,
    ) -> Result<u64> {
        let journal = &self.journal;
        let device = self.id();
        if journal
            .meta_get::<(DeviceId, u64)>(VERIFIED_THROUGH)?
            .is_none()
        {
            // A journal older than the read-back: what it wrote before this
            // commit is taken as checked; this commit and later ones are checked.
            journal.meta_put(VERIFIED_THROUGH, &(device, seq - 1))?;
        }
        for p in pending {
            match p.stat {
                StatUpdate::Record(mut s) => {
                    s.synced = p.base.advanced(device, seq);
                    journal.stat_put(&p.path, &s)?;
                }
                StatUpdate::Remove => journal.stat_remove(&p.path)?,
                StatUpdate::None => {}
            }
        }
        journal.outbox_remove(seq)?;
        journal.flush_async().await?;
        // Only an optimization for new devices: a failure must not fail the commit.
        if let Err(e) = crate::format::checkpoint::maybe_write(repo, journal, device, seq).await {
            tracing::warn!("could not write a checkpoint after commit {seq}: {e}");
        }
        Ok(seq)
    }

    /// A loose device's commit that could not be written as the old id is
    /// written again as the renewed one (a folder's is sent by its next push's
    /// rescan instead: its changes were not recorded as synced). Each change is
    /// based on what the old commit's had seen, minus that commit.
    async fn rewrite_loose(&self, repo: &Repository, lost: &Commit) -> Result<()> {
        if !matches!(self.home, IdHome::Loose { .. }) || lost.changes.is_empty() {
            return Ok(());
        }
        let pending = lost
            .changes
            .iter()
            .map(|c| PendingChange {
                path: c.path.clone(),
                base: c.vv.with_entry(lost.device, lost.seq - 1),
                entry: c.entry.clone(),
                stat: StatUpdate::None,
            })
            .collect();
        self.commit(repo, pending).await.map(|_| ())
    }

    /// Writes commits a killed run left in the outbox (identical bytes: a retried
    /// PUT).
    pub async fn flush_outbox(&self, repo: &Repository) -> Result<()> {
        let journal = &self.journal;
        let device = self.id();
        for (seq, bytes) in journal.outbox_all()? {
            let head = journal.head(&device)?.map(|h| h.seq).unwrap_or(0);
            if seq > head {
                let commit = Commit::open(&repo.keys(), &device, seq, &bytes)?;
                match write_once(repo, &device, seq, commit.prev, &bytes).await? {
                    Ok(()) => {
                        heads::mark(repo, &device, seq).await?;
                        logs::ingest(journal, &commit, crate::format::commit::commit_hash(&bytes))?
                    }
                    // Its changes were never recorded as synced: the next push
                    // sends them again, as the renewed device.
                    Err(Claimed::HeadReplaced(lost)) => return self.lost_commit(lost),
                    Err(claimed) => {
                        self.renew_for(claimed)?;
                        return self.rewrite_loose(repo, &commit).await;
                    }
                }
            }
            journal.outbox_remove(seq)?;
        }
        journal.flush_async().await
    }
}

/// The journal's `meta` key of the time of the last own commit.
const LAST_COMMIT_MS: &str = "last_commit_ms";

/// The journal's `meta` key of what the last grant sweep knew
/// ([`crate::grants::KnownGrants`]).
const GRANT_SWEEP: &str = "grant_sweep";

/// The journal's `meta` key of the highest own commit read back intact.
const VERIFIED_THROUGH: &str = "verified_through";


/// How often one commit may find its device id taken before the push fails.
pub const RENEW_ATTEMPTS: u32 = 3;

/// Writes commit `seq` of `device` only if its key is free (or holds these
/// very bytes: a retried write), then reads it back: `Err(_)` when another
/// writer has the key. Neither check needs conditional writes: of two writers
/// of one key, the one whose read-back comes last sees the other's bytes or
/// finds the key taken; the other one sees its own commit replaced on its next
/// [`Device::refresh`] (DESIGN.md §7a).
async fn write_once(
    repo: &Repository,
    device: &DeviceId,
    seq: u64,
    prev: CommitHash,
    bytes: &[u8],
) -> Result<std::result::Result<(), Claimed>> {
    let key = layout::commit(device, seq);
    // The commit it follows must still be the one this device wrote: a push
    // of several batches must not chain onto a commit another writer replaced.
    if seq > 1 {
        let before = get_commit(repo, &layout::commit(device, seq - 1)).await;
        let intact = match &before {
            Ok(b) => crate::format::commit::commit_hash(b) == prev,
            Err(Error::Corrupt { .. }) => false,
            Err(Error::Store(crate::error::StoreError::NotFound { .. })) => false,
            Err(e) => return Err(e.clone()),
        };
        if !intact {
            return Ok(Err(Claimed::HeadReplaced(seq - 1)));
        }
    }
    if bytes.len() as u64 > layout::COMMIT_MAX {
        return Err(Error::Config(format!(
            "commit {seq} would weigh {} bytes, more than a commit may ({}); push fewer or smaller files at once",
            bytes.len(),
            layout::COMMIT_MAX
        )));
    }
    match get_commit(repo, &key).await {
        Ok(found) if found.as_ref() == bytes => return Ok(Ok(())),
        Ok(_) | Err(Error::Corrupt { .. }) => return Ok(Err(Claimed::SeqTaken(seq))),
        Err(Error::Store(crate::error::StoreError::NotFound { .. })) => {}
        Err(e) => return Err(e),
    }
    repo.store()
        .put(&key, Bytes::copy_from_slice(bytes))
        .await?;
    let back = get_commit(repo, &key).await;
    Ok(match back {
        Ok(b) if b.as_ref() == bytes => Ok(()),
        Ok(_) | Err(Error::Corrupt { .. }) => Err(Claimed::Overwritten(seq)),
        Err(e) => return Err(e),
    })
}

/// A commit object, read no further than a commit may weigh.
async fn get_commit(repo: &Repository, key: &str) -> Result<Bytes> {
    crate::store::get_at_most(&**repo.store(), key, layout::COMMIT_MAX, "commit").await
}

fn write_loose(file: &Path, repo: RepoId, id: DeviceId) -> Result<()> {
    let lf = LooseFile {
        version: 1,
        device: id.to_hex(),
        repository: repo.to_hex(),
    };
    let json = serde_json::to_vec_pretty(&lf).expect("plain struct serializes");
    let tmp = file.with_extension("json.tmp");
    fs::write(&tmp, json)
        .and_then(|()| fs::rename(&tmp, file))
        .map_err(|e| Error::io(file, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keyslot::KdfParams;
    use crate::error::StoreError;
    use crate::progress::NoProgress;
    use crate::store::{DynStore, MemoryStore, ObjectMeta, ObjectStore};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A store where, once armed, another writer replaces the next commit right
    /// after it is written (before its writer reads it back).
    #[derive(Debug, Default)]
    struct Usurped {
        inner: MemoryStore,
        armed: AtomicBool,
    }

    #[async_trait::async_trait]
    impl ObjectStore for Usurped {
        async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
            self.inner.put(key, data).await?;
            if key.starts_with(layout::LOG_PREFIX) && self.armed.swap(false, Ordering::SeqCst) {
                self.inner
                    .put(key, Bytes::from_static(b"another writer's"))
                    .await?;
            }
            Ok(())
        }
        async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            range: std::ops::Range<u64>,
        ) -> Result<Bytes, StoreError> {
            self.inner.get_range(key, range).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
        fn describe(&self) -> String {
            "usurped".into()
        }
    }

    async fn repo() -> (Arc<Usurped>, Repository) {
        let store = Arc::new(Usurped::default());
        let dyn_store: DynStore = store.clone();
        let repo = Repository::init(dyn_store, b"pw", KdfParams::MINIMUM, None)
            .await
            .unwrap();
        (store, repo)
    }

    fn change(name: &str) -> Vec<PendingChange> {
        vec![PendingChange {
            path: RepoPath::new(name.as_bytes().to_vec()).unwrap(),
            base: VersionVector::new(),
            entry: Entry::Deleted,
            stat: StatUpdate::None,
        }]
    }

    fn device(id: DeviceId) -> Device {
        Device::new(id, Journal::temporary().unwrap())
    }

    /// Another writer's bytes at commit `seq` of `device`, written behind its back.
    async fn replace_commit(store: &Usurped, device: DeviceId, seq: u64) {
        store
            .inner
            .put(&layout::commit(&device, seq), Bytes::from_static(b"replaced"))
            .await
            .unwrap();
    }

    async fn stored(store: &Usurped, device: DeviceId, seq: u64) -> Option<Bytes> {
        store.get(&layout::commit(&device, seq)).await.ok()
    }

    #[tokio::test]
    async fn a_commit_replaced_before_its_read_back_is_written_again_as_a_new_device() {
        let (store, repo) = repo().await;
        let old = DeviceId::random();
        let d = device(old);
        store.armed.store(true, Ordering::SeqCst);
        let seq = d.commit(&repo, change("a")).await.unwrap();
        let new = d.id();
        assert_ne!(new, old, "the device must be renewed");
        assert_eq!(seq, 1);
        assert_eq!(
            &stored(&store, old, 1).await.unwrap()[..],
            b"another writer's"
        );
        let mine = stored(&store, new, 1)
            .await
            .expect("rewritten as the new device");
        let c = Commit::open(&repo.keys(), &new, 1, &mine).unwrap();
        assert_eq!(c.changes[0].path.as_bytes(), b"a");
        assert!(d.journal().outbox_all().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_commit_replaced_after_it_counted_is_found_on_the_next_refresh() {
        let (store, repo) = repo().await;
        let old = DeviceId::random();
        let d = device(old);
        d.commit(&repo, change("a")).await.unwrap();
        assert_eq!(d.id(), old);
        replace_commit(&store, old, 1).await;
        d.refresh(&repo, &NoProgress).await.unwrap();
        assert_ne!(d.id(), old, "a replaced head renews the device");
        assert!(
            d.journal()
                .versions(&RepoPath::new(b"a".to_vec()).unwrap())
                .unwrap()
                .is_empty(),
            "the journal no longer claims what the store lost"
        );
    }

    #[tokio::test]
    async fn a_replaced_commit_below_the_head_is_found_on_the_next_refresh() {
        let (store, repo) = repo().await;
        let old = DeviceId::random();
        let d = device(old);
        d.commit(&repo, change("a")).await.unwrap();
        d.commit(&repo, change("b")).await.unwrap();
        replace_commit(&store, old, 1).await;
        d.refresh(&repo, &NoProgress).await.unwrap();
        assert_ne!(d.id(), old, "commit 1 of 2 was lost: the device is renewed");
    }

    #[tokio::test]
    async fn a_commit_never_chains_onto_a_replaced_one() {
        let (store, repo) = repo().await;
        let old = DeviceId::random();
        let d = device(old);
        d.commit(&repo, change("a")).await.unwrap();
        replace_commit(&store, old, 1).await;
        let err = d.commit(&repo, change("b")).await.unwrap_err();
        assert!(err.to_string().contains("run the command again"), "{err}");
        assert_ne!(d.id(), old);
        assert!(
            stored(&store, old, 2).await.is_none(),
            "nothing chained onto it"
        );
        assert_eq!(
            d.journal().meta_get::<bool>(logs::REPLAY_ALL).unwrap(),
            Some(true)
        );
    }

    #[tokio::test]
    async fn commits_of_its_own_id_written_elsewhere_renew_the_device() {
        let (_store, repo) = repo().await;
        let id = DeviceId::random();
        let (a, b) = (device(id), device(id));
        a.commit(&repo, change("a")).await.unwrap();
        // `b` saw commit 1 as its own (a clone made after it), then `a` goes on.
        logs::fetch(&repo, b.journal(), &mut |_| {}, &NoProgress)
            .await
            .unwrap();
        a.commit(&repo, change("b")).await.unwrap();
        b.refresh(&repo, &NoProgress).await.unwrap();
        assert_ne!(b.id(), id);
        assert_eq!(a.id(), id, "the writer it found keeps the id");
        assert_eq!(b.journal().head(&id).unwrap().map(|h| h.seq), Some(2));
    }

    #[tokio::test]
    async fn a_seq_already_in_the_store_is_never_overwritten() {
        let (store, repo) = repo().await;
        let id = DeviceId::random();
        let (a, b) = (device(id), device(id));
        a.commit(&repo, change("a")).await.unwrap();
        logs::fetch(&repo, b.journal(), &mut |_| {}, &NoProgress)
            .await
            .unwrap();
        a.commit(&repo, change("b")).await.unwrap();
        let a2 = stored(&store, id, 2).await.unwrap();
        // `b` commits without a refresh: seq 2 is taken.
        b.commit(&repo, change("c")).await.unwrap();
        assert_eq!(stored(&store, id, 2).await.unwrap(), a2, "not overwritten");
        assert_ne!(b.id(), id);
        assert!(stored(&store, b.id(), 1).await.is_some());
    }

    #[tokio::test]
    async fn a_lost_journal_of_a_known_id_starts_a_new_device() {
        let (_store, repo) = repo().await;
        let id = DeviceId::random();
        device(id).commit(&repo, change("a")).await.unwrap();
        let d = device(id);
        d.refresh(&repo, &NoProgress).await.unwrap();
        assert_ne!(d.id(), id);
    }
}
