//! Keys, sealing and chunk ids.
//!
//! One random 32-byte [`MasterKey`] per repository. Sub-keys are derived with
//! `blake3::derive_key` under distinct contexts ([`Keys::derive`]); none of them is
//! ever stored. Every sealed object is
//! `nonce (24) || XChaCha20-Poly1305 ciphertext || tag (16)` with a fresh random nonce
//! and an AAD that binds the object's [`Kind`] and identity, so an object moved to
//! another key, or replayed as another kind, fails to open.

mod aead;
pub mod epoch;
pub mod grantslot;
pub mod keyring;
pub mod keyslot;
pub mod kms;

pub use aead::{NONCE_LEN, OpenError, TAG_LEN};

use crate::format::id::ChunkId;
use aead::XChaCha20Poly1305;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};
/// Bytes a sealed object adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const AAD_MAGIC: &[u8; 7] = b"coffer1";

/// What a sealed object is; the first byte of its AAD after the magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A chunk blob inside a pack; identity = chunk id.
    Chunk = 1,
    /// A pack's trailer; identity = pack id.
    PackTrailer = 2,
    /// A pack's fixed-size footer; identity = pack id.
    PackFooter = 3,
    /// A commit; identity = device id || seq (u64 big-endian).
    Commit = 4,
    /// A checkpoint; identity = device id || seq (u64 big-endian).
    Checkpoint = 5,
    /// A wrapped master key in a key slot; identity = repo id || slot id.
    KeySlot = 6,
    /// The older epochs' keys in an epoch record (`DESIGN.md` §4a).
    EpochKeys = 7,
    /// A drop's owner record (`DESIGN.md` §4c); identity = repo id || drop id.
    DropRecord = 8,
}

/// The repository's root secret. Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct MasterKey([u8; 32]);

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        fill_random(&mut k);
        MasterKey(k)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// The sub-keys derived from a [`MasterKey`], or from a key chain
/// ([`epoch::KeyChain`]): chunk ids, the chunker's seed and the pack padding
/// always come from the root key; objects are sealed under the newest epoch's
/// AEAD key and opened under the key their nonce tag names (the root's when
/// none does).
pub struct Keys {
    aead: XChaCha20Poly1305,
    /// The epoch new objects are sealed under, when it is not the root.
    current: Option<([u8; 8], usize)>,
    /// Every epoch above 0: its nonce tag and AEAD key.
    epochs: Vec<([u8; 8], XChaCha20Poly1305)>,
    chunk_id: Zeroizing<[u8; 32]>,
    padding: Zeroizing<[u8; 32]>,
    chunker_seed: u64,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// Derivation contexts (`DESIGN.md` §Keys). Changing any of them changes the format.
pub(crate) mod context {
    pub const AEAD: &str = "coffer v1 2026-11 aead key";
    pub const CHUNK_ID: &str = "coffer v1 2026-11 chunk id key";
    pub const CHUNKER_SEED: &str = "coffer v1 2026-11 chunker gear seed";
    pub const PADDING: &str = "coffer v1 2026-11 pack padding key";
}

impl Keys {
    /// Derives every sub-key from the master key.
    pub fn derive(master: &MasterKey) -> Self {
        let aead_key = Zeroizing::new(blake3::derive_key(context::AEAD, master.as_bytes()));
        let seed_bytes =
            Zeroizing::new(blake3::derive_key(context::CHUNKER_SEED, master.as_bytes()));
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&seed_bytes[..8]);
        // A zero seed means "unseeded" to the chunker; map it to 1 (probability 2^-64).
        let chunker_seed = u64::from_le_bytes(seed).max(1);
        Keys {
            aead: XChaCha20Poly1305::new(&aead_key),
            current: None,
            epochs: Vec::new(),
            chunk_id: Zeroizing::new(blake3::derive_key(context::CHUNK_ID, master.as_bytes())),
            padding: Zeroizing::new(blake3::derive_key(context::PADDING, master.as_bytes())),
            chunker_seed,
        }
    }

    /// The keys of a chain: the root's sub-keys, every epoch's AEAD key, and
    /// the newest epoch's for sealing.
    pub fn for_chain(chain: &epoch::KeyChain) -> Self {
        let mut keys = Keys::derive(chain.root_key());
        let (newest, _) = chain.newest();
        for (name, key) in chain.iter().filter(|(n, _)| n.level > 0) {
            let aead = Zeroizing::new(blake3::derive_key(context::AEAD, key.as_bytes()));
            let tag = epoch::nonce_tag(key);
            if *name == newest {
                keys.current = Some((tag, keys.epochs.len()));
            }
            keys.epochs.push((tag, XChaCha20Poly1305::new(&aead)));
        }
        keys
    }

