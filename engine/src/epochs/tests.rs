//! Rotation end to end on a memory store: revocation, history, devices that
//! pick a rotation up, repositories from before key epochs, racing rotations.

use super::*;
use crate::crypto::keyring::Keyring;
use crate::crypto::keyslot::KdfParams;
use crate::format::commit::Commit;
use crate::format::id::DeviceId;
use crate::store::MemoryStore;
use crate::{Folder, NoProgress, UploadOptions};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use zeroize::Zeroizing;

type Ask = Box<dyn FnMut() -> Result<Zeroizing<String>>>;

fn give(p: &'static str) -> Ask {
    Box::new(move || Ok(Zeroizing::new(p.to_string())))
}

fn never() -> Ask {
    Box::new(|| Err(Error::KeyRequired("no passphrase here".into())))
}

async fn open(store: &DynStore, home: &std::path::Path, mut ask: Ask) -> Result<Repository> {
    Repository::open(store.clone(), &Keyring::new(home), &mut *ask).await
}

/// A rotation that removes no slot and carries nothing over.
pub(crate) fn keep_all() -> Rotate<'static> {
    Rotate {
        remove: vec![],
        passphrase: None,
        kms: None,
    }
}

async fn push_file(repo: &Repository, dir: &std::path::Path, text: &str) {
    std::fs::write(dir.join("f.txt"), text).unwrap();
    let folder = Folder::open(dir, repo.id(), "memory://", false).unwrap();
    crate::push(repo, &folder, &UploadOptions::default(), &NoProgress)
        .await
        .unwrap();
}

/// The newest commit in the store, as (device, seq, sealed bytes).
pub(crate) async fn newest_commit(store: &DynStore) -> (DeviceId, u64, Bytes) {
    let listed = store.list(layout::LOG_PREFIX).await.unwrap();
    let (device, seq) = listed
        .iter()
        .filter_map(|m| layout::parse_device_seq(m.key.strip_prefix(layout::LOG_PREFIX)?))
        .max_by_key(|(_, seq)| *seq)
        .unwrap();
    let bytes = store.get(&layout::commit(&device, seq)).await.unwrap();
    (device, seq, bytes)
}

#[tokio::test]
async fn a_removed_slot_and_its_saved_keys_read_nothing_written_after_the_rotation() {
    let store: DynStore = Arc::new(MemoryStore::new());
    let repo = Repository::init(store.clone(), b"one", KdfParams::MINIMUM, None)
        .await
        .unwrap();
    let two = repo.add_passphrase(b"two", KdfParams::MINIMUM).await.unwrap();
    let src = tempfile::tempdir().unwrap();
    push_file(&repo, src.path(), "before").await;

    // Holder of slot "two" keeps its keyring.
    let revoked_home = tempfile::tempdir().unwrap();
    open(&store, revoked_home.path(), give("two")).await.unwrap();
    let saved = Keyring::new(revoked_home.path())
        .load(&repo.id())
        .unwrap()
        .unwrap();

    let how = Rotate {
        remove: vec![two],
        passphrase: None,
        kms: None,
    };
    let report = repo.rotate(how).await.unwrap();
    assert_eq!(report.removed, [two]);
    assert_eq!(report.rounds, 1);
    assert_eq!(repo.epoch().level, 1);
    push_file(&repo, src.path(), "after").await;

    // The saved keys open the commit before, not the one after.
    let (device, seq, after) = newest_commit(&store).await;
    let old_keys = saved.chain.keys();
    assert!(Commit::open(&old_keys, &device, seq, &after).is_err());
    assert!(Commit::open(&old_keys, &device, seq - 1, &store.get(&layout::commit(&device, seq - 1)).await.unwrap()).is_ok());
    assert!(Commit::open(&repo.keys(), &device, seq, &after).is_ok());
    // Through coffer: the keyring is refused, naming why.
    let err = open(&store, revoked_home.path(), never()).await.unwrap_err();
    assert!(matches!(err, Error::Revoked(_)), "{err}");
    assert!(err.to_string().contains("no key for the repository's current key epoch"), "{err}");
    // Its passphrase opens nothing any more.
    let fresh = tempfile::tempdir().unwrap();
    let err = open(&store, fresh.path(), give("two")).await.unwrap_err();
    assert!(matches!(err, Error::WrongPassphrase), "{err}");

    // A kept slot reads everything, on a new machine.
    let home = tempfile::tempdir().unwrap();
    let kept = open(&store, home.path(), give("one")).await.unwrap();
    assert_eq!(kept.epoch(), repo.epoch());
    let dst = tempfile::tempdir().unwrap();
    let folder = Folder::open(dst.path(), kept.id(), "memory://", false).unwrap();
    crate::pull(&kept, &folder, &NoProgress).await.unwrap();
    assert_eq!(std::fs::read_to_string(dst.path().join("f.txt")).unwrap(), "after");
    let report = crate::check(&kept, true, None, &NoProgress).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    assert_eq!(report.commits, 2, "history before and after opens");
    assert_eq!(report.packs_verified, 2);
}

