//! Random trees pushed and pulled in-process on a `MemoryStore`: identical after
//! the first pull and after a round of random edits, deletes and renames, whether
//! a push is one commit or many small batches.

use coffer_engine::apply::pull;
use coffer_engine::crypto::keyslot::KdfParams;
use coffer_engine::folder::Folder;
use coffer_engine::progress::NoProgress;
use coffer_engine::push::push;
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, MemoryStore};
use coffer_engine::upload::{DEFAULT_BATCH_CHANGES, UploadOptions};
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
