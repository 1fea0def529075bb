//! Garbage collection (DESIGN.md §11) on a `MemoryStore`: orphans of killed
//! pushes are marked, then swept after the grace; a commit naming a marked
//! pack resurrects it; a writer drops marked packs at the start of a step and
//! fails a step whose pack is past its grace; prune refuses incomplete logs.

use async_trait::async_trait;
use bytes::Bytes;
use coffer_engine::check::check;
use coffer_engine::crypto::keyslot::KdfParams;
use coffer_engine::error::{Error, StoreError};
use coffer_engine::folder::Folder;
use coffer_engine::gc::{self, PruneOptions, PruneReport, marks};
use coffer_engine::progress::NoProgress;
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, MemoryStore, ObjectMeta, ObjectStore, layout};
use coffer_engine::sync::pull::pull;
use coffer_engine::sync::push::push;
use coffer_engine::sync::push::upload::UploadOptions;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// What the store does to the next writes (tests only).
pub const NORMAL: u8 = 0;
/// Commit PUTs fail: a push dies between its packs and its commit.
pub const FAIL_COMMITS: u8 = 1;
/// After the next pack PUT, every unreferenced pack is marked, within its grace.
pub const MARK_AFTER_PACK: u8 = 2;
/// After the next pack PUT, it is marked with a grace already over.
pub const EXPIRE_AFTER_PACK: u8 = 3;

/// A `MemoryStore` that kills commits or marks packs behind the writer's back.
#[derive(Debug, Default)]
pub struct Meddler {
    pub inner: MemoryStore,
    pub mode: AtomicU8,
}

#[async_trait]
impl ObjectStore for Meddler {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let mode = self.mode.load(Ordering::SeqCst);
        if mode == FAIL_COMMITS && key.starts_with(layout::LOG_PREFIX) {
            return Err(StoreError::Denied {
                detail: "killed before the commit".into(),
            });
        }
        self.inner.put(key, data).await?;
        if let Some(pack) = layout::parse_pack(key).filter(|_| mode >= MARK_AFTER_PACK) {
            self.mode.store(NORMAL, Ordering::SeqCst);
            let now = coffer_engine::now_millis();
            let (at, grace) = if mode == EXPIRE_AFTER_PACK {
                (now - 1000, 0)
            } else {
                (now, 3_600_000)
            };
            marks::write(&self.inner, vec![(pack, 1)], at, grace, 0)
                .await
                .map_err(|e| StoreError::Rejected {
                    detail: e.to_string(),
                })?;
        }
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.inner.get_range(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        "memory://meddler".into()
    }
}

pub struct World {
    pub store: Arc<Meddler>,
    pub repo: Repository,
    pub tmp: tempfile::TempDir,
}