#[tokio::test]
async fn a_device_opened_before_a_rotation_seals_under_it_from_its_next_step() {
    let store: DynStore = Arc::new(MemoryStore::new());
    let a = Repository::init(store.clone(), b"one", KdfParams::MINIMUM, None)
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let b = open(&store, home.path(), give("one")).await.unwrap();
    let how = keep_all();
    b.rotate(how).await.unwrap();
    assert_eq!(a.epoch().level, 0, "a has not looked yet");
    let dir = tempfile::tempdir().unwrap();
    push_file(&a, dir.path(), "x").await;
    assert_eq!(a.epoch(), b.epoch());
    let (_, _, sealed) = newest_commit(&store).await;
    let chain = b.key_chain().0;
    assert_eq!(sealed[..8], epoch::nonce_tag(chain.newest().1));
}

#[tokio::test]
async fn a_rotation_that_raced_another_rotates_again_without_the_removed_slot() {
    // The model's store: it can hide `epochs/` from the next listing.
    let raw = Arc::new(super::model::ModelStore::default());
    let store: DynStore = raw.clone();
    let x = Repository::init(store.clone(), b"one", KdfParams::MINIMUM, None)
        .await
        .unwrap();
    let gone = x.add_passphrase(b"gone", KdfParams::MINIMUM).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let y = open(&store, home.path(), give("one")).await.unwrap();
    // y rotates at level 1, granting "gone" (it listed the slots before x removed it).
    let how = keep_all();
    y.rotate(how).await.unwrap();
    // x does not see y's epoch when it starts, and also writes level 1.
    raw.hide_epochs.store(1, Ordering::SeqCst);
    let how = Rotate { remove: vec![gone], passphrase: None, kms: None };
    let report = x.rotate(how).await.unwrap();
    assert_eq!(report.rounds, 2, "it saw the other level-1 epoch and rotated again");
    assert_eq!(x.epoch().level, 2);
    // "gone" has grants at level 1 (y's), none at level 2.
    let grants = store.list(layout::GRANTS_PREFIX).await.unwrap();
    let of_gone: Vec<EpochName> = grants
        .iter()
        .filter_map(|m| layout::parse_grant(&m.key))
        .filter(|(_, s)| *s == gone)
        .map(|(e, _)| e)
        .collect();
    assert!(of_gone.iter().all(|e| e.level < 2), "{of_gone:?}");
    // y picks level 2 up and both read what the other writes.
    y.refresh_keys().await.unwrap();
    assert_eq!(y.epoch(), x.epoch());
}

#[tokio::test]
async fn a_repository_from_before_key_epochs_rotates_with_its_passphrase() {
    let store: DynStore = Arc::new(MemoryStore::new());
    let (root, id, slot) = (MasterKey::generate(), crate::format::id::RepoId::random(), SlotId::random());
    let ks = KeySlot::create(&root, b"old", KdfParams::MINIMUM, &id, &slot).unwrap();
    store
        .put(&layout::key_slot(&slot), Bytes::from(serde_json::to_vec(&ks).unwrap()))
        .await
        .unwrap();
    let config = RepoConfig::new(&id, crate::chunk::chunker::ChunkerParams::DEFAULT, &root);
    store
        .put(layout::CONFIG, Bytes::from(serde_json::to_vec(&config).unwrap()))
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let repo = open(&store, home.path(), give("old")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    push_file(&repo, dir.path(), "v1").await;

    let how = keep_all();
    let err = repo.rotate(how).await.unwrap_err();
    assert!(matches!(err, Error::KeyRequired(_)), "{err}");
    assert!(list_epochs(&store).await.unwrap().is_empty(), "nothing written");
    let how = Rotate { remove: vec![], passphrase: Some(b"old"), kms: None };
    let report = repo.rotate(how).await.unwrap();
    assert_eq!(report.upgraded.len(), 1);
    let slots = Repository::list_slots(&store).await.unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].version, Some(3));
    // The old keyring (root only, no identity) cannot follow; the passphrase can.
    let fresh = tempfile::tempdir().unwrap();
    let again = open(&store, fresh.path(), give("old")).await.unwrap();
    assert_eq!(again.epoch().level, 1);
    push_file(&again, dir.path(), "v2").await;
    let report = crate::check(&again, true, None, &NoProgress).await.unwrap();
    assert!(report.is_ok() && report.commits == 2, "{report:?}");
}

