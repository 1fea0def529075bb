//! Passphrase key slots: the master key wrapped under an Argon2id-derived key.
//!
//! A slot is a small plaintext JSON object (`keys/<slot id>`) holding the KDF
//! parameters, the salt and the sealed master key (`DESIGN.md` §Key slots).
//! Version 2 also records when and on which host it was made, bound into the
//! seal's associated data (a slot whose record was edited no longer opens);
//! version 1 slots, which record neither, still open. Parameters
//! are stored, so they can be raised later without breaking old slots; weaker than
//! m = 19 MiB, t = 2 is refused, both when creating and when opening a slot (a store
//! operator must not be able to downgrade an attacker's work factor).

use super::aead::XChaCha20Poly1305;
use super::{Kind, MasterKey, SEAL_OVERHEAD, open_with, seal_with};
use crate::error::{Error, Result};
use super::epoch::SlotIdentity;
use crate::format::id::{RepoId, SlotId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// m = 64 MiB, t = 3, p = 4.
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 4,
    };
    /// The weakest accepted: m = 19 MiB, t = 2 (OWASP's Argon2id minimum).
    pub const MINIMUM: KdfParams = KdfParams {
        m_cost_kib: 19 * 1024,
        t_cost: 2,
        p_cost: 1,
    };

    /// The most memory a key slot may ask for: 1 GiB. Key slots come from the
    /// store, so their parameters are untrusted; 1 GiB is 16 times the default,
    /// and still fits the smallest VMs coffer is meant for without swapping
    /// them to death. Memory is allocated fallibly ([`kek`]): a machine that
    /// cannot give it gets an error, never an abort.
    pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;

    /// Refuses parameters weaker than [`KdfParams::MINIMUM`] or absurdly large
    /// (more than [`KdfParams::MAX_MEMORY_KIB`], 20 passes or 16 lanes).
    pub fn validate(&self) -> Result<()> {
        let min = Self::MINIMUM;
        if self.m_cost_kib < min.m_cost_kib || self.t_cost < min.t_cost || self.p_cost < 1 {
            return Err(Error::Config(format!(
                "Argon2id parameters m={} KiB, t={}, p={} are weaker than the minimum m={} KiB, t={}",
                self.m_cost_kib, self.t_cost, self.p_cost, min.m_cost_kib, min.t_cost
            )));
        }
        if self.m_cost_kib > Self::MAX_MEMORY_KIB || self.t_cost > 20 || self.p_cost > 16 {
            return Err(Error::Config(format!(
                "Argon2id parameters m={} KiB, t={}, p={} are out of range",
                self.m_cost_kib, self.t_cost, self.p_cost
            )));
        }
        Ok(())
    }
}

/// The JSON form of a key slot object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySlot {
    /// Slot format version (1).
    pub version: u32,
    /// `"passphrase"` (the only kind in format 1).
    pub kind: String,
    /// `"argon2id"`.
    pub kdf: String,
    #[serde(flatten)]
    pub params: KdfParams,
    /// 32 random bytes, hex.
    pub salt: String,
    /// The sealed master key, hex: nonce (24) || ciphertext (32) || tag (16).
    pub wrapped: String,
    /// Version 2: when the slot was made, Unix ms by its writer's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// Version 2: the host name of the machine that made it ("" if it had
    /// none), at most [`HOST_MAX`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Version 3: the recipient (`age1...`) of the age identity `wrapped` holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Version 3: [`super::epoch::slot_mac`] of the recipient, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// What a slot unwraps: the root key (versions 1 and 2), or an age identity
/// that opens the slot's grants (version 3, `DESIGN.md` §4a).
#[derive(Debug)]
pub enum SlotSecret {
    Root(MasterKey),
    Identity(SlotIdentity),
}

impl PartialEq for SlotSecret {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SlotSecret::Root(a), SlotSecret::Root(b)) => a == b,
            (SlotSecret::Identity(a), SlotSecret::Identity(b)) => a.recipient() == b.recipient(),
            _ => false,
        }
    }
}

