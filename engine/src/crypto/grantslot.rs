//! Expiring grants: key slot version 4 (`DESIGN.md` §4b).
//!
//! A grant is a key slot that stops working at a time it names. Two kinds:
//! `passphrase-grant` (an age identity sealed under an Argon2id key, as a
//! version-3 passphrase slot, with `expires` in the seal's associated data)
//! and `recipient` (no secret at all: the grantee's own age X25519 recipient,
//! to which the epoch keys are granted). Both carry a MAC under the root key
//! over everything they say, `expires` included, so a grant edited in the
//! store no longer opens and is left out of rotations.
//!
//! Honest clients refuse a grant after `expires`; what makes the expiry hold
//! against a dishonest one is the owner's next sync, which removes the slot
//! and rotates the key (`crate::grants`).

use super::aead::XChaCha20Poly1305;
use super::epoch::SlotIdentity;
use super::keyslot::{HOST_MAX, IDENTITY_MAX, KdfParams, identity_aad, identity_of, kek};
use super::{Kind, MasterKey, SEAL_OVERHEAD, open_with, seal_with};
use crate::error::{Error, Result};
use crate::format::id::{RepoId, SlotId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The slot version of grants.
pub const GRANT_VERSION: u32 = 4;
/// A grant opened with a passphrase of its own.
pub const KIND_PASSPHRASE: &str = "passphrase-grant";
/// A grant to an age X25519 recipient (opened with its identity).
pub const KIND_RECIPIENT: &str = "recipient";

/// The longest recipient a grant names (age's X25519 ones are 62 bytes).
const RECIPIENT_MAX: usize = 255;

/// The JSON form of a version-4 key slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSlot {
    /// 4.
    pub version: u32,
    /// [`KIND_PASSPHRASE`] or [`KIND_RECIPIENT`].
    pub kind: String,
    /// `"argon2id"` (passphrase grants only, as the four fields below).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m_cost_kib: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_cost: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_cost: Option<u32>,
    /// 32 random bytes, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// The sealed identity, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped: Option<String>,
    /// When the grant was made, Unix ms by its writer's clock.
    pub created: u64,
    /// The host that made it ("" if it had none).
    pub host: String,
    /// When it stops working, Unix ms.
    pub expires: u64,
    /// The age recipient its grants are made for (`age1...`).
    pub recipient: String,
    /// [`grant_mac`], hex.
    pub mac: String,
}

/// What a grant says about itself: who, when, where, until when.
#[derive(Debug, Clone, Copy)]
pub struct GrantRecord<'a> {
    pub kind: &'a str,
    pub recipient: &'a str,
    pub created: u64,
    pub host: &'a str,
    pub expires: u64,
}

mod context {
    pub const GRANT_MAC: &str = "coffer v4 2026-12 grant slot mac key";
}

/// The MAC of a version-4 slot: keyed BLAKE3 under a key derived from the
/// root, over `"coffer grant slot\0" || repo (16) || slot (16) || kind length
/// (u8) || kind || recipient length (u8) || recipient || created (u64 BE) ||
/// host length (u8) || host || expires (u64 BE)`; 64 hex.
pub fn grant_mac(root: &MasterKey, repo: &RepoId, slot: &SlotId, r: GrantRecord<'_>) -> String {
    let key = Zeroizing::new(blake3::derive_key(context::GRANT_MAC, root.as_bytes()));
    let mut h = blake3::Hasher::new_keyed(&key);
    h.update(b"coffer grant slot\0");
    h.update(repo.as_bytes());
    h.update(slot.as_bytes());
    for field in [r.kind, r.recipient] {
        h.update(&[u8::try_from(field.len()).unwrap_or(u8::MAX)]);
        h.update(field.as_bytes());
    }
    h.update(&r.created.to_be_bytes());
    h.update(&[u8::try_from(r.host.len()).unwrap_or(u8::MAX)]);
    h.update(r.host.as_bytes());
    h.update(&r.expires.to_be_bytes());
    h.finalize().to_hex().to_string()
}

/// The seal's associated identity of a passphrase grant: the version-2 one
/// (repository id || slot id || created BE || host length || host) ||
/// expires (u64 BE).
fn grant_aad(repo: &RepoId, slot: &SlotId, r: &GrantRecord<'_>) -> Vec<u8> {
    let mut aad = identity_aad(repo, slot, Some((r.created, r.host)));
    aad.extend_from_slice(&r.expires.to_be_bytes());
    aad
}

fn check_record(r: &GrantRecord<'_>) -> Result<()> {
    if r.host.len() > HOST_MAX {
        return Err(Error::Config(format!("a host name is at most {HOST_MAX} bytes")));
    }
    if r.recipient.len() > RECIPIENT_MAX || r.recipient.parse::<age::x25519::Recipient>().is_err() {
        return Err(Error::Config(format!(
            "{:?} is not an age X25519 recipient (age1...)",
            r.recipient
        )));
    }
    if r.expires <= r.created {
        return Err(Error::Config("a grant must expire after it is made".into()));
    }
    Ok(())
}

impl GrantSlot {
    fn bare(root: &MasterKey, (repo, slot): (&RepoId, &SlotId), r: GrantRecord<'_>) -> GrantSlot {
        GrantSlot {
            version: GRANT_VERSION,
            kind: r.kind.to_string(),
            kdf: None,
            m_cost_kib: None,
            t_cost: None,
            p_cost: None,
            salt: None,
            wrapped: None,
            created: r.created,
            host: r.host.to_string(),
            expires: r.expires,
            recipient: r.recipient.to_string(),
            mac: grant_mac(root, repo, slot, r),
        }
    }