    /// The key new objects are sealed under, and the tag their nonce starts with.
    fn sealing(&self) -> (&XChaCha20Poly1305, Option<&[u8; 8]>) {
        match self.current {
            Some((ref tag, i)) => (&self.epochs[i].1, Some(tag)),
            None => (&self.aead, None),
        }
    }

    /// The key that opens `sealed`: the epoch its nonce tag names, else the root's.
    fn opening(&self, sealed: &[u8]) -> &XChaCha20Poly1305 {
        let tag = sealed.first_chunk::<8>();
        self.epochs
            .iter()
            .find(|(t, _)| Some(t) == tag)
            .map_or(&self.aead, |(_, k)| k)
    }

    /// The keyed BLAKE3 id of a plaintext chunk.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(keyed_hash(&self.chunk_id, data))
    }

    /// The seed XORed into FastCDC's gear table.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// Fills `out` with the padding stream of a pack: keyed BLAKE3 XOF over the pack id.
    pub fn padding(&self, pack_id: &[u8], out: &mut [u8]) {
        let mut hasher = blake3::Hasher::new_keyed(&self.padding);
        hasher.update(pack_id);
        hasher.finalize_xof().fill(out);
    }

    /// Seals `plaintext` into a new vector: `nonce || ciphertext || tag`.
    pub fn seal(&self, kind: Kind, identity: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&[0u8; NONCE_LEN]);
        out.extend_from_slice(plaintext);
        self.seal_tail_in_place(kind, identity, &mut out, 0);
        out
    }

    /// Seals in place the object that starts at `start` in `buf`: `buf[start..start+24]`
    /// is overwritten with a fresh nonce, `buf[start+24..]` is the plaintext, which is
    /// encrypted in place, and the tag is appended. This lets a pack builder seal
    /// blobs directly into its buffer, without a copy.
    pub fn seal_tail_in_place(&self, kind: Kind, identity: &[u8], buf: &mut Vec<u8>, start: usize) {
        let (cipher, tag) = self.sealing();
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        if let Some(tag) = tag {
            nonce[..8].copy_from_slice(tag);
        }
        seal_raw_in_place(cipher, &nonce, &aad(kind, identity), buf, start);
    }

    /// Opens a sealed object, returning its plaintext.
    pub fn open(&self, kind: Kind, identity: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        open_with(self.opening(sealed), kind, identity, sealed)
    }

    /// Opens a sealed object where it lies: the plaintext replaces the ciphertext
    /// inside `sealed`, and that part is returned (no allocation, no copy). On
    /// failure the bytes of `sealed` are unspecified.
    pub fn open_in_place<'a>(
        &self,
        kind: Kind,
        identity: &[u8],
        sealed: &'a mut [u8],
    ) -> Result<&'a [u8], OpenError> {
        let cipher = self.opening(sealed);
        open_raw_in_place(cipher, &aad(kind, identity), sealed)
    }
}

pub(crate) fn seal_with(
    cipher: &XChaCha20Poly1305,
    kind: Kind,
    identity: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&[0u8; NONCE_LEN]);
    out.extend_from_slice(plaintext);
    seal_tail_with(cipher, kind, identity, &mut out, 0);
    out
}

fn seal_tail_with(
    cipher: &XChaCha20Poly1305,
    kind: Kind,
    identity: &[u8],
    buf: &mut Vec<u8>,
    start: usize,
) {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    seal_raw_in_place(cipher, &nonce, &aad(kind, identity), buf, start);
}

/// The envelope primitive: `buf[start..]` = 24 bytes (overwritten by `nonce`) then
/// the plaintext, encrypted in place; the tag is appended.
fn seal_raw_in_place(
    cipher: &XChaCha20Poly1305,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
    start: usize,
) {
    buf[start..start + NONCE_LEN].copy_from_slice(nonce);
    let tag = cipher.seal_in_place(nonce, aad, &mut buf[start + NONCE_LEN..]);
    buf.extend_from_slice(&tag);
}

/// Seals `buf[start..]` (24 bytes that become a fresh random nonce, then the
/// plaintext) in place under a raw key and AAD: the envelope of drop blobs,
/// whose keys are random per pack (`DESIGN.md` §4c).
pub(crate) fn seal_raw(key: &[u8; 32], aad: &[u8], buf: &mut Vec<u8>, start: usize) {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    seal_raw_in_place(&XChaCha20Poly1305::new(key), &nonce, aad, buf, start);
}

/// Opens what [`seal_raw`] sealed.
pub(crate) fn open_raw_key(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    open_raw(&XChaCha20Poly1305::new(key), aad, sealed)
}

