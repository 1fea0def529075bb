//! Expiring grants (`DESIGN.md` §4b): making one, removing one, and the
//! owner's sweep that removes expired ones and rotates the key.
//!
//! A grant is a version-4 key slot ([`crate::crypto::grantslot`]) that names
//! when it stops working. Honest clients refuse it after then
//! ([`Error::GrantExpired`]); a grantee who kept the keys is stopped by the
//! first *owner* device (one that opened the repository through any other
//! slot) that syncs after the expiry: its step starts with
//! [`Repository::check_grants`], which removes the slot and rotates, so
//! nothing written after that step opens with the grantee's keys.
//!
//! The sweep costs one LIST of `keys/` per [`RELIST_MS`] (slot objects are
//! immutable, so each is read once; [`KnownGrants`] carries what a listing
//! found from one process to the next, through a folder's journal) and
//! nothing else until a grant it knows expires. Time comes from an injected
//! [`WallClock`].

use crate::crypto::epoch::{EpochName, SlotIdentity};
use crate::crypto::grantslot::GrantSlot;
use crate::crypto::keyslot::{KdfParams, StoredSlot, this_host};
use crate::epochs::Rotate;
use crate::error::{Error, Result};
use crate::format::id::SlotId;
use crate::repo::Repository;
use crate::store::{self, layout};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where "now" comes from, in Unix ms: the system clock, or a test's.
pub trait WallClock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> u64;
}

/// This machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        crate::format::version::now_millis()
    }
}

/// A clock set by hand (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn at(ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(ms))
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl WallClock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How often an owner lists `keys/` again for new grants: 12 minutes.
pub const RELIST_MS: u64 = 12 * 60 * 1000;

/// What an owner device knows of the repository's grants.
#[derive(Debug, Default)]
pub(crate) struct SweepState {
    /// When `keys/` was last listed (by the repository's clock).
    listed_at: Option<u64>,
    /// Authentic grants and when they expire.
    grants: BTreeMap<SlotId, u64>,
    /// Every other slot seen (never read again: slot objects are immutable).
    others: BTreeSet<SlotId>,
}

/// What an owner knew of the grants at its last listing of `keys/`, kept
/// between processes (a folder's journal) so that a command run every minute
/// lists `keys/` no more often than a daemon does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownGrants {
    /// When `keys/` was listed (by the repository's clock).
    listed_at: u64,
    /// Authentic grants and when they expire.
    grants: Vec<(SlotId, u64)>,
    /// The other slots.
    others: Vec<SlotId>,
}

/// Whom a new grant is for.
#[derive(Debug, Clone, Copy)]
pub enum Grantee<'a> {
    /// Whoever knows `passphrase` (its own Argon2id cost).
    Passphrase { passphrase: &'a [u8], kdf: KdfParams },
    /// The holder of the age X25519 identity of this recipient (`age1...`).
    Recipient(&'a str),
}

/// What an owner's sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired grants whose slot it removed.
    pub removed: Vec<SlotId>,
    /// The epoch it rotated to (none when nothing expired, or the rotation
    /// could not be made: see `not_rotated`).
    pub epoch: Option<EpochName>,
    /// Why the key was not rotated after a removal (slots from before key
    /// epochs need their passphrase).
    pub not_rotated: Option<String>,
}

impl Repository {
    /// Adds a grant that stops working at `expires` (Unix ms): its grants of
    /// the current epochs, then its slot object. Refused through a grant.
    pub async fn add_grant(&self, grantee: Grantee<'_>, expires: u64) -> Result<SlotId> {
        self.check_writable()?;
        let (slot, now, host) = (SlotId::random(), self.clock().now_ms(), this_host());
        let ids = (&self.id(), &slot);
        let g = match grantee {
            Grantee::Passphrase { passphrase, kdf } => {
                let identity = SlotIdentity::generate();
                GrantSlot::create_passphrase(&identity, &self.master(), (passphrase, kdf), ids, (now, &host, expires))?
            }
            Grantee::Recipient(recipient) => GrantSlot::create_recipient(recipient, &self.master(), ids, (now, &host, expires))?,
        };
        let json = serde_json::to_vec_pretty(&g).expect("key slot serializes");
        self.put_slot(slot, &g.recipient, json).await?;
        Ok(slot)
    }

    /// Refuses to write through a grant: grants read (honest clients keep
    /// to it; the bucket's credentials decide what a store accepts).
    pub fn check_writable(&self) -> Result<()> {
        match self.grant() {
            Some((slot, _)) => Err(Error::Config(format!(
                "this repository was opened through grant {slot}, which only reads"
            ))),
            None => Ok(()),
        }
    }

    /// Removes grant `slot` and rotates the key, as its expiry would.
    pub async fn remove_grant(&self, slot: &SlotId) -> Result<crate::epochs::RotateReport> {
        let listed = Self::list_slots(self.store()).await?;
        if !listed.iter().any(|s| s.id == *slot && s.expires.is_some()) {
            return Err(Error::NoSuchSlot {
                reason: format!("no grant {slot}"),
                slots: listed.iter().filter(|s| s.expires.is_some()).map(|s| s.id.to_hex()).collect::<Vec<_>>().join(", "),
            });
        }
        let how = Rotate {
            remove: vec![*slot],
            passphrase: None,
            kms: None,
        };
        self.rotate(how).await
    }

