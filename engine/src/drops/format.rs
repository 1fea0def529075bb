//! The bytes partners write into a drop (`DESIGN.md` §4c): sealed blobs in
//! packs, and commits encrypted with age to the drop's recipient and
//! authenticated with the drop's write key.
//!
//! - A blob: `nonce (24) || XChaCha20-Poly1305(pack key, chunk) || tag (16)`,
//!   AAD `"coffer-drop1" || 0x01 || drop id || pack id || chunk id`. The pack
//!   key is random, one per pack, and travels only inside commits.
//! - A commit object: `age ciphertext || MAC (32)`, where the plaintext is
//!   `postcard(DropCommit)` and MAC = keyed BLAKE3 under the drop's write key of
//!   `"coffer-drop1" || 0x02 || drop id || device id || seq (u64 BE) || age
//!   ciphertext`. The MAC binds the object to its key in the store, so a
//!   commit moved to another seq, device or drop, or forged by anyone without
//!   this drop's token, is refused before it is decrypted.

use crate::crypto::{self, NONCE_LEN, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use crate::format::id::{ChunkId, CommitHash, DeviceId, DropId, PackId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const MAGIC: &[u8; 12] = b"coffer-drop1";
const BLOB: u8 = 1;
const COMMIT_MAC: u8 = 2;
/// Format version inside a [`DropCommit`].
pub const COMMIT_VERSION: u8 = 1;
/// Bytes of the MAC after a commit's age ciphertext.
pub const MAC_LEN: usize = 32;

/// One commit of a partner device: the packs it introduces (with their keys)
/// and the files it adds or replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCommit {
    pub version: u8,
    pub drop: DropId,
    pub device: DeviceId,
    /// The partner's name for this device (a single path component).
    pub device_name: String,
    pub seq: u64,
    /// BLAKE3 of the previous commit object of this device (zeros for seq 0).
    pub prev: CommitHash,
    /// The partner's clock when it wrote the commit (Unix ms).
    pub time_ms: u64,
    pub packs: Vec<PackKey>,
    pub files: Vec<DropFile>,
}

/// A pack and the key of its blobs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackKey {
    pub pack: PackId,
    pub key: [u8; 32],
}

impl std::fmt::Debug for PackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackKey({:?}, <redacted>)", self.pack)
    }
}

/// A file as the partner sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropFile {
    /// Relative path, `/`-separated (checked as a [`crate::RepoPath`] by readers).
    pub path: String,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    pub mtime_ms: u64,
    pub chunks: Vec<ChunkRef>,
}

/// Where one chunk of a file is: a byte range of a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub pack: PackId,
    pub offset: u64,
    /// Sealed length (plaintext + [`SEAL_OVERHEAD`]).
    pub len: u32,
}

fn blob_aad(drop: &DropId, pack: &PackId, chunk: &ChunkId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(MAGIC.len() + 1 + 16 + 32 + 32);
    aad.extend_from_slice(MAGIC);
    aad.push(BLOB);
    aad.extend_from_slice(drop.as_bytes());
    aad.extend_from_slice(pack.as_bytes());
    aad.extend_from_slice(chunk.as_bytes());
    aad
}

/// Appends the sealed blob of `chunk` to `out`; returns its length.
pub fn seal_blob(
    key: &[u8; 32],
    ids: (&DropId, &PackId, &ChunkId),
    chunk: &[u8],
    out: &mut Vec<u8>,
) -> u32 {
    let start = out.len();
    out.extend_from_slice(&[0u8; NONCE_LEN]);
    out.extend_from_slice(chunk);
    let aad = blob_aad(ids.0, ids.1, ids.2);
    crypto::seal_raw(key, &aad, out, start);
    u32::try_from(out.len() - start).expect("a chunk is at most a few MiB")
}

/// Opens a sealed blob; `object` names it in the error.
pub fn open_blob(
    key: &[u8; 32],
    ids: (&DropId, &PackId, &ChunkId),
    sealed: &[u8],
    object: &str,
) -> Result<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(Error::corrupt(object, "a blob shorter than its seal"));
    }
    crypto::open_raw_key(key, &blob_aad(ids.0, ids.1, ids.2), sealed)
        .map_err(|_| Error::corrupt(object, format!("chunk {} does not authenticate", ids.2)))
}

/// The MAC of a commit object's ciphertext.
pub fn commit_mac(
    auth: &[u8; 32],
    drop: &DropId,
    device: &DeviceId,
    seq: u64,
    ciphertext: &[u8],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(auth);
    h.update(MAGIC);
    h.update(&[COMMIT_MAC]);
    h.update(drop.as_bytes());
    h.update(device.as_bytes());
    h.update(&seq.to_be_bytes());
    h.update(ciphertext);
    *h.finalize().as_bytes()
}