pub(crate) fn open_with(
    cipher: &XChaCha20Poly1305,
    kind: Kind,
    identity: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, OpenError> {
    open_raw(cipher, &aad(kind, identity), sealed)
}

fn open_raw(cipher: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    let mut buf = sealed.to_vec();
    let len = open_raw_in_place(cipher, aad, &mut buf)?.len();
    buf.truncate(NONCE_LEN + len);
    buf.drain(..NONCE_LEN);
    Ok(buf)
}

/// Decrypts `nonce || ciphertext || tag` where it lies; returns the plaintext part.
fn open_raw_in_place<'a>(
    cipher: &XChaCha20Poly1305,
    aad: &[u8],
    sealed: &'a mut [u8],
) -> Result<&'a [u8], OpenError> {
    // Shorter than a nonce fails here, shorter than nonce + tag in `open_in_place`.
    let (nonce, rest) = sealed
        .split_first_chunk_mut::<NONCE_LEN>()
        .ok_or(OpenError)?;
    cipher.open_in_place(nonce, aad, rest)
}

#[cfg(any(test, feature = "testing"))]
/// The envelope with an explicit nonce and raw AAD — exposed only so the official
/// XChaCha20-Poly1305 vectors can pin the exact code path every object uses.
pub fn envelope_seal_with_nonce(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; NONCE_LEN];
    buf.extend_from_slice(plaintext);
    seal_raw_in_place(&XChaCha20Poly1305::new(key), nonce, aad, &mut buf, 0);
    buf
}

#[cfg(any(test, feature = "testing"))]
/// Opens `nonce || ciphertext || tag` with raw AAD (see [`envelope_seal_with_nonce`]).
pub fn envelope_open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    open_raw(&XChaCha20Poly1305::new(key), aad, sealed)
}

/// Keyed BLAKE3, the chunk-id function (exposed for the official vectors).
pub fn keyed_hash(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(key, data).as_bytes()
}

/// `"coffer1" || kind || identity`.
fn aad(kind: Kind, identity: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_MAGIC.len() + 1 + identity.len());
    aad.extend_from_slice(AAD_MAGIC);
    aad.push(kind as u8);
    aad.extend_from_slice(identity);
    aad
}

/// The identity of a commit or checkpoint object: device id || seq big-endian.
pub fn log_identity(device: &crate::format::id::DeviceId, seq: u64) -> [u8; 24] {
    let mut id = [0u8; 24];
    id[..16].copy_from_slice(device.as_bytes());
    id[16..].copy_from_slice(&seq.to_be_bytes());
    id
}

/// Fills `buf` from the OS random generator. Failing to get randomness is not
/// recoverable for a tool whose every object needs a fresh nonce.
pub fn fill_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the OS random number generator failed");
}

/// Compares two MACs without stopping at the first difference.
pub(crate) fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::derive(&MasterKey::from_bytes([7u8; 32]))
    }

    #[test]
    fn seal_open_round_trip() {
        let k = keys();
        let sealed = k.seal(Kind::Commit, b"id", b"hello");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(k.open(Kind::Commit, b"id", &sealed).unwrap(), b"hello");
    }

    #[test]
    fn wrong_kind_identity_or_key_fails() {
        let k = keys();
        let sealed = k.seal(Kind::Commit, b"id", b"hello");
        assert_eq!(k.open(Kind::Checkpoint, b"id", &sealed), Err(OpenError));
        assert_eq!(k.open(Kind::Commit, b"other", &sealed), Err(OpenError));
        let other = Keys::derive(&MasterKey::from_bytes([8u8; 32]));
        assert_eq!(other.open(Kind::Commit, b"id", &sealed), Err(OpenError));
        assert_eq!(k.open(Kind::Commit, b"id", &sealed[..10]), Err(OpenError));
    }

    #[test]
    fn every_seal_uses_a_fresh_nonce() {
        let k = keys();
        let a = k.seal(Kind::Chunk, b"x", b"same");
        let b = k.seal(Kind::Chunk, b"x", b"same");
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn sub_keys_differ_and_chunk_id_is_keyed() {
        let k = keys();
        let data = b"some chunk";
        assert_ne!(k.chunk_id(data).0, *blake3::hash(data).as_bytes());
        let other = Keys::derive(&MasterKey::from_bytes([8u8; 32]));
        assert_ne!(k.chunk_id(data), other.chunk_id(data));
        assert_ne!(k.chunker_seed(), other.chunker_seed());
    }

    #[test]
    fn master_key_debug_is_redacted() {
        let m = MasterKey::from_bytes([0xab; 32]);
        assert!(!format!("{m:?}").contains("ab"));
    }
}
