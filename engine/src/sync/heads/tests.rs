//! Head markers: what a step that finds nothing new costs, that a grown log is
//! found through its marker, and that the full listing every [`RELIST_MS`]
//! still catches a lost marker and a rollback.

use super::*;
use crate::crypto::keyslot::KdfParams;
use crate::device::{Device, PendingChange, StatUpdate};
use crate::error::{Error, StoreError};
use crate::folder::Folder;
use crate::format::commit::Entry;
use crate::format::path::RepoPath;
use crate::format::version::VersionVector;
use crate::progress::NoProgress;
use crate::store::{DynStore, MemoryStore, ObjectMeta, ObjectStore};
use std::sync::{Arc, Mutex};

/// A store that records every request it answers, as `"LIST prefix"`,
/// `"GET key"`, `"PUT key"` or `"DELETE key"`.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryStore,
    seen: Mutex<Vec<String>>,
}

impl Counting {
    fn note(&self, what: &str, key: &str) {
        self.seen.lock().unwrap().push(format!("{what} {key}"));
    }

    /// The requests since the last call.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn put(&self, key: &str, data: Bytes) -> std::result::Result<(), StoreError> {
        self.note("PUT", key);
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> std::result::Result<Bytes, StoreError> {
        self.note("GET", key);
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> std::result::Result<Bytes, StoreError> {
        self.note("GET", key);
        self.inner.get_range(key, range).await
    }
    async fn list(&self, prefix: &str) -> std::result::Result<Vec<ObjectMeta>, StoreError> {
        self.note("LIST", prefix);
        self.inner.list(prefix).await
    }
    async fn list_after(
        &self,
        prefix: &str,
        after: &str,
    ) -> std::result::Result<Vec<ObjectMeta>, StoreError> {
        self.note("LIST", &format!("{prefix} after {after}"));
        self.inner.list_after(prefix, after).await
    }
    async fn list_dirs(&self, prefix: &str) -> std::result::Result<Vec<String>, StoreError> {
        self.note("LIST", &format!("{prefix} dirs"));
        self.inner.list_dirs(prefix).await
    }
    async fn delete(&self, key: &str) -> std::result::Result<(), StoreError> {
        self.note("DELETE", key);
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        "counting".into()
    }
}

async fn repo() -> (Arc<Counting>, Repository) {
    let store = Arc::new(Counting::default());
    let dyn_store: DynStore = store.clone();
    let repo = Repository::init(dyn_store, b"pw", KdfParams::MINIMUM, None)
        .await
        .unwrap();
    (store, repo)
}

fn device() -> Device {
    Device::new(DeviceId::random(), Journal::temporary().unwrap())
}

/// Commits a deletion of `name` as `dev`.
async fn commit(repo: &Repository, dev: &Device, name: &str) -> u64 {
    let change = PendingChange {
        path: RepoPath::new(name.as_bytes().to_vec()).unwrap(),
        base: VersionVector::new(),
        entry: Entry::Deleted,
        stat: StatUpdate::None,
    };
    dev.commit(repo, vec![change]).await.unwrap()
}

async fn refresh(repo: &Repository, dev: &Device) -> crate::error::Result<usize> {
    dev.refresh(repo, &NoProgress).await.map(|f| f.commits)
}

fn head_seq(dev: &Device, of: &Device) -> u64 {
    dev.journal().head(&of.id()).unwrap().map_or(0, |h| h.seq)
}

#[tokio::test]
async fn a_commit_leaves_one_marker_of_its_device() {
    let (store, repo) = repo().await;
    let a = device();
    for name in ["x", "y", "z"] {
        commit(&repo, &a, name).await;
    }
    let marked = list(&repo).await.unwrap();
    assert_eq!(marked.get(&a.id()), Some(&3));
    assert_eq!(
        store.inner.keys_under(layout::HEAD_PREFIX),
        [layout::head_marker(&a.id(), 3)]
    );
}

#[tokio::test]
async fn a_sync_step_that_finds_nothing_new_costs_two_lists() {
    let (store, repo) = repo().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"some bytes").unwrap();
    let folder = Folder::open(dir.path(), repo.id(), "memory:", true).unwrap();
    let opts = crate::UploadOptions::default();
    let step = || async {
        let pushed = crate::push(&repo, &folder, &opts, &NoProgress).await.unwrap();
        crate::pull_after_push(&repo, &folder, &pushed, &NoProgress)
            .await
            .unwrap();
        pushed.commits
    };
    assert_eq!(step().await, 1);
    assert_eq!(step().await, 0);
    store.take();
    assert_eq!(step().await, 0);
    assert_eq!(
        store.take(),
        ["LIST epochs/", "LIST head/"],
        "a step that finds nothing new"
    );
}

#[tokio::test]
async fn another_devices_commit_is_found_through_its_marker_alone() {
    let (store, repo) = repo().await;
    let (a, b) = (device(), device());
    for name in ["x", "y", "z"] {
        commit(&repo, &a, name).await;
    }
    assert_eq!(refresh(&repo, &b).await.unwrap(), 3);
    commit(&repo, &a, "w").await;
    store.take();
    assert_eq!(refresh(&repo, &b).await.unwrap(), 1);
    assert_eq!(head_seq(&b, &a), 4);
    let seen = store.take();
    // Listed from the commit b saw on (3: after 2), not the whole log.
    let from = format!(
        "LIST {} after {}",
        layout::device_log_prefix(&a.id()),
        layout::commit(&a.id(), 2)
    );
    assert!(seen.contains(&from), "{seen:?}");
    assert!(!seen.contains(&"LIST log/".to_string()), "{seen:?}");
}