/// Seals `commit` for `recipient` (`age1...`) under the write key `auth`.
pub fn seal_commit(commit: &DropCommit, recipient: &str, auth: &[u8; 32]) -> Result<Vec<u8>> {
    let to: age::x25519::Recipient = recipient
        .parse()
        .map_err(|e| Error::Config(format!("the drop token's recipient is not usable: {e}")))?;
    let plain = Zeroizing::new(
        postcard::to_allocvec(commit).map_err(|e| Error::Internal(format!("drop commit: {e}")))?,
    );
    let mut out = age::encrypt(&to, &plain)
        .map_err(|e| Error::Internal(format!("age could not encrypt a drop commit: {e}")))?;
    let mac = commit_mac(auth, &commit.drop, &commit.device, commit.seq, &out);
    out.extend_from_slice(&mac);
    Ok(out)
}

/// Opens the commit object stored at `(drop, device, seq)`: checks its MAC,
/// decrypts it with `identity`, decodes it, and checks that it says what its
/// key says. `object` names it in errors.
pub fn open_commit(
    bytes: &[u8],
    at: (&DropId, &DeviceId, u64),
    identity: &age::x25519::Identity,
    auth: &[u8; 32],
    object: &str,
) -> Result<DropCommit> {
    let (drop, device, seq) = at;
    let split = bytes
        .len()
        .checked_sub(MAC_LEN)
        .ok_or_else(|| Error::corrupt(object, "shorter than a MAC"))?;
    let (ciphertext, mac) = bytes.split_at(split);
    let want = commit_mac(auth, drop, device, seq, ciphertext);
    if !crypto::constant_eq(&want, mac) {
        return Err(Error::corrupt(
            object,
            "not written with this drop's token for this place (forged, moved, replayed or truncated)",
        ));
    }
    let plain = Zeroizing::new(
        age::decrypt(identity, ciphertext)
            .map_err(|e| Error::corrupt(object, format!("does not decrypt: {e}")))?,
    );
    let commit: DropCommit = postcard::from_bytes(&plain)
        .map_err(|e| Error::corrupt(object, format!("undecodable drop commit: {e}")))?;
    if commit.version != COMMIT_VERSION {
        return Err(Error::UnsupportedVersion {
            what: object.to_string(),
            found: u32::from(commit.version),
            supported: u32::from(COMMIT_VERSION),
        });
    }
    if commit.drop != *drop || commit.device != *device || commit.seq != seq {
        return Err(Error::corrupt(object, "names another drop, device or seq than its key"));
    }
    Ok(commit)
}

/// The link to the next commit: BLAKE3 of the whole object.
pub fn commit_hash(bytes: &[u8]) -> CommitHash {
    CommitHash(*blake3::hash(bytes).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(drop: DropId, device: DeviceId, seq: u64) -> DropCommit {
        DropCommit {
            version: COMMIT_VERSION,
            drop,
            device,
            device_name: "laptop".into(),
            seq,
            prev: CommitHash([0; 32]),
            time_ms: 1,
            packs: vec![PackKey {
                pack: PackId([3; 32]),
                key: [4; 32],
            }],
            files: vec![],
        }
    }

    #[test]
    fn a_commit_opens_only_where_it_was_written() {
        let id = age::x25519::Identity::generate();
        let recipient = id.to_public().to_string();
        let auth = [9u8; 32];
        let (drop, dev) = (DropId([1; 16]), DeviceId([2; 16]));
        let c = commit(drop, dev, 5);
        let bytes = seal_commit(&c, &recipient, &auth).unwrap();
        assert_eq!(open_commit(&bytes, (&drop, &dev, 5), &id, &auth, "o").unwrap(), c);
        for (d, v, s) in [
            (DropId([7; 16]), dev, 5),
            (drop, DeviceId([7; 16]), 5),
            (drop, dev, 6),
        ] {
            let e = open_commit(&bytes, (&d, &v, s), &id, &auth, "o").unwrap_err();
            assert!(e.to_string().contains("forged, moved"), "{e}");
        }
        assert!(open_commit(&bytes, (&drop, &dev, 5), &id, &[8; 32], "o").is_err());
        assert!(open_commit(&bytes[..bytes.len() - 1], (&drop, &dev, 5), &id, &auth, "o").is_err());
        let other = age::x25519::Identity::generate();
        assert!(open_commit(&bytes, (&drop, &dev, 5), &other, &auth, "o").is_err());
    }

    #[test]
    fn a_blob_opens_only_in_its_pack_under_its_id() {
        let key = [5u8; 32];
        let (drop, pack, chunk) = (DropId([1; 16]), PackId([2; 32]), ChunkId([3; 32]));
        let mut out = b"prefix".to_vec();
        let len = seal_blob(&key, (&drop, &pack, &chunk), b"hello", &mut out);
        let sealed = &out[6..];
        assert_eq!(len as usize, sealed.len());
        assert_eq!(open_blob(&key, (&drop, &pack, &chunk), sealed, "o").unwrap(), b"hello");
        assert!(open_blob(&key, (&drop, &PackId([9; 32]), &chunk), sealed, "o").is_err());
        assert!(open_blob(&key, (&drop, &pack, &ChunkId([9; 32])), sealed, "o").is_err());
        assert!(open_blob(&key, (&DropId([9; 16]), &pack, &chunk), sealed, "o").is_err());
        assert!(open_blob(&[6; 32], (&drop, &pack, &chunk), sealed, "o").is_err());
        assert!(open_blob(&key, (&drop, &pack, &chunk), &sealed[..10], "o").is_err());
    }
}
