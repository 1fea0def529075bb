//! Expiring grants on a memory store with a hand-set clock: refused after
//! expiry (passphrase, keyring, identity), removed with a rotation by the
//! owner's next step, a saved key reads nothing written after, an edited
//! expiry breaks the grant, and the owner lists `keys/` at most every
//! [`RELIST_MS`].

use super::*;
use crate::crypto::keyring::Keyring;
use crate::format::commit::Commit;
use crate::store::{DynStore, MemoryStore};
use crate::unlock::{Access, Unlock};
use crate::{Folder, NoProgress, UploadOptions};
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

const T0: u64 = 1_796_000_000_000;
const DAY: u64 = 86_400_000;
const GRANT_PW: &str = "the grantee's passphrase";

struct Owner {
    mem: Arc<MemoryStore>,
    store: DynStore,
    repo: Repository,
    clock: Arc<ManualClock>,
    dir: tempfile::TempDir,
}

async fn owner() -> Owner {
    let mem = Arc::new(MemoryStore::new());
    let store: DynStore = mem.clone();
    let mut repo = Repository::init(store.clone(), b"owner", KdfParams::MINIMUM, None).await.unwrap();
    let clock = Arc::new(ManualClock::at(T0));
    repo.set_clock(clock.clone());
    Owner {
        mem,
        store,
        repo,
        clock,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Owner {
    async fn grant_passphrase(&self, expires: u64) -> SlotId {
        let g = Grantee::Passphrase {
            passphrase: GRANT_PW.as_bytes(),
            kdf: KdfParams::MINIMUM,
        };
        self.repo.add_grant(g, expires).await.unwrap()
    }

    /// Writes `text` to `name` and pushes: a step that starts with the sweep.
    async fn push(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
        let folder = Folder::open(self.dir.path(), self.repo.id(), "memory://", false).unwrap();
        crate::push(&self.repo, &folder, &UploadOptions::default(), &NoProgress)
            .await
            .unwrap();
    }
}

/// Opens `store` as a grantee would: keyring in `home`, passphrase `pw`
/// (or none), optionally an identity; grants judged by `clock`.
async fn open_as(
    store: &DynStore,
    home: &Path,
    pw: Option<&str>,
    (identity, clock): (Option<&SlotIdentity>, &Arc<ManualClock>),
) -> Result<Repository> {
    let keyring = Keyring::new(home);
    let pw = pw.map(str::to_string);
    let mut ask = move || match &pw {
        Some(p) => Ok(Zeroizing::new(p.clone())),
        None => Err(Error::KeyRequired("no passphrase here".into())),
    };
    let warn = |_: &Error| {};
    let how = Unlock {
        keyring: Some(&keyring),
        kms: None,
        ask: &mut ask,
        warn: &warn,
    };
    let access = Access {
        identity,
        clock: clock.clone(),
    };
    Repository::open_with_access(store.clone(), how, access).await
}


#[tokio::test]
async fn a_grant_opens_until_it_expires_then_is_refused_everywhere() {
    let o = owner().await;
    let slot = o.grant_passphrase(T0 + 7 * DAY).await;
    let home = tempfile::tempdir().unwrap();
    let g = open_as(&o.store, home.path(), Some(GRANT_PW), (None, &o.clock)).await.unwrap();
    assert_eq!(g.grant(), Some((slot, T0 + 7 * DAY)));
    assert!(g.check_grants().await.unwrap().removed.is_empty());
    // Later, through the keyring alone.
    o.clock.set(T0 + 7 * DAY - 1);
    open_as(&o.store, home.path(), None, (None, &o.clock)).await.unwrap();

    o.clock.set(T0 + 7 * DAY);
    let before = o.mem.keys_under("").len();
    let expired = |e: Error| match e {
        Error::GrantExpired { slot: s, expired } => {
            assert_eq!((s, expired), (slot.to_hex(), T0 + 7 * DAY));
            true
        }
        other => panic!("{other}"),
    };
    let err = open_as(&o.store, home.path(), None, (None, &o.clock)).await.unwrap_err();
    assert!(expired(err.clone()));
    assert!(err.to_string().starts_with("this grant expired on 2026-12-"), "{err}");
    let fresh = tempfile::tempdir().unwrap();
    let err = open_as(&o.store, fresh.path(), Some(GRANT_PW), (None, &o.clock)).await.unwrap_err();
    assert!(expired(err));
    // A grantee's process that was open before: its next step refuses.
    assert!(expired(g.check_grants().await.unwrap_err()));
    assert_eq!(o.mem.keys_under("").len(), before, "nothing written");
    // The owner's own passphrase still opens, of course.
    let owner_home = tempfile::tempdir().unwrap();
    open_as(&o.store, owner_home.path(), Some("owner"), (None, &o.clock)).await.unwrap();
}

#[tokio::test]
async fn the_owners_next_step_removes_the_grant_and_a_saved_key_reads_nothing_after() {
    let o = owner().await;
    o.push("a.txt", "before").await;
    let slot = o.grant_passphrase(T0 + DAY).await;
    let home = tempfile::tempdir().unwrap();
    let g = open_as(&o.store, home.path(), Some(GRANT_PW), (None, &o.clock)).await.unwrap();
    let kept = g.keys();
    o.push("b.txt", "while granted").await;
    assert!(o.store.get(&layout::key_slot(&slot)).await.is_ok(), "not expired yet");
    assert_eq!(o.repo.epoch(), EpochName::ROOT);

    o.clock.set(T0 + DAY);
    o.push("c.txt", "after the expiry").await;
    assert!(o.store.get(&layout::key_slot(&slot)).await.is_err(), "slot removed");
    assert_eq!(o.repo.epoch().level, 1, "rotated");
    let (device, seq, sealed) = crate::epochs::tests::newest_commit(&o.store).await;
    assert!(Commit::open(&o.repo.keys(), &device, seq, &sealed).is_ok());
    assert!(Commit::open(&kept, &device, seq, &sealed).is_err(), "the kept key opens nothing new");

    // A dishonest client that drops the expiry from its keyring: the chain
    // it kept cannot climb to the new epoch.
    let saved = Keyring::new(home.path()).load(&o.repo.id()).unwrap().unwrap();
    assert!(saved.expires.is_some());
    Keyring::new(home.path())
        .store(&o.repo.id(), &saved.chain, saved.identity.as_ref(), None)
        .unwrap();
    let err = open_as(&o.store, home.path(), None, (None, &o.clock)).await.unwrap_err();
    assert!(matches!(err, Error::Revoked(_)), "{err}");
    // A second owner step does nothing more.
    o.push("d.txt", "later").await;
    assert_eq!(o.repo.epoch().level, 1);
}

#[tokio::test]
async fn an_expiry_edited_in_the_store_breaks_the_grant() {
    let o = owner().await;
    let slot = o.grant_passphrase(T0 + DAY).await;
    let key = layout::key_slot(&slot);
    let mut json: serde_json::Value = serde_json::from_slice(&o.store.get(&key).await.unwrap()).unwrap();
    json["expires"] = (T0 + 365 * DAY).into();
    o.store.put(&key, Bytes::from(serde_json::to_vec(&json).unwrap())).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let err = open_as(&o.store, home.path(), Some(GRANT_PW), (None, &o.clock)).await.unwrap_err();
    assert!(matches!(err, Error::WrongPassphrase), "{err}");
    // A rotation grants it nothing, and the owner's sweep does not count it.
    let r = o.repo.rotate(crate::epochs::tests::keep_all()).await.unwrap();
    assert_eq!(r.left_out.len(), 1, "{r:?}");
    o.clock.set(T0 + 2 * DAY);
    assert_eq!(o.repo.check_grants().await.unwrap(), SweepReport::default());
}

#[tokio::test]
async fn a_recipient_grant_opens_with_its_identity_until_it_expires() {
    let o = owner().await;
    o.push("a.txt", "hello").await;
    let identity = SlotIdentity::generate();
    let recipient = identity.recipient();
    let slot = o.repo.add_grant(Grantee::Recipient(&recipient), T0 + DAY).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let g = open_as(&o.store, home.path(), None, (Some(&identity), &o.clock)).await.unwrap();
    assert_eq!(g.grant(), Some((slot, T0 + DAY)));
    assert_eq!(g.keys().chunker_seed(), o.repo.keys().chunker_seed());
    let listed = Repository::list_slots(&o.store).await.unwrap();
    let info = listed.iter().find(|s| s.id == slot).unwrap();
    assert_eq!((info.kind.as_deref(), info.expires), (Some("recipient"), Some(T0 + DAY)));
    assert!(info.usable() && !info.owns());
    // Another identity: not a grant of this repository.
    let other = SlotIdentity::generate();
    let empty = tempfile::tempdir().unwrap();
    let err = open_as(&o.store, empty.path(), None, (Some(&other), &o.clock)).await.unwrap_err();
    assert!(matches!(err, Error::KeyRequired(_)), "{err}");
    o.clock.set(T0 + DAY);
    let err = open_as(&o.store, empty.path(), None, (Some(&identity), &o.clock)).await.unwrap_err();
    assert!(matches!(err, Error::GrantExpired { .. }), "{err}");
    // Removing it by hand rotates too; a grant is never the last slot kept.
    let o2 = owner().await;
    let slot2 = o2.repo.add_grant(Grantee::Recipient(&recipient), T0 + DAY).await.unwrap();
    let r = o2.repo.remove_grant(&slot2).await.unwrap();
    assert_eq!((r.removed, r.epoch.map(|e| e.level)), (vec![slot2], Some(1)));
    let owner_slot = Repository::list_slots(&o2.store).await.unwrap()[0].id;
    o2.repo.add_grant(Grantee::Recipient(&recipient), T0 + DAY).await.unwrap();
    let err = o2.repo.remove_slot(&owner_slot).await.unwrap_err();
    assert!(matches!(err, Error::LastKeySlot { .. }), "{err}");
}

#[tokio::test]
async fn the_owner_lists_keys_at_most_every_twelve_minutes() {
    let o = owner().await;
    assert_eq!(o.repo.check_grants().await.unwrap(), SweepReport::default());
    // Made by another owner device after this one listed `keys/`.
    let other = Repository::open(o.store.clone(), &Keyring::new(o.dir.path()), &mut || {
        Ok(Zeroizing::new("owner".to_string()))
    })
    .await
    .unwrap();
    let mut other = other;
    other.set_clock(o.clock.clone());
    let slot = other
        .add_grant(
            Grantee::Passphrase {
                passphrase: b"x",
                kdf: KdfParams::MINIMUM,
            },
            T0 + 60_000,
        )
        .await
        .unwrap();
    o.clock.set(T0 + RELIST_MS - 1);
    assert_eq!(o.repo.check_grants().await.unwrap(), SweepReport::default(), "not listed yet");
    o.clock.set(T0 + RELIST_MS);
    let r = o.repo.check_grants().await.unwrap();
    assert_eq!((r.removed, r.epoch.map(|e| e.level)), (vec![slot], Some(1)));
    // Grants it knows of expire without a new listing.
    let recipient = SlotIdentity::generate().recipient();
    let later = other.add_grant(Grantee::Recipient(&recipient), T0 + RELIST_MS + 5_000);
    let later = later.await.unwrap();
    o.clock.set(T0 + RELIST_MS + 1);
    assert!(o.repo.check_grants().await.unwrap().removed.is_empty(), "listed, not expired");
    o.clock.set(T0 + RELIST_MS + 4_999);
    assert!(o.repo.check_grants().await.unwrap().removed.is_empty());
    o.clock.set(T0 + RELIST_MS + 5_000);
    assert_eq!(o.repo.check_grants().await.unwrap().removed, vec![later]);
}

/// A memory store that refuses to delete key slots while `refuse` is set
/// (a sweep killed between its rotation's record and the deletion).
#[derive(Debug)]
struct KeepSlots {
    inner: MemoryStore,
    refuse: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl crate::store::ObjectStore for KeepSlots {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), crate::StoreError> {
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Bytes, crate::StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes, crate::StoreError> {
        self.inner.get_range(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectMeta>, crate::StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), crate::StoreError> {
        if key.starts_with(layout::KEYS_PREFIX) && self.refuse.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::StoreError::Rejected { detail: "no deletes today".into() });
        }
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        "keep-slots".into()
    }
}

#[tokio::test]
async fn a_sweep_stopped_before_it_deleted_the_grant_is_finished_by_the_next_step() {
    let raw = Arc::new(KeepSlots {
        inner: MemoryStore::new(),
        refuse: true.into(),
    });
    let store: DynStore = raw.clone();
    let mut repo = Repository::init(store.clone(), b"owner", KdfParams::MINIMUM, None).await.unwrap();
    let clock = Arc::new(ManualClock::at(T0));
    repo.set_clock(clock.clone());
    let g = Grantee::Passphrase {
        passphrase: GRANT_PW.as_bytes(),
        kdf: KdfParams::MINIMUM,
    };
    let slot = repo.add_grant(g, T0 + DAY).await.unwrap();
    clock.set(T0 + DAY);
    // The new epoch is written without the grant; its slot stays.
    let r = repo.check_grants().await.unwrap();
    assert!(r.removed.is_empty() && r.not_rotated.is_some(), "{r:?}");
    assert_eq!(repo.epoch().level, 1);
    assert!(store.get(&layout::grant(&repo.epoch(), &slot)).await.is_err(), "no grant of the new epoch");
    assert!(store.get(&layout::key_slot(&slot)).await.is_ok());
    // Still listed, still expired: the next step (after a listing) finishes.
    raw.refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    clock.set(T0 + DAY + RELIST_MS);
    let r = repo.check_grants().await.unwrap();
    assert_eq!((r.removed, r.epoch.map(|e| e.level)), (vec![slot], Some(2)));
    assert!(store.get(&layout::key_slot(&slot)).await.is_err());
}