    /// The step's grant check. Opened through a grant: refuses once it has
    /// expired. Otherwise (an owner): when a grant it knows of has expired,
    /// rotates, leaving every expired grant out and deleting it after
    /// (`keys/` is listed at most every [`RELIST_MS`]).
    pub async fn check_grants(&self) -> Result<SweepReport> {
        let now = self.clock().now_ms();
        if let Some((slot, expired)) = self.grant() {
            return match now >= expired {
                true => Err(Error::GrantExpired { slot: slot.to_hex(), expired }),
                false => Ok(SweepReport::default()),
            };
        }
        if self.expired_grants(now).await?.is_empty() {
            return Ok(SweepReport::default());
        }
        // Listed again: another owner may have revoked them already.
        self.sweep_state().await.listed_at = None;
        let expired = self.expired_grants(now).await?;
        if expired.is_empty() {
            return Ok(SweepReport::default());
        }
        self.revoke(expired).await
    }

    /// Rotates without the `expired` grants (the rotation deletes them
    /// after its record); without a rotation (it needs a passphrase for
    /// slots from before key epochs) deletes them alone. A store that refuses
    /// the writes (read-only credentials) leaves them to the next listing.
    async fn revoke(&self, expired: Vec<SlotId>) -> Result<SweepReport> {
        let how = Rotate {
            remove: vec![],
            passphrase: None,
            kms: None,
        };
        let result = self.rotate(how).await;
        let mut state = self.sweep_state().await;
        state.grants.retain(|s, _| !expired.contains(s));
        // Listed again at the next step, unless the store refused the writes.
        if !matches!(&result, Err(Error::Store(e)) if !e.is_retryable()) {
            state.listed_at = None;
        }
        match result {
            Ok(r) => Ok(SweepReport {
                removed: r.removed,
                epoch: r.epoch,
                not_rotated: None,
            }),
            Err(Error::KeyRequired(why)) => {
                for slot in &expired {
                    self.store().delete(&layout::key_slot(slot)).await?;
                }
                Ok(SweepReport {
                    removed: expired,
                    epoch: None,
                    not_rotated: Some(why),
                })
            }
            Err(Error::Store(e)) if !e.is_retryable() => Ok(SweepReport {
                removed: vec![],
                epoch: None,
                not_rotated: Some(format!("expired grants stay until an owner can write: {e}")),
            }),
            Err(e) => Err(e),
        }
    }

    /// The authentic grants that have expired at `now`, from a listing at
    /// most [`RELIST_MS`] old.
    async fn expired_grants(&self, now: u64) -> Result<Vec<SlotId>> {
        let mut state = self.sweep_state().await;
        if state.listed_at.is_none_or(|t| now.saturating_sub(t) >= RELIST_MS) {
            self.relist(&mut state).await?;
            state.listed_at = Some(now);
        }
        Ok(state.grants.iter().filter(|(_, e)| now >= **e).map(|(s, _)| *s).collect())
    }

    /// Lists `keys/` and reads the slots not seen before.
    async fn relist(&self, state: &mut SweepState) -> Result<()> {
        let listed = self.store().list(layout::KEYS_PREFIX).await?;
        let ids: BTreeSet<SlotId> = listed.iter().filter_map(|m| layout::parse_slot(&m.key)).collect();
        state.grants.retain(|s, _| ids.contains(s));
        state.others.retain(|s| ids.contains(s));
        for slot in ids {
            if state.grants.contains_key(&slot) || state.others.contains(&slot) {
                continue;
            }
            match self.read_grant(&slot).await? {
                Some(g) => state.grants.insert(slot, g.expires),
                None => state.others.insert(slot).then_some(0),
            };
        }
        Ok(())
    }

    /// Slot `slot` if it is an authentic grant (one made with the root key).
    async fn read_grant(&self, slot: &SlotId) -> Result<Option<GrantSlot>> {
        let key = layout::key_slot(slot);
        let bytes = match store::get_at_most(&**self.store(), &key, layout::SLOT_MAX, "key slot").await {
            Ok(b) => b,
            Err(e) if e.is_retryable() => return Err(e),
            Err(_) => return Ok(None),
        };
        Ok(match StoredSlot::parse(&bytes, &key) {
            Ok(StoredSlot::Grant(g)) if g.authentic(&self.master(), &self.id(), slot) => Some(g),
            _ => None,
        })
    }

    /// Takes `known` (saved by an earlier process) as the last listing of
    /// `keys/`, unless this process listed since or `known` claims a time
    /// still to come (then `keys/` is listed again).
    pub async fn recall_grants(&self, known: KnownGrants) {
        let mut state = self.sweep_state().await;
        if state.listed_at.is_some() || known.listed_at > self.clock().now_ms() {
            return;
        }
        state.listed_at = Some(known.listed_at);
        state.grants = known.grants.into_iter().collect();
        state.others = known.others.into_iter().collect();
    }

    /// What this process knows of the grants, if it listed `keys/` and has
    /// not removed one since (which calls for a new listing).
    pub async fn known_grants(&self) -> Option<KnownGrants> {
        let state = self.sweep_state().await;
        Some(KnownGrants {
            listed_at: state.listed_at?,
            grants: state.grants.iter().map(|(s, e)| (*s, *e)).collect(),
            others: state.others.iter().copied().collect(),
        })
    }

    async fn sweep_state(&self) -> tokio::sync::MutexGuard<'_, SweepState> {
        self.sweep.lock().await
    }
}

#[cfg(test)]
mod tests;