impl World {
    pub async fn new() -> World {
        let store = Arc::new(Meddler::default());
        let dyn_store: DynStore = store.clone();
        let repo = Repository::init(dyn_store, b"pw", KdfParams::MINIMUM, None)
            .await
            .unwrap();
        World {
            store,
            repo,
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub fn folder(&self, name: &str) -> Folder {
        Folder::open(
            &self.tmp.path().join(name),
            self.repo.id(),
            "memory://",
            true,
        )
        .unwrap()
    }

    pub async fn packs(&self) -> usize {
        self.store
            .inner
            .list(layout::DATA_PREFIX)
            .await
            .unwrap()
            .len()
    }

    pub async fn prune(&self, now_ms: u64) -> PruneReport {
        let opts = PruneOptions {
            grace_ms: 3_600_000,
            safety_ms: gc::SAFETY_MS,
            dry_run: false,
            now_ms: Some(now_ms),
        };
        gc::prune(&self.repo, &opts, &NoProgress).await.unwrap()
    }

    pub async fn assert_clean(&self) {
        let r = check(&self.repo, true, None, &NoProgress).await.unwrap();
        assert!(r.is_ok(), "{:?}", r.errors);
    }
}

/// Far enough after any mark of this test for a sweep.
fn later() -> u64 {
    coffer_engine::now_millis() + 3_600_000 + gc::SAFETY_MS + 1
}

fn write(f: &Folder, name: &str, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    std::fs::write(f.root().join(name), data).unwrap();
}

#[tokio::test]
async fn gc_orphans_of_a_killed_push_are_marked_then_swept_and_the_writer_uploads_again() {
    let w = World::new().await;
    let a = w.folder("a");
    write(&a, "x", 300_000, 1);
    w.store.mode.store(FAIL_COMMITS, Ordering::SeqCst);
    assert!(
        push(&w.repo, &a, &UploadOptions::default(), &NoProgress)
            .await
            .is_err()
    );
    w.store.mode.store(NORMAL, Ordering::SeqCst);
    assert_eq!(w.packs().await, 1);

    let first = w.prune(coffer_engine::now_millis()).await;
    assert_eq!((first.packs_marked, first.packs_deleted), (1, 0));
    assert_eq!(first.reclaimable_bytes, first.bytes_marked);
    let swept = w.prune(later()).await;
    assert_eq!(
        (swept.packs_deleted, swept.bytes_deleted),
        (1, first.bytes_marked)
    );
    assert_eq!(w.packs().await, 0);
    assert!(
        w.store
            .inner
            .list(layout::GC_PREFIX)
            .await
            .unwrap()
            .is_empty()
    );

    // The writer finds its pack gone, drops it and its outbox commit, and sends the file again.
    push(&w.repo, &a, &UploadOptions::default(), &NoProgress)
        .await
        .unwrap();
    let b = w.folder("b");
    pull(&w.repo, &b, &NoProgress).await.unwrap();
    assert_eq!(
        std::fs::read(b.root().join("x")).unwrap(),
        std::fs::read(a.root().join("x")).unwrap()
    );
    w.assert_clean().await;
    let after = w.prune(later()).await;
    assert_eq!((after.packs_marked, after.packs_deleted), (0, 0));
}

#[tokio::test]
async fn gc_a_pack_marked_during_its_push_is_resurrected_by_the_commit() {
    let w = World::new().await;
    let a = w.folder("a");
    write(&a, "x", 200_000, 2);
    w.store.mode.store(MARK_AFTER_PACK, Ordering::SeqCst);
    push(&w.repo, &a, &UploadOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        w.store.inner.list(layout::GC_PREFIX).await.unwrap().len(),
        1
    );
    let r = w.prune(later()).await;
    assert_eq!(
        (r.packs_resurrected, r.packs_deleted, r.marks_deleted),
        (1, 0, 1)
    );
    assert_eq!(w.packs().await, 1);
    w.assert_clean().await;
}

#[tokio::test]
async fn gc_a_pack_past_its_grace_fails_the_step_and_the_rerun_uploads_again() {
    let w = World::new().await;
    let a = w.folder("a");
    write(&a, "x", 200_000, 3);
    w.store.mode.store(EXPIRE_AFTER_PACK, Ordering::SeqCst);
    let e = push(&w.repo, &a, &UploadOptions::default(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PackExpired { .. }), "{e}");
    assert!(a.journal().uncommitted_packs().unwrap().is_empty());
    // A sweep now may delete the expired pack: nothing names it.
    let r = w.prune(later()).await;
    assert_eq!(r.packs_deleted, 1);
    push(&w.repo, &a, &UploadOptions::default(), &NoProgress)
        .await
        .unwrap();
    w.assert_clean().await;
    let b = w.folder("b");
    pull(&w.repo, &b, &NoProgress).await.unwrap();
    assert_eq!(
        std::fs::read(b.root().join("x")).unwrap(),
        std::fs::read(a.root().join("x")).unwrap()
    );
}

#[tokio::test]
async fn gc_a_dry_run_changes_nothing_and_a_gap_in_a_log_deletes_nothing() {
    let w = World::new().await;
    let a = w.folder("a");
    for seed in 0..2 {
        write(&a, "x", 150_000, seed);
        push(&w.repo, &a, &UploadOptions::default(), &NoProgress)
            .await
            .unwrap();
    }
    write(&a, "y", 150_000, 9);
    w.store.mode.store(FAIL_COMMITS, Ordering::SeqCst);
    assert!(
        push(&w.repo, &a, &UploadOptions::default(), &NoProgress)
            .await
            .is_err()
    );
    w.store.mode.store(NORMAL, Ordering::SeqCst);
    let dry = gc::prune(
        &w.repo,
        &PruneOptions {
            dry_run: true,
            ..PruneOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(
        (dry.packs_marked, dry.marks_written, dry.packs_referenced),
        (1, 0, 2)
    );
    assert!(
        w.store
            .inner
            .list(layout::GC_PREFIX)
            .await
            .unwrap()
            .is_empty()
    );

    let first = w.store.inner.list(layout::LOG_PREFIX).await.unwrap()[0]
        .key
        .clone();
    w.store.inner.delete(&first).await.unwrap();
    let e = gc::prune(&w.repo, &PruneOptions::default(), &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PruneRefused(_)), "{e}");
    assert!(
        w.store
            .inner
            .list(layout::GC_PREFIX)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(w.packs().await, 3);
}
