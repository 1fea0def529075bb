//! A device: one identity with its own log in the store, and the journal that
//! tracks it. A synced folder is a device ([`crate::folder::Folder`]); so is the
//! per-machine "loose" device that `coffer add`/`rm` use for files that live in no
//! synced folder ([`Device::open_loose`]).
//!
//! This module writes the device's commits: outbox first (flushed), then the PUT,
//! then ingestion (`DESIGN.md` §7).

use crate::commit::{Change, Commit, Entry};
use crate::error::{Error, Result};
use crate::id::{CommitHash, DeviceId, RepoId};
use crate::journal::{Journal, StatEntry};
use crate::logs;
use crate::path::RepoPath;
use crate::repo::Repository;
use crate::store::layout;
use crate::version::{VersionVector, now_millis};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::Path;

/// A device's identity and journal.
#[derive(Debug)]
pub struct Device {
    id: DeviceId,
    journal: Journal,
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
    pub fn new(id: DeviceId, journal: Journal) -> Self {
        Device { id, journal }
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
                let lf = LooseFile {
                    version: 1,
                    device: id.to_hex(),
                    repository: repo.to_hex(),
                };
                let json = serde_json::to_vec_pretty(&lf).expect("plain struct serializes");
                fs::write(&file, json).map_err(|e| Error::io(&file, e))?;
                id
            }
            Err(e) => return Err(Error::io(&file, e)),
        };
        let (journal, _) = Journal::open(&dir.join("journal"))?;
        Ok(Device { id, journal })
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
        self.id
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Seals, journals (outbox), uploads and ingests a commit of `pending`;
    /// records the stat updates. Returns its seq.
    pub async fn commit(&self, repo: &Repository, pending: Vec<PendingChange>) -> Result<u64> {
        let journal = &self.journal;
        let device = self.id;
        let head = journal.head(&device)?;
        let seq = head.map(|h| h.seq).unwrap_or(0) + 1;
        let prev = head.map(|h| h.hash).unwrap_or(CommitHash([0; 32]));
        let now = now_millis();
        let changes = pending
            .iter()
            .map(|p| Change {
                path: p.path.clone(),
                vv: p.base.advanced(device, seq),
                entry: p.entry.clone(),
            })
            .collect();
        let commit = Commit {
            device,
            seq,
            prev,
            hlc: journal.next_hlc(now)?,
            time_ms: now,
            packs: journal.uncommitted_packs()?,
            changes,
        };
        let sealed = commit.seal(repo.keys())?;
        journal.outbox_put(seq, &sealed.bytes)?;
        journal.flush_async().await?;
        repo.store()
            .put(&layout::commit(&device, seq), Bytes::from(sealed.bytes))
            .await?;
        logs::ingest(journal, &commit, sealed.hash)?;
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
        if let Err(e) = crate::checkpoint::maybe_write(repo, journal, device, seq).await {
            tracing::warn!("could not write a checkpoint after commit {seq}: {e}");
        }
        Ok(seq)
    }

    /// Writes commits a killed run left in the outbox (identical bytes: a retried
    /// PUT).
    pub async fn flush_outbox(&self, repo: &Repository) -> Result<()> {
        let journal = &self.journal;
        let device = self.id;
        for (seq, bytes) in journal.outbox_all()? {
            let head = journal.head(&device)?.map(|h| h.seq).unwrap_or(0);
            if seq > head {
                let commit = Commit::open(repo.keys(), &device, seq, &bytes)?;
                repo.store()
                    .put(&layout::commit(&device, seq), Bytes::from(bytes.clone()))
                    .await?;
                logs::ingest(journal, &commit, crate::commit::commit_hash(&bytes))?;
            }
            journal.outbox_remove(seq)?;
        }
        journal.flush_async().await
    }
}
