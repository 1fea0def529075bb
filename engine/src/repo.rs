//! A repository: a store plus its config and unlocked keys.
//!
//! `config` is plaintext JSON (format version, repository id, chunker parameters, a
//! key check and a MAC: [`crate::format::config`]); `keys/<slot>` hold the master key wrapped by passphrases. Opening a
//! repository reads the config, then takes the master key from the local
//! [`Keyring`] or, failing that, from a passphrase that must open one of the slots.

use crate::chunk::chunker::{Chunker, ChunkerParams};
use crate::crypto::keyring::Keyring;
use crate::crypto::keyslot::{KdfParams, KeySlot};
use crate::crypto::{Keys, MasterKey};
use crate::error::{Error, Result, StoreError};
use crate::format::config::Mismatch;
use crate::format::id::{RepoId, SlotId};
use crate::store::{self, DynStore, layout};
use bytes::Bytes;
use std::sync::Arc;
use zeroize::Zeroizing;

pub use crate::format::config::{REPO_FORMAT, RepoConfig};

fn warn_skipped(skipped: &[(String, Error)]) {
    for (key, e) in skipped {
        tracing::warn!("key slot {key} skipped: {e}");
    }
}

fn tampered() -> Error {
    Error::corrupt(
        layout::CONFIG,
        "not authentic: its fields were changed by someone without the repository key",
    )
}

/// Refuses to create a repository where coffer objects already are (a store
/// whose `config` was lost): a new master key would make them unreadable.
async fn refuse_leftovers(store: &DynStore) -> Result<()> {
    for prefix in [
        layout::KEYS_PREFIX,
        layout::LOG_PREFIX,
        layout::CHECKPOINT_PREFIX,
        layout::DATA_PREFIX,
    ] {
        if let Some(found) = store.list(prefix).await?.first() {
            return Err(Error::Config(format!(
                "{} already holds coffer objects ({}, ...) but no config: refusing to create a \
                 new repository over them (see README, \"A lost config\")",
                store.describe(),
                found.key
            )));
        }
    }
    Ok(())
}

/// An open, unlocked repository.
#[derive(Debug, Clone)]
pub struct Repository {
    store: DynStore,
    config: RepoConfig,
    id: RepoId,
    keys: Arc<Keys>,
    /// Kept to wrap it in new key slots ([`crate::slots`]); zeroized on drop.
    master: Arc<MasterKey>,
    chunker: Arc<Chunker>,
    /// Devices whose logs this machine no longer reads (`coffer distrust`).
    distrusted: std::collections::BTreeSet<crate::format::id::DeviceId>,
    /// The store's clock minus this machine's and when it was measured
    /// ([`crate::clock`]); measured again after [`crate::clock::REMEASURE`].
    clock_offset: Arc<tokio::sync::Mutex<Option<(i64, std::time::Instant)>>>,
}

/// Where a passphrase comes from when the keyring has no key; called at most once.
pub type PassphraseSource<'a> = &'a mut dyn FnMut() -> Result<Zeroizing<String>>;

