//! A repository's key epochs (`DESIGN.md` §4a): climbing from a slot's
//! identity (or a saved chain) to the newest epoch, picking up rotations made
//! by other machines, and rotating.
//!
//! Reading needs `epochs/` (one LIST per step) and, for an epoch this machine
//! does not hold yet, its slot's grant and the epoch's record (two GETs).

use crate::crypto::epoch::{self, EpochName, EpochRecord, KeyChain, SlotIdentity};
use crate::crypto::grantslot::GrantSlot;
use crate::crypto::keyslot::{KeySlot, SlotSecret, StoredSlot};
use crate::crypto::kms::{KeyWrapper, KmsSlot};
use crate::crypto::{MasterKey, keyslot};
use crate::error::{Error, Result, StoreError};
use crate::format::config::RepoConfig;
use crate::format::id::SlotId;
use crate::repo::Repository;
use crate::store::{self, DynStore, layout};
use bytes::Bytes;

mod reencrypt;
pub use reencrypt::ReencryptReport;

/// A slot and the identity it unwrapped.
pub type Holder = (SlotId, SlotIdentity);

/// Every epoch record in the store, in order.
pub(crate) async fn list_epochs(store: &DynStore) -> Result<Vec<EpochName>> {
    let mut names: Vec<EpochName> = store
        .list(layout::EPOCHS_PREFIX)
        .await?
        .iter()
        .filter_map(|m| layout::parse_epoch(&m.key))
        .collect();
    names.sort();
    Ok(names)
}

/// Why a key cannot reach epoch `name`.
fn revoked(name: &EpochName, holder: Option<&Holder>) -> Error {
    let level = name.level;
    Error::Revoked(match holder {
        Some((slot, _)) => format!(
            "key slot {slot} has no key for the repository's current key epoch ({level}): it was \
             removed when the key was rotated, or added during that rotation; open the \
             repository with a current key slot"
        ),
        None => format!(
            "this key predates the repository's current key epoch ({level}): it was rotated, and \
             a key saved or a key slot made before key epochs cannot follow; open the \
             repository with a current key slot"
        ),
    })
}

/// The grant of `holder` for epoch `name`, opened: the epoch's key.
async fn fetch_grant(store: &DynStore, name: &EpochName, holder: &Holder) -> Result<MasterKey> {
    let key = layout::grant(name, &holder.0);
    match store::get_at_most(&**store, &key, layout::GRANT_MAX, "grant").await {
        Ok(bytes) => holder.1.open_grant(&bytes, &key),
        Err(Error::Store(StoreError::NotFound { .. })) => Err(revoked(name, Some(holder))),
        Err(e) => Err(e),
    }
}

/// Opens epoch `name` through `holder`'s grant: its key and every older key
/// its record seals, the root checked against the config.
async fn open_epoch(
    store: &DynStore,
    config: &RepoConfig,
    name: &EpochName,
    holder: Option<&Holder>,
) -> Result<Vec<(EpochName, MasterKey)>> {
    let holder = holder.ok_or_else(|| revoked(name, None))?;
    let key = fetch_grant(store, name, holder).await?;
    let object = layout::epoch(name);
    let bytes = store::get_at_most(&**store, &object, layout::EPOCH_MAX, "epoch record").await?;
    let record: EpochRecord =
        serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(&object, e.to_string()))?;
    let mut keys = record.open(&config.repo_id()?, name, &key)?;
    let root = keys
        .iter()
        .find(|(n, _)| *n == EpochName::ROOT)
        .ok_or_else(|| Error::corrupt(&object, "it does not hold the root key"))?;
    crate::unlock::verify(config, &root.1)?;
    keys.push((*name, key));
    Ok(keys)
}

