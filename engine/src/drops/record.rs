//! The owner's side of a drop in the store (`DESIGN.md` §4c): its record
//! (`drops/<id>/record`: name, dates, the age identity and the write key,
//! sealed under the repository's keys) and its closure (`drops/<id>/closed`:
//! when and why the owner stopped accepting writes, and how many commits of
//! each partner device it still accepts).
//!
//! Both are written once: a record is never rewritten, and a closure, once
//! there, is final. Two owner devices that close the same drop at once write
//! two closures that differ only in the commits each saw; whichever the store
//! keeps, both accepted only what it lists, so nothing accepted is lost.

use crate::chunk::chunker::ChunkerParams;
use crate::crypto::Kind;
use crate::error::{Error, Result};
use crate::format::id::{DeviceId, DropId};
use crate::repo::Repository;
use crate::store::{self, layout};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const RECORD_VERSION: u8 = 1;

/// A drop as its owner knows it.
#[derive(Clone, Serialize, Deserialize)]
pub struct DropRecord {
    version: u8,
    pub name: String,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    /// `AGE-SECRET-KEY-1...`: opens the partner's commits.
    pub identity: Zeroizing<String>,
    pub write_key: Zeroizing<[u8; 32]>,
    pub chunker: ChunkerParams,
}

impl std::fmt::Debug for DropRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropRecord")
            .field("name", &self.name)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// Why a drop was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    /// `coffer drop remove`.
    Removed,
    /// Its expiry passed; closed by the first owner command after it.
    Expired,
}

/// The owner stopped accepting writes: `heads` says how many commits of each
/// partner device it still accepts (those the store listed at `at_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    version: u8,
    pub name: String,
    pub at_ms: u64,
    pub reason: CloseReason,
    pub heads: Vec<(DeviceId, u64)>,
    /// Whether the drop's objects and its keys were deleted.
    pub purged: bool,
}

impl DropRecord {
    pub fn new(name: &str, created_ms: u64, expires_ms: Option<u64>, chunker: ChunkerParams) -> Self {
        let identity = crate::crypto::epoch::SlotIdentity::generate().secret();
        let mut write_key = Zeroizing::new([0u8; 32]);
        crate::crypto::fill_random(&mut *write_key);
        DropRecord {
            version: RECORD_VERSION,
            name: name.to_string(),
            created_ms,
            expires_ms,
            identity,
            write_key,
            chunker,
        }
    }

    /// The age identity that opens the partner's commits.
    pub fn age_identity(&self, object: &str) -> Result<age::x25519::Identity> {
        self.identity
            .parse()
            .map_err(|_| Error::corrupt(object, "the drop's identity does not parse"))
    }

    /// `age1...` of [`DropRecord::age_identity`].
    pub fn recipient(&self, object: &str) -> Result<String> {
        Ok(self.age_identity(object)?.to_public().to_string())
    }
}

impl Closure {
    pub fn new(name: &str, at_ms: u64, reason: CloseReason, heads: Vec<(DeviceId, u64)>) -> Self {
        Closure {
            version: RECORD_VERSION,
            name: name.to_string(),
            at_ms,
            reason,
            heads,
            purged: false,
        }
    }

    /// How many commits of `device` are accepted.
    pub fn accepted(&self, device: &DeviceId) -> u64 {
        self.heads
            .iter()
            .find(|(d, _)| d == device)
            .map_or(0, |(_, n)| *n)
    }
}

fn identity(repo: &Repository, drop: &DropId, what: &[u8]) -> Vec<u8> {
    let mut id = repo.id().as_bytes().to_vec();
    id.extend_from_slice(drop.as_bytes());
    id.extend_from_slice(what);
    id
}

async fn put_sealed<T: Serialize>(repo: &Repository, key: &str, drop: &DropId, what: &[u8], value: &T) -> Result<()> {
    let plain = Zeroizing::new(
        postcard::to_allocvec(value).map_err(|e| Error::Internal(format!("drop record: {e}")))?,
    );
    let sealed = repo.keys().seal(Kind::DropRecord, &identity(repo, drop, what), &plain);
    repo.store().put(key, Bytes::from(sealed)).await?;
    Ok(())
}

async fn get_sealed<T: serde::de::DeserializeOwned>(repo: &Repository, key: &str, drop: &DropId, what: &[u8]) -> Result<Option<T>> {
    let bytes = match store::get_at_most(&**repo.store(), key, layout::DROP_RECORD_MAX, "drop record").await {
        Ok(b) => b,
        Err(Error::Store(crate::error::StoreError::NotFound { .. })) => return Ok(None),
        Err(e) => return Err(e),
    };
    let plain = Zeroizing::new(
        repo.keys()
            .open(Kind::DropRecord, &identity(repo, drop, what), &bytes)
            .map_err(|_| Error::corrupt(key, "does not open with this repository's keys"))?,
    );
    let value = postcard::from_bytes(&plain).map_err(|e| Error::corrupt(key, format!("undecodable: {e}")))?;
    Ok(Some(value))
}

pub async fn write_record(repo: &Repository, drop: &DropId, record: &DropRecord) -> Result<()> {
    put_sealed(repo, &layout::drop_record(drop), drop, b"record", record).await
}

pub async fn read_record(repo: &Repository, drop: &DropId) -> Result<Option<DropRecord>> {
    let key = layout::drop_record(drop);
    let r: Option<DropRecord> = get_sealed(repo, &key, drop, b"record").await?;
    if let Some(r) = &r {
        if r.version != RECORD_VERSION {
            return Err(Error::UnsupportedVersion {
                what: key,
                found: u32::from(r.version),
                supported: u32::from(RECORD_VERSION),
            });
        }
        super::check_name(&r.name).map_err(|e| Error::corrupt(&key, e))?;
    }
    Ok(r)
}

pub async fn write_closure(repo: &Repository, drop: &DropId, closure: &Closure) -> Result<()> {
    put_sealed(repo, &layout::drop_closed(drop), drop, b"closed", closure).await
}

pub async fn read_closure(repo: &Repository, drop: &DropId) -> Result<Option<Closure>> {
    get_sealed(repo, &layout::drop_closed(drop), drop, b"closed").await
}
