//! Random trees pushed and pulled in-process on a `MemoryStore`: identical after
//! the first pull and after a round of random edits, deletes and renames, whether
//! a push is one commit or many small batches; and a push cut off between batches.

use coffer_engine::crypto::keyslot::KdfParams;
use coffer_engine::error::StoreError;
use coffer_engine::folder::Folder;
use coffer_engine::progress::NoProgress;
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, MemoryStore, ObjectMeta, ObjectStore};
use coffer_engine::sync::pull::pull;
use coffer_engine::sync::push::push;
use coffer_engine::sync::push::upload::{DEFAULT_BATCH_CHANGES, UploadOptions};
use coffer_tests::tree::{ODD_NAMES, assert_same_tree};
use proptest::prelude::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone)]
struct FileSpec {
    dir: usize,
    name: usize,
    content: Vec<u8>,
    mode: u32,
}

const DIRS: &[&str] = &["", "a", "a/b", "dir with space", "ünï/cödé", "a/b/c/d"];

fn file_spec() -> impl Strategy<Value = FileSpec> {
    (
        0..DIRS.len(),
        0..ODD_NAMES.len() + 8,
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..2000),
            (any::<u8>(), 0usize..600_000).prop_map(|(b, n)| vec![b; n]),
            proptest::collection::vec(any::<u8>(), 200_000..700_000),
        ],
        prop_oneof![Just(0o644u32), Just(0o755), Just(0o600), Just(0o444)],
    )
        .prop_map(|(dir, name, content, mode)| FileSpec {
            dir,
            name,
            content,
            mode,
        })
}

fn name(i: usize) -> String {
    ODD_NAMES
        .get(i)
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("file-{i}.txt"))
}

fn write_tree(root: &Path, files: &[FileSpec], empty_dirs: &[usize]) {
    for f in files {
        let dir = root.join(DIRS[f.dir]);
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name(f.name));
        if p.exists() {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        }
        fs::write(&p, &f.content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(f.mode)).unwrap();
    }
    for d in empty_dirs {
        fs::create_dir_all(root.join(DIRS[*d]).join("empty-dir")).unwrap();
    }
}

