//! Commits: the records each device appends to its own log.
//!
//! A commit names the packs its new chunks went into (so every reader can locate
//! every chunk) and the file versions it introduces. Commits of one device form a
//! gapless, hash-chained sequence `log/<device>/<seq>`, seq from 1; each holds the
//! BLAKE3 of the previous sealed commit, so a reader that saw seq *n* notices a
//! rewritten or hidden history. Byte layout: `DESIGN.md` §Commit.

use crate::crypto::{Keys, Kind, log_identity};
use crate::error::{Error, Result};
use crate::format::id::{ChunkId, CommitHash, DeviceId, PackId};
use crate::format::pack::BlobEntry;
use crate::format::path::RepoPath;
use crate::format::version::{Hlc, VersionVector};
use crate::store::layout;
use serde::{Deserialize, Serialize};

/// Version of the commit plaintext layout.
pub const COMMIT_FORMAT: u8 = 1;
const CODEC_RAW: u8 = 0;
const CODEC_ZSTD: u8 = 1;
/// Upper bound of a decompressed commit, against decompression bombs.
const MAX_COMMIT_BYTES: u64 = 1 << 30;

/// A pack first named by a commit, with the blobs it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRecord {
    pub id: PackId,
    /// Object size in bytes, padding included.
    pub size: u32,
    pub blobs: Vec<BlobEntry>,
}

/// The content of a regular file version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileEntry {
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Chunk ids in file order; their plaintext concatenates to the file.
    pub chunks: Vec<ChunkId>,
}

/// What a path holds in one version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Entry {
    File(FileEntry),
    Dir {
        mode: u32,
        mtime_ns: i64,
    },
    Symlink {
        #[serde(with = "serde_bytes")]
        target: Vec<u8>,
        mtime_ns: i64,
    },
    /// A tombstone: the path was deleted.
    Deleted,
}

impl Entry {
    pub fn is_deleted(&self) -> bool {
        matches!(self, Entry::Deleted)
    }

    /// Same content and kind, ignoring times: two such versions do not conflict.
    pub fn same_content(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::File(a), Entry::File(b)) => a.size == b.size && a.chunks == b.chunks,
            (Entry::Dir { .. }, Entry::Dir { .. }) => true,
            (Entry::Symlink { target: a, .. }, Entry::Symlink { target: b, .. }) => a == b,
            (Entry::Deleted, Entry::Deleted) => true,
            _ => false,
        }
    }
}

/// One path's new version in a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub path: RepoPath,
    /// The version vector of the new version; its entry for the committing device is
    /// the commit's seq.
    pub vv: VersionVector,
    pub entry: Entry,
}

/// A decoded commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub device: DeviceId,
    pub seq: u64,
    /// BLAKE3 of the sealed previous commit; all zero for seq 1.
    pub prev: CommitHash,
    pub hlc: Hlc,
    /// Wall-clock time of the commit, for display only.
    pub time_ms: u64,
    pub packs: Vec<PackRecord>,
    pub changes: Vec<Change>,
}

/// A commit sealed for the store.
#[derive(Debug, Clone)]
pub struct SealedCommit {
    pub bytes: Vec<u8>,
    pub hash: CommitHash,
}

/// The chain link of sealed commit bytes.
pub fn commit_hash(sealed: &[u8]) -> CommitHash {
    CommitHash(*blake3::hash(sealed).as_bytes())
}

impl Commit {
    /// Encodes, compresses when it helps, and seals.
    pub fn seal(&self, keys: &Keys) -> Result<SealedCommit> {
        let payload = postcard::to_allocvec(self)
            .map_err(|e| Error::Config(format!("cannot encode commit: {e}")))?;
        let mut plain = vec![COMMIT_FORMAT];
        match zstd::bulk::compress(&payload, 3) {
            Ok(z) if z.len() < payload.len() => {
                plain.push(CODEC_ZSTD);
                plain.extend_from_slice(&z);
            }
            _ => {
                plain.push(CODEC_RAW);
                plain.extend_from_slice(&payload);
            }
        }
        let bytes = keys.seal(Kind::Commit, &log_identity(&self.device, self.seq), &plain);
        let hash = commit_hash(&bytes);
        Ok(SealedCommit { bytes, hash })
    }

    /// Opens and validates the commit stored at `log/<device>/<seq>`.
    pub fn open(keys: &Keys, device: &DeviceId, seq: u64, sealed: &[u8]) -> Result<Commit> {
        let object = layout::commit(device, seq);
        let plain = keys
            .open(Kind::Commit, &log_identity(device, seq), sealed)
            .map_err(|e| Error::corrupt(&object, e.to_string()))?;
        let payload = decode_envelope(&object, &plain)?;
        let commit: Commit = postcard::from_bytes(&payload)
            .map_err(|e| Error::corrupt(&object, format!("undecodable commit: {e}")))?;
        if commit.device != *device || commit.seq != seq {
            return Err(Error::corrupt(
                &object,
                "commit names another device or seq",
            ));
        }
        commit.validate(&object)?;
        Ok(commit)
    }

