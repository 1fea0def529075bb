//! Managing a repository's key slots (`coffer key ...`): list, add (a
//! passphrase or a KMS key), find the slots a passphrase opens, remove.
//!
//! Slot objects are immutable: a change is a new object, then the deletion of
//! the old one, in that order, so a crash between the two leaves both slots and
//! never none (`DESIGN.md` §4). Removal refuses to leave the repository without
//! a usable slot.

use crate::crypto::epoch::SlotIdentity;
use crate::crypto::keyslot::{KdfParams, KeySlot, StoredSlot};
use crate::crypto::kms::{KeyWrapper, KmsSlot};
use crate::error::{Error, Result};
use crate::format::id::SlotId;
use crate::repo::Repository;
use crate::store::{self, DynStore, layout};
use bytes::Bytes;

/// A key slot as its plaintext object tells it. Version-1 slots record neither
/// when nor on which host they were made, so neither is known for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub id: SlotId,
    /// The slot's format version; below 3 it wraps the root key itself and
    /// cannot follow a key rotation without its passphrase (or KMS).
    pub version: Option<u32>,
    /// `"passphrase"`, `"kms"`, or what an unsupported slot says it is.
    pub kind: Option<String>,
    /// The Argon2id cost of a passphrase slot.
    pub kdf: Option<KdfParams>,
    /// The KMS key (key id, ARN or alias) of a KMS slot.
    pub key_id: Option<String>,
    /// When it was made (Unix ms, by its writer's clock), if it records it.
    /// Bound into the seal: a slot whose record was edited no longer opens.
    pub created: Option<u64>,
    /// The host name of the machine that made it, if it records it ("" when
    /// that machine had none).
    pub host: Option<String>,
    /// When a grant (a version-4 slot, `DESIGN.md` §4b) stops working, Unix
    /// ms; `None` for every other slot.
    pub expires: Option<u64>,
    /// Why the slot cannot be used (damaged, unsupported), if it cannot.
    pub problem: Option<String>,
}

impl SlotInfo {
    /// Whether the slot could open the repository (with its passphrase, or
    /// through KMS).
    pub fn usable(&self) -> bool {
        self.problem.is_none()
    }

    /// Whether the slot is usable and no grant: one that keeps the
    /// repository open to its owners.
    pub fn owns(&self) -> bool {
        self.usable() && self.expires.is_none()
    }
}

/// Reads one slot object; never fails on its content (that is `problem`).
async fn describe(store: &DynStore, key: &str, id: SlotId) -> Result<SlotInfo> {
    let bytes = match store::get_at_most(&**store, key, layout::SLOT_MAX, "key slot").await {
        Ok(b) => b,
        Err(e) if e.is_retryable() => return Err(e),
        Err(e) => return Ok(unusable(id, e.to_string())),
    };
    let slot = match StoredSlot::parse(&bytes, key) {
        Ok(s) => s,
        Err(Error::Corrupt { reason, .. }) => {
            return Ok(unusable(id, format!("damaged: {reason}")));
        }
        Err(e) => return Ok(unusable(id, e.to_string())),
    };
    Ok(match slot {
        StoredSlot::Passphrase(slot) => describe_passphrase(id, key, slot),
        StoredSlot::Kms(slot) => SlotInfo {
            id,
            version: Some(slot.version),
            kind: Some(slot.kind.clone()),
            kdf: None,
            key_id: Some(slot.key_id.clone()),
            created: Some(slot.created),
            host: Some(slot.host.clone()),
            expires: None,
            problem: slot.check(key).err().map(|e| e.to_string()),
        },
        StoredSlot::Grant(slot) => SlotInfo {
            id,
            version: Some(slot.version),
            kind: Some(slot.kind.clone()),
            kdf: slot.params(),
            key_id: None,
            created: Some(slot.created),
            host: Some(slot.host.clone()),
            expires: Some(slot.expires),
            problem: slot.check(key).err().map(|e| e.to_string()),
        },
    })
}