/// Pushes `a`, pulls into `b`. The folders stay open across calls, as a daemon
/// keeps them (reopening at once can find sled's lock still held by its I/O threads).
/// `batch` changes per commit.
fn sync_once(
    rt: &tokio::runtime::Runtime,
    repo: &Repository,
    a: &Folder,
    b: &Folder,
    batch: usize,
) {
    rt.block_on(async {
        let opts = UploadOptions {
            batch_changes: batch,
            ..UploadOptions::default()
        };
        let r = push(repo, a, &opts, &NoProgress).await.unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(
            r.commits >= r.changes.div_ceil(batch),
            "{} changes in {} commits of at most {batch}",
            r.changes,
            r.commits
        );
        let r = pull(repo, b, &NoProgress).await.unwrap();
        assert!(r.errors.is_empty() && r.kept_local.is_empty(), "{r:?}");
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_push_then_pull_identical(
        files in proptest::collection::vec(file_spec(), 1..25),
        empty in proptest::collection::vec(0..DIRS.len(), 0..3),
        edits in proptest::collection::vec(file_spec(), 0..6),
        deletes in proptest::collection::vec(any::<proptest::sample::Index>(), 0..4),
        rename in any::<bool>(),
        batch in prop_oneof![Just(DEFAULT_BATCH_CHANGES), 1usize..6],
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let store: DynStore = Arc::new(MemoryStore::new());
        let repo = rt.block_on(Repository::init(store, b"pw", KdfParams::MINIMUM, None)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        fs::create_dir_all(&src).unwrap();
        write_tree(&src, &files, &empty);
        let a = Folder::open(&src, repo.id(), "memory://", false).unwrap();
        let b = Folder::open(&dst, repo.id(), "memory://", true).unwrap();
        sync_once(&rt, &repo, &a, &b, batch);
        assert_same_tree(&src, &dst);

        write_tree(&src, &edits, &[]);
        let all = coffer_tests::tree::files(&src);
        for d in &deletes {
            let victim = d.get(&all);
            let _ = fs::remove_file(victim);
        }
        if rename && src.join("a").exists() {
            fs::rename(src.join("a"), src.join("renamed-a")).unwrap();
        }
        sync_once(&rt, &repo, &a, &b, batch);
        assert_same_tree(&src, &dst);
    }
}

/// A `MemoryStore` whose PUTs are refused from the `commits_allowed + 1`-th commit
/// on (with everything after it), as a store that becomes unreachable mid-push.
#[derive(Debug)]
struct CutStore {
    inner: MemoryStore,
    commits_left: std::sync::atomic::AtomicUsize,
    down: std::sync::atomic::AtomicBool,
}

impl CutStore {
    fn reopen(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.commits_left.store(usize::MAX, SeqCst);
        self.down.store(false, SeqCst);
    }
}

#[async_trait::async_trait]
impl ObjectStore for CutStore {
    async fn put(&self, key: &str, data: bytes::Bytes) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        let is_commit = key.starts_with("log/");
        if is_commit
            && self
                .commits_left
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            self.down.store(true, SeqCst);
        }
        if self.down.load(SeqCst) {
            return Err(StoreError::Denied {
                detail: format!("cut off: {key}"),
            });
        }
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, StoreError> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        r: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, StoreError> {
        self.inner.get_range(key, r).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        "cut".into()
    }
}

/// A push of 4 batches whose store goes away at the third batch's commit keeps
/// the two batches committed before; the rerun sends only the chunks the store
/// never acknowledged (the third batch's pack was acknowledged before its commit
/// failed), and the folder pulls back whole.
#[test]
fn a_push_cut_off_between_batches_resumes_without_resending() {
    const FILES: u64 = 40;
    const BATCH: usize = 10;
    const SIZE: u64 = 64 * 1024;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cut = Arc::new(CutStore {
        inner: MemoryStore::new(),
        commits_left: usize::MAX.into(),
        down: false.into(),
    });
    let store: DynStore = cut.clone();
    let repo = rt
        .block_on(Repository::init(store, b"pw", KdfParams::MINIMUM, None))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    for i in 0..FILES {
        coffer_tests::tree::random_file(&src.join(format!("f-{i:02}")), SIZE, 500 + i);
    }
    let a = Folder::open(&src, repo.id(), "memory://", false).unwrap();
    let b = Folder::open(&dst, repo.id(), "memory://", true).unwrap();
    let opts = UploadOptions {
        batch_changes: BATCH,
        ..UploadOptions::default()
    };
    let commits = || rt.block_on(cut.inner.list("log/")).unwrap().len();

    cut.commits_left
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let cut_off = rt.block_on(push(&repo, &a, &opts, &NoProgress));
    assert!(cut_off.is_err(), "{cut_off:?}");
    assert_eq!(commits(), 2);

    cut.reopen();
    let r = rt.block_on(push(&repo, &a, &opts, &NoProgress)).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    // Batches 1-3 were acknowledged (1-2 committed, 3's pack stored): only the
    // fourth batch's files are new chunks.
    assert_eq!(r.upload.new_chunks, BATCH as u64, "{r:?}");
    assert!(r.upload.new_chunk_bytes <= BATCH as u64 * SIZE, "{r:?}");
    assert!(commits() >= 4, "{}", commits());

    let p = rt.block_on(pull(&repo, &b, &NoProgress)).unwrap();
    assert!(p.errors.is_empty() && p.kept_local.is_empty(), "{p:?}");
    assert_same_tree(&src, &dst);
    let again = rt.block_on(push(&repo, &a, &opts, &NoProgress)).unwrap();
    assert_eq!(
        (again.changes, again.upload.new_chunks),
        (0, 0),
        "{again:?}"
    );
}
