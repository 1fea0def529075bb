//! Checkpoints: a device's merged state, sealed, so a new device need not replay
//! every commit since the beginning.
//!
//! `checkpoint/<device>/<seq>` holds what the device's journal knew right after its
//! commit `seq`: the head (seq + chain hash) of every device it had ingested, the
//! maximal versions of every path, and the location of every committed chunk. A
//! device writes one after a commit once the logs it has ingested have grown by
//! [`CHECKPOINT_EVERY`] commits since its last one.
//!
//! A fresh journal starts from the checkpoint covering the most commits, then
//! fetches only the commits after its heads — with the usual hash-chain checks, so
//! a checkpoint cannot make a reader skip a forged or missing commit; and a log that
//! shows fewer commits than a checkpoint names is reported as rolled back. A
//! checkpoint is sealed with the repository key like a commit: only a device
//! holding the key can write one (the threat model trusts such devices).
//! History commands (`log`, `restore --at`, `check`) still replay every commit.

use crate::crypto::Kind;
use crate::error::{Error, Result};
use crate::format::id::{ChunkId, DeviceId};
use crate::format::path::RepoPath;
use crate::journal::{Head, Journal, Location, Version};
use crate::repo::Repository;
use crate::store::layout;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;

/// Commits ingested between two checkpoints of one device.
pub const CHECKPOINT_EVERY: u64 = 1000;

/// Format byte of a checkpoint's plaintext.
pub const CHECKPOINT_FORMAT: u8 = 1;

/// Upper bound of a decompressed checkpoint.
const MAX_CHECKPOINT_BYTES: u64 = 4 << 30;

/// Meta key: the coverage of this device's last checkpoint.
const META_COVERAGE: &str = "checkpoint_coverage";

/// The plaintext of a checkpoint (postcard, zstd-compressed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub device: DeviceId,
    pub seq: u64,
    pub heads: Vec<(DeviceId, Head)>,
    pub versions: Vec<(RepoPath, Vec<Version>)>,
    pub chunks: Vec<(ChunkId, Location)>,
}

impl Checkpoint {
    /// How many commits it covers (the sum of its heads' seqs).
    pub fn coverage(&self) -> u64 {
        self.heads.iter().map(|(_, h)| h.seq).sum()
    }

    fn seal(&self, repo: &Repository) -> Result<Vec<u8>> {
        let payload = postcard::to_allocvec(self)
            .map_err(|e| Error::Internal(format!("cannot encode a checkpoint: {e}")))?;
        let mut plain = vec![CHECKPOINT_FORMAT];
        plain.extend_from_slice(
            &zstd::bulk::compress(&payload, 3)
                .map_err(|e| Error::Internal(format!("cannot compress a checkpoint: {e}")))?,
        );
        Ok(repo
            .keys()
            .seal(Kind::Checkpoint, &identity(&self.device, self.seq), &plain))
    }

    /// Opens and validates `checkpoint/<device>/<seq>`.
    pub fn open(repo: &Repository, device: &DeviceId, seq: u64, sealed: &[u8]) -> Result<Self> {
        let object = layout::checkpoint(device, seq);
        let plain = repo
            .keys()
            .open(Kind::Checkpoint, &identity(device, seq), sealed)
            .map_err(|e| Error::corrupt(&object, e.to_string()))?;
        let payload = match plain.split_first() {
            Some((&CHECKPOINT_FORMAT, z)) => {
                let mut out = Vec::new();
                zstd::stream::read::Decoder::new(z)
                    .and_then(|d| d.take(MAX_CHECKPOINT_BYTES).read_to_end(&mut out))
                    .map_err(|e| Error::corrupt(&object, format!("bad compression: {e}")))?;
                out
            }
            Some((&v, _)) => {
                return Err(Error::UnsupportedVersion {
                    what: object,
                    found: u32::from(v),
                    supported: u32::from(CHECKPOINT_FORMAT),
                });
            }
            None => return Err(Error::corrupt(&object, "empty")),
        };
        let cp: Checkpoint = postcard::from_bytes(&payload)
            .map_err(|e| Error::corrupt(&object, format!("undecodable checkpoint: {e}")))?;
        if cp.device != *device || cp.seq != seq {
            return Err(Error::corrupt(
                &object,
                "checkpoint names another device or seq",
            ));
        }
        for (path, _) in &cp.versions {
            path.validate()
                .map_err(|e| Error::corrupt(&object, e.to_string()))?;
        }
        Ok(cp)
    }
}