fn describe_passphrase(id: SlotId, key: &str, slot: KeySlot) -> SlotInfo {
    let checked = slot
        .check_supported(key)
        .and_then(|()| slot.params.validate())
        .and_then(|()| slot.origin(key).map(|o| o.map(|(t, h)| (t, h.to_string()))));
    let (origin, problem) = match checked {
        Ok(origin) => (origin, None),
        Err(e) => (None, Some(e.to_string())),
    };
    SlotInfo {
        id,
        version: Some(slot.version),
        kind: Some(slot.kind),
        kdf: Some(slot.params),
        key_id: None,
        created: origin.as_ref().map(|(t, _)| *t),
        host: origin.map(|(_, h)| h),
        expires: None,
        problem,
    }
}

fn unusable(id: SlotId, problem: String) -> SlotInfo {
    SlotInfo {
        id,
        version: None,
        kind: None,
        kdf: None,
        key_id: None,
        created: None,
        host: None,
        expires: None,
        problem: Some(problem),
    }
}

/// The slot ids as an error lists them: `a1b2…, c3d4… (unusable)`.
fn names(slots: &[SlotInfo]) -> String {
    if slots.is_empty() {
        return "none".into();
    }
    let name = |s: &SlotInfo| match s.usable() {
        true => s.id.to_hex(),
        false => format!("{} (unusable)", s.id),
    };
    slots.iter().map(name).collect::<Vec<_>>().join(", ")
}

impl Repository {
    /// Every key slot of the repository in `store`, by id. Reads only the
    /// plaintext slot objects: needs no key.
    pub async fn list_slots(store: &DynStore) -> Result<Vec<SlotInfo>> {
        let mut out = Vec::new();
        for meta in store.list(layout::KEYS_PREFIX).await? {
            if let Some(id) = layout::parse_slot(&meta.key) {
                out.push(describe(store, &meta.key, id).await?);
            }
        }
        out.sort_by_key(|s| s.id);
        Ok(out)
    }

    /// The slot `name` (a slot id, or a prefix of one that names one slot).
    pub async fn find_slot(&self, name: &str) -> Result<SlotId> {
        let slots = Self::list_slots(self.store()).await?;
        let name = name.to_ascii_lowercase();
        let matching: Vec<&SlotInfo> = slots
            .iter()
            .filter(|s| !name.is_empty() && s.id.to_hex().starts_with(&name))
            .collect();
        match matching.as_slice() {
            [one] => Ok(one.id),
            [] => Err(Error::NoSuchSlot {
                reason: format!("no key slot {name}"),
                slots: names(&slots),
            }),
            _ => Err(Error::NoSuchSlot {
                reason: format!("{name} names several key slots"),
                slots: names(&slots),
            }),
        }
    }

    /// Adds a key slot that `passphrase` opens; the repository's other slots
    /// stay as they are.
    pub async fn add_passphrase(&self, passphrase: &[u8], kdf: KdfParams) -> Result<SlotId> {
        let (slot, identity) = (SlotId::random(), SlotIdentity::generate());
        let ks = KeySlot::create_v3(&identity, &self.master(), passphrase, kdf, (&self.id(), &slot))?;
        let json = serde_json::to_vec_pretty(&ks).expect("key slot serializes");
        self.put_slot(slot, &identity.recipient(), json).await?;
        Ok(slot)
    }

    /// Writes a version-3 or 4 slot: its grants of the current epochs first
    /// (a grant without its slot is never read), then the slot object.
    pub(crate) async fn put_slot(&self, slot: SlotId, recipient: &str, json: Vec<u8>) -> Result<()> {
        self.refresh_keys().await?;
        self.grant_current(&slot, recipient).await?;
        self.store()
            .put(&layout::key_slot(&slot), Bytes::from(json))
            .await?;
        Ok(())
    }

