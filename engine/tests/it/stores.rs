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
