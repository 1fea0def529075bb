//! A repository: a store plus its config and unlocked keys.
//!
//! `config` is plaintext JSON (format version, repository id, chunker parameters, a
//! key check and a MAC: [`crate::format::config`]); `keys/<slot>` hold the master
//! key wrapped by passphrases or by a KMS key. Opening a repository
//! ([`crate::unlock`]) reads the config, then takes the master key from the local
//! [`Keyring`], else from a KMS slot, else from a passphrase that must open one of
//! the slots.

use crate::chunk::chunker::{Chunker, ChunkerParams};
use crate::crypto::epoch::{EpochName, KeyChain, SlotIdentity};
use crate::crypto::keyring::Keyring;
use crate::crypto::keyslot::{KdfParams, KeySlot};
use crate::crypto::kms::KmsSlot;
use crate::crypto::{Keys, MasterKey};
use crate::epochs::Holder;
use crate::error::{Error, Result, StoreError};
use crate::format::id::{RepoId, SlotId};
use crate::grants::{SweepState, SystemClock, WallClock};
use crate::store::{self, DynStore, layout};
use bytes::Bytes;
use std::sync::Arc;

pub use crate::unlock::{Access, FirstSlot, PassphraseSource, Unlock};

pub use crate::format::config::{REPO_FORMAT, RepoConfig};