/// The longest identity string a version-3 slot may wrap (age's are 74 bytes).
pub(crate) const IDENTITY_MAX: usize = 256;

/// Parses the unwrapped identity of a version-3 slot and checks it against the
/// slot's recipient.
pub(crate) fn identity_of(plain: &[u8], recipient: &str, object: &str) -> Result<SlotIdentity> {
    let text = std::str::from_utf8(plain).map_err(|_| Error::corrupt(object, "bad identity"))?;
    let identity = SlotIdentity::parse(text).ok_or_else(|| Error::corrupt(object, "bad identity"))?;
    if identity.recipient() != recipient {
        return Err(Error::corrupt(object, "its identity does not match its recipient"));
    }
    Ok(identity)
}

/// A key slot object of either kind, told apart by its `kind` field.
#[derive(Debug, Clone)]
pub enum StoredSlot {
    Passphrase(KeySlot),
    Kms(super::kms::KmsSlot),
    /// An expiring grant (version 4, `DESIGN.md` §4b).
    Grant(super::grantslot::GrantSlot),
}

impl StoredSlot {
    /// Parses a slot object (`object` names it in errors). A kind other than
    /// `"kms"` or a grant's is read as a passphrase slot, whose check refuses
    /// unknown kinds.
    pub fn parse(bytes: &[u8], object: &str) -> Result<StoredSlot> {
        #[derive(Deserialize)]
        struct Probe {
            kind: String,
        }
        let bad = |e: serde_json::Error| Error::corrupt(object, e.to_string());
        let probe: Probe = serde_json::from_slice(bytes).map_err(bad)?;
        match probe.kind.as_str() {
            "kms" => serde_json::from_slice(bytes).map(StoredSlot::Kms),
            super::grantslot::KIND_PASSPHRASE | super::grantslot::KIND_RECIPIENT => {
                serde_json::from_slice(bytes).map(StoredSlot::Grant)
            }
            _ => serde_json::from_slice(bytes).map(StoredSlot::Passphrase),
        }
        .map_err(bad)
    }
}

/// The version new slots are written in; 1 and 2 are still read.
pub(crate) const SLOT_VERSION: u32 = 3;

/// The longest host name a slot records, in bytes.
pub const HOST_MAX: usize = 255;

/// This machine's host name (Linux's `/proc/sys/kernel/hostname`, else
/// `/etc/hostname`), cut to [`HOST_MAX`] bytes at a character boundary; ""
/// when neither says.
pub fn this_host() -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let name = read("/proc/sys/kernel/hostname")
        .or_else(|| read("/etc/hostname"))
        .unwrap_or_default();
    let mut name = name.trim().to_string();
    while name.len() > HOST_MAX {
        name.pop();
    }
    name
}

