//! Drops on a memory store: a partner's files arrive byte-identical; a
//! killed push resumes at every PUT; forged, moved, replayed, swapped and
//! truncated objects are reported by name and nothing they carry is written;
//! a rollback is caught; writes after `remove` or after the expiry are
//! ignored and reported.

use super::*;
use crate::KdfParams;
use crate::error::StoreError;
use crate::grants::{ManualClock, WallClock};
use crate::store::{DynStore, MemoryStore, ObjectMeta, ObjectStore};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Owner {
    store: DynStore,
    repo: Repository,
    home: tempfile::TempDir,
}

async fn owner() -> Owner {
    let store: DynStore = Arc::new(MemoryStore::new());
    let repo = Repository::init(store.clone(), b"owner", KdfParams::MINIMUM, None).await.unwrap();
    Owner { store, repo, home: tempfile::tempdir().unwrap() }
}

impl Owner {
    async fn drop(&self, name: &str) -> DropToken {
        create_drop(&self.repo, name, None, "memory://").await.unwrap()
    }

    fn seen(&self, name: &str) -> std::path::PathBuf {
        self.home.path().join(format!("{name}.seen"))
    }

    async fn pull(&self, name: &str, dir: &Path) -> DropPullReport {
        let info = find_drop(&self.repo, name).await.unwrap();
        pull_drop(&self.repo, &info, dir, Some(&self.seen(name))).await.unwrap()
    }
}

/// A partner's folder: a multi-chunk random file, a nested one, an empty one.
fn tree(dir: &Path, seed: u8) {
    let mut big = vec![0u8; 3 << 20];
    let mut x = u64::from(seed) + 1;
    for b in &mut big {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *b = (x >> 33) as u8;
    }
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    std::fs::write(dir.join("sub/deeper/note.txt"), format!("partner {seed}")).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
}

fn opts(name: &str) -> DropPushOptions {
    DropPushOptions { device_name: name.into(), pack_target: 1 << 20, uploads: 2 }
}

async fn push(store: &DynStore, token: &DropToken, dir: &Path, state: &Path) -> Result<DropPushReport> {
    push_drop(store, token, dir, state, &opts("laptop")).await
}

fn same(src: &Path, dst: &Path) {
    for rel in ["big.bin", "sub/deeper/note.txt", "empty"] {
        assert_eq!(std::fs::read(src.join(rel)).unwrap(), std::fs::read(dst.join(rel)).unwrap(), "{rel}");
    }
}

