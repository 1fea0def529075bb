//! What a key rotation costs on a repository with many commits.
//!
//! ```text
//! cargo run -p coffer-engine --example rotate_cost -- [COMMITS] [DIR]
//! ```
//! Makes a repository in a local store under DIR (default: a temp dir) with
//! COMMITS commits (default 10,000: one small file changed per push), then
//! times `key rotate` (in process: list epochs, read slots, write a grant per
//! slot and the record), a device opened before the rotation picking it up on
//! its next step, and a fresh open through the passphrase. None of them reads
//! a commit: a rotation's cost does not grow with the history.

use coffer_engine::store::{DynStore, LocalStore};
use coffer_engine::{Folder, KdfParams, NoProgress, Repository, Rotate, UploadOptions};
use std::sync::Arc;
use std::time::Instant;
use zeroize::Zeroizing;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> coffer_engine::Result<()> {
    let mut args = std::env::args().skip(1);
    let commits: u32 = args
        .next()
        .map_or(10_000, |a| a.parse().expect("COMMITS is a number"));
    let base = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => tempfile::tempdir().expect("temp dir").keep(),
    };
    let store_dir = base.join("store");
    std::fs::create_dir_all(&store_dir).expect("store dir");
    let store: DynStore = Arc::new(LocalStore::open(&store_dir, true)?);
    let repo = Repository::init(store.clone(), b"bench", KdfParams::MINIMUM, None).await?;
    let dir = base.join("folder");
    std::fs::create_dir_all(&dir).expect("folder");
    let folder = Folder::open(&dir, repo.id(), "file://bench", false)?;
    let started = Instant::now();
    for i in 0..commits {
        std::fs::write(dir.join("f.txt"), format!("version {i}")).expect("write");
        coffer_engine::push(&repo, &folder, &UploadOptions::default(), &NoProgress).await?;
    }
    eprintln!(
        "{commits} commits made in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let home = tempfile::tempdir().expect("home");
    let keyring = coffer_engine::Keyring::new(home.path());
    let mut ask = || Ok(Zeroizing::new("bench".to_string()));
    let before = Repository::open(store.clone(), &keyring, &mut ask).await?;

    let t = Instant::now();
    let report = repo
        .rotate(Rotate {
            remove: Vec::new(),
            passphrase: None,
            kms: None,
        })
        .await?;
    let rotate = t.elapsed();
    let t = Instant::now();
    before.refresh_keys().await?;
    let pickup = t.elapsed();
    let t = Instant::now();
    let fresh_home = tempfile::tempdir().expect("home");
    let mut ask = || Ok(Zeroizing::new("bench".to_string()));
    Repository::open(
        store,
        &coffer_engine::Keyring::new(fresh_home.path()),
        &mut ask,
    )
    .await?;
    let open = t.elapsed();
    println!(
        "commits {commits}  rotate {:.1} ms (epoch {}, {} slot(s))  pickup by another device {:.1} ms  fresh open with passphrase {:.1} ms",
        rotate.as_secs_f64() * 1e3,
        report.epoch.map_or(0, |e| e.level),
        report.kept.len(),
        pickup.as_secs_f64() * 1e3,
        open.as_secs_f64() * 1e3,
    );
    Ok(())
}