#[tokio::test]
async fn a_lost_marker_is_made_up_for_by_the_next_full_listing() {
    let (store, repo) = repo().await;
    let (a, b) = (device(), device());
    commit(&repo, &a, "x").await;
    refresh(&repo, &b).await.unwrap();
    commit(&repo, &a, "y").await;
    store.inner.delete(&layout::head_marker(&a.id(), 2)).await.unwrap();
    assert_eq!(refresh(&repo, &b).await.unwrap(), 0, "no marker: not seen yet");
    forget_listing(b.journal()).unwrap();
    assert_eq!(refresh(&repo, &b).await.unwrap(), 1);
    assert_eq!(head_seq(&b, &a), 2);
}

#[tokio::test]
async fn a_rolled_back_log_is_caught_by_markers_or_the_full_listing() {
    let (store, repo) = repo().await;
    let (a, b) = (device(), device());
    for name in ["x", "y", "z"] {
        commit(&repo, &a, name).await;
    }
    refresh(&repo, &b).await.unwrap();
    store.inner.delete(&layout::commit(&a.id(), 3)).await.unwrap();
    // The marker still says 3: nothing to list between full listings.
    assert_eq!(refresh(&repo, &b).await.unwrap(), 0);
    // A marker above what was seen makes the log listed: the rollback shows.
    let planted = layout::head_marker(&a.id(), 5);
    store.inner.put(&planted, Bytes::new()).await.unwrap();
    // (Listed from commit 3 on: the highest found below it is not known.)
    let rolled_back = |r| matches!(r, Err(Error::Rollback { seen: 3, .. }));
    assert!(rolled_back(refresh(&repo, &b).await));
    // Without it, the next full listing shows it.
    store.inner.delete(&planted).await.unwrap();
    forget_listing(b.journal()).unwrap();
    assert!(rolled_back(refresh(&repo, &b).await));
}

#[test]
fn markers_suffice_only_after_a_recent_full_listing() {
    let journal = Journal::temporary().unwrap();
    let t = 1_700_000_000_000;
    assert!(!suffice(&journal, t).unwrap(), "never listed");
    listed_all(&journal, t).unwrap();
    assert!(!suffice(&journal, t).unwrap(), "no log seen yet");
    let head = Head {
        seq: 1,
        hash: crate::format::id::CommitHash([7; 32]),
    };
    journal.put_head(&DeviceId::random(), &head).unwrap();
    assert!(suffice(&journal, t + RELIST_MS - 1).unwrap());
    assert!(!suffice(&journal, t + RELIST_MS).unwrap(), "too long ago");
    assert!(!suffice(&journal, t - 1).unwrap(), "the clock went back");
}

#[tokio::test]
async fn full_listings_take_the_way_with_fewer_requests() {
    use crate::sync::pull::logs::list_logs;
    let (store, repo) = repo().await;
    let (a, b, c) = (DeviceId::random(), DeviceId::random(), DeviceId::random());
    for (device, commits) in [(a, 1_500), (b, 600), (c, 3)] {
        for seq in 1..=commits {
            let key = layout::commit(&device, seq);
            store.inner.put(&key, Bytes::new()).await.unwrap();
        }
    }
    let head = |seq| Head {
        seq,
        hash: crate::format::id::CommitHash([0; 32]),
    };
    // 2,100 commits seen of 2 devices: 3 pages of `log/` against 1 + 3 requests.
    let known = BTreeMap::from([(a, head(1_500)), (b, head(600))]);
    store.take();
    let logs = list_logs(&repo, &known).await.unwrap();
    let mut seen = store.take();
    seen.sort();
    let from = |d: &DeviceId, seq| {
        format!(
            "LIST {} after {}",
            layout::device_log_prefix(d),
            layout::commit(d, seq)
        )
    };
    let mut expected = vec![
        "LIST log/ dirs".to_string(),
        from(&a, 1_499),
        from(&b, 599),
        format!(
            "LIST {} after {}",
            layout::device_log_prefix(&c),
            layout::device_log_prefix(&c)
        ),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    let seqs = |d| logs[&d].keys().copied().collect::<Vec<u64>>();
    assert_eq!(seqs(a), [1_500], "listed from the commit seen on");
    assert_eq!(seqs(b), [600]);
    assert_eq!(seqs(c), [1, 2, 3], "a device not seen yet is listed whole");
    // Few commits seen: one listing of `log/` is the cheaper way.
    let known = BTreeMap::from([(a, head(5)), (b, head(5))]);
    let logs = list_logs(&repo, &known).await.unwrap();
    assert_eq!(store.take(), ["LIST log/"]);
    assert_eq!(logs[&a].len(), 1_500);
    // A device seen whose directory is gone is missing from the listing (the
    // caller reports the rollback), however it was listed.
    let gone = DeviceId::random();
    let known = BTreeMap::from([(a, head(1_500)), (gone, head(2_000))]);
    let logs = list_logs(&repo, &known).await.unwrap();
    assert!(!logs.contains_key(&gone));
    assert!(store.take().contains(&"LIST log/ dirs".to_string()));
}
