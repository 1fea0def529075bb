//! How long a new device takes to reach the merged state of a repository with many
//! commits, with and without checkpoints, on the Garage of `scripts/garage up`.
//!
//! ```text
//! eval "$(scripts/garage up)"; scripts/garage env > /dev/null
//! cargo run --release -p coffer-tests --example join_cost -- 10000
//! ```
//! Two devices alternately make N one-path commits (each learning the other's first,
//! as `sync` does). Then a fresh journal is brought up to date twice: replaying every
//! log (as before checkpoints) and starting from the newest checkpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use coffer_engine::crypto::keyslot::KdfParams;
use coffer_engine::device::{Device, PendingChange, StatUpdate};
use coffer_engine::format::commit::Entry;
use coffer_engine::format::id::DeviceId;
use coffer_engine::format::path::RepoPath;
use coffer_engine::format::version::VersionVector;
use coffer_engine::journal::Journal;
use coffer_engine::progress::NoProgress;
use coffer_engine::repo::Repository;
use coffer_engine::store::DynStore;
use coffer_engine::sync::pull::logs;
use coffer_tests::s3::S3Env;
use std::sync::Arc;
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let s3 = S3Env::from_env();
    let bucket = S3Env::unique_bucket("join");
    let store = s3.store(&bucket, &s3.endpoint).await;
    store.create_bucket().await.unwrap();
    let store: DynStore = Arc::new(store);
    let repo = Repository::init(store, b"pw", KdfParams::MINIMUM, None)
        .await
        .unwrap();

    let t = Instant::now();
    let devices = [DeviceId::random(), DeviceId::random()];
    let journals = [Journal::temporary().unwrap(), Journal::temporary().unwrap()];
    for i in 0..n {
        let k = (i % 2) as usize;
        logs::fetch(&repo, &journals[k], &mut |_| {}, &NoProgress)
            .await
            .unwrap();
        let change = PendingChange {
            path: RepoPath::new(format!("dir-{}/file-{i}", i % 50).into_bytes()).unwrap(),
            base: VersionVector::new(),
            entry: Entry::Dir {
                mode: 0o755,
                mtime_ns: 0,
            },
            stat: StatUpdate::None,
        };
        Device::new(devices[k], journals[k].clone())
            .commit(&repo, vec![change])
            .await
            .unwrap();
    }
    println!("{n} commits made in {:.1} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let full = logs::fetch(
        &repo,
        &Journal::temporary().unwrap(),
        &mut |_| {},
        &NoProgress,
    )
    .await
    .unwrap();
    println!(
        "replaying every log: {} commits in {:.2} s",
        full.commits,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let latest = logs::fetch_latest(
        &repo,
        &Journal::temporary().unwrap(),
        &mut |_| {},
        &NoProgress,
    )
    .await
    .unwrap();
    println!(
        "from the newest checkpoint: {} commits replayed after it, {:.2} s in all",
        latest.commits,
        t.elapsed().as_secs_f64()
    );
}
