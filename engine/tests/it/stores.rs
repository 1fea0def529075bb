//! The store conformance suite on the in-process stores.

use coffer_engine::store::{LocalStore, MemoryStore, conformance};

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run(&MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::run(&LocalStore::open(dir.path(), false).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_store_never_exposes_temp_files() {
    use coffer_engine::store::ObjectStore;
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStore::open(dir.path(), false).unwrap();
    std::fs::create_dir_all(dir.path().join(".tmp")).unwrap();
    std::fs::write(dir.path().join(".tmp/leftover"), b"torn").unwrap();
    assert!(
        s.list("").await.unwrap().is_empty(),
        "leftover temp files of a crash are not objects"
    );
    assert!(s.get(".tmp/leftover").await.is_err());
}

#[tokio::test]
async fn local_store_removes_stale_temp_files_of_killed_writers() {
    use coffer_engine::store::ObjectStore;
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join(".tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("killed"), vec![7u8; 1000]).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(tmp.join("killed"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    // A temp file being written right now is not touched.
    std::fs::write(tmp.join("live"), b"in flight").unwrap();
    let s = LocalStore::open(dir.path(), false).unwrap();
    assert_eq!(s.stale_temp(), (1, 1000));
    s.put("config", bytes::Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert!(
        !tmp.join("killed").exists(),
        "the stale file goes with the next write"
    );
    assert!(tmp.join("live").exists(), "a live writer's file stays");
    assert_eq!(s.stale_temp(), (0, 0));
}