/// The chain `holder` (or the saved `chain`) reaches among the epochs `names`:
/// every key of the top level it has a grant for, and all older keys.
pub(crate) async fn climb(
    store: &DynStore,
    config: &RepoConfig,
    chain: Option<KeyChain>,
    holder: Option<&Holder>,
    names: &[EpochName],
) -> Result<KeyChain> {
    let top = names.iter().map(|n| n.level).max().unwrap_or(0);
    if top == 0 {
        return match chain {
            Some(chain) => Ok(chain),
            None => {
                let holder = holder.ok_or_else(|| revoked(&EpochName::ROOT, None))?;
                let root = fetch_grant(store, &EpochName::ROOT, holder).await?;
                crate::unlock::verify(config, &root)?;
                Ok(KeyChain::root(&root))
            }
        };
    }
    let tops: Vec<&EpochName> = names.iter().filter(|n| n.level == top).collect();
    let mut chain = chain;
    let mut failure = None;
    for name in tops {
        if chain.as_ref().is_some_and(|c| c.contains(name)) {
            continue;
        }
        match open_epoch(store, config, name, holder).await {
            Ok(keys) => chain = Some(merge(chain, keys, name)?),
            Err(e @ (Error::Revoked(_) | Error::Corrupt { .. })) => failure = Some(e),
            Err(e) => return Err(e),
        }
    }
    match chain {
        Some(c) if names.iter().any(|n| n.level == top && c.contains(n)) => Ok(c),
        _ => Err(failure.unwrap_or_else(|| revoked(names.last().expect("top > 0"), holder))),
    }
}

/// Adds an opened epoch's keys to `chain` (or starts one from its root).
fn merge(
    chain: Option<KeyChain>,
    keys: Vec<(EpochName, MasterKey)>,
    name: &EpochName,
) -> Result<KeyChain> {
    let root = keys.iter().find(|(n, _)| *n == EpochName::ROOT);
    let mut chain = match (chain, root) {
        (Some(c), Some((_, r))) if c.root_key() == r => c,
        (None, Some((_, r))) => KeyChain::root(r),
        _ => {
            return Err(Error::corrupt(
                layout::epoch(name),
                "it names another root key than this repository's",
            ));
        }
    };
    for (n, k) in keys {
        if n.level > 0 {
            chain.insert(n, k);
        }
    }
    Ok(chain)
}

/// How `coffer key rotate` rotates.
pub struct Rotate<'a> {
    /// Slots to remove in the same step (their holders lose the new epoch).
    pub remove: Vec<SlotId>,
    /// The passphrase that carries slots from before key epochs over (they
    /// wrap the root key and cannot receive a grant): each slot it opens is
    /// written again as a version-3 slot.
    pub passphrase: Option<&'a [u8]>,
    /// Carries KMS slots from before key epochs over (one `Encrypt` each).
    pub kms: Option<&'a dyn KeyWrapper>,
}

impl std::fmt::Debug for Rotate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotate")
            .field("remove", &self.remove)
            .finish_non_exhaustive()
    }
}

/// What a rotation did.
#[derive(Debug, Clone, Default)]
pub struct RotateReport {
    /// The new epoch (the last one, if a concurrent rotation made it rotate again).
    pub epoch: Option<EpochName>,
    /// Slots granted the new epoch.
    pub kept: Vec<SlotId>,
    /// Slots from before key epochs written again as version 3: (old, new).
    pub upgraded: Vec<(SlotId, SlotId)>,
    /// Slots removed.
    pub removed: Vec<SlotId>,
    /// Slots that got no grant, and why (damaged, not authentic).
    pub left_out: Vec<(SlotId, String)>,
    /// Rotations written: more than 1 when another rotation raced this one.
    pub rounds: u32,
}

/// One round's plan: who gets the new key, what is written and deleted.
#[derive(Default)]
struct Plan {
    kept: Vec<(SlotId, String)>,
    new_slots: Vec<(SlotId, Vec<u8>)>,
    retire: Vec<SlotId>,
    remove: Vec<SlotId>,
    /// How many of `kept` are grants (which alone cannot keep a repository).
    grants: usize,
    /// Expired grants: left out of the new epoch, deleted after its record.
    expired: Vec<SlotId>,
}