/// The AEAD identity: device id || seq (big-endian), as for commits.
fn identity(device: &DeviceId, seq: u64) -> Vec<u8> {
    let mut id = device.0.to_vec();
    id.extend_from_slice(&seq.to_be_bytes());
    id
}

/// After `device`'s commit `seq`: writes a checkpoint if the journal has ingested
/// [`CHECKPOINT_EVERY`] commits since the last one. Returns whether it did.
pub async fn maybe_write(
    repo: &Repository,
    journal: &Journal,
    device: DeviceId,
    seq: u64,
) -> Result<bool> {
    let heads = journal.all_heads()?;
    let coverage: u64 = heads.iter().map(|(_, h)| h.seq).sum();
    let last: u64 = journal.meta_get(META_COVERAGE)?.unwrap_or(0);
    if coverage < last + CHECKPOINT_EVERY {
        return Ok(false);
    }
    let cp = Checkpoint {
        device,
        seq,
        heads,
        versions: journal.all_versions()?,
        chunks: journal.committed_locations()?,
    };
    let sealed = cp.seal(repo)?;
    repo.store()
        .put(&layout::checkpoint(&device, seq), Bytes::from(sealed))
        .await?;
    journal.meta_put(META_COVERAGE, &coverage)?;
    Ok(true)
}

/// Of the newest checkpoint of each device, the one covering most commits,
/// opened. They are opened one at a time and only the best is kept, so memory is
/// one checkpoint; unreadable or oversized ones are skipped with a warning (the
/// logs are the truth).
pub async fn newest(repo: &Repository) -> Result<Option<Checkpoint>> {
    let mut latest: BTreeMap<DeviceId, (u64, u64)> = BTreeMap::new();
    for meta in repo.store().list(layout::CHECKPOINT_PREFIX).await? {
        let rest = &meta.key[layout::CHECKPOINT_PREFIX.len()..];
        if let Some((device, seq)) = layout::parse_device_seq(rest) {
            let e = latest.entry(device).or_insert((seq, meta.size));
            if seq > e.0 {
                *e = (seq, meta.size);
            }
        }
    }
    let mut best: Option<Checkpoint> = None;
    for (device, (seq, size)) in latest {
        let key = layout::checkpoint(&device, seq);
        let opened = if size > layout::CHECKPOINT_MAX {
            Err(Error::corrupt(
                &key,
                "larger than a checkpoint may weigh; not read",
            ))
        } else {
            crate::store::get_at_most(&**repo.store(), &key, size, "listed checkpoint")
                .await
                .and_then(|bytes| Checkpoint::open(repo, &device, seq, &bytes))
        };
        match opened {
            Ok(cp) if best.as_ref().is_none_or(|b| cp.coverage() > b.coverage()) => {
                best = Some(cp);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("ignoring checkpoint {device}/{seq}: {e}"),
        }
    }
    Ok(best)
}

/// Loads `cp` into an empty journal: heads, versions and chunk locations. The
/// caller then fetches the commits after the heads.
pub fn load(journal: &Journal, cp: &Checkpoint) -> Result<()> {
    for (device, head) in &cp.heads {
        journal.put_head(device, head)?;
    }
    for (path, set) in &cp.versions {
        journal.put_versions(path, set)?;
    }
    journal.put_locations(&cp.chunks)?;
    if let Some(hlc) = cp
        .versions
        .iter()
        .flat_map(|(_, set)| set)
        .map(|v| v.hlc)
        .max()
    {
        journal.observe_hlc(hlc)?;
    }
    journal.meta_put(META_COVERAGE, &cp.coverage())?;
    journal.flush()
}
