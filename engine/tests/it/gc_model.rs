//! Model test of garbage collection (DESIGN.md §11), in-process on a
//! `MemoryStore`: 3–5 devices write and push, crash between their packs and
//! their commit, pull, and have packs marked in the middle of their pushes,
//! while prune runs its phases with a clock that moves forward (past graces)
//! and is off by up to ±5 min. After every step `check --read-data` is clean
//! (every written commit is fully readable); at the end, once every device has
//! pushed again (what crashed is sent then), every folder holds the same tree
//! with every device's last content of every name, and after a last full
//! prune cycle the store holds only packs that commits name.

use crate::gc::{EXPIRE_AFTER_PACK, FAIL_COMMITS, MARK_AFTER_PACK, NORMAL, World};
use coffer_engine::error::Error;
use coffer_engine::folder::Folder;
use coffer_engine::gc::{self, PruneOptions};
use coffer_engine::progress::NoProgress;
use coffer_engine::sync::pull::pull;
use coffer_engine::sync::push::push;
use coffer_engine::sync::push::upload::UploadOptions;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

const NAMES: &[&str] = &["a.bin", "b.bin", "c.bin"];
const GRACE_MS: u64 = 3_600_000;
const SKEW_MS: i64 = 5 * 60_000;

#[derive(Debug, Clone)]
enum Op {
    Write {
        dev: usize,
        name: usize,
        len: usize,
    },
    Push {
        dev: usize,
    },
    /// Dies after its packs, before its commit.
    Crash {
        dev: usize,
    },
    /// A prune marks its pack while it runs (within the grace).
    MarkedPush {
        dev: usize,
    },
    /// Its pack is marked past its grace while it runs: the step fails.
    ExpiredPush {
        dev: usize,
    },
    Pull {
        dev: usize,
    },
    Prune {
        skew_ms: i64,
    },
    /// Prune's clock moves on past a grace and its margin (90 min).
    Advance,
}

fn op(devices: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..devices, 0..NAMES.len(), 1_000usize..200_000)
            .prop_map(|(dev, name, len)| Op::Write { dev, name, len }),
        3 => (0..devices).prop_map(|dev| Op::Push { dev }),
        2 => (0..devices).prop_map(|dev| Op::Crash { dev }),
        1 => (0..devices).prop_map(|dev| Op::MarkedPush { dev }),
        1 => (0..devices).prop_map(|dev| Op::ExpiredPush { dev }),
        2 => (0..devices).prop_map(|dev| Op::Pull { dev }),
        3 => (-SKEW_MS..=SKEW_MS).prop_map(|skew_ms| Op::Prune { skew_ms }),
        2 => Just(Op::Advance),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Op>)> {
    (3usize..=5).prop_flat_map(|devices| {
        (
            Just(devices),
            proptest::collection::vec(op(devices), 10..35),
        )
    })
}

struct Model {
    w: World,
    folders: Vec<Folder>,
    /// Prune's clock: real time plus this.
    offset_ms: u64,
    /// Each device's last content of each name.
    last: BTreeMap<(usize, usize), Vec<u8>>,
    /// Contents a device had in its folder and then overwrote: they may go.
    discarded: Vec<Vec<u8>>,
    next: u8,
}