/// Refuses to create a repository where coffer objects already are (a store
/// whose `config` was lost): a new master key would make them unreadable.
async fn refuse_leftovers(store: &DynStore) -> Result<()> {
    for prefix in layout::ALL_PREFIXES {
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
    /// The sealing and opening keys of the chain below; replaced (for every
    /// clone) when a rotation is picked up.
    keys: Arc<std::sync::RwLock<Arc<Keys>>>,
    /// The key chain, the slot identity that climbs it, and the epochs listed.
    chain: Arc<std::sync::Mutex<ChainState>>,
    chunker: Arc<Chunker>,
    /// Devices whose logs this machine no longer reads (`coffer distrust`).
    distrusted: std::collections::BTreeSet<crate::format::id::DeviceId>,
    /// The store's clock minus this machine's and when it was measured
    /// ([`crate::clock`]); measured again after [`crate::clock::REMEASURE`].
    clock_offset: Arc<tokio::sync::Mutex<Option<(i64, std::time::Instant)>>>,
    /// The clock grants expire by (`crate::grants`).
    clock: Arc<dyn WallClock>,
    /// The grant this machine opened the repository through, and when it
    /// expires (Unix ms); `None` on an owner device.
    grant: Option<(SlotId, u64)>,
    /// What an owner device knows of the repository's grants.
    pub(crate) sweep: Arc<tokio::sync::Mutex<SweepState>>,
}

/// What a repository holds of its key epochs (`crate::epochs`).
#[derive(Debug)]
pub(crate) struct ChainState {
    pub chain: KeyChain,
    /// The slot that opened the chain and its identity, if it was a version-3
    /// slot (or a keyring that kept one): it opens the grants of new epochs.
    pub holder: Option<Holder>,
    /// The epoch records last listed.
    pub listed: Vec<EpochName>,
    /// Whether the next sync step takes `listed` as current instead of
    /// listing `epochs/` again ([`Repository::step_follows_open`]).
    pub fresh: bool,
}

impl Repository {
    /// Creates a repository in an empty store location, with one passphrase
    /// key slot.
    pub async fn init(
        store: DynStore,
        passphrase: &[u8],
        kdf: KdfParams,
        keyring: Option<&Keyring>,
    ) -> Result<Repository> {
        let first = FirstSlot::Passphrase { passphrase, kdf };
        Self::init_with(store, first, keyring).await
    }

    /// Creates a repository in an empty store location whose one key slot is
    /// `first`; keeps the master key in `keyring` if given.
    pub async fn init_with(
        store: DynStore,
        first: FirstSlot<'_>,
        keyring: Option<&Keyring>,
    ) -> Result<Repository> {
        if let FirstSlot::Passphrase { passphrase, kdf } = &first {
            kdf.validate()?;
            if passphrase.is_empty() {
                return Err(Error::Config("an empty passphrase is not allowed".into()));
            }
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
        let identity = SlotIdentity::generate();
        let slot_json = match first {
            FirstSlot::Passphrase { passphrase, kdf } => {
                let ks = KeySlot::create_v3(&identity, &master, passphrase, kdf, (&id, &slot))?;
                serde_json::to_vec_pretty(&ks)
            }
            FirstSlot::Kms { wrapper, key_id } => {
                let ks = KmsSlot::create(wrapper, key_id, (&identity, &master), (&id, &slot))
                    .await?;
                serde_json::to_vec_pretty(&ks)
            }
        }
        .expect("key slot serializes");
        let config = RepoConfig::new(&id, ChunkerParams::DEFAULT, &master);
        // The grant and the slot first: a config without a usable slot would be
        // a dead repository.
        let object = layout::grant(&EpochName::ROOT, &slot);
        let grant = crate::crypto::epoch::grant(&identity.recipient(), &master, &object)?;
        store.put(&object, Bytes::from(grant)).await?;
        store
            .put(&layout::key_slot(&slot), Bytes::from(slot_json))
            .await?;
        let config_json = serde_json::to_vec_pretty(&config).expect("config serializes");
        store.put(layout::CONFIG, Bytes::from(config_json)).await?;
        let chain = KeyChain::root(&master);
        let holder = Some((slot, identity));
        if let Some(kr) = keyring {
            kr.store(&id, &chain, holder.as_ref(), None)?;
        }
        Ok(Self::assemble(store, config, id, chain, holder, Vec::new()))
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

    pub(crate) fn assemble(
        store: DynStore,
        config: RepoConfig,
        id: RepoId,
        chain: KeyChain,
        holder: Option<Holder>,
        listed: Vec<EpochName>,
    ) -> Repository {
        let keys = chain.keys();
        let chunker = Chunker::new(config.chunker, keys.chunker_seed());
        let state = ChainState {
            chain,
            holder,
            listed,
            fresh: false,
        };
        Repository {
            store,
            config,
            id,
            keys: Arc::new(std::sync::RwLock::new(Arc::new(keys))),
            chain: Arc::new(std::sync::Mutex::new(state)),
            chunker: Arc::new(chunker),
            distrusted: Default::default(),
            clock_offset: Default::default(),
            clock: Arc::new(SystemClock),
            grant: None,
            sweep: Default::default(),
        }
    }

    /// Judges grants' expiry by `clock` from now on (tests inject one).
    pub fn set_clock(&mut self, clock: Arc<dyn WallClock>) {
        self.clock = clock;
    }

    /// The clock grants expire by.
    pub fn clock(&self) -> &Arc<dyn WallClock> {
        &self.clock
    }

    /// The grant this machine opened the repository through and when it
    /// expires (Unix ms); `None` when it opened it through another slot.
    pub fn grant(&self) -> Option<(SlotId, u64)> {
        self.grant
    }

    pub(crate) fn set_grant(&mut self, grant: Option<(SlotId, u64)>) {
        self.grant = grant;
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

    /// The devices whose logs this machine does not read, in id order.
    pub fn distrusted(&self) -> impl Iterator<Item = &crate::format::id::DeviceId> {
        self.distrusted.iter()
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

    /// The root key (epoch 0): wrapped by slots from before key epochs,
    /// and the key of slot MACs.
    pub(crate) fn master(&self) -> MasterKey {
        self.chain_state().chain.root_key().clone()
    }

    /// The keys objects are sealed and opened with, as of the last
    /// [`Repository::refresh_keys`].
    pub fn keys(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn chain_state(&self) -> std::sync::MutexGuard<'_, ChainState> {
        self.chain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the key chain (for every clone of this repository).
    pub(crate) fn install_chain(
        &self,
        chain: KeyChain,
        holder: Option<Holder>,
        listed: Vec<EpochName>,
    ) {
        let keys = Arc::new(chain.keys());
        *self.chain_state() = ChainState {
            chain,
            holder,
            listed,
            fresh: false,
        };
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    /// What the keyring keeps: the chain and the slot identity that climbs it.
    pub fn key_chain(&self) -> (KeyChain, Option<Holder>) {
        let s = self.chain_state();
        (s.chain.clone(), s.holder.clone())
    }

    /// Saves the chain in `keyring`.
    pub fn save_keys(&self, keyring: &Keyring) -> Result<()> {
        let (chain, holder) = self.key_chain();
        let expires = self.grant.map(|(_, e)| e);
        keyring.store(&self.id, &chain, holder.as_ref(), expires)
    }

    pub fn chunker(&self) -> &Arc<Chunker> {
        &self.chunker
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use zeroize::Zeroizing;

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