impl Repository {
    /// Creates a repository in an empty store location.
    pub async fn init(
        store: DynStore,
        passphrase: &[u8],
        kdf: KdfParams,
        keyring: Option<&Keyring>,
    ) -> Result<Repository> {
        kdf.validate()?;
        if passphrase.is_empty() {
            return Err(Error::Config("an empty passphrase is not allowed".into()));
        }
        match store.get(layout::CONFIG).await {
            Ok(_) => return Err(Error::AlreadyExists(store.describe())),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        refuse_leftovers(&store).await?;
        let master = MasterKey::generate();
        let id = RepoId::random();
        let slot = SlotId::random();
        let ks = KeySlot::create(&master, passphrase, kdf, &id, &slot)?;
        let config = RepoConfig::new(&id, ChunkerParams::DEFAULT, &master);
        // The slot first: a config without a usable slot would be a dead repository.
        let slot_json = serde_json::to_vec_pretty(&ks).expect("key slot serializes");
        store
            .put(&layout::key_slot(&slot), Bytes::from(slot_json))
            .await?;
        let config_json = serde_json::to_vec_pretty(&config).expect("config serializes");
        store.put(layout::CONFIG, Bytes::from(config_json)).await?;
        if let Some(kr) = keyring {
            kr.store(&id, &master)?;
        }
        Ok(Self::assemble(store, config, id, &master))
    }

    /// Reads and checks the plaintext config.
    pub async fn read_config(store: &DynStore) -> Result<RepoConfig> {
        let bytes = match store::get_at_most(&**store, layout::CONFIG, layout::CONFIG_MAX, "config")
            .await
        {
            Ok(b) => b,
            Err(Error::Store(StoreError::NotFound { .. })) => {
                return Err(Error::NotARepository(store.describe()));
            }
            Err(e) => return Err(e),
        };
        RepoConfig::parse(&bytes, &store.describe())
    }

    /// Opens the repository with the keyring's key, or a passphrase from `ask`
    /// (stored in the keyring when it opens a slot).
    pub async fn open(
        store: DynStore,
        keyring: &Keyring,
        ask: PassphraseSource<'_>,
    ) -> Result<Repository> {
        let config = Self::read_config(&store).await?;
        let id = config.repo_id()?;
        if let Some(master) = keyring.load(&id)? {
            match config.verify(&master) {
                Ok(()) => return Ok(Self::assemble(store, config, id, &master)),
                Err(Mismatch::Tampered) => return Err(tampered()),
                Err(Mismatch::WrongKey) => tracing::warn!(
                    "the keyring's key for {id} does not match the repository; asking for the passphrase"
                ),
            }
        }
        let passphrase = ask()?;
        let master = Self::unlock(&store, &config, passphrase.as_bytes()).await?;
        keyring.store(&id, &master)?;
        Ok(Self::assemble(store, config, id, &master))
    }

    /// Tries every key slot with `passphrase`.
    pub async fn unlock(
        store: &DynStore,
        config: &RepoConfig,
        passphrase: &[u8],
    ) -> Result<MasterKey> {
        let opened = Self::open_slots(store, config, passphrase, true).await?;
        Ok(opened.into_iter().next().map(|(m, _)| m).expect("at least one"))
    }

    /// The slots `passphrase` opens, with the master key each holds (checked
    /// against the config): only the first when `first_only`. Errors with
    /// [`Error::WrongPassphrase`] when it opens none.
    pub(crate) async fn open_slots(
        store: &DynStore,
        config: &RepoConfig,
        passphrase: &[u8],
        first_only: bool,
    ) -> Result<Vec<(MasterKey, SlotId)>> {
        let id = config.repo_id()?;
        let slots = store.list(layout::KEYS_PREFIX).await?;
        if slots.is_empty() {
            return Err(Error::corrupt(
                layout::KEYS_PREFIX,
                "the repository has no key slot",
            ));
        }
        // A slot that cannot be tried (damaged, unknown kind, or asking for more
        // memory than this machine gives) is skipped, so one bad object in the
        // store cannot lock everybody out; its error is reported only if no
        // other slot could be tried.
        let mut tried = false;
        let mut skipped: Vec<(String, Error)> = Vec::new();
        let mut opened = Vec::new();
        for meta in slots {
            let Some(slot_id) = layout::parse_slot(&meta.key) else {
                continue;
            };
            match Self::try_slot(store, &meta.key, &slot_id, &id, passphrase).await {
                Ok(Some(master)) => {
                    match config.verify(&master) {
                        Ok(()) => {}
                        Err(Mismatch::Tampered) => return Err(tampered()),
                        Err(Mismatch::WrongKey) => {
                            return Err(Error::corrupt(
                                layout::CONFIG,
                                "key check does not match the key slots",
                            ));
                        }
                    }
                    opened.push((master, slot_id));
                    if first_only {
                        break;
                    }
                }
                Ok(None) => tried = true,
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => skipped.push((meta.key, e)),
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

    pub(crate) async fn try_slot(
        store: &DynStore,
        key: &str,
        slot_id: &SlotId,
        id: &RepoId,
        passphrase: &[u8],
    ) -> Result<Option<MasterKey>> {
        let bytes = store::get_at_most(&**store, key, layout::SLOT_MAX, "key slot").await?;
        let slot: KeySlot =
            serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(key, e.to_string()))?;
        slot.open(passphrase, id, slot_id)
    }

    fn assemble(store: DynStore, config: RepoConfig, id: RepoId, master: &MasterKey) -> Repository {
        let keys = Keys::derive(master);
        let chunker = Chunker::new(config.chunker, keys.chunker_seed());
        Repository {
            store,
            config,
            id,
            keys: Arc::new(keys),
            master: Arc::new(master.clone()),
            chunker: Arc::new(chunker),
            distrusted: Default::default(),
            clock_offset: Default::default(),
        }
    }

    /// Now, in Unix ms, by this machine's clock corrected to the store's when
    /// they differ by more than [`crate::clock::TOLERANCE_MS`].
    pub async fn now_ms(&self) -> u64 {
        let mut cached = self.clock_offset.lock().await;
        let offset = match *cached {
            Some((offset, at)) if at.elapsed() < crate::clock::REMEASURE => offset,
            previous => {
                let was = previous.map(|(o, _)| o);
                let offset = crate::clock::measure(&*self.store, was).await;
                *cached = Some((offset, std::time::Instant::now()));
                offset
            }
        };
        crate::format::version::now_millis().saturating_add_signed(offset)
    }

    /// Stops reading the logs of `devices` (their commits are neither fetched
    /// nor checked; what was ingested before stays). Deletes nothing.
    pub fn distrust(&mut self, devices: impl IntoIterator<Item = crate::format::id::DeviceId>) {
        self.distrusted.extend(devices);
    }

    /// Whether this machine reads the log of `device`.
    pub fn trusts(&self, device: &crate::format::id::DeviceId) -> bool {
        !self.distrusted.contains(device)
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn id(&self) -> RepoId {
        self.id
    }

    pub(crate) fn master(&self) -> &MasterKey {
        &self.master
    }

    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    pub fn chunker(&self) -> &Arc<Chunker> {
        &self.chunker
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn init_then_open_with_passphrase_then_keyring() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let home = tempfile::tempdir().unwrap();
        let kr = Keyring::new(home.path());
        let repo = Repository::init(store.clone(), b"pw", KdfParams::MINIMUM, None)
            .await
            .unwrap();
        assert!(matches!(
            Repository::init(store.clone(), b"pw", KdfParams::MINIMUM, None).await,
            Err(Error::AlreadyExists(_))
        ));
        let mut wrong = || Ok(Zeroizing::new("nope".to_string()));
        assert!(matches!(
            Repository::open(store.clone(), &kr, &mut wrong).await,
            Err(Error::WrongPassphrase)
        ));
        let mut right = || Ok(Zeroizing::new("pw".to_string()));
        let opened = Repository::open(store.clone(), &kr, &mut right)
            .await
            .unwrap();
        assert_eq!(opened.id(), repo.id());
        let mut never = || -> Result<Zeroizing<String>> { panic!("keyring should be used") };
        Repository::open(store, &kr, &mut never).await.unwrap();
    }

    #[tokio::test]
    async fn a_config_changed_in_the_store_is_refused() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let home = tempfile::tempdir().unwrap();
        let kr = Keyring::new(home.path());
        Repository::init(store.clone(), b"pw", KdfParams::MINIMUM, Some(&kr))
            .await
            .unwrap();
        let mut config = Repository::read_config(&store).await.unwrap();
        config.chunker.avg /= 2;
        config.chunker.min /= 2;
        let json = serde_json::to_vec(&config).unwrap();
        store.put(layout::CONFIG, Bytes::from(json)).await.unwrap();
        let mut never = || -> Result<Zeroizing<String>> { panic!("keyring should be used") };
        let err = Repository::open(store.clone(), &kr, &mut never)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not authentic"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let mut pw = || Ok(Zeroizing::new("pw".to_string()));
        let err = Repository::open(store, &Keyring::new(empty.path()), &mut pw)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not authentic"), "{err}");
    }

    #[tokio::test]
    async fn newer_format_is_refused_clearly() {
        let store: DynStore = Arc::new(MemoryStore::new());
        store
            .put(layout::CONFIG, Bytes::from_static(br#"{"format": 3}"#))
            .await
            .unwrap();
        let err = Repository::read_config(&store).await.unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedVersion { found: 3, .. }),
            "{err}"
        );
    }
}