/// The most rounds a rotation writes when other rotations keep racing it.
const MAX_ROUNDS: u32 = 3;

impl Repository {
    /// The epoch new objects are sealed under.
    pub fn epoch(&self) -> EpochName {
        self.chain_state().chain.newest().0
    }

    /// Picks up rotations made since this repository was opened or last
    /// refreshed (one LIST; a new epoch costs two GETs). Returns whether a
    /// key was added. Every push and pull step starts with it, so a
    /// device switches to a new epoch on its next step.
    pub async fn refresh_keys(&self) -> Result<bool> {
        let names = list_epochs(self.store()).await?;
        let (chain, holder) = {
            let state = self.chain_state();
            if names.iter().all(|n| state.chain.contains(n) || state.listed.contains(n)) {
                return Ok(false);
            }
            (state.chain.clone(), state.holder.clone())
        };
        let before = chain.iter().count();
        let chain = climb(self.store(), self.config(), Some(chain), holder.as_ref(), &names).await?;
        let changed = chain.iter().count() != before;
        self.install_chain(chain, holder, names);
        Ok(changed)
    }

    /// [`Repository::refresh_keys`] at the start of a sync step, unless
    /// [`Repository::step_follows_open`] was called and no step ran since.
    pub async fn refresh_keys_for_step(&self) -> Result<bool> {
        if std::mem::take(&mut self.chain_state().fresh) {
            return Ok(false);
        }
        self.refresh_keys().await
    }

    /// Tells that a sync step follows the open at once (a command that opens
    /// and syncs, a daemon's first step): that step takes the epochs the open
    /// listed as current instead of listing `epochs/` again. A rotation made
    /// in between is picked up by the step after, as one made during the step
    /// would be.
    pub fn step_follows_open(&self) {
        self.chain_state().fresh = true;
    }

    /// Rotates the repository's key: a new epoch whose key is granted to the
    /// slots that stay, and only to them (see the module doc and `DESIGN.md`
    /// §4a for the order of writes and why a crash anywhere is harmless).
    pub async fn rotate(&self, how: Rotate<'_>) -> Result<RotateReport> {
        self.refresh_keys().await?;
        let mut report = RotateReport::default();
        let mut remove = how.remove.clone();
        while report.rounds < MAX_ROUNDS {
            let plan = self.plan_rotation(&how, &remove, &mut report).await?;
            remove.clear();
            let name = self.write_epoch(&plan).await?;
            report.removed.extend(&plan.expired);
            report.rounds += 1;
            report.epoch = Some(name);
            report.kept = plan.kept.iter().map(|(s, _)| *s).collect();
            let names = list_epochs(self.store()).await?;
            if !names.iter().any(|n| n.level >= name.level && *n != name) {
                break;
            }
            // Another rotation reached this level: it may have granted its key
            // to a slot this one removed, so rotate again above both.
            self.refresh_keys().await?;
        }
        Ok(report)
    }