#[tokio::test]
async fn a_partner_drop_arrives_identical_and_unchanged_files_are_not_sent_again() {
    let o = owner().await;
    let token = o.drop("acme").await;
    let (src, state, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tree(src.path(), 1);
    let r = push(&o.store, &token, src.path(), state.path()).await.unwrap();
    assert_eq!((r.files, r.commits), (3, 1));
    assert!(r.packs >= 3, "{r:?}");
    let again = push(&o.store, &token, src.path(), state.path()).await.unwrap();
    assert_eq!((again.files, again.commits, again.uploaded), (0, 0, 0));
    let p = o.pull("acme", dst.path()).await;
    assert!(p.scan.problems.is_empty(), "{:?}", p.scan.problems);
    assert_eq!(p.written, 3);
    same(src.path(), &dst.path().join("laptop"));
    std::fs::write(src.path().join("sub/deeper/note.txt"), "edited").unwrap();
    push(&o.store, &token, src.path(), state.path()).await.unwrap();
    let p = o.pull("acme", dst.path()).await;
    assert_eq!((p.written, p.unchanged), (1, 2));
    same(src.path(), &dst.path().join("laptop"));
    // The partner only ever wrote under its drop's prefix.
    let prefix = layout::drop_prefix(&token.drop);
    for m in o.store.list(layout::DROP_PREFIX).await.unwrap() {
        assert!(m.key.starts_with(&prefix), "{}", m.key);
    }
}

/// A store that fails every PUT after the first `ok` ones (a killed push).
#[derive(Debug)]
struct Dies {
    inner: DynStore,
    ok: usize,
    puts: AtomicUsize,
}

#[async_trait]
impl ObjectStore for Dies {
    async fn put(&self, key: &str, data: Bytes) -> std::result::Result<(), StoreError> {
        if self.puts.fetch_add(1, Ordering::SeqCst) >= self.ok {
            return Err(StoreError::Denied { detail: "killed".into() });
        }
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> std::result::Result<Bytes, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, r: std::ops::Range<u64>) -> std::result::Result<Bytes, StoreError> {
        self.inner.get_range(key, r).await
    }
    async fn list(&self, prefix: &str) -> std::result::Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> std::result::Result<(), StoreError> {
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        "dies".into()
    }
}

#[tokio::test]
async fn a_push_killed_at_any_put_resumes_and_the_owner_gets_everything() {
    let src = tempfile::tempdir().unwrap();
    tree(src.path(), 2);
    // Dies after 0, 1, 2, ... PUTs, until a push needs no more than that.
    let mut resumed = 0;
    for ok in 0.. {
        let o = owner().await;
        let token = o.drop("acme").await;
        let (state, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dies: DynStore = Arc::new(Dies { inner: o.store.clone(), ok, puts: AtomicUsize::new(0) });
        if push(&dies, &token, src.path(), state.path()).await.is_ok() {
            assert!(ok >= 4, "three packs and a commit at least: {ok}");
            assert_eq!(resumed, 1, "only the push whose commit PUT failed resumes one");
            break;
        }
        let again = push(&o.store, &token, src.path(), state.path()).await.unwrap();
        resumed += usize::from(again.resumed);
        let p = o.pull("acme", dst.path()).await;
        assert!(p.scan.problems.is_empty(), "after {ok}: {:?}", p.scan.problems);
        same(src.path(), &dst.path().join("laptop"));
    }
}

/// Pushes `seed`'s tree into a new drop `name`; returns its token.
async fn pushed(o: &Owner, name: &str, seed: u8) -> DropToken {
    let token = o.drop(name).await;
    let (src, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    tree(src.path(), seed);
    push(&o.store, &token, src.path(), state.path()).await.unwrap();
    std::fs::write(src.path().join("second.txt"), "second commit").unwrap();
    push(&o.store, &token, src.path(), state.path()).await.unwrap();
    token
}

async fn keys(store: &DynStore, prefix: &str) -> Vec<String> {
    store.list(prefix).await.unwrap().into_iter().map(|m| m.key).collect()
}

async fn commit_keys(o: &Owner, t: &DropToken) -> Vec<String> {
    keys(&o.store, &format!("{}log/", layout::drop_prefix(&t.drop))).await
}

#[tokio::test]
async fn forged_moved_replayed_and_truncated_commits_are_reported_and_nothing_is_written() {
    let o = owner().await;
    let a = pushed(&o, "a", 3).await;
    let b = pushed(&o, "b", 4).await;
    let (a_log, b_log) = (commit_keys(&o, &a).await, commit_keys(&o, &b).await);
    assert_eq!((a_log.len(), b_log.len()), (2, 2));
    // Planted: B's first commit where A's device would write its seq 2.
    let planted = format!("{}0000000000000002", &a_log[0][..a_log[0].len() - 16]);
    o.store.put(&planted, o.store.get(&b_log[0]).await.unwrap()).await.unwrap();
    // Replayed: B's first commit again as its seq 2.
    let replayed = format!("{}0000000000000002", &b_log[0][..b_log[0].len() - 16]);
    o.store.put(&replayed, o.store.get(&b_log[0]).await.unwrap()).await.unwrap();
    for (name, bad) in [("a", &planted), ("b", &replayed)] {
        let dst = tempfile::tempdir().unwrap();
        let p = o.pull(name, dst.path()).await;
        let hit: Vec<_> = p.scan.errors().filter(|e| e.object == *bad).collect();
        assert_eq!(hit.len(), 1, "{name}: {:?}", p.scan.problems);
        assert!(hit[0].reason.contains("forged, moved, replayed"), "{:?}", hit[0]);
        assert_eq!(p.written, 4, "the two good commits' files only");
    }
    // Truncated: A's second commit cut short; its file is not written.
    let cut = o.store.get(&a_log[1]).await.unwrap();
    o.store.put(&a_log[1], cut.slice(..cut.len() - 5)).await.unwrap();
    let dst = tempfile::tempdir().unwrap();
    let p = o.pull("a", dst.path()).await;
    assert!(p.scan.errors().any(|e| e.object == a_log[1]), "{:?}", p.scan.problems);
    assert!(!dst.path().join("laptop/second.txt").exists());
    assert!(dst.path().join("laptop/big.bin").exists());
}

#[tokio::test]
async fn swapped_and_damaged_packs_fail_their_files_only() {
    let o = owner().await;
    let a = pushed(&o, "a", 5).await;
    let b = pushed(&o, "b", 6).await;
    let data = |t: &DropToken| format!("{}data/", layout::drop_prefix(&t.drop));
    let (a_packs, b_packs) = (keys(&o.store, &data(&a)).await, keys(&o.store, &data(&b)).await);
    // Every pack of A replaced by one of B's (same sizes do not matter).
    for k in &a_packs {
        o.store.put(k, o.store.get(&b_packs[0]).await.unwrap()).await.unwrap();
    }
    let dst = tempfile::tempdir().unwrap();
    let p = o.pull("a", dst.path()).await;
    assert_eq!(p.written, 1, "only the empty file needs no pack: {:?}", p.scan.problems);
    assert_eq!(p.failed, 3);
    assert!(p.scan.errors().any(|e| e.object == "laptop/big.bin"));
    assert!(!dst.path().join("laptop/big.bin").exists());
    assert!(std::fs::read_dir(dst.path().join(".coffer-drop-tmp")).is_err(), "temp files removed");
}

#[tokio::test]
async fn a_log_rolled_back_or_replaced_since_the_last_look_is_reported() {
    let o = owner().await;
    let a = pushed(&o, "a", 7).await;
    let log = commit_keys(&o, &a).await;
    o.pull("a", tempfile::tempdir().unwrap().path()).await;
    let last = o.store.get(&log[1]).await.unwrap();
    o.store.delete(&log[1]).await.unwrap();
    let p = o.pull("a", tempfile::tempdir().unwrap().path()).await;
    assert!(p.scan.errors().any(|e| e.reason.contains("rolled back")), "{:?}", p.scan.problems);
    o.store.put(&log[1], last).await.unwrap();
    let p = o.pull("a", tempfile::tempdir().unwrap().path()).await;
    assert!(p.scan.problems.is_empty(), "{:?}", p.scan.problems);
}

#[tokio::test]
async fn writes_after_remove_or_expiry_are_ignored_and_reported() {
    let mut o = owner().await;
    let clock = Arc::new(ManualClock::at(crate::format::version::now_millis()));
    o.repo.set_clock(clock.clone());
    let now = clock.now_ms();
    let removed = o.drop("removed").await;
    let expiring = create_drop(&o.repo, "expiring", Some(now + 3_600_000), "memory://").await.unwrap();
    let mut states = Vec::new();
    for t in [&removed, &expiring] {
        let (src, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(src.path().join("before.txt"), "before").unwrap();
        push(&o.store, t, src.path(), state.path()).await.unwrap();
        states.push((src, state));
    }
    let info = find_drop(&o.repo, "removed").await.unwrap();
    remove_drop(&o.repo, &info, false).await.unwrap();
    clock.advance(3_600_000);
    let info = find_drop(&o.repo, "expiring").await.unwrap();
    scan_drop(&o.repo, &info, None).await.unwrap(); // the first look after the expiry closes it
    for (t, (src, state)) in [&removed, &expiring].into_iter().zip(&states) {
        std::fs::write(src.path().join("after.txt"), "after").unwrap();
        push(&o.store, t, src.path(), state.path()).await.unwrap();
        let dst = tempfile::tempdir().unwrap();
        let p = o.pull(&t.name, dst.path()).await;
        assert_eq!(p.scan.errors().count(), 0, "{:?}", p.scan.problems);
        let late: Vec<_> = p.scan.problems.iter().filter(|p| p.late).collect();
        assert_eq!(late.len(), 1, "{:?}", p.scan.problems);
        assert!(late[0].reason.contains("after the drop"), "{:?}", late[0]);
        assert!(dst.path().join("laptop/before.txt").exists());
        assert!(!dst.path().join("laptop/after.txt").exists());
    }
    let list = list_drops(&o.repo).await.unwrap();
    let reasons: Vec<_> = list.iter().map(|d| d.closure.as_ref().map(|c| c.reason)).collect();
    assert_eq!(reasons, [Some(CloseReason::Expired), Some(CloseReason::Removed)]);
}

#[tokio::test]
async fn a_purged_drop_forgets_its_keys_and_reports_later_writes() {
    let o = owner().await;
    let a = pushed(&o, "a", 8).await;
    let info = find_drop(&o.repo, "a").await.unwrap();
    let r = remove_drop(&o.repo, &info, true).await.unwrap();
    assert!(r.deleted >= 4, "{r:?}");
    assert!(keys(&o.store, &layout::drop_prefix(&a.drop)).await.is_empty());
    assert!(o.store.get(&layout::drop_record(&a.drop)).await.is_err());
    let (src, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    std::fs::write(src.path().join("late.txt"), "late").unwrap();
    push(&o.store, &a, src.path(), state.path()).await.unwrap();
    let info = find_drop(&o.repo, "a").await.unwrap();
    assert!(info.record.is_none());
    let scan = scan_drop(&o.repo, &info, None).await.unwrap();
    assert!(scan.problems.iter().all(|p| p.late) && !scan.problems.is_empty(), "{:?}", scan.problems);
}

#[tokio::test]
async fn a_token_holds_no_key_of_the_repository_and_names_are_checked() {
    let o = owner().await;
    let t = o.drop("acme").await;
    let json = t.to_json();
    let (chain, _) = o.repo.key_chain();
    for (_, key) in chain.iter() {
        assert!(!json.contains(&hex::encode(key.as_bytes())));
    }
    assert!(!json.contains("AGE-SECRET-KEY"));
    assert!(create_drop(&o.repo, "acme", None, "memory://").await.is_err(), "names are unique");
    assert!(create_drop(&o.repo, "../up", None, "memory://").await.is_err());
    let (src, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut bad = opts("../x");
    bad.device_name = "../x".into();
    assert!(push_drop(&o.store, &t, src.path(), state.path(), &bad).await.is_err());
}