#[tokio::test]
async fn reencrypt_seals_every_pack_again_where_it_lies_and_resumes() {
    let store: DynStore = Arc::new(MemoryStore::new());
    let repo = Repository::init(store.clone(), b"one", KdfParams::MINIMUM, None)
        .await
        .unwrap();
    let old_keys = repo.keys();
    let src = tempfile::tempdir().unwrap();
    for i in 0..3 {
        push_file(&repo, src.path(), &format!("version {i} {}", "x".repeat(i * 5000))).await;
    }
    let packs = |s: DynStore| async move {
        let mut out = Vec::new();
        for m in s.list(layout::DATA_PREFIX).await.unwrap() {
            out.push((m.key.clone(), s.get(&m.key).await.unwrap()));
        }
        out
    };
    let before = packs(store.clone()).await;
    assert_eq!(before.len(), 3);
    let how = keep_all();
    repo.rotate(how).await.unwrap();
    let report = repo.reencrypt(&NoProgress).await.unwrap();
    assert_eq!((report.packs_rewritten, report.packs_current), (3, 0), "{report:?}");
    let tag = epoch::nonce_tag(repo.key_chain().0.newest().1);
    for ((key, old), (_, new)) in before.iter().zip(packs(store.clone()).await) {
        assert_eq!(old.len(), new.len(), "{key}: same layout");
        assert_ne!(old, &new);
        let id = layout::parse_pack(key).unwrap();
        assert_eq!(new[new.len() - 64..][..8], tag);
        assert!(crate::format::pack::verify(&old_keys, &id, &new).is_err(), "{key}");
        crate::format::pack::verify(&repo.keys(), &id, &new).unwrap();
    }
    let home = tempfile::tempdir().unwrap();
    let fresh = open(&store, home.path(), give("one")).await.unwrap();
    let report = crate::check(&fresh, true, None, &NoProgress).await.unwrap();
    assert!(report.is_ok() && report.packs_verified == 3, "{report:?}");
    let dst = tempfile::tempdir().unwrap();
    let folder = Folder::open(dst.path(), fresh.id(), "memory://", false).unwrap();
    crate::pull(&fresh, &folder, &NoProgress).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(dst.path().join("f.txt")).unwrap(),
        format!("version 2 {}", "x".repeat(10000))
    );
    let again = repo.reencrypt(&NoProgress).await.unwrap();
    assert_eq!((again.packs_rewritten, again.packs_current), (0, 3), "{again:?}");
}

/// Dedup across epochs (`DESIGN.md` §4a): chunk ids come from the root, so a
/// device that pushes content already stored before a rotation sends no chunk
/// of it again after the rotation.
#[tokio::test]
async fn content_stored_before_a_rotation_is_not_sent_again_after_it() {
    let store: DynStore = Arc::new(MemoryStore::new());
    let repo = Repository::init(store.clone(), b"one", KdfParams::MINIMUM, None)
        .await
        .unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let a = tempfile::tempdir().unwrap();
    std::fs::write(a.path().join("big.bin"), &data).unwrap();
    let folder = Folder::open(a.path(), repo.id(), "memory://", false).unwrap();
    let first = crate::push(&repo, &folder, &UploadOptions::default(), &NoProgress).await.unwrap();
    assert!(first.upload.new_chunks >= 2, "{:?}", first.upload);
    let how = keep_all();
    repo.rotate(how).await.unwrap();
    let b = tempfile::tempdir().unwrap();
    std::fs::write(b.path().join("copy.bin"), &data).unwrap();
    let other = Folder::open(b.path(), repo.id(), "memory://", false).unwrap();
    let second = crate::push(&repo, &other, &UploadOptions::default(), &NoProgress).await.unwrap();
    assert_eq!(second.upload.chunks, first.upload.chunks);
    assert_eq!(second.upload.new_chunks, 0, "{:?}", second.upload);
    assert_eq!(second.upload.packs, 0);
}