    /// Reads the slots and decides who gets the new key; writes the carried-
    /// over slots, deletes the removed ones.
    async fn plan_rotation(
        &self,
        how: &Rotate<'_>,
        remove: &[SlotId],
        report: &mut RotateReport,
    ) -> Result<Plan> {
        let slots = crate::unlock::read_slots(self.store()).await?;
        if let Some(missing) = remove.iter().find(|r| !slots.iter().any(|(_, s, _)| s == *r)) {
            return Err(Error::NoSuchSlot {
                reason: format!("no key slot {missing}"),
                slots: slots.iter().map(|(_, s, _)| s.to_hex()).collect::<Vec<_>>().join(", "),
            });
        }
        self.check_own_slot(&slots, remove, report)?;
        let mut plan = Plan {
            remove: remove.to_vec(),
            ..Plan::default()
        };
        report.left_out.clear();
        for (key, slot, stored) in &slots {
            if remove.contains(slot) {
                continue;
            }
            match stored {
                Ok(stored) => self.plan_slot(how, (key, slot, stored), &mut plan, report).await?,
                Err(e) => report.left_out.push((*slot, e.to_string())),
            }
        }
        if plan.kept.len() == plan.grants {
            return Err(Error::LastKeySlot {
                slot: remove.iter().map(SlotId::to_hex).collect::<Vec<_>>().join(", "),
                slots: "none would hold the new key".into(),
            });
        }
        for (slot, json) in &plan.new_slots {
            let bytes = Bytes::from(json.clone());
            self.store().put(&layout::key_slot(slot), bytes).await?;
        }
        for slot in &plan.remove {
            self.store().delete(&layout::key_slot(slot)).await?;
            report.removed.push(*slot);
        }
        Ok(plan)
    }

    /// Refuses to rotate when the slot this machine opened the repository
    /// through is gone from `slots` (a rotation removed it, even one killed
    /// before its record) and this rotation is not the one removing it: the
    /// machine is being revoked, and the author of an epoch holds its key.
    pub(crate) fn check_own_slot(
        &self,
        slots: &[crate::unlock::ReadSlot],
        remove: &[SlotId],
        report: &RotateReport,
    ) -> Result<()> {
        let Some(own) = self.chain_state().holder.as_ref().map(|h| h.0) else {
            return Ok(());
        };
        let removing = remove.contains(&own) || report.removed.contains(&own);
        if removing || slots.iter().any(|(_, s, _)| *s == own) {
            return Ok(());
        }
        Err(Error::Revoked(format!(
            "key slot {own}, which this machine opened the repository through, was removed: it cannot rotate the key"
        )))
    }

    /// Plans one slot: kept (version 3, authentic), carried over (from
    /// before key epochs, with the passphrase or KMS), or refused.
    async fn plan_slot(
        &self,
        how: &Rotate<'_>,
        (key, slot, stored): (&str, &SlotId, &StoredSlot),
        plan: &mut Plan,
        report: &mut RotateReport,
    ) -> Result<()> {
        let (kind, recipient, mac) = match stored {
            StoredSlot::Passphrase(s) => ("passphrase", &s.recipient, &s.mac),
            StoredSlot::Kms(s) => ("kms", &s.recipient, &s.mac),
            StoredSlot::Grant(g) => {
                self.plan_grant((slot, g), plan, report);
                return Ok(());
            }
        };
        if let (Some(recipient), Some(mac)) = (recipient, mac) {
            let want = epoch::slot_mac(&self.master(), &self.id(), slot, kind, recipient);
            match crate::crypto::constant_eq(want.as_bytes(), mac.as_bytes()) {
                true => plan.kept.push((*slot, recipient.clone())),
                false => report.left_out.push((*slot, "not authentic (its MAC is wrong)".into())),
            }
            return Ok(());
        }
        let (new, json, recipient) = self.carry_over(how, key, slot, stored).await?;
        plan.kept.push((new, recipient));
        plan.new_slots.push((new, json));
        plan.retire.push(*slot);
        report.upgraded.push((*slot, new));
        Ok(())
    }

    /// Plans a grant: kept until it expires (then left out, and deleted once
    /// the new epoch exists), left out when its MAC is wrong.
    fn plan_grant(&self, (slot, g): (&SlotId, &GrantSlot), plan: &mut Plan, report: &mut RotateReport) {
        if !g.authentic(&self.master(), &self.id(), slot) {
            report.left_out.push((*slot, "not authentic (its MAC is wrong)".into()));
        } else if g.expired(self.clock().now_ms()) {
            plan.expired.push(*slot);
        } else {
            plan.kept.push((*slot, g.recipient.clone()));
            plan.grants += 1;
        }
    }