    fn validate(&self, object: &str) -> Result<()> {
        if self.seq == 0 {
            return Err(Error::corrupt(object, "seq 0"));
        }
        for c in &self.changes {
            c.path
                .validate()
                .map_err(|e| Error::corrupt(object, e.to_string()))?;
            if c.vv.get(&self.device) != self.seq {
                return Err(Error::corrupt(
                    object,
                    format!("version of {} does not carry this commit's seq", c.path),
                ));
            }
        }
        for p in &self.packs {
            let mut end = 0u64;
            for b in &p.blobs {
                if u64::from(b.offset) < end {
                    return Err(Error::corrupt(
                        object,
                        format!("pack {} lists overlapping blobs", p.id),
                    ));
                }
                end = u64::from(b.offset) + u64::from(b.sealed_len);
            }
            if end > u64::from(p.size) {
                return Err(Error::corrupt(
                    object,
                    format!("pack {} lists blobs past its end", p.id),
                ));
            }
        }
        Ok(())
    }
}

/// `format || codec || payload` → payload.
pub(crate) fn decode_envelope(object: &str, plain: &[u8]) -> Result<Vec<u8>> {
    match plain {
        [COMMIT_FORMAT, CODEC_RAW, rest @ ..] => Ok(rest.to_vec()),
        [COMMIT_FORMAT, CODEC_ZSTD, rest @ ..] => {
            use std::io::Read;
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(rest)
                .and_then(|d| d.take(MAX_COMMIT_BYTES).read_to_end(&mut out))
                .map_err(|e| Error::corrupt(object, format!("bad compression: {e}")))?;
            Ok(out)
        }
        [COMMIT_FORMAT, codec, ..] => Err(Error::corrupt(object, format!("unknown codec {codec}"))),
        [v, ..] => Err(Error::UnsupportedVersion {
            what: object.to_string(),
            found: u32::from(*v),
            supported: u32::from(COMMIT_FORMAT),
        }),
        [] => Err(Error::corrupt(object, "empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    pub(crate) fn sample(device: DeviceId, seq: u64) -> Commit {
        let path = RepoPath::new(b"dir/file.txt".to_vec()).unwrap();
        Commit {
            device,
            seq,
            prev: CommitHash([0; 32]),
            hlc: Hlc::from_parts(1_700_000_000_000, 0),
            time_ms: 1_700_000_000_000,
            packs: vec![PackRecord {
                id: PackId([1; 32]),
                size: 1000,
                blobs: vec![BlobEntry {
                    chunk: ChunkId([2; 32]),
                    offset: 0,
                    sealed_len: 100,
                    raw_len: 60,
                }],
            }],
            changes: vec![Change {
                path,
                vv: VersionVector::new().advanced(device, seq),
                entry: Entry::File(FileEntry {
                    size: 60,
                    mode: 0o644,
                    mtime_ns: 5,
                    chunks: vec![ChunkId([2; 32])],
                }),
            }],
        }
    }

    #[test]
    fn seal_open_round_trip() {
        let keys = Keys::derive(&MasterKey::generate());
        let d = DeviceId::random();
        let c = sample(d, 3);
        let sealed = c.seal(&keys).unwrap();
        assert_eq!(sealed.hash, commit_hash(&sealed.bytes));
        assert_eq!(Commit::open(&keys, &d, 3, &sealed.bytes).unwrap(), c);
    }

    #[test]
    fn a_commit_moved_to_another_slot_does_not_open() {
        let keys = Keys::derive(&MasterKey::generate());
        let d = DeviceId::random();
        let sealed = sample(d, 3).seal(&keys).unwrap();
        assert!(matches!(
            Commit::open(&keys, &d, 4, &sealed.bytes),
            Err(Error::Corrupt { .. })
        ));
        assert!(Commit::open(&keys, &DeviceId::random(), 3, &sealed.bytes).is_err());
    }

    #[test]
    fn a_forged_commit_with_an_escaping_path_is_refused() {
        let keys = Keys::derive(&MasterKey::generate());
        let d = DeviceId::random();
        let mut c = sample(d, 1);
        // Bypass RepoPath::new the way a malicious key holder's encoder would.
        c.changes[0].path =
            postcard::from_bytes(&postcard::to_allocvec(&b"../x".to_vec()).unwrap()).unwrap();
        let sealed = c.seal(&keys).unwrap();
        let err = Commit::open(&keys, &d, 1, &sealed.bytes).unwrap_err();
        assert!(err.to_string().contains("../x"), "{err}");
    }

    #[test]
    fn newer_formats_are_reported_as_such() {
        let err = decode_envelope("log/x/1", &[9, 0, 1, 2]).unwrap_err();
        assert!(matches!(err, Error::UnsupportedVersion { found: 9, .. }));
    }
}