impl Model {
    async fn apply(&mut self, op: &Op) {
        let opts = UploadOptions::default();
        match *op {
            Op::Write { dev, name, len } => {
                self.next = self.next.wrapping_add(1);
                let seed = self.next;
                let data: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(seed | 1) ^ (i >> 8) as u8 ^ dev as u8)
                    .collect();
                let path = self.folders[dev].root().join(NAMES[name]);
                if let Ok(old) = std::fs::read(&path) {
                    self.discarded.push(old);
                }
                std::fs::write(path, &data).unwrap();
                self.last.insert((dev, name), data);
            }
            Op::Push { dev } => push(&self.w.repo, &self.folders[dev], &opts, &NoProgress)
                .await
                .map(|_| ())
                .unwrap(),
            Op::Crash { dev } | Op::MarkedPush { dev } | Op::ExpiredPush { dev } => {
                let mode = match op {
                    Op::Crash { .. } => FAIL_COMMITS,
                    Op::MarkedPush { .. } => MARK_AFTER_PACK,
                    _ => EXPIRE_AFTER_PACK,
                };
                self.w.store.mode.store(mode, Ordering::SeqCst);
                let r = push(&self.w.repo, &self.folders[dev], &opts, &NoProgress).await;
                let marked = mode == MARK_AFTER_PACK;
                self.w.store.mode.store(NORMAL, Ordering::SeqCst);
                match r {
                    Ok(_) => {}
                    Err(Error::PackExpired { .. }) if mode == EXPIRE_AFTER_PACK => {}
                    Err(e) if mode == FAIL_COMMITS => {
                        assert!(e.to_string().contains("killed"), "{e}")
                    }
                    Err(e) => panic!("push failed (marked during it: {marked}): {e}"),
                }
            }
            Op::Pull { dev } => {
                pull(&self.w.repo, &self.folders[dev], &NoProgress)
                    .await
                    .unwrap();
            }
            Op::Prune { skew_ms } => {
                let now =
                    (coffer_engine::now_millis() + self.offset_ms).saturating_add_signed(skew_ms);
                self.prune(now).await;
            }
            Op::Advance => self.offset_ms += 90 * 60_000,
        }
    }

    async fn prune(&self, now_ms: u64) -> coffer_engine::gc::PruneReport {
        let opts = PruneOptions {
            grace_ms: GRACE_MS,
            safety_ms: gc::SAFETY_MS,
            dry_run: false,
            now_ms: Some(now_ms),
        };
        gc::prune(&self.w.repo, &opts, &NoProgress).await.unwrap()
    }

    /// Every device pushes (what it could not send before goes now) and pulls.
    async fn heal(&self) {
        for f in &self.folders {
            push(&self.w.repo, f, &UploadOptions::default(), &NoProgress)
                .await
                .unwrap();
        }
        for f in &self.folders {
            pull(&self.w.repo, f, &NoProgress).await.unwrap();
        }
    }
}

/// The files of a folder (no `.coffer`), by relative name.
fn tree(f: &Folder) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(f.root())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != ".coffer")
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

async fn run(devices: usize, ops: Vec<Op>) {
    let w = World::new().await;
    let folders = (0..devices).map(|d| w.folder(&format!("dev{d}"))).collect();
    let mut m = Model {
        w,
        folders,
        offset_ms: 0,
        last: BTreeMap::new(),
        discarded: Vec::new(),
        next: 0,
    };
    for op in &ops {
        m.apply(op).await;
        m.w.assert_clean().await;
    }
    m.heal().await;
    m.w.assert_clean().await;
    let first = tree(&m.folders[0]);
    for f in &m.folders[1..] {
        assert_eq!(
            tree(f).keys().collect::<Vec<_>>(),
            first.keys().collect::<Vec<_>>()
        );
        assert!(tree(f) == first, "folders differ");
    }
    for ((dev, name), data) in &m.last {
        assert!(
            m.discarded.contains(data) || first.values().any(|v| v == data),
            "device {dev}'s last {} is lost",
            NAMES[*name]
        );
    }
    // A last full cycle: only what commits name remains.
    let t = coffer_engine::now_millis() + m.offset_ms + 10 * GRACE_MS;
    m.prune(t).await;
    let r = m.prune(t + GRACE_MS + gc::SAFETY_MS).await;
    assert_eq!(
        r.packs_in_store - r.packs_deleted,
        r.packs_referenced,
        "{r:?}"
    );
    assert_eq!(r.packs_marked, 0, "{r:?}");
    m.w.assert_clean().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn gc_model_no_interleaving_loses_a_commit((devices, ops) in scenario()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(run(devices, ops));
    }
}
