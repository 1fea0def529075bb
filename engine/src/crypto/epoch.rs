//! Key epochs (`DESIGN.md` §4a): the keys a repository's objects are sealed
//! under, one per rotation, and how a key slot reaches them.
//!
//! Epoch 0 is the repository's root [`MasterKey`] (the key the config's key
//! check names). `coffer key rotate` makes a new random epoch key; its *record*
//! (`epochs/<name>`) seals, under the new key, every older epoch key, so the
//! newest key alone opens all history. A key slot of version 3 holds an age
//! X25519 identity; a *grant* (`grants/<epoch>/<slot>`) is the epoch key
//! encrypted to the slot's recipient with `age`. A rotation grants the new key
//! to the slots it keeps, and only to them: a removed slot, or anyone who kept
//! an old key, has no way to the new one.
//!
//! Objects sealed under an epoch above 0 carry the epoch's 8-byte *nonce tag*
//! as the first bytes of their nonce, so a reader picks the key without trying
//! them in turn; objects under the root key keep fully random nonces.

use super::{Keys, Kind, MasterKey};
use crate::error::{Error, Result};
use crate::format::id::{RepoId, SlotId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

/// An epoch: its level (0 = the root key, +1 per rotation) and a random id
/// that tells apart two rotations that raced to the same level.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EpochName {
    pub level: u64,
    pub id: [u8; 8],
}

impl EpochName {
    /// Epoch 0: the root key.
    pub const ROOT: EpochName = EpochName {
        level: 0,
        id: [0; 8],
    };

    /// A new epoch at `level` with a random id.
    pub fn random(level: u64) -> EpochName {
        let mut id = [0u8; 8];
        super::fill_random(&mut id);
        EpochName { level, id }
    }

    /// Parses `<level: 16 hex>-<id: 16 hex>`.
    pub fn parse(s: &str) -> Option<EpochName> {
        let (level, id) = s.split_once('-')?;
        if level.len() != 16 || !level.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let level = u64::from_str_radix(level, 16).ok()?;
        let mut bytes = [0u8; 8];
        hex::decode_to_slice(id, &mut bytes).ok()?;
        let name = EpochName { level, id: bytes };
        (name.to_string() == s).then_some(name)
    }
}

impl fmt::Display for EpochName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.level, hex::encode(self.id))
    }
}

impl fmt::Debug for EpochName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({self})")
    }
}

/// Every epoch key a device holds; always the root.
#[derive(Clone, Debug)]
pub struct KeyChain {
    keys: BTreeMap<EpochName, MasterKey>,
}

impl KeyChain {
    /// A chain of the root key alone (a repository never rotated).
    pub fn root(root: &MasterKey) -> KeyChain {
        KeyChain {
            keys: BTreeMap::from([(EpochName::ROOT, root.clone())]),
        }
    }

    pub fn root_key(&self) -> &MasterKey {
        self.keys.get(&EpochName::ROOT).expect("a chain holds its root")
    }

    /// The epoch new objects are sealed under: the highest name held.
    pub fn newest(&self) -> (EpochName, &MasterKey) {
        let (name, key) = self.keys.last_key_value().expect("a chain holds its root");
        (*name, key)
    }

    pub fn get(&self, name: &EpochName) -> Option<&MasterKey> {
        self.keys.get(name)
    }

    pub fn contains(&self, name: &EpochName) -> bool {
        self.keys.contains_key(name)
    }

    pub fn insert(&mut self, name: EpochName, key: MasterKey) {
        self.keys.insert(name, key);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&EpochName, &MasterKey)> {
        self.keys.iter()
    }

    /// The sealing and opening keys of this chain.
    pub fn keys(&self) -> Keys {
        Keys::for_chain(self)
    }
}

/// The 8 bytes that begin the nonce of every object sealed under `key` (an
/// epoch above 0).
pub fn nonce_tag(key: &MasterKey) -> [u8; 8] {
    let d = Zeroizing::new(blake3::derive_key(context::NONCE_TAG, key.as_bytes()));
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&d[..8]);
    tag
}

mod context {
    pub const NONCE_TAG: &str = "coffer v3 2026-12 epoch nonce tag";
    pub const SLOT_MAC: &str = "coffer v3 2026-12 slot mac key";
}