    /// Adds a KMS key slot: the master key encrypted by `wrapper` under
    /// `key_id` (one `Encrypt` request); the other slots stay as they are.
    pub async fn add_kms(&self, wrapper: &dyn KeyWrapper, key_id: &str) -> Result<SlotId> {
        let (slot, identity) = (SlotId::random(), SlotIdentity::generate());
        let ks = KmsSlot::create(wrapper, key_id, (&identity, &self.master()), (&self.id(), &slot))
            .await?;
        let json = serde_json::to_vec_pretty(&ks).expect("key slot serializes");
        self.put_slot(slot, &identity.recipient(), json).await?;
        Ok(slot)
    }

    /// Deletes key slot `slot`, unless no other usable slot would remain
    /// ([`Error::LastKeySlot`]; grants do not count). Returns the slots left.
    pub async fn remove_slot(&self, slot: &SlotId) -> Result<Vec<SlotInfo>> {
        let slots = Self::list_slots(self.store()).await?;
        if !slots.iter().any(|s| s.id == *slot) {
            return Err(Error::NoSuchSlot {
                reason: format!("no key slot {slot}"),
                slots: names(&slots),
            });
        }
        let (gone, left): (Vec<SlotInfo>, Vec<SlotInfo>) =
            slots.into_iter().partition(|s| s.id == *slot);
        if !left.iter().any(SlotInfo::owns) {
            let mut all = gone;
            all.extend(left);
            return Err(Error::LastKeySlot {
                slot: slot.to_hex(),
                slots: names(&all),
            });
        }
        self.store().delete(&layout::key_slot(slot)).await?;
        Ok(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keyslot::this_host;
    use crate::store::MemoryStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn add_find_and_remove_but_never_the_last() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let repo = Repository::init(store.clone(), b"one", KdfParams::MINIMUM, None)
            .await
            .unwrap();
        let listed = Repository::list_slots(&store).await.unwrap();
        let first = listed[0].id;
        assert_eq!(listed[0].host.as_deref(), Some(this_host().as_str()));
        assert!(listed[0].created.is_some_and(|t| t > 1_764_000_000_000));
        let second = repo
            .add_passphrase(b"two", KdfParams::MINIMUM)
            .await
            .unwrap();
        assert_eq!(repo.slots_opened_by(b"two").await.unwrap(), [second]);
        assert!(matches!(
            repo.slots_opened_by(b"three").await,
            Err(Error::WrongPassphrase)
        ));
        let prefix = &second.to_hex()[..8];
        assert_eq!(repo.find_slot(prefix).await.unwrap(), second);
        assert!(matches!(
            repo.find_slot("zz").await,
            Err(Error::NoSuchSlot { .. })
        ));

        let left = repo.remove_slot(&first).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, second);
        let err = repo.remove_slot(&second).await.unwrap_err();
        assert!(matches!(err, Error::LastKeySlot { .. }), "{err}");
        assert!(err.to_string().contains(&second.to_hex()), "{err}");
        assert!(matches!(
            repo.slots_opened_by(b"one").await,
            Err(Error::WrongPassphrase)
        ));
    }

    #[tokio::test]
    async fn a_damaged_slot_is_listed_unusable_and_does_not_count() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let repo = Repository::init(store.clone(), b"one", KdfParams::MINIMUM, None)
            .await
            .unwrap();
        let good = Repository::list_slots(&store).await.unwrap()[0].id;
        let bad = SlotId::random();
        store
            .put(&layout::key_slot(&bad), Bytes::from_static(b"{not json"))
            .await
            .unwrap();
        let slots = Repository::list_slots(&store).await.unwrap();
        let listed = slots.iter().find(|s| s.id == bad).unwrap();
        assert!(!listed.usable() && listed.kind.is_none());
        let err = repo.remove_slot(&good).await.unwrap_err();
        assert!(matches!(err, Error::LastKeySlot { .. }), "{err}");
        assert!(err.to_string().contains("(unusable)"), "{err}");
    }
}
