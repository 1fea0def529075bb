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
use crate::crypto::keyslot::{KdfParams, SlotSecret, StoredSlot};
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

/// One slot object as read: its store key, id, and content (or why not).
type ReadSlot = (String, SlotId, Result<StoredSlot>);

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
    /// there is one.
    pub async fn open_with(store: DynStore, how: Unlock<'_>) -> Result<Repository> {
        let config = Self::read_config(&store).await?;
        let id = config.repo_id()?;
        let names = crate::epochs::list_epochs(&store).await?;
        let mut revoked = None;
        if let Some(keyring) = how.keyring
            && let Some(saved) = keyring.load(&id)?
        {
            match config.verify(saved.chain.root_key()) {
                Ok(()) => {
                    let (holder, held) = (saved.identity, saved.chain.iter().count());
                    match climb(&store, &config, Some(saved.chain), holder.as_ref(), &names).await {
                        Ok(chain) => {
                            let grew = chain.iter().count() != held;
                            let repo = Self::assemble(store, config, id, chain, holder, names);
                            if grew {
                                repo.save_keys(keyring)?;
                            }
                            return Ok(repo);
                        }
                        // Told only if no key slot opens either.
                        Err(e @ Error::Revoked(_)) => revoked = Some(e),
                        Err(e) => return Err(e),
                    }
                }
                Err(Mismatch::Tampered) => return Err(tampered()),
                Err(Mismatch::WrongKey) => tracing::warn!(
                    "the keyring's key for {id} does not match the repository; trying its key slots"
                ),
            }
        }
        let Unlock {
            keyring, kms, ask, warn,
        } = how;
        let (chain, holder) = match Self::unlock_slots(&store, &config, &names, kms, (ask, warn)).await
        {
            Ok(opened) => opened,
            // A revoked keyring says more than "no passphrase" or "wrong passphrase".
            Err(Error::KeyRequired(_) | Error::WrongPassphrase) if revoked.is_some() => {
                return Err(revoked.expect("checked"));
            }
            Err(e) => return Err(e),
        };
        let repo = Self::assemble(store, config, id, chain, holder, names);
        if let Some(keyring) = keyring {
            repo.save_keys(keyring)?;
        }
        Ok(repo)
    }

    /// The chain a key slot reaches: the KMS slots first, then the passphrase
    /// slots (the passphrase is asked for only then).
    async fn unlock_slots(
        store: &DynStore,
        config: &RepoConfig,
        names: &[EpochName],
        kms: Option<&dyn KeyWrapper>,
        (ask, warn): (PassphraseSource<'_>, &dyn Fn(&Error)),
    ) -> Result<(KeyChain, Option<Holder>)> {
        let slots = read_slots(store).await?;
        let failures = match Self::unlock_kms(store, config, names, &slots, kms).await? {
            Ok(opened) => return Ok(opened),
            Err(failures) => failures,
        };
        let passphrase_slots = slots
            .iter()
            .any(|(_, _, s)| !matches!(s, Ok(StoredSlot::Kms(_))));
        if !passphrase_slots {
            return Err(failures.into_iter().next().unwrap_or_else(|| {
                Error::KeyRequired(
                    "the repository has only KMS key slots, and KMS was not asked".into(),
                )
            }));
        }
        failures.iter().for_each(warn);
        let passphrase = ask()?;
        let mut last = Error::WrongPassphrase;
        for (secret, slot) in open_slots(config, &slots, passphrase.as_bytes(), false)? {
            match to_chain(store, config, names, secret, slot).await {
                Ok(opened) => return Ok(opened),
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
        let opened = open_slots(self.config(), &slots, passphrase, false)?;
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

/// The passphrase slots `passphrase` opens, with the master key each holds
/// (checked against the config): only the first when `first_only`. Errors with
/// [`Error::WrongPassphrase`] when it opens none. KMS slots are left out.
fn open_slots(
    config: &RepoConfig,
    slots: &[ReadSlot],
    passphrase: &[u8],
    first_only: bool,
) -> Result<Vec<(SlotSecret, SlotId)>> {
    let id = config.repo_id()?;
    // A slot that cannot be tried (damaged, unknown kind, or asking for more
    // memory than this machine gives) is skipped, so one bad object in the
    // store cannot lock everybody out; its error is reported only if no
    // other slot could be tried.
    let mut tried = false;
    let mut skipped: Vec<(String, Error)> = Vec::new();
    let mut opened = Vec::new();
    // Version-3 slots first: they reach every epoch, older ones only the root.
    let mut order: Vec<&ReadSlot> = slots.iter().collect();
    order.sort_by_key(|(_, _, s)| !matches!(s, Ok(StoredSlot::Passphrase(k)) if k.version >= 3));
    for (key, slot_id, slot) in order {
        let result = match slot {
            Ok(StoredSlot::Kms(_)) => continue,
            Ok(StoredSlot::Passphrase(ks)) => ks.open(passphrase, &id, slot_id),
            Err(e) => Err(e.clone()),
        };
        match result {
            Ok(Some(secret)) => {
                opened.push((secret, *slot_id));
                if first_only {
                    break;
                }
            }
            Ok(None) => tried = true,
            Err(e) => skipped.push((key.clone(), e)),
        }
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
