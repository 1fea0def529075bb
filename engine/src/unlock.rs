//! Unlocking a repository: the keyring, else the KMS slots, else a passphrase
//! that opens one of the passphrase slots (`DESIGN.md` §4).
//!
//! KMS slots are tried first, each with one request, until one opens; a KMS
//! failure is told to the caller ([`Unlock::warn`]) and the passphrase slots
//! are tried next, or, when the repository has none, it is the error. The
//! passphrase is asked for only when a passphrase slot is to be tried.

use crate::crypto::MasterKey;
use crate::crypto::epoch::{EpochName, KeyChain};
use crate::crypto::keyring::Keyring;
use crate::crypto::epoch::SlotIdentity;
use crate::crypto::grantslot::KIND_RECIPIENT;
use crate::crypto::keyslot::{KdfParams, SlotSecret, StoredSlot};
use crate::grants::{SystemClock, WallClock};
use std::sync::Arc;
use crate::epochs::{Holder, climb};
use crate::crypto::kms::KeyWrapper;
use crate::error::{Error, Result};
use crate::format::config::{Mismatch, RepoConfig};
use crate::format::id::SlotId;
use crate::repo::Repository;
use crate::store::{self, DynStore, layout};
use zeroize::Zeroizing;

/// Where a passphrase comes from when the keyring has no key; called at most once.
pub type PassphraseSource<'a> = &'a mut dyn FnMut() -> Result<Zeroizing<String>>;

/// The first key slot of a new repository ([`Repository::init_with`]).
pub enum FirstSlot<'a> {
    /// A passphrase slot.
    Passphrase {
        passphrase: &'a [u8],
        kdf: KdfParams,
    },
    /// A KMS slot: the master key encrypted under `key_id` (no passphrase at all).
    Kms {
        wrapper: &'a dyn KeyWrapper,
        key_id: &'a str,
    },
}

impl std::fmt::Debug for FirstSlot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FirstSlot::Passphrase { kdf, .. } => write!(f, "Passphrase({kdf:?})"),
            FirstSlot::Kms { key_id, .. } => write!(f, "Kms({key_id})"),
        }
    }
}

/// How [`Repository::open_with`] unlocks.
pub struct Unlock<'a> {
    /// Where the master key is kept between commands; `None`: it is neither
    /// read nor saved (every open asks KMS or a passphrase).
    pub keyring: Option<&'a Keyring>,
    /// Unwraps KMS slots; `None`: they are not tried.
    pub kms: Option<&'a dyn KeyWrapper>,
    /// Where a passphrase comes from, when a passphrase slot is tried.
    pub ask: PassphraseSource<'a>,
    /// Told each KMS failure before the passphrase slots are tried.
    pub warn: &'a dyn Fn(&Error),
}

impl std::fmt::Debug for Unlock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlock")
            .field("keyring", &self.keyring)
            .field("kms", &self.kms)
            .finish_non_exhaustive()
    }
}

/// How a repository is opened besides [`Unlock`]: the age identity whose
/// grants are tried first, and the clock grants expire by.
#[derive(Debug, Clone)]
pub struct Access<'a> {
    /// An age X25519 identity (`--identity`): the grants to its recipient are
    /// tried before any other slot.
    pub identity: Option<&'a SlotIdentity>,
    pub clock: Arc<dyn WallClock>,
}