    /// A grant to `recipient` (`age1...`): its holder opens the grants with
    /// the matching identity. `(created, host, expires)`: Unix ms, host name.
    pub fn create_recipient(
        recipient: &str,
        root: &MasterKey,
        ids: (&RepoId, &SlotId),
        (created, host, expires): (u64, &str, u64),
    ) -> Result<GrantSlot> {
        let r = GrantRecord {
            kind: KIND_RECIPIENT,
            recipient,
            created,
            host,
            expires,
        };
        check_record(&r)?;
        Ok(Self::bare(root, ids, r))
    }

    /// A grant that `passphrase` opens: `identity` sealed under Argon2id of it.
    pub fn create_passphrase(
        identity: &SlotIdentity,
        root: &MasterKey,
        (passphrase, params): (&[u8], KdfParams),
        (repo, slot): (&RepoId, &SlotId),
        (created, host, expires): (u64, &str, u64),
    ) -> Result<GrantSlot> {
        if passphrase.is_empty() {
            return Err(Error::Config("an empty passphrase is not allowed".into()));
        }
        let recipient = identity.recipient();
        let r = GrantRecord {
            kind: KIND_PASSPHRASE,
            recipient: &recipient,
            created,
            host,
            expires,
        };
        check_record(&r)?;
        let mut salt = [0u8; 32];
        super::fill_random(&mut salt);
        let kek = kek(passphrase, &salt, params)?;
        let cipher = XChaCha20Poly1305::new(&kek);
        let wrapped = seal_with(&cipher, Kind::KeySlot, &grant_aad(repo, slot, &r), identity.secret().as_bytes());
        let mut g = Self::bare(root, (repo, slot), r);
        g.kdf = Some("argon2id".into());
        (g.m_cost_kib, g.t_cost, g.p_cost) = (Some(params.m_cost_kib), Some(params.t_cost), Some(params.p_cost));
        g.salt = Some(hex::encode(salt));
        g.wrapped = Some(hex::encode(wrapped));
        Ok(g)
    }

    /// What the grant says about itself.
    pub fn record(&self) -> GrantRecord<'_> {
        GrantRecord {
            kind: &self.kind,
            recipient: &self.recipient,
            created: self.created,
            host: &self.host,
            expires: self.expires,
        }
    }

    /// The Argon2id cost of a passphrase grant.
    pub fn params(&self) -> Option<KdfParams> {
        Some(KdfParams {
            m_cost_kib: self.m_cost_kib?,
            t_cost: self.t_cost?,
            p_cost: self.p_cost?,
        })
    }

    /// Refuses a grant this build cannot use: another version or kind, a
    /// field its kind does not have or lacks, a bad recipient or host.
    pub fn check(&self, object: &str) -> Result<()> {
        if self.version != GRANT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: format!("key slot {object} ({})", self.kind),
                found: self.version,
                supported: GRANT_VERSION,
            });
        }
        let secret = [self.salt.is_some(), self.wrapped.is_some(), self.kdf.is_some()];
        let fits = match self.kind.as_str() {
            KIND_PASSPHRASE => {
                secret.iter().all(|s| *s) && self.params().is_some() && self.kdf.as_deref() == Some("argon2id")
            }
            KIND_RECIPIENT => !secret.iter().any(|s| *s) && self.params().is_none() && self.m_cost_kib.is_none() && self.t_cost.is_none() && self.p_cost.is_none(),
            _ => return Err(Error::corrupt(object, format!("unknown grant kind {:?}", self.kind))),
        };
        if !fits {
            return Err(Error::corrupt(object, "its fields do not match its kind"));
        }
        check_record(&self.record()).map_err(|e| Error::corrupt(object, e.to_string()))?;
        match self.params() {
            Some(p) => p.validate(),
            None => Ok(()),
        }
    }

    /// Whether the grant has expired at `now_ms` (Unix ms).
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires
    }

    /// Whether `mac` is the one the root key gives for this grant.
    pub fn authentic(&self, root: &MasterKey, repo: &RepoId, slot: &SlotId) -> bool {
        let want = grant_mac(root, repo, slot, self.record());
        super::constant_eq(want.as_bytes(), self.mac.as_bytes())
    }

    /// Unwraps the identity of a passphrase grant; `Ok(None)` means the
    /// passphrase does not open it. Expiry is the caller's to judge.
    pub fn open(&self, passphrase: &[u8], repo: &RepoId, slot: &SlotId) -> Result<Option<SlotIdentity>> {
        let object = format!("keys/{slot}");
        self.check(&object)?;
        let (Some(salt), Some(wrapped), Some(params)) = (&self.salt, &self.wrapped, self.params()) else {
            return Err(Error::Config(format!("{object} is a grant to an age recipient: open it with its identity")));
        };
        let salt = hex::decode(salt).map_err(|_| Error::corrupt(&object, "bad salt"))?;
        let wrapped = hex::decode(wrapped).map_err(|_| Error::corrupt(&object, "bad hex"))?;
        if wrapped.len() > IDENTITY_MAX + SEAL_OVERHEAD || salt.len() < 16 {
            return Err(Error::corrupt(&object, "wrong length"));
        }
        let kek = kek(passphrase, &salt, params)?;
        let cipher = XChaCha20Poly1305::new(&kek);
        let aad = grant_aad(repo, slot, &self.record());
        let Ok(plain) = open_with(&cipher, Kind::KeySlot, &aad, &wrapped) else {
            return Ok(None);
        };
        identity_of(&Zeroizing::new(plain), &self.recipient, &object).map(Some)
    }
}

#[cfg(test)]
mod tests;
