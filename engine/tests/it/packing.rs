//! The upload pipeline's packing: packs never pass the target (bar a lone larger
//! blob), buffers recycled between packs never leak one pack's bytes into another,
//! and everything reads back.

use coffer_engine::crypto::keyslot::KdfParams;
use coffer_engine::folder::Folder;
use coffer_engine::format::pack::{FOOTER_LEN, Footer};
use coffer_engine::progress::NoProgress;
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, MemoryStore, ObjectStore, layout};
use coffer_engine::sync::push::upload::UploadOptions;
use coffer_engine::sync::push::window::UploadWindow;
use std::sync::Arc;

/// `n` incompressible bytes, fixed by `seed` (BLAKE3's output stream).
fn pseudo_random(seed: u64, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_stay_within_the_target_and_recycled_buffers_read_back() {
    let memory = Arc::new(MemoryStore::new());
    let store: DynStore = memory.clone();
    let repo = Repository::init(store, b"pw", KdfParams::MINIMUM, None)
        .await
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    for i in 0..6u64 {
        let n = 1_500_000 + i as usize * 700_000;
        std::fs::write(src.path().join(format!("big-{i}")), pseudo_random(i, n)).unwrap();
    }
    for i in 0..200u64 {
        let n = 1000 + (i as usize * 37) % 9000;
        std::fs::write(
            src.path().join(format!("small-{i}")),
            pseudo_random(100 + i, n),
        )
        .unwrap();
    }
    let target = 2 << 20;
    let opts = UploadOptions {
        pack_target: target,
        workers: 2,
        // Two packs alive at most: sealers wait for buffers to come back.
        window: UploadWindow::new(2),
        ..UploadOptions::default()
    };
    let folder = Folder::open(src.path(), repo.id(), "memory:", true).unwrap();
    let report = coffer_engine::sync::push::push(&repo, &folder, &opts, &NoProgress)
        .await
        .unwrap();
    assert!(report.commit.is_some());

    let packs = memory.keys_under(layout::DATA_PREFIX);
    assert!(packs.len() > 5, "{packs:?}");
    for key in &packs {
        let id = layout::parse_pack(key).unwrap();
        let bytes = memory.get(key).await.unwrap();
        let footer = Footer::open(&repo.keys(), &id, &bytes[bytes.len() - FOOTER_LEN..]).unwrap();
        assert!(
            bytes.len() <= target || footer.blob_count == 1,
            "{key}: {} bytes, {footer:?}",
            bytes.len()
        );
    }

    let dst = tempfile::tempdir().unwrap();
    let other = Folder::open(dst.path(), repo.id(), "memory:", true).unwrap();
    let pulled = coffer_engine::sync::pull::pull(&repo, &other, &NoProgress)
        .await
        .unwrap();
    assert!(pulled.errors.is_empty(), "{:?}", pulled.errors);
    for entry in std::fs::read_dir(src.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == ".coffer" {
            continue;
        }
        let theirs = std::fs::read(dst.path().join(entry.file_name())).unwrap();
        assert!(
            std::fs::read(entry.path()).unwrap() == theirs,
            "{:?}",
            entry.file_name()
        );
    }
}