impl Default for Access<'_> {
    fn default() -> Self {
        Access {
            identity: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// A chain opened, the slot identity that climbs it, and the grant (slot,
/// expiry) it came through, if it did.
struct Opened {
    chain: KeyChain,
    holder: Option<Holder>,
    grant: Option<(SlotId, u64)>,
    /// The keyring's chain grew: save it.
    grew: bool,
}

impl Opened {
    fn slot(chain: KeyChain, holder: Option<Holder>, grant: Option<(SlotId, u64)>) -> Opened {
        Opened {
            chain,
            holder,
            grant,
            grew: false,
        }
    }
}

/// What the keyring gave.
enum Saved {
    Opened(Opened),
    /// Its keys no longer reach the current epoch (told only if no slot opens).
    Revoked(Error),
    Nothing,
}

/// One slot object as read: its store key, id, and content (or why not).
pub(crate) type ReadSlot = (String, SlotId, Result<StoredSlot>);

fn warn_skipped(skipped: &[(String, Error)]) {
    for (key, e) in skipped {
        tracing::warn!("key slot {key} skipped: {e}");
    }
}

pub(crate) fn tampered() -> Error {
    Error::corrupt(
        layout::CONFIG,
        "not authentic: its fields were changed by someone without the repository key",
    )
}

/// Checks an unwrapped root key against the config.
pub(crate) fn verify(config: &RepoConfig, master: &MasterKey) -> Result<()> {
    match config.verify(master) {
        Ok(()) => Ok(()),
        Err(Mismatch::Tampered) => Err(tampered()),
        Err(Mismatch::WrongKey) => Err(Error::corrupt(
            layout::CONFIG,
            "key check does not match the key slots",
        )),
    }
}

impl Repository {
    /// Opens the repository with the keyring's key, or a passphrase from `ask`
    /// (stored in the keyring when it opens a slot). KMS slots are not tried.
    pub async fn open(
        store: DynStore,
        keyring: &Keyring,
        ask: PassphraseSource<'_>,
    ) -> Result<Repository> {
        let warn = |_: &Error| {};
        let how = Unlock {
            keyring: Some(keyring),
            kms: None,
            ask,
            warn: &warn,
        };
        Self::open_with(store, how).await
    }

    /// Opens the repository: with the keyring's keys if it has them and they
    /// reach the current key epoch, else through a KMS slot, else with a
    /// passphrase (see the module doc). The keys are saved in the keyring, if
    /// there is one. Grants are judged by the system clock; no identity.
    pub async fn open_with(store: DynStore, how: Unlock<'_>) -> Result<Repository> {
        Self::open_with_access(store, how, Access::default()).await
    }

    /// [`Repository::open_with`], trying first the grants to `access`'s
    /// identity, with grants judged by `access`'s clock.
    pub async fn open_with_access(
        store: DynStore,
        how: Unlock<'_>,
        access: Access<'_>,
    ) -> Result<Repository> {
        let config = Self::read_config(&store).await?;
        let names = crate::epochs::list_epochs(&store).await?;
        let now = access.clock.now_ms();
        let mut revoked = None;
        if let Some(keyring) = how.keyring {
            match Self::open_saved(&store, &config, &names, keyring, now).await? {
                Saved::Opened(opened) => {
                    let grew = opened.grew;
                    let repo = Self::finish(store, config, opened, names, &access);
                    if grew {
                        repo.save_keys(keyring)?;
                    }
                    return Ok(repo);
                }
                Saved::Revoked(e) => revoked = Some(e),
                Saved::Nothing => {}
            }
        }
        let Unlock {
            keyring, kms, ask, warn,
        } = how;
        let opened = Self::unlock_slots(&store, &config, &names, (kms, access.identity, now), (ask, warn)).await;
        let opened = match opened {
            Ok(opened) => opened,
            // A revoked keyring says more than "no passphrase" or "wrong passphrase".
            Err(Error::KeyRequired(_) | Error::WrongPassphrase) if revoked.is_some() => {
                return Err(revoked.expect("checked"));
            }
            Err(e) => return Err(e),
        };
        let repo = Self::finish(store, config, opened, names, &access);
        if let Some(keyring) = keyring {
            repo.save_keys(keyring)?;
        }
        Ok(repo)
    }

    fn finish(
        store: DynStore,
        config: RepoConfig,
        o: Opened,
        names: Vec<EpochName>,
        access: &Access<'_>,
    ) -> Repository {
        let id = config.repo_id().expect("checked when opened");
        let mut repo = Self::assemble(store, config, id, o.chain, o.holder, names);
        repo.set_clock(access.clock.clone());
        repo.set_grant(o.grant);
        repo
    }

    /// The keyring's keys, if they match the repository and reach its current
    /// epoch; a grant's only until it expires.
    async fn open_saved(
        store: &DynStore,
        config: &RepoConfig,
        names: &[EpochName],
        keyring: &Keyring,
        now: u64,
    ) -> Result<Saved> {
        let id = config.repo_id()?;
        let Some(saved) = keyring.load(&id)? else {
            return Ok(Saved::Nothing);
        };
        match config.verify(saved.chain.root_key()) {
            Ok(()) => {}
            Err(Mismatch::Tampered) => return Err(tampered()),
            Err(Mismatch::WrongKey) => {
                tracing::warn!(
                    "the keyring's key for {id} does not match the repository; trying its key slots"
                );
                return Ok(Saved::Nothing);
            }
        }
        let grant = saved.identity.as_ref().zip(saved.expires).map(|((s, _), e)| (*s, e));
        if let Some((slot, expired)) = grant.filter(|(_, e)| now >= *e) {
            return Err(Error::GrantExpired { slot: slot.to_hex(), expired });
        }
        let (holder, held) = (saved.identity, saved.chain.iter().count());
        match climb(store, config, Some(saved.chain), holder.as_ref(), names).await {
            Ok(chain) => Ok(Saved::Opened(Opened {
                grew: chain.iter().count() != held,
                chain,
                holder,
                grant,
            })),
            // Told only if no key slot opens either.
            Err(e @ Error::Revoked(_)) => Ok(Saved::Revoked(e)),
            Err(e) => Err(e),
        }
    }

    /// The chain a key slot reaches: the grants to `identity`, the KMS slots,
    /// then the passphrase slots (the passphrase is asked for only then).
    async fn unlock_slots(
        store: &DynStore,
        config: &RepoConfig,
        names: &[EpochName],
        (kms, identity, now): (Option<&dyn KeyWrapper>, Option<&SlotIdentity>, u64),
        (ask, warn): (PassphraseSource<'_>, &dyn Fn(&Error)),
    ) -> Result<Opened> {
        let slots = read_slots(store).await?;
        if let Some(identity) = identity
            && let Some(opened) = unlock_identity(store, config, names, &slots, (identity, now)).await?
        {
            return Ok(opened);
        }
        let failures = match Self::unlock_kms(store, config, names, &slots, kms).await? {
            Ok((chain, holder)) => return Ok(Opened::slot(chain, holder, None)),
            Err(failures) => failures,
        };
        let passphrase_slots = slots.iter().any(|(_, _, s)| match s {
            Ok(StoredSlot::Kms(_)) => false,
            Ok(StoredSlot::Grant(g)) => g.kind != KIND_RECIPIENT,
            _ => true,
        });
        if !passphrase_slots {
            return Err(failures.into_iter().next().unwrap_or_else(|| {
                Error::KeyRequired(
                    "the repository has only KMS key slots and grants to age recipients, and \
                     neither KMS nor an identity opened one"
                        .into(),
                )
            }));
        }
        failures.iter().for_each(warn);
        let passphrase = ask()?;
        let mut last = Error::WrongPassphrase;
        for (secret, slot) in open_slots(config, &slots, passphrase.as_bytes(), now)? {
            match to_chain(store, config, names, secret, slot).await {
                Ok((chain, holder)) => {
                    let grant = check_grant(config, &slots, &slot, &chain)?;
                    return Ok(Opened::slot(chain, holder, grant));
                }
                Err(e @ Error::Revoked(_)) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Tries the KMS slots, one request each, until one opens: the chain, or
    /// every failure (none when there is no KMS slot or no `wrapper`).
    async fn unlock_kms(
        store: &DynStore,
        config: &RepoConfig,
        names: &[EpochName],
        slots: &[ReadSlot],
        wrapper: Option<&dyn KeyWrapper>,
    ) -> Result<std::result::Result<(KeyChain, Option<Holder>), Vec<Error>>> {
        let mut failures = Vec::new();
        let Some(wrapper) = wrapper else {
            return Ok(Err(failures));
        };
        let id = config.repo_id()?;
        for (_, slot_id, slot) in slots {
            let Ok(StoredSlot::Kms(slot)) = slot else {
                continue;
            };
            match slot.open(wrapper, &id, slot_id).await {
                Ok(secret) => match to_chain(store, config, names, secret, *slot_id).await {
                    Ok(opened) => return Ok(Ok(opened)),
                    Err(e @ Error::Revoked(_)) => failures.push(e),
                    Err(e) => return Err(e),
                },
                Err(e) => failures.push(e),
            }
        }
        Ok(Err(failures))
    }

    /// Every passphrase slot `passphrase` opens ([`Error::WrongPassphrase`] if none).
    pub async fn slots_opened_by(&self, passphrase: &[u8]) -> Result<Vec<SlotId>> {
        let slots = read_slots(self.store()).await?;
        let opened = open_slots(self.config(), &slots, passphrase, self.clock().now_ms())?;
        Ok(opened.into_iter().map(|(_, slot)| slot).collect())
    }
}

/// The chain a slot's secret reaches among the epochs `names`.
async fn to_chain(
    store: &DynStore,
    config: &RepoConfig,
    names: &[EpochName],
    secret: SlotSecret,
    slot: SlotId,
) -> Result<(KeyChain, Option<Holder>)> {
    match secret {
        SlotSecret::Root(root) => {
            verify(config, &root)?;
            let chain = climb(store, config, Some(KeyChain::root(&root)), None, names).await?;
            Ok((chain, None))
        }
        SlotSecret::Identity(identity) => {
            let holder = (slot, identity);
            let chain = climb(store, config, None, Some(&holder), names).await?;
            Ok((chain, Some(holder)))
        }
    }
}

/// Reads every key slot object (a store failure that may pass is the error;
/// any other failure is kept as that slot's content).
pub(crate) async fn read_slots(store: &DynStore) -> Result<Vec<ReadSlot>> {
    let listed = store.list(layout::KEYS_PREFIX).await?;
    let mut out = Vec::new();
    for meta in listed {
        let Some(slot_id) = layout::parse_slot(&meta.key) else {
            continue;
        };
        let slot = match store::get_at_most(&**store, &meta.key, layout::SLOT_MAX, "key slot").await
        {
            Ok(bytes) => StoredSlot::parse(&bytes, &meta.key),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => Err(e),
        };
        out.push((meta.key, slot_id, slot));
    }
    if out.is_empty() {
        return Err(Error::corrupt(
            layout::KEYS_PREFIX,
            "the repository has no key slot",
        ));
    }
    Ok(out)
}

/// The passphrase slots (and passphrase grants) `passphrase` opens, with
/// what each holds. Errors with [`Error::WrongPassphrase`] when it opens none,
/// or [`Error::GrantExpired`] when it opens only grants expired at `now`. KMS
/// slots are left out.
fn open_slots(
    config: &RepoConfig,
    slots: &[ReadSlot],
    passphrase: &[u8],
    now: u64,
) -> Result<Vec<(SlotSecret, SlotId)>> {
    let id = config.repo_id()?;
    // A slot that cannot be tried (damaged, unknown kind, or asking for more
    // memory than this machine gives) is skipped, so one bad object in the
    // store cannot lock everybody out; its error is reported only if no
    // other slot could be tried.
    let (mut tried, mut expired) = (false, None);
    let mut skipped: Vec<(String, Error)> = Vec::new();
    let mut opened = Vec::new();
    // Version-3 slots first: they reach every epoch, older ones only the root.
    let mut order: Vec<&ReadSlot> = slots.iter().collect();
    order.sort_by_key(|(_, _, s)| !matches!(s, Ok(StoredSlot::Passphrase(k)) if k.version >= 3));
    for (key, slot_id, slot) in order {
        let result = match slot {
            Ok(StoredSlot::Kms(_)) => continue,
            Ok(StoredSlot::Grant(g)) if g.kind == KIND_RECIPIENT => continue,
            Ok(StoredSlot::Passphrase(ks)) => ks.open(passphrase, &id, slot_id),
            Ok(StoredSlot::Grant(g)) => g.open(passphrase, &id, slot_id).map(|o| o.map(SlotSecret::Identity)),
            Err(e) => Err(e.clone()),
        };
        match (result, slot) {
            (Ok(Some(_)), Ok(StoredSlot::Grant(g))) if g.expired(now) => {
                expired = Some(Error::GrantExpired { slot: slot_id.to_hex(), expired: g.expires });
            }
            (Ok(Some(secret)), _) => opened.push((secret, *slot_id)),
            (Ok(None), _) => tried = true,
            (Err(e), _) => skipped.push((key.clone(), e)),
        }
    }
    if let (true, Some(e)) = (opened.is_empty(), expired) {
        return Err(e);
    }
    if opened.is_empty() && !tried && !skipped.is_empty() {
        // No slot could be tried: the (first) reason is the error, on its own.
        return Err(skipped.swap_remove(0).1);
    }
    warn_skipped(&skipped);
    if opened.is_empty() {
        return Err(Error::WrongPassphrase);
    }
    Ok(opened)
}

/// When `slot` is a grant: checks its MAC against the opened `chain`'s root
/// (an expiry edited in the store is refused), and returns when it expires.
fn check_grant(
    config: &RepoConfig,
    slots: &[ReadSlot],
    slot: &SlotId,
    chain: &KeyChain,
) -> Result<Option<(SlotId, u64)>> {
    let Some(g) = slots.iter().find_map(|(_, id, s)| match s {
        Ok(StoredSlot::Grant(g)) if id == slot => Some(g),
        _ => None,
    }) else {
        return Ok(None);
    };
    if !g.authentic(chain.root_key(), &config.repo_id()?, slot) {
        return Err(Error::corrupt(
            layout::key_slot(slot),
            "not authentic: the grant was changed by someone without the repository key",
        ));
    }
    Ok(Some((*slot, g.expires)))
}

/// Opens the repository through a grant to `identity`'s recipient, if the
/// repository holds one: [`Error::GrantExpired`] once it has expired.
async fn unlock_identity(
    store: &DynStore,
    config: &RepoConfig,
    names: &[EpochName],
    slots: &[ReadSlot],
    (identity, now): (&SlotIdentity, u64),
) -> Result<Option<Opened>> {
    let recipient = identity.recipient();
    let found = slots.iter().find_map(|(_, id, s)| match s {
        Ok(StoredSlot::Grant(g)) if g.kind == KIND_RECIPIENT && g.recipient == recipient => Some((id, g)),
        _ => None,
    });
    let Some((slot, g)) = found else {
        return Ok(None);
    };
    g.check(&layout::key_slot(slot))?;
    if g.expired(now) {
        return Err(Error::GrantExpired { slot: slot.to_hex(), expired: g.expires });
    }
    let secret = SlotSecret::Identity(identity.clone());
    let (chain, holder) = to_chain(store, config, names, secret, *slot).await?;
    let grant = check_grant(config, slots, slot, &chain)?;
    Ok(Some(Opened::slot(chain, holder, grant)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::kms::testing::FakeKms;
    use crate::store::MemoryStore;
    use std::sync::{Arc, Mutex};

    fn pw() -> Result<Zeroizing<String>> {
        Ok(Zeroizing::new("pw".to_string()))
    }

    #[tokio::test]
    async fn kms_first_then_the_passphrase_after_a_told_failure() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let kms = FakeKms::default();
        let first = FirstSlot::Kms {
            wrapper: &kms,
            key_id: "alias/k",
        };
        let repo = Repository::init_with(store.clone(), first, None)
            .await
            .unwrap();
        let warned = Mutex::new(Vec::new());
        let warn = |e: &Error| warned.lock().unwrap().push(e.to_string());
        let mut never = || -> Result<Zeroizing<String>> { panic!("no passphrase is asked") };
        let how = Unlock {
            keyring: None,
            kms: Some(&kms),
            ask: &mut never,
            warn: &warn,
        };
        let opened = Repository::open_with(store.clone(), how).await.unwrap();
        assert_eq!(opened.id(), repo.id());
        assert_eq!(
            kms.requests.lock().unwrap().len(),
            2,
            "Encrypt, then one Decrypt"
        );

        // Refused with no passphrase slot: the refusal is the error, nothing is asked.
        *kms.refuse.lock().unwrap() = Some("AccessDeniedException: no".into());
        let how = Unlock {
            keyring: None,
            kms: Some(&kms),
            ask: &mut never,
            warn: &warn,
        };
        let err = Repository::open_with(store.clone(), how).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "KMS Decrypt with key alias/k denied: AccessDeniedException: no"
        );
        assert!(warned.lock().unwrap().is_empty());

        // With a passphrase slot: told, then the passphrase opens it.
        *kms.refuse.lock().unwrap() = None;
        repo.add_passphrase(b"pw", KdfParams::MINIMUM)
            .await
            .unwrap();
        *kms.refuse.lock().unwrap() = Some("DisabledException: off".into());
        let mut ask = pw;
        let how = Unlock {
            keyring: None,
            kms: Some(&kms),
            ask: &mut ask,
            warn: &warn,
        };
        Repository::open_with(store.clone(), how).await.unwrap();
        assert_eq!(warned.lock().unwrap().len(), 1);
        assert!(warned.lock().unwrap()[0].contains("alias/k denied: DisabledException"));

        // Without KMS a KMS-only repository asks for nothing it cannot use.
        let slots = Repository::list_slots(&store).await.unwrap();
        let kms_slot = slots.iter().find(|s| s.key_id.is_some()).unwrap();
        assert_eq!(kms_slot.kind.as_deref(), Some("kms"));
        assert!(kms_slot.usable() && kms_slot.kdf.is_none());
        let pass_slot = slots.iter().find(|s| s.key_id.is_none()).unwrap().id;
        repo.remove_slot(&pass_slot).await.unwrap();
        let home = tempfile::tempdir().unwrap();
        let err = Repository::open(store, &Keyring::new(home.path()), &mut never)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::KeyRequired(_)), "{err}");
    }
}
