//! Model-based test of convergence, in-process on a `MemoryStore`: 3–5 devices make
//! random creates, edits, deletes and renames in their folders and sync in random
//! orders. After a final round of syncs:
//! - every folder holds the same tree;
//! - every write survives (as the file or as a conflict copy) unless a device that
//!   had it in its folder later overwrote, deleted or renamed over it;
//! - when every operation is causally after the previous one (each device syncs
//!   before and after its operation), no conflict copy ever appears.

use coffer_engine::crypto::keyslot::KdfParams;
use coffer_engine::folder::Folder;
use coffer_engine::progress::NoProgress;
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, MemoryStore};
use coffer_engine::sync::pull::pull;
use coffer_engine::sync::push::push;
use coffer_engine::sync::push::upload::UploadOptions;
use coffer_tests::tree::{assert_same_tree, files};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Few names, so devices collide on them often.
const NAMES: &[&str] = &["a.txt", "b.txt", "d/c.txt", "d/e/f.txt"];

#[derive(Debug, Clone)]
enum Op {
    /// Write (create or overwrite) `NAMES[name]` on `dev`.
    Write { dev: usize, name: usize },
    /// Delete the `pick`-th file of `dev`'s folder.
    Delete {
        dev: usize,
        pick: proptest::sample::Index,
    },
    /// Rename the `pick`-th file of `dev`'s folder to `NAMES[to]`.
    Rename {
        dev: usize,
        pick: proptest::sample::Index,
        to: usize,
    },
    /// Push, then pull.
    Sync { dev: usize },
}

fn op(devices: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..devices, 0..NAMES.len()).prop_map(|(dev, name)| Op::Write { dev, name }),
        1 => (0..devices, any::<proptest::sample::Index>())
            .prop_map(|(dev, pick)| Op::Delete { dev, pick }),
        1 => (0..devices, any::<proptest::sample::Index>(), 0..NAMES.len())
            .prop_map(|(dev, pick, to)| Op::Rename { dev, pick, to }),
        3 => (0..devices).prop_map(|dev| Op::Sync { dev }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Op>, bool)> {
    (3usize..=5).prop_flat_map(|devices| {
        (
            Just(devices),
            proptest::collection::vec(op(devices), 10..40),
            any::<bool>(),
        )
    })
}

/// The world: a repository and one folder per device, plus what the model knows.
struct World {
    rt: tokio::runtime::Runtime,
    repo: Repository,
    _tmp: tempfile::TempDir,
    dirs: Vec<PathBuf>,
    /// Each device's folder, open for the whole run as a daemon would keep it
    /// (reopening at once can find sled's lock still held by its I/O threads).
    folders: Vec<Folder>,
    /// Every content ever written.
    written: BTreeSet<String>,
    /// Contents a device had in its folder and then overwrote, deleted or replaced.
    discarded: BTreeSet<String>,
    next: usize,
}

