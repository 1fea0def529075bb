//! Passphrase key slots: the master key wrapped under an Argon2id-derived key.
//!
//! A slot is a small plaintext JSON object (`keys/<slot id>`) holding the KDF
//! parameters, the salt and the sealed master key (`DESIGN.md` §Key slots). Parameters
//! are stored, so they can be raised later without breaking old slots; weaker than
//! m = 19 MiB, t = 2 is refused, both when creating and when opening a slot (a store
//! operator must not be able to downgrade an attacker's work factor).

use super::aead::XChaCha20Poly1305;
use super::{Kind, MasterKey, OpenError, SEAL_OVERHEAD, open_with, seal_with};
use crate::error::{Error, Result};
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
}

const SLOT_VERSION: u32 = 1;

fn kek(passphrase: &[u8], salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>> {
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

fn identity(repo: &RepoId, slot: &SlotId) -> [u8; 32] {
    let mut id = [0u8; 32];
    id[..16].copy_from_slice(repo.as_bytes());
    id[16..].copy_from_slice(slot.as_bytes());
    id
}

impl KeySlot {
    /// Wraps `master` under `passphrase`.
    pub fn create(
        master: &MasterKey,
        passphrase: &[u8],
        params: KdfParams,
        repo: &RepoId,
        slot: &SlotId,
    ) -> Result<KeySlot> {
        if passphrase.is_empty() {
            return Err(Error::Config("an empty passphrase is not allowed".into()));
        }
        let mut salt = [0u8; 32];
        super::fill_random(&mut salt);
        let kek = kek(passphrase, &salt, params)?;
        let cipher = XChaCha20Poly1305::new(&kek);
        let wrapped = seal_with(
            &cipher,
            Kind::KeySlot,
            &identity(repo, slot),
            master.as_bytes(),
        );
        Ok(KeySlot {
            version: SLOT_VERSION,
            kind: "passphrase".into(),
            kdf: "argon2id".into(),
            params,
            salt: hex::encode(salt),
            wrapped: hex::encode(wrapped),
        })
    }

    /// Refuses a slot of another version, kind or KDF than this build opens.
    pub fn check_supported(&self, object: &str) -> Result<()> {
        if self.version != SLOT_VERSION || self.kind != "passphrase" || self.kdf != "argon2id" {
            return Err(Error::UnsupportedVersion {
                what: format!("key slot {object} ({} / {})", self.kind, self.kdf),
                found: self.version,
                supported: SLOT_VERSION,
            });
        }
        Ok(())
    }

    /// Unwraps the master key. `Ok(None)` means the passphrase does not open this slot.
    pub fn open(
        &self,
        passphrase: &[u8],
        repo: &RepoId,
        slot: &SlotId,
    ) -> Result<Option<MasterKey>> {
        let object = format!("keys/{slot}");
        self.check_supported(&object)?;
        let salt = hex::decode(&self.salt).map_err(|_| Error::corrupt(&object, "bad salt"))?;
        let wrapped = hex::decode(&self.wrapped).map_err(|_| Error::corrupt(&object, "bad hex"))?;
        if wrapped.len() != 32 + SEAL_OVERHEAD || salt.len() < 16 {
            return Err(Error::corrupt(&object, "wrong length"));
        }
        let kek = kek(passphrase, &salt, self.params)?;
        let cipher = XChaCha20Poly1305::new(&kek);
        match open_with(&cipher, Kind::KeySlot, &identity(repo, slot), &wrapped) {
            Ok(plain) => {
                let plain = Zeroizing::new(plain);
                let mut k = [0u8; 32];
                k.copy_from_slice(&plain);
                Ok(Some(MasterKey::from_bytes(k)))
            }
            Err(OpenError) => Ok(None),
        }
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
            Some(master)
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