pub(crate) fn kek(
    passphrase: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>> {
    params.validate()?;
    let argon_params =
        argon2::Params::new(params.m_cost_kib, params.t_cost, params.p_cost, Some(32))
            .map_err(|e| Error::Config(format!("invalid Argon2id parameters: {e}")))?;
    let blocks = argon_params.block_count();
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    // Allocated here rather than by `hash_password_into`, which aborts the
    // process when the allocation fails (a memory limit, a hostile slot).
    let mut memory: Vec<argon2::Block> = Vec::new();
    memory.try_reserve_exact(blocks).map_err(|_| {
        Error::Config(format!(
            "Argon2id needs {} MiB of memory for this key slot, and it could not be allocated",
            params.m_cost_kib / 1024
        ))
    })?;
    memory.resize(blocks, argon2::Block::default());
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into_with_memory(passphrase, salt, out.as_mut(), &mut memory)
        .map_err(|e| Error::Config(format!("Argon2id failed: {e}")))?;
    Ok(out)
}

/// The associated identity of the sealed master key: repository id (16) ||
/// slot id (16), and for version 2 || created (u64 BE) || host length (u8) ||
/// host bytes.
pub(crate) fn identity_aad(repo: &RepoId, slot: &SlotId, origin: Option<(u64, &str)>) -> Vec<u8> {
    let mut id = Vec::with_capacity(32 + 9 + HOST_MAX);
    id.extend_from_slice(repo.as_bytes());
    id.extend_from_slice(slot.as_bytes());
    if let Some((created, host)) = origin {
        id.extend_from_slice(&created.to_be_bytes());
        let len = u8::try_from(host.len()).expect("host names are cut to 255 bytes");
        id.push(len);
        id.extend_from_slice(host.as_bytes());
    }
    id
}

impl KeySlot {
    /// A version-2 slot (the root key itself wrapped), as coffer wrote them
    /// before key epochs, made now on this host: for tests of old repositories.
    #[cfg(any(test, feature = "testing"))]
    pub fn create(
        master: &MasterKey,
        passphrase: &[u8],
        params: KdfParams,
        repo: &RepoId,
        slot: &SlotId,
    ) -> Result<KeySlot> {
        let now = crate::format::version::now_millis();
        Self::create_at(
            master,
            passphrase,
            params,
            (repo, slot),
            (now, &this_host()),
        )
    }

    /// A version-2 slot with the time (Unix ms) and host given (the form
    /// [`KeySlot::create_v3_at`] starts from).
    pub fn create_at(
        master: &MasterKey,
        passphrase: &[u8],
        params: KdfParams,
        (repo, slot): (&RepoId, &SlotId),
        (created, host): (u64, &str),
    ) -> Result<KeySlot> {
        if passphrase.is_empty() {
            return Err(Error::Config("an empty passphrase is not allowed".into()));
        }
        if host.len() > HOST_MAX {
            return Err(Error::Config(format!(
                "a host name is at most {HOST_MAX} bytes"
            )));
        }
        let mut salt = [0u8; 32];
        super::fill_random(&mut salt);
        let kek = kek(passphrase, &salt, params)?;
        let cipher = XChaCha20Poly1305::new(&kek);
        let aad = identity_aad(repo, slot, Some((created, host)));
        let wrapped = seal_with(&cipher, Kind::KeySlot, &aad, master.as_bytes());
        Ok(KeySlot {
            version: 2,
            kind: "passphrase".into(),
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            wrapped: hex::encode(wrapped),
            created: Some(created),
            host: Some(host.to_string()),
            recipient: None,
            mac: None,
        })
    }

    /// A version-3 slot: `identity` wrapped under `passphrase`, its recipient
    /// bound to the repository by a MAC under `root`; made now, on this host.
    pub fn create_v3(
        identity: &SlotIdentity,
        root: &MasterKey,
        passphrase: &[u8],
        params: KdfParams,
        (repo, slot): (&RepoId, &SlotId),
    ) -> Result<KeySlot> {
        let (created, host) = (crate::format::version::now_millis(), this_host());
        Self::create_v3_at(identity, root, passphrase, params, (repo, slot), (created, &host))
    }

    /// [`KeySlot::create_v3`] with the time (Unix ms) and host given.
    pub fn create_v3_at(
        identity: &SlotIdentity,
        root: &MasterKey,
        passphrase: &[u8],
        params: KdfParams,
        (repo, slot): (&RepoId, &SlotId),
        (created, host): (u64, &str),
    ) -> Result<KeySlot> {
        let secret = identity.secret();
        let master = MasterKey::from_bytes([0; 32]);
        let mut ks = Self::create_at(&master, passphrase, params, (repo, slot), (created, host))?;
        let mut salt = [0u8; 32];
        hex::decode_to_slice(&ks.salt, &mut salt).expect("own hex");
        let kek = kek(passphrase, &salt, params)?;
        let cipher = XChaCha20Poly1305::new(&kek);
        let aad = identity_aad(repo, slot, Some((created, host)));
        ks.wrapped = hex::encode(seal_with(&cipher, Kind::KeySlot, &aad, secret.as_bytes()));
        let recipient = identity.recipient();
        ks.mac = Some(super::epoch::slot_mac(root, repo, slot, "passphrase", &recipient));
        ks.recipient = Some(recipient);
        ks.version = SLOT_VERSION;
        Ok(ks)
    }

    /// When and where the slot was made (version 2), checked against its
    /// version: version 1 has neither, version 2 both.
    pub fn origin(&self, object: &str) -> Result<Option<(u64, &str)>> {
        match (self.version, self.created, self.host.as_deref()) {
            (1, None, None) => Ok(None),
            (2, Some(created), Some(host)) if host.len() <= HOST_MAX && self.mac.is_none() => {
                Ok(Some((created, host)))
            }
            (3, Some(created), Some(host))
                if host.len() <= HOST_MAX && self.recipient.is_some() && self.mac.is_some() =>
            {
                Ok(Some((created, host)))
            }
            (1..=3, ..) => Err(Error::corrupt(
                object,
                "its created and host fields do not match its version",
            )),
            _ => self.check_supported(object).map(|()| None),
        }
    }

    /// Refuses a slot of another version, kind or KDF than this build opens.
    pub fn check_supported(&self, object: &str) -> Result<()> {
        let known = matches!(self.version, 1..=SLOT_VERSION);
        if !known || self.kind != "passphrase" || self.kdf != "argon2id" {
            return Err(Error::UnsupportedVersion {
                what: format!("key slot {object} ({} / {})", self.kind, self.kdf),
                found: self.version,
                supported: SLOT_VERSION,
            });
        }
        Ok(())
    }

    /// Unwraps the root key (versions 1, 2) or the slot's identity (version
    /// 3). `Ok(None)` means the passphrase does not open this slot.
    pub fn open(
        &self,
        passphrase: &[u8],
        repo: &RepoId,
        slot: &SlotId,
    ) -> Result<Option<SlotSecret>> {
        let object = format!("keys/{slot}");
        self.check_supported(&object)?;
        let origin = self.origin(&object)?;
        let salt = hex::decode(&self.salt).map_err(|_| Error::corrupt(&object, "bad salt"))?;
        let wrapped = hex::decode(&self.wrapped).map_err(|_| Error::corrupt(&object, "bad hex"))?;
        let fits = match self.version {
            3 => wrapped.len() <= IDENTITY_MAX + SEAL_OVERHEAD,
            _ => wrapped.len() == 32 + SEAL_OVERHEAD,
        };
        if !fits || salt.len() < 16 {
            return Err(Error::corrupt(&object, "wrong length"));
        }
        let kek = kek(passphrase, &salt, self.params)?;
        let cipher = XChaCha20Poly1305::new(&kek);
        let aad = identity_aad(repo, slot, origin);
        let Ok(plain) = open_with(&cipher, Kind::KeySlot, &aad, &wrapped) else {
            return Ok(None);
        };
        let plain = Zeroizing::new(plain);
        if let Some(recipient) = &self.recipient {
            return identity_of(&plain, recipient, &object).map(|i| Some(SlotSecret::Identity(i)));
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&plain);
        Ok(Some(SlotSecret::Root(MasterKey::from_bytes(k))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trip_and_wrong_passphrase() {
        let master = MasterKey::generate();
        let (repo, slot) = (RepoId::random(), SlotId::random());
        let ks =
            KeySlot::create(&master, b"correct horse", KdfParams::MINIMUM, &repo, &slot).unwrap();
        let json = serde_json::to_string(&ks).unwrap();
        let back: KeySlot = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.open(b"correct horse", &repo, &slot).unwrap(),
            Some(SlotSecret::Root(master))
        );
        assert_eq!(back.open(b"wrong", &repo, &slot).unwrap(), None);
        // A slot moved to another repository does not open.
        assert_eq!(
            back.open(b"correct horse", &RepoId::random(), &slot)
                .unwrap(),
            None
        );
    }

    #[test]
    fn version_2_records_origin_and_an_edited_record_does_not_open() {
        let master = MasterKey::generate();
        let (repo, slot) = (RepoId::random(), SlotId::random());
        let ks = KeySlot::create_at(
            &master,
            b"pw",
            KdfParams::MINIMUM,
            (&repo, &slot),
            (1_764_000_000_000, "vm-1"),
        )
        .unwrap();
        assert_eq!(ks.version, 2);
        assert_eq!(ks.origin("k").unwrap(), Some((1_764_000_000_000, "vm-1")));
        assert_eq!(
            ks.open(b"pw", &repo, &slot).unwrap(),
            Some(SlotSecret::Root(master))
        );
        let mut moved = ks.clone();
        moved.created = Some(1_764_000_000_001);
        assert_eq!(moved.open(b"pw", &repo, &slot).unwrap(), None);
        let mut renamed = ks.clone();
        renamed.host = Some("vm-2".into());
        assert_eq!(renamed.open(b"pw", &repo, &slot).unwrap(), None);
        // Version 1 has no record; a record on it, or none on version 2, is damage.
        let mut old = ks.clone();
        old.version = 1;
        let r = old.open(b"pw", &repo, &slot);
        assert!(matches!(r, Err(Error::Corrupt { .. })));
        let mut bare = ks;
        bare.host = None;
        let r = bare.open(b"pw", &repo, &slot);
        assert!(matches!(r, Err(Error::Corrupt { .. })));
        let long = "h".repeat(HOST_MAX + 1);
        let r = KeySlot::create_at(
            &MasterKey::generate(),
            b"pw",
            KdfParams::MINIMUM,
            (&repo, &slot),
            (0, &long),
        );
        assert!(matches!(r, Err(Error::Config(_))));
        assert!(this_host().len() <= HOST_MAX);
    }

    #[test]
    fn version_3_wraps_an_identity_bound_to_its_recipient() {
        let (root, identity) = (MasterKey::generate(), SlotIdentity::generate());
        let (repo, slot) = (RepoId::random(), SlotId::random());
        let ks =
            KeySlot::create_v3(&identity, &root, b"pw", KdfParams::MINIMUM, (&repo, &slot)).unwrap();
        assert_eq!(ks.version, 3);
        let mac = super::super::epoch::slot_mac(&root, &repo, &slot, "passphrase", &identity.recipient());
        assert_eq!(ks.mac.as_deref(), Some(mac.as_str()));
        let json = serde_json::to_vec(&ks).unwrap();
        let StoredSlot::Passphrase(back) = StoredSlot::parse(&json, "k").unwrap() else {
            panic!("a passphrase slot")
        };
        assert_eq!(
            back.open(b"pw", &repo, &slot).unwrap(),
            Some(SlotSecret::Identity(identity.clone()))
        );
        assert_eq!(back.open(b"nope", &repo, &slot).unwrap(), None);
        // Another recipient than the identity's: damage, not a key.
        let mut swapped = back.clone();
        swapped.recipient = Some(SlotIdentity::generate().recipient());
        assert!(matches!(swapped.open(b"pw", &repo, &slot), Err(Error::Corrupt { .. })));
        let mut bare = back;
        bare.mac = None;
        assert!(matches!(bare.open(b"pw", &repo, &slot), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn weak_parameters_are_refused() {
        let weak = KdfParams {
            m_cost_kib: 8 * 1024,
            t_cost: 1,
            p_cost: 1,
        };
        assert!(weak.validate().is_err());
        let master = MasterKey::generate();
        assert!(
            KeySlot::create(&master, b"x", weak, &RepoId::random(), &SlotId::random()).is_err()
        );
        assert!(KdfParams::DEFAULT.validate().is_ok());
    }

    #[test]
    fn empty_passphrase_is_refused() {
        let r = KeySlot::create(
            &MasterKey::generate(),
            b"",
            KdfParams::MINIMUM,
            &RepoId::random(),
            &SlotId::random(),
        );
        assert!(matches!(r, Err(Error::Config(_))));
    }
}