/// The JSON form of an epoch record, `epochs/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochRecord {
    /// Record format version (1).
    pub version: u32,
    pub level: u64,
    /// The epoch's id, 16 hex.
    pub id: String,
    /// When the rotation made it, Unix ms by its writer's clock.
    pub created: u64,
    /// The host that made it ("" if it had none).
    pub host: String,
    /// Every older epoch key, sealed under this epoch's key (kind 7), hex.
    pub keys: String,
}

/// One older epoch inside a record's sealed `keys`.
#[derive(Serialize, Deserialize)]
struct Entry {
    level: u64,
    id: [u8; 8],
    key: [u8; 32],
}

const RECORD_VERSION: u32 = 1;

/// The AAD identity of a record's sealed keys.
fn record_identity(repo: &RepoId, name: &EpochName, created: u64, host: &str) -> Vec<u8> {
    let mut id = Vec::with_capacity(16 + 16 + 9 + host.len());
    id.extend_from_slice(repo.as_bytes());
    id.extend_from_slice(&name.level.to_be_bytes());
    id.extend_from_slice(&name.id);
    id.extend_from_slice(&created.to_be_bytes());
    id.push(u8::try_from(host.len()).expect("host names are cut to 255 bytes"));
    id.extend_from_slice(host.as_bytes());
    id
}

impl EpochRecord {
    /// The record of epoch `name` with key `key`, sealing every key of `chain`.
    pub fn create(
        repo: &RepoId,
        (name, key): (&EpochName, &MasterKey),
        chain: &KeyChain,
        (created, host): (u64, &str),
    ) -> EpochRecord {
        let entries: Vec<Entry> = chain
            .iter()
            .map(|(n, k)| Entry {
                level: n.level,
                id: n.id,
                key: *k.as_bytes(),
            })
            .collect();
        let plain = Zeroizing::new(postcard::to_allocvec(&entries).expect("entries serialize"));
        let sealed = Keys::derive(key).seal(
            Kind::EpochKeys,
            &record_identity(repo, name, created, host),
            &plain,
        );
        EpochRecord {
            version: RECORD_VERSION,
            level: name.level,
            id: hex::encode(name.id),
            created,
            host: host.to_string(),
            keys: hex::encode(sealed),
        }
    }

    /// Opens the record stored as `epochs/<name>` with its epoch's `key`: the
    /// older epochs' keys it seals.
    pub fn open(
        &self,
        repo: &RepoId,
        name: &EpochName,
        key: &MasterKey,
    ) -> Result<Vec<(EpochName, MasterKey)>> {
        let object = format!("epochs/{name}");
        if self.version != RECORD_VERSION {
            return Err(Error::UnsupportedVersion {
                what: format!("epoch record {object}"),
                found: self.version,
                supported: RECORD_VERSION,
            });
        }
        if self.level != name.level || self.id != hex::encode(name.id) || self.host.len() > 255 {
            return Err(Error::corrupt(&object, "its fields do not match its name"));
        }
        let sealed = hex::decode(&self.keys).map_err(|_| Error::corrupt(&object, "bad hex"))?;
        let identity = record_identity(repo, name, self.created, &self.host);
        let plain = Keys::derive(key)
            .open(Kind::EpochKeys, &identity, &sealed)
            .map_err(|_| Error::corrupt(&object, "its keys do not open with the epoch's key"))?;
        let plain = Zeroizing::new(plain);
        let entries: Vec<Entry> = postcard::from_bytes(&plain)
            .map_err(|_| Error::corrupt(&object, "undecodable key list"))?;
        Ok(entries
            .into_iter()
            .map(|e| {
                let n = EpochName {
                    level: e.level,
                    id: e.id,
                };
                (n, MasterKey::from_bytes(e.key))
            })
            .collect())
    }
}

/// An age X25519 identity: what a version-3 key slot wraps.
pub struct SlotIdentity(age::x25519::Identity);

impl fmt::Debug for SlotIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SlotIdentity(<redacted>)")
    }
}

impl Clone for SlotIdentity {
    fn clone(&self) -> Self {
        SlotIdentity::parse(&self.secret()).expect("an identity parses its own string")
    }
}

impl SlotIdentity {
    pub fn generate() -> SlotIdentity {
        SlotIdentity(age::x25519::Identity::generate())
    }

