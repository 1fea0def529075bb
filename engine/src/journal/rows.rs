//! The rows of the journal's trees and their encoding (postcard), in one place:
//! what `DESIGN.md` §9 specifies byte for byte.

use crate::error::{Error, Result};
use crate::format::commit::{Entry, PackRecord};
use crate::format::id::{ChunkId, CommitHash, DeviceId, PackId};
use crate::format::path::RepoPath;
use crate::format::version::{Hlc, VersionVector};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Where a chunk lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub pack: PackId,
    pub offset: u32,
    pub sealed_len: u32,
    pub raw_len: u32,
}

/// The highest commit seen of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: CommitHash,
}

/// One version of a path, as the merge sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub vv: VersionVector,
    pub hlc: Hlc,
    /// The device whose commit created this version.
    pub origin: DeviceId,
    pub entry: Entry,
}

/// The kind of a local filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LocalKind {
    File,
    Dir,
    Symlink,
}

/// What the folder held at a path when it was last synced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatEntry {
    pub kind: LocalKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: u32,
    /// File content when it was synced.
    pub chunks: Vec<ChunkId>,
    /// The version the local entry corresponds to.
    pub synced: VersionVector,
}

pub(super) fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| Error::Journal(format!("encode: {e}")))
}

pub(super) fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    postcard::from_bytes(b).map_err(|e| Error::Journal(format!("decode: {e}")))
}

/// One row of the `versions` tree.
pub(super) fn decode_versions(
    kv: sled::Result<(sled::IVec, sled::IVec)>,
) -> Result<(RepoPath, Vec<Version>)> {
    let (k, v) = kv?;
    Ok((RepoPath::new(k.to_vec())?, dec(&v)?))
}

/// The `index` rows of a pack's blobs.
pub(super) fn index_entries(record: &PackRecord) -> Result<Vec<([u8; 32], Vec<u8>)>> {
    record
        .blobs
        .iter()
        .map(|b| {
            let loc = Location {
                pack: record.id,
                offset: b.offset,
                sealed_len: b.sealed_len,
                raw_len: b.raw_len,
            };
            Ok((b.chunk.0, enc(&loc)?))
        })
        .collect()
}