    /// A version-3 slot that replaces `slot` (from before key epochs).
    async fn carry_over(
        &self,
        how: &Rotate<'_>,
        key: &str,
        slot: &SlotId,
        stored: &StoredSlot,
    ) -> Result<(SlotId, Vec<u8>, String)> {
        let (new, identity) = (SlotId::random(), SlotIdentity::generate());
        let pair = (&self.id(), &new);
        let json = match stored {
            StoredSlot::Passphrase(old) => {
                let opens = |p: &[u8]| old.open(p, &self.id(), slot);
                let Some(passphrase) = how
                    .passphrase
                    .filter(|p| matches!(opens(p), Ok(Some(SlotSecret::Root(_)))))
                else {
                    return Err(Error::KeyRequired(format!(
                        "key slot {slot} was made before key epochs and cannot receive the new key \
                         without its passphrase: rotate with that passphrase, or remove the slot \
                         (`coffer key rotate --remove {slot}`)"
                    )));
                };
                let ks = KeySlot::create_v3(&identity, &self.master(), passphrase, old.params, pair)?;
                serde_json::to_vec_pretty(&ks)
            }
            StoredSlot::Kms(old) => {
                let wrapper = how.kms.ok_or_else(|| {
                    Error::KeyRequired(format!(
                        "{key} is a KMS slot from before key epochs; carrying it over needs KMS \
                         (`Encrypt` with {})",
                        old.key_id
                    ))
                })?;
                let ks = KmsSlot::create(wrapper, &old.key_id, (&identity, &self.master()), pair)
                    .await?;
                serde_json::to_vec_pretty(&ks)
            }
            StoredSlot::Grant(_) => {
                return Err(Error::Internal(format!("{key}: a grant is never carried over")));
            }
        }
        .expect("key slot serializes");
        Ok((new, json, identity.recipient()))
    }

    /// Writes a new epoch above everything held: grants, then the record
    /// (the commit point), then retires the slots carried over.
    async fn write_epoch(&self, plan: &Plan) -> Result<EpochName> {
        let (chain, holder, mut listed) = {
            let s = self.chain_state();
            (s.chain.clone(), s.holder.clone(), s.listed.clone())
        };
        let top = listed.iter().chain(chain.iter().map(|(n, _)| n)).map(|n| n.level).max();
        let name = EpochName::random(top.unwrap_or(0) + 1);
        let key = MasterKey::generate();
        for (slot, recipient) in &plan.kept {
            let object = layout::grant(&name, slot);
            let grant = epoch::grant(recipient, &key, &object)?;
            self.store().put(&object, Bytes::from(grant)).await?;
        }
        let (now, host) = (crate::format::version::now_millis(), keyslot::this_host());
        let record = EpochRecord::create(&self.id(), (&name, &key), &chain, (now, &host));
        let json = serde_json::to_vec_pretty(&record).expect("record serializes");
        self.store().put(&layout::epoch(&name), Bytes::from(json)).await?;
        let mut chain = chain;
        chain.insert(name, key);
        listed.push(name);
        self.install_chain(chain, holder, listed);
        // Expired grants go only now: killed before this, a grant stays and
        // the next owner step rotates again (`DESIGN.md` §4b).
        for slot in plan.retire.iter().chain(&plan.expired) {
            self.store().delete(&layout::key_slot(slot)).await?;
        }
        Ok(name)
    }

    /// Grants the epochs new slots need: every top-level epoch held (or the
    /// root, in a repository never rotated) to `recipient`.
    pub(crate) async fn grant_current(&self, slot: &SlotId, recipient: &str) -> Result<()> {
        let chain = self.chain_state().chain.clone();
        let top = chain.newest().0.level;
        for (name, key) in chain.iter().filter(|(n, _)| n.level == top) {
            let object = layout::grant(name, slot);
            let grant = epoch::grant(recipient, key, &object)?;
            self.store().put(&object, Bytes::from(grant)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod model;
