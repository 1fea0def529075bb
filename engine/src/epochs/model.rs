//! The model test of rotation (`DESIGN.md` §4a): random sequences of pushes
//! by three devices, rotations — some removing a slot, some racing another
//! rotation they did not see in time, some killed after any number of writes —
//! and re-encryptions (killed or not), on a memory store. After every step: every device whose slot stands opens
//! the repository afresh and `check --read-data` accepts it; a device whose
//! slot a completed rotation removed cannot push, has no grant at the top
//! level, and its keys open no commit written after its removal; a device
//! whose slot a killed rotation removed cannot rotate.

use super::*;
use crate::crypto::kms::testing::FakeKms;
use crate::crypto::kms::{Context, KmsError};
use crate::format::commit::Commit;
use crate::store::{MemoryStore, ObjectMeta, ObjectStore};
use crate::unlock::FirstSlot;
use crate::{Folder, NoProgress, Unlock, UploadOptions};
use proptest::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use zeroize::Zeroizing;

const DEVICES: usize = 3;

/// A KMS that unwraps only its own key id: one per device, so a fresh open
/// goes through that device's slot.
#[derive(Debug, Default)]
struct OnlyKey {
    key: String,
    kms: FakeKms,
}

#[async_trait::async_trait]
impl KeyWrapper for OnlyKey {
    async fn wrap(&self, key_id: &str, plain: &[u8], ctx: &Context) -> std::result::Result<Vec<u8>, KmsError> {
        self.kms.wrap(key_id, plain, ctx).await
    }
    async fn unwrap(
        &self,
        key_id: &str,
        blob: &[u8],
        ctx: &Context,
    ) -> std::result::Result<Zeroizing<Vec<u8>>, KmsError> {
        if key_id != self.key {
            return Err(KmsError {
                action: "Decrypt",
                key_id: key_id.into(),
                reason: "AccessDeniedException: not this device's key".into(),
                denied: true,
            });
        }
        self.kms.unwrap(key_id, blob, ctx).await
    }
}

/// A memory store that can be "killed" after a number of writes (every later
/// write fails, as if the process had died there) and can hide `epochs/` from
/// the next listing (a rotation that did not see another in time).
#[derive(Debug)]
pub(super) struct ModelStore {
    inner: MemoryStore,
    pub(super) writes_left: AtomicI64,
    pub(super) hide_epochs: AtomicUsize,
}

impl Default for ModelStore {
    fn default() -> Self {
        ModelStore {
            inner: MemoryStore::new(),
            writes_left: AtomicI64::new(i64::MAX),
            hide_epochs: AtomicUsize::new(0),
        }
    }
}