impl World {
    fn new(devices: usize) -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store: DynStore = Arc::new(MemoryStore::new());
        let repo = rt
            .block_on(Repository::init(store, b"pw", KdfParams::MINIMUM, None))
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dirs: Vec<PathBuf> = (0..devices)
            .map(|d| tmp.path().join(format!("dev{d}")))
            .collect();
        let folders = dirs
            .iter()
            .map(|d| Folder::open(d, repo.id(), "memory://", true).unwrap())
            .collect();
        World {
            rt,
            repo,
            _tmp: tmp,
            dirs,
            folders,
            written: BTreeSet::new(),
            discarded: BTreeSet::new(),
            next: 0,
        }
    }

    fn sync(&self, dev: usize) {
        let folder = &self.folders[dev];
        self.rt.block_on(async {
            let r = push(&self.repo, folder, &UploadOptions::default(), &NoProgress)
                .await
                .unwrap();
            assert!(r.problems.is_empty(), "{:?}", r.problems);
            let r = pull(&self.repo, folder, &NoProgress).await.unwrap();
            assert!(r.errors.is_empty(), "{r:?}");
        });
    }

    /// The files of `dev`'s folder (not `.coffer/`), sorted.
    fn files_of(&self, dev: usize) -> Vec<PathBuf> {
        let root = &self.dirs[dev];
        let mut out: Vec<PathBuf> = files(root)
            .into_iter()
            .filter(|p| !p.strip_prefix(root).unwrap().starts_with(".coffer"))
            .collect();
        out.sort();
        out
    }

    /// Notes that the content at `path` (if any) is being thrown away by its device.
    fn discard(&mut self, path: &Path) {
        if let Ok(old) = fs::read_to_string(path) {
            self.discarded.insert(old);
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write { dev, name } => {
                let path = self.dirs[dev].join(NAMES[name]);
                self.discard(&path);
                self.next += 1;
                let content = format!("write {} on device {dev}\n", self.next);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, &content).unwrap();
                self.written.insert(content);
            }
            Op::Delete { dev, pick } => {
                let all = self.files_of(dev);
                if !all.is_empty() {
                    let victim = pick.get(&all).clone();
                    self.discard(&victim);
                    fs::remove_file(victim).unwrap();
                }
            }
            Op::Rename { dev, pick, to } => {
                let all = self.files_of(dev);
                let target = self.dirs[dev].join(NAMES[to]);
                if !all.is_empty() {
                    let from = pick.get(&all).clone();
                    if from != target {
                        self.discard(&target);
                        fs::create_dir_all(target.parent().unwrap()).unwrap();
                        fs::rename(from, target).unwrap();
                    }
                }
            }
            Op::Sync { dev } => self.sync(dev),
        }
    }

    fn contents(&self, dev: usize) -> BTreeSet<String> {
        self.files_of(dev)
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect()
    }

    fn conflict_copies(&self, dev: usize) -> Vec<PathBuf> {
        self.files_of(dev)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".sync-conflict-"))
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn devices_converge_and_no_write_is_lost((devices, ops, causal) in scenario()) {
        let mut w = World::new(devices);
        for op in &ops {
            let dev = match op {
                Op::Write { dev, .. } | Op::Delete { dev, .. } | Op::Rename { dev, .. } => Some(*dev),
                Op::Sync { .. } => None,
            };
            if causal && let Some(d) = dev {
                w.sync(d);
            }
            w.apply(op);
            if causal && let Some(d) = dev {
                w.sync(d);
            }
        }
        // Final rounds: conflict copies written by one round are pushed by the next.
        for _ in 0..3 {
            for d in 0..devices {
                w.sync(d);
            }
        }
        for d in 1..devices {
            assert_same_tree(&w.dirs[0], &w.dirs[d]);
        }
        let present = w.contents(0);
        for content in &w.written {
            prop_assert!(
                present.contains(content) || w.discarded.contains(content),
                "lost: {content:?} (present: {present:?})"
            );
        }
        if causal {
            prop_assert!(w.conflict_copies(0).is_empty(), "{:?}", w.conflict_copies(0));
        }
    }
}

/// Two devices give one symlink different targets at once. A third device gets
/// the winner and one conflict copy, and the copy stays as written across pulls
/// (it is a new local symlink, not a synced one the merged state lacks) until a
/// push makes it real; then every folder holds both targets.
#[test]
fn a_symlink_conflict_copy_stays_until_pushed() {
    let w = World::new(3);
    let link = |dev: usize, target: &str| {
        let p = w.dirs[dev].join("l");
        let _ = fs::remove_file(&p);
        std::os::unix::fs::symlink(target, &p).unwrap();
    };
    let pull_on = |dev: usize| {
        let r =
            w.rt.block_on(pull(&w.repo, &w.folders[dev], &NoProgress))
                .unwrap();
        assert!(r.errors.is_empty() && r.kept_local.is_empty(), "{r:?}");
        r
    };
    link(0, "x");
    for d in 0..3 {
        w.sync(d);
    }
    link(0, "y");
    link(1, "z");
    w.sync(0);
    w.sync(1);

    let first = pull_on(2);
    assert_eq!(
        (first.files_written, first.conflict_copies),
        (2, 1),
        "{first:?}"
    );
    for _ in 0..2 {
        let again = pull_on(2);
        assert_eq!(
            (again.files_written, again.deleted, again.conflict_copies),
            (0, 0, 0),
            "{again:?}"
        );
    }

    for _ in 0..2 {
        for d in 0..3 {
            w.sync(d);
        }
    }
    for d in 1..3 {
        assert_same_tree(&w.dirs[0], &w.dirs[d]);
    }
    let mut targets: Vec<String> = fs::read_dir(&w.dirs[0])
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(".coffer"))
        .map(|p| fs::read_link(p).unwrap().display().to_string())
        .collect();
    targets.sort();
    assert_eq!(targets, ["y", "z"]);
}