    /// `AGE-SECRET-KEY-1...`.
    pub fn secret(&self) -> Zeroizing<String> {
        use age::secrecy::ExposeSecret;
        Zeroizing::new(self.0.to_string().expose_secret().to_string())
    }

    pub fn parse(secret: &str) -> Option<SlotIdentity> {
        secret.parse().ok().map(SlotIdentity)
    }

    /// `age1...`.
    pub fn recipient(&self) -> String {
        self.0.to_public().to_string()
    }

    /// Opens a grant made for this identity's recipient: the epoch key.
    pub fn open_grant(&self, bytes: &[u8], object: &str) -> Result<MasterKey> {
        let plain = age::decrypt(&self.0, bytes)
            .map_err(|e| Error::corrupt(object, format!("the grant does not open: {e}")))?;
        let plain = Zeroizing::new(plain);
        let key: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| Error::corrupt(object, "the granted key is not 32 bytes long"))?;
        Ok(MasterKey::from_bytes(key))
    }
}

/// A grant: `key` encrypted with age to `recipient` (`age1...`).
pub fn grant(recipient: &str, key: &MasterKey, object: &str) -> Result<Vec<u8>> {
    let to: age::x25519::Recipient = recipient
        .parse()
        .map_err(|e| Error::corrupt(object, format!("bad recipient: {e}")))?;
    age::encrypt(&to, key.as_bytes())
        .map_err(|e| Error::Config(format!("age could not encrypt a grant: {e}")))
}

/// The MAC that binds a version-3 slot's recipient to the repository: keyed
/// BLAKE3 under a key derived from the root, over `"coffer slot\0" || repo ||
/// slot || kind length (u8) || kind || recipient`. Only a holder of the root
/// key can make a slot that a rotation will grant keys to.
pub fn slot_mac(root: &MasterKey, repo: &RepoId, slot: &SlotId, kind: &str, recipient: &str) -> String {
    let key = Zeroizing::new(blake3::derive_key(context::SLOT_MAC, root.as_bytes()));
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(b"coffer slot\0");
    h.update(repo.as_bytes());
    h.update(slot.as_bytes());
    h.update(&[u8::try_from(kind.len()).unwrap_or(u8::MAX)]);
    h.update(kind.as_bytes());
    h.update(recipient.as_bytes());
    h.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_only_their_own_form() {
        let n = EpochName::random(3);
        assert_eq!(EpochName::parse(&n.to_string()), Some(n));
        assert_eq!(
            EpochName::ROOT.to_string(),
            "0000000000000000-0000000000000000"
        );
        for bad in ["", "1-2", "000000000000000g-0000000000000000", "0000000000000001-00"] {
            assert_eq!(EpochName::parse(bad), None, "{bad}");
        }
        assert!(EpochName { level: 2, id: [0; 8] } > EpochName { level: 1, id: [9; 8] });
    }

    #[test]
    fn a_record_opens_with_its_key_only_and_lists_the_older_keys() {
        let repo = RepoId::random();
        let root = MasterKey::generate();
        let chain = KeyChain::root(&root);
        let (name, key) = (EpochName::random(1), MasterKey::generate());
        let rec = EpochRecord::create(&repo, (&name, &key), &chain, (5, "vm"));
        let keys = rec.open(&repo, &name, &key).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].0, EpochName::ROOT);
        assert!(keys[0].1 == root);
        assert!(rec.open(&repo, &name, &root).is_err());
        assert!(rec.open(&RepoId::random(), &name, &key).is_err());
        let mut moved = rec.clone();
        moved.created = 6;
        assert!(moved.open(&repo, &name, &key).is_err());
        assert!(rec.open(&repo, &EpochName::random(1), &key).is_err());
    }

    #[test]
    fn grants_open_for_their_recipient_only() {
        let (a, b) = (SlotIdentity::generate(), SlotIdentity::generate());
        let key = MasterKey::generate();
        let g = grant(&a.recipient(), &key, "g").unwrap();
        assert!(a.open_grant(&g, "g").unwrap() == key);
        assert!(b.open_grant(&g, "g").is_err());
        assert!(a.open_grant(b"junk", "g").is_err());
        let back = SlotIdentity::parse(&a.secret()).unwrap();
        assert_eq!(back.recipient(), a.recipient());
    }
}
