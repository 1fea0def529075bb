//! Checkpoints: a new device starts from one instead of replaying every commit,
//! reaches the same state, and still notices a rolled-back log.

use bytes::Bytes;
use coffer_engine::crypto::keyslot::KdfParams;
use coffer_engine::device::{Device, PendingChange, StatUpdate};
use coffer_engine::error::Error;
use coffer_engine::format::checkpoint::{self, CHECKPOINT_EVERY};
use coffer_engine::format::commit::Entry;
use coffer_engine::format::id::DeviceId;
use coffer_engine::format::path::RepoPath;
use coffer_engine::format::version::VersionVector;
use coffer_engine::journal::Journal;
use coffer_engine::progress::NoProgress;
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, MemoryStore, ObjectStore, layout};
use coffer_engine::sync::pull::logs;
use coffer_engine::sync::pull::merge;
use std::sync::Arc;

/// A repository where two devices made `n` commits in all (a directory each).
async fn repository_of(n: u64) -> (Repository, Arc<MemoryStore>, Vec<DeviceId>) {
    let memory = Arc::new(MemoryStore::new());
    let store: DynStore = memory.clone();
    let repo = Repository::init(store, b"pw", KdfParams::MINIMUM, None)
        .await
        .unwrap();
    let devices = [DeviceId::random(), DeviceId::random()];
    let journals = [Journal::temporary().unwrap(), Journal::temporary().unwrap()];
    for i in 0..n {
        let k = (i % 2) as usize;
        // Each device first learns what the other did, as `sync` would.
        logs::fetch(&repo, &journals[k], &mut |_| {}, &NoProgress)
            .await
            .unwrap();
        let device = Device::new(devices[k], journals[k].clone());
        let change = PendingChange {
            path: RepoPath::new(format!("dir-{}/{}", i % 7, i).into_bytes()).unwrap(),
            base: VersionVector::new(),
            entry: Entry::Dir {
                mode: 0o755,
                mtime_ns: i as i64,
            },
            stat: StatUpdate::None,
        };
        device.commit(&repo, vec![change]).await.unwrap();
    }
    (repo, memory, devices.to_vec())
}

fn merged(j: &Journal) -> Vec<(RepoPath, Entry)> {
    merge::merged_view(j.all_versions().unwrap())
        .into_iter()
        .map(|(p, m)| (p, m.entry))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_device_starts_from_a_checkpoint_and_reaches_the_same_state() {
    let n = CHECKPOINT_EVERY + 150;
    let (repo, memory, _) = repository_of(n).await;
    // Each device wrote one once its journal had ingested CHECKPOINT_EVERY commits.
    let written = memory.keys_under(layout::CHECKPOINT_PREFIX);
    assert_eq!(written.len(), 2, "{written:?}");

    let full = Journal::temporary().unwrap();
    let replayed = logs::fetch(&repo, &full, &mut |_| {}, &NoProgress)
        .await
        .unwrap();
    assert_eq!(replayed.commits as u64, n);

    let fresh = Journal::temporary().unwrap();
    let fetched = logs::fetch_latest(&repo, &fresh, &mut |_| {}, &NoProgress)
        .await
        .unwrap();
    assert!(
        (fetched.commits as u64) < n - CHECKPOINT_EVERY + 2,
        "replayed {} commits after the checkpoint",
        fetched.commits
    );
    assert_eq!(merged(&fresh), merged(&full));
    assert_eq!(fresh.all_heads().unwrap(), full.all_heads().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_shorter_than_its_checkpoint_is_a_rollback() {
    let (repo, memory, _) = repository_of(CHECKPOINT_EVERY + 4).await;
    let cp = checkpoint::newest(&repo).await.unwrap().unwrap();
    // Hide the newest commits of the device the checkpoint covers most of.
    let (device, head) = cp.heads.iter().max_by_key(|(_, h)| h.seq).unwrap();
    for seq in head.seq - 1.. {
        let key = layout::commit(device, seq);
        if memory.keys_under(&key).is_empty() {
            break;
        }
        memory.delete(&key).await.unwrap();
    }
    let fresh = Journal::temporary().unwrap();
    let err = logs::fetch_latest(&repo, &fresh, &mut |_| {}, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Rollback { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_checkpoint_is_ignored_and_the_logs_replayed() {
    let n = CHECKPOINT_EVERY + 3;
    let (repo, memory, _) = repository_of(n).await;
    for key in memory.keys_under(layout::CHECKPOINT_PREFIX) {
        let mut bytes = memory.get(&key).await.unwrap().to_vec();
        bytes[40] ^= 1;
        memory.tamper(&key, Bytes::from(bytes));
    }
    let fresh = Journal::temporary().unwrap();
    let fetched = logs::fetch_latest(&repo, &fresh, &mut |_| {}, &NoProgress)
        .await
        .unwrap();
    assert_eq!(fetched.commits as u64, n);
}