impl ModelStore {
    fn write(&self) -> std::result::Result<(), StoreError> {
        match self.writes_left.fetch_sub(1, Ordering::SeqCst) {
            0 => {
                self.writes_left.store(0, Ordering::SeqCst);
                Err(StoreError::Unusable {
                    detail: "killed".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for ModelStore {
    async fn put(&self, key: &str, data: Bytes) -> std::result::Result<(), StoreError> {
        self.write()?;
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> std::result::Result<Bytes, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, r: std::ops::Range<u64>) -> std::result::Result<Bytes, StoreError> {
        self.inner.get_range(key, r).await
    }
    async fn list(&self, prefix: &str) -> std::result::Result<Vec<ObjectMeta>, StoreError> {
        let hide = prefix == layout::EPOCHS_PREFIX
            && self
                .hide_epochs
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        match hide {
            true => Ok(Vec::new()),
            false => self.inner.list(prefix).await,
        }
    }
    async fn delete(&self, key: &str) -> std::result::Result<(), StoreError> {
        self.write()?;
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        "model".into()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    /// `--reencrypt-only` by a device, possibly killed after some pack writes.
    Reencrypt(usize, Option<i64>),
    Rotate {
        actor: usize,
        remove: Option<usize>,
        killed_after: Option<i64>,
        stale: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..DEVICES).prop_map(Op::Push),
        (0..DEVICES, proptest::option::weighted(0.5, 0..3i64))
            .prop_map(|(d, killed)| Op::Reencrypt(d, killed)),
        (
            0..DEVICES,
            proptest::option::of(0..DEVICES),
            proptest::option::weighted(0.3, 0..6i64),
            any::<bool>()
        )
            .prop_map(|(actor, remove, killed_after, stale)| Op::Rotate {
                actor,
                remove,
                killed_after,
                stale,
            }),
    ]
}

struct Device {
    kms: OnlyKey,
    slot: SlotId,
    repo: Repository,
    dir: tempfile::TempDir,
    pushes: u32,
    /// Set when a completed rotation removed its slot.
    revoked: bool,
}

struct World {
    raw: Arc<ModelStore>,
    store: DynStore,
    devices: Vec<Device>,
    /// Every commit written: its key and which devices were revoked then.
    commits: Vec<(String, [bool; DEVICES])>,
}

fn never() -> Result<Zeroizing<String>> {
    Err(Error::KeyRequired("no passphrase in the model".into()))
}

async fn open_as(store: &DynStore, kms: &OnlyKey) -> Result<Repository> {
    let warn = |_: &Error| {};
    let mut ask = never;
    let how = Unlock {
        keyring: None,
        kms: Some(kms),
        ask: &mut ask,
        warn: &warn,
    };
    Repository::open_with(store.clone(), how).await
}

async fn world() -> World {
    let raw = Arc::new(ModelStore::default());
    let store: DynStore = raw.clone();
    let kms: Vec<OnlyKey> = (0..DEVICES)
        .map(|i| OnlyKey {
            key: format!("key-{i}"),
            kms: FakeKms::default(),
        })
        .collect();
    let first = FirstSlot::Kms { wrapper: &kms[0], key_id: "key-0" };
    let owner = Repository::init_with(store.clone(), first, None).await.unwrap();
    for k in &kms[1..] {
        owner.add_kms(k, &k.key).await.unwrap();
    }
    let mut devices = Vec::new();
    for k in kms {
        let repo = open_as(&store, &k).await.unwrap();
        let slot = repo.key_chain().1.unwrap().0;
        devices.push(Device { kms: k, slot, repo, dir: tempfile::tempdir().unwrap(), pushes: 0, revoked: false });
    }
    World { raw, store, devices, commits: Vec::new() }
}

impl World {
    async fn push(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        dev.pushes += 1;
        std::fs::write(dev.dir.path().join(format!("f{d}.txt")), format!("{}", dev.pushes)).unwrap();
        let folder = Folder::open(dev.dir.path(), dev.repo.id(), "memory://", false).unwrap();
        let pushed = crate::push(&dev.repo, &folder, &UploadOptions::default(), &NoProgress).await;
        if dev.revoked {
            assert!(matches!(pushed, Err(Error::Revoked(_))), "a revoked device pushed: {pushed:?}");
            return;
        }
        pushed.unwrap();
        let device = folder.device().id();
        let seq = folder.journal().head(&device).unwrap().unwrap().seq;
        let revoked = std::array::from_fn(|i| self.devices[i].revoked);
        self.commits.push((layout::commit(&device, seq), revoked));
    }

    async fn rotate(&mut self, actor: usize, remove: Option<usize>, killed_after: Option<i64>, stale: bool) {
        let gone = |i: usize| self.devices[i].revoked;
        if gone(actor) || remove == Some(actor) || remove.is_some_and(gone) {
            return;
        }
        let slot_of = |i: usize| layout::key_slot(&self.devices[i].slot);
        if let Some(r) = remove
            && self.store.get(&slot_of(r)).await.is_err()
        {
            return;
        }
        if self.store.get(&slot_of(actor)).await.is_err() {
            // A killed rotation removed its slot: it is being revoked.
            let how = Rotate { remove: Vec::new(), passphrase: None, kms: Some(&self.devices[actor].kms) };
            let refused = self.devices[actor].repo.rotate(how).await;
            assert!(matches!(refused, Err(Error::Revoked(_))), "{refused:?}");
            return;
        }
        self.raw.writes_left.store(killed_after.unwrap_or(i64::MAX), Ordering::SeqCst);
        self.raw.hide_epochs.store(usize::from(stale), Ordering::SeqCst);
        let how = Rotate {
            remove: remove.map(|r| self.devices[r].slot).into_iter().collect(),
            passphrase: None,
            kms: Some(&self.devices[actor].kms),
        };
        let rotated = self.devices[actor].repo.rotate(how).await;
        self.raw.writes_left.store(i64::MAX, Ordering::SeqCst);
        self.raw.hide_epochs.store(0, Ordering::SeqCst);
        match (rotated, killed_after) {
            // Every slot gone by now is revoked: the one removed here, and one
            // a killed rotation removed before it died (§4a: removals stay).
            (Ok(_), _) => {
                for dev in &mut self.devices {
                    let key = layout::key_slot(&dev.slot);
                    dev.revoked |= self.store.get(&key).await.is_err();
                }
            }
            (Err(e), Some(_)) => assert!(matches!(e, Error::Store(_)), "{e}"),
            (Err(e), None) => panic!("rotation failed: {e}"),
        }
    }

    async fn reencrypt(&mut self, d: usize, killed_after: Option<i64>) {
        if self.devices[d].revoked {
            return;
        }
        self.raw.writes_left.store(killed_after.unwrap_or(i64::MAX), Ordering::SeqCst);
        let done = self.devices[d].repo.reencrypt(&NoProgress).await;
        self.raw.writes_left.store(i64::MAX, Ordering::SeqCst);
        match (done, killed_after) {
            (Ok(r), _) => assert!(r.damaged.is_empty(), "{r:?}"),
            // Its slot removed by a killed rotation: it is being revoked.
            (Err(Error::Revoked(_)), _) => {
                let key = layout::key_slot(&self.devices[d].slot);
                assert!(self.store.get(&key).await.is_err(), "refused with its slot present");
            }
            (Err(e), Some(_)) => assert!(matches!(e, Error::Store(_)), "{e}"),
            (Err(e), None) => panic!("reencrypt failed: {e}"),
        }
    }

    async fn check_invariants(&self) {
        let top = list_epochs(&self.store).await.unwrap().iter().map(|n| n.level).max().unwrap_or(0);
        let tops: Vec<EpochName> = list_epochs(&self.store).await.unwrap().into_iter().filter(|n| n.level == top).collect();
        for (i, dev) in self.devices.iter().enumerate() {
            let present = self.store.get(&layout::key_slot(&dev.slot)).await.is_ok();
            if present && !dev.revoked {
                let fresh = open_as(&self.store, &dev.kms).await.unwrap_or_else(|e| panic!("device {i}: {e}"));
                let report = crate::check(&fresh, true, None, &NoProgress).await.unwrap();
                assert!(report.is_ok(), "device {i}: {:?}", report.errors);
                assert_eq!(report.commits, self.commits.len());
            }
            if !dev.revoked {
                continue;
            }
            for e in &tops {
                let grant = self.store.get(&layout::grant(e, &dev.slot)).await;
                assert!(grant.is_err(), "revoked device {i} has a grant of top epoch {e}");
            }
            let keys = dev.repo.keys();
            for (key, revoked_then) in &self.commits {
                if !revoked_then[i] {
                    continue;
                }
                let (device, seq) = layout::parse_device_seq(key.strip_prefix(layout::LOG_PREFIX).unwrap()).unwrap();
                let sealed = self.store.get(key).await.unwrap();
                assert!(
                    Commit::open(&keys, &device, seq, &sealed).is_err(),
                    "revoked device {i} opens {key}, written after its removal"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn rotations_never_lose_access_and_always_revoke(ops in proptest::collection::vec(op(), 1..10)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut w = world().await;
            for op in ops {
                match op {
                    Op::Push(d) => w.push(d).await,
                    Op::Reencrypt(d, killed) => w.reencrypt(d, killed).await,
                    Op::Rotate { actor, remove, killed_after, stale } => {
                        w.rotate(actor, remove, killed_after, stale).await
                    }
                }
                w.check_invariants().await;
            }
        });
    }
}
