//! The conformance suite every [`ObjectStore`] must pass (memory, local dir, S3).
//!
//! Call [`run`] on an empty store; it panics with a message naming the first broken
//! guarantee. It is public so the integration tests run it against Garage too.
#![allow(clippy::unwrap_used, clippy::expect_used)] // assertions, by design

use super::{ObjectStore, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;

/// Number of keys written to check that listing is complete past one S3 page (1,000).
pub const LIST_PAGE_PROBE: usize = 1_100;

/// Runs every check. `store` must be empty.
pub async fn run(store: &dyn ObjectStore) {
    assert!(
        store
            .list("")
            .await
            .expect("list on an empty store")
            .is_empty(),
        "conformance suite needs an empty store ({})",
        store.describe()
    );
    put_get_round_trip(store).await;
    missing_objects(store).await;
    ranges(store).await;
    listing(store).await;
    large_object(store).await;
    concurrent_puts(store).await;
    deletes(store).await;
    long_listing(store).await;
}

async fn put_get_round_trip(store: &dyn ObjectStore) {
    store
        .put("a/one", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(store.get("a/one").await.unwrap(), "hello");
    // Writing identical bytes again (a retried PUT) is harmless.
    store
        .put("a/one", Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(store.get("a/one").await.unwrap(), "hello");
    store.put("a/empty", Bytes::new()).await.unwrap();
    assert_eq!(store.get("a/empty").await.unwrap().len(), 0);
    let binary: Vec<u8> = (0..=255u8).collect();
    store
        .put("a/bin", Bytes::from(binary.clone()))
        .await
        .unwrap();
    assert_eq!(store.get("a/bin").await.unwrap(), binary);
}

async fn missing_objects(store: &dyn ObjectStore) {
    match store.get("nope/missing").await {
        Err(StoreError::NotFound { key }) => assert!(key.contains("missing")),
        other => panic!("get of a missing object must be NotFound, got {other:?}"),
    }
    assert!(matches!(
        store.get_range("nope/missing", 0..1).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn ranges(store: &dyn ObjectStore) {
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    store.put("r/obj", Bytes::from(data.clone())).await.unwrap();
    assert_eq!(
        store.get_range("r/obj", 10..20).await.unwrap(),
        data[10..20]
    );
    assert_eq!(store.get_range("r/obj", 0..1000).await.unwrap(), data[..]);
    assert_eq!(
        store.get_range("r/obj", 990..2000).await.unwrap(),
        data[990..]
    );
    assert!(
        store.get_range("r/obj", 1000..1010).await.is_err(),
        "a range starting at the end must fail"
    );
}

async fn listing(store: &dyn ObjectStore) {
    for k in ["l/x/1", "l/x/2", "l/xy/1", "l/y", "lz"] {
        store
            .put(k, Bytes::from(k.as_bytes().to_vec()))
            .await
            .unwrap();
    }
    let keys = |v: Vec<super::ObjectMeta>| v.into_iter().map(|m| m.key).collect::<Vec<_>>();
    assert_eq!(keys(store.list("l/x/").await.unwrap()), ["l/x/1", "l/x/2"]);
    assert_eq!(
        keys(store.list("l/x").await.unwrap()),
        ["l/x/1", "l/x/2", "l/xy/1"],
        "a prefix need not end at a separator"
    );
    assert_eq!(
        keys(store.list("l/").await.unwrap()),
        ["l/x/1", "l/x/2", "l/xy/1", "l/y"]
    );
    assert!(store.list("nothing/").await.unwrap().is_empty());
    let sizes = store.list("l/x/").await.unwrap();
    assert_eq!(sizes[0].size, 5, "list reports object sizes");
    let all = keys(store.list("").await.unwrap());
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "list is sorted by key");
    assert!(all.contains(&"lz".to_string()));
    listing_dirs(store).await;
}

/// `list_dirs` on the keys [`listing`] wrote.
async fn listing_dirs(store: &dyn ObjectStore) {
    assert_eq!(
        store.list_dirs("l/").await.unwrap(),
        ["l/x/", "l/xy/"],
        "list_dirs gives each directory once, objects beside them not"
    );
    assert_eq!(store.list_dirs("l/x/").await.unwrap(), Vec::<String>::new());
    assert!(store.list_dirs("nothing/").await.unwrap().is_empty());
    let top = store.list_dirs("").await.unwrap();
    assert!(top.contains(&"l/".to_string()), "{top:?}");
    assert!(
        !top.contains(&"lz".to_string()),
        "an object is no directory"
    );
    let mut sorted = top.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(top, sorted, "list_dirs is sorted, each once");
    assert!(top.iter().all(|d| d.ends_with('/')));
}

async fn large_object(store: &dyn ObjectStore) {
    let big: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    store
        .put("big/obj", Bytes::from(big.clone()))
        .await
        .unwrap();
    let back = store.get("big/obj").await.unwrap();
    assert!(back == big, "20 MiB object round trip");
    let mid = 7 * 1024 * 1024u64;
    assert_eq!(
        store.get_range("big/obj", mid..mid + 4096).await.unwrap(),
        big[mid as usize..mid as usize + 4096]
    );
    // A streamed range: the same bytes, in one or more pieces.
    let (from, to) = (3 * 1024 * 1024 + 5, 17 * 1024 * 1024 + 11);
    let mut pieces = store
        .get_range_stream("big/obj", from as u64..to as u64)
        .await
        .unwrap();
    let mut streamed = Vec::new();
    while let Some(piece) = pieces.next().await {
        streamed.extend_from_slice(&piece.unwrap());
    }
    assert!(
        streamed == big[from..to],
        "streamed range of a 20 MiB object"
    );
    assert!(
        matches!(
            store.get_range_stream("nope/missing", 0..1).await.err(),
            Some(StoreError::NotFound { .. })
        ),
        "streaming a missing object is NotFound"
    );
    store.delete("big/obj").await.unwrap();
}

async fn concurrent_puts(store: &dyn ObjectStore) {
    let puts = (0..16).map(|i| async move {
        store
            .put(&format!("c/{i:02}"), Bytes::from(vec![i as u8; 10_000]))
            .await
    });
    for r in join_all(puts).await {
        r.unwrap();
    }
    let listed = store.list("c/").await.unwrap();
    assert_eq!(listed.len(), 16);
    assert!(listed.iter().all(|m| m.size == 10_000));
}

async fn deletes(store: &dyn ObjectStore) {
    store.delete("a/one").await.unwrap();
    assert!(matches!(
        store.get("a/one").await,
        Err(StoreError::NotFound { .. })
    ));
    store
        .delete("a/one")
        .await
        .expect("deleting an absent object is not an error");
}

async fn long_listing(store: &dyn ObjectStore) {
    let n = LIST_PAGE_PROBE;
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(async move {
            store
                .put(&format!("p/{i:05}"), Bytes::from_static(b"x"))
                .await
        });
        if pending.len() == 32 {
            for r in join_all(std::mem::take(&mut pending)).await {
                r.unwrap();
            }
        }
    }
    for r in join_all(pending).await {
        r.unwrap();
    }
    let listed = store.list("p/").await.unwrap();
    assert_eq!(listed.len(), n, "listing must page past 1,000 keys");
    assert_eq!(listed[n - 1].key, format!("p/{:05}", n - 1));
    listing_after(store, n).await;
    let top = store.list_dirs("").await.unwrap();
    assert_eq!(
        top.iter().filter(|d| *d == "p/").count(),
        1,
        "a directory of more than 1,000 keys is listed once"
    );
}

/// `list_after` on the `p/00000`..`p/{n-1}` keys of [`long_listing`].
async fn listing_after(store: &dyn ObjectStore, n: usize) {
    let keys = |v: Vec<super::ObjectMeta>| v.into_iter().map(|m| m.key).collect::<Vec<_>>();
    let tail = keys(
        store
            .list_after("p/", &format!("p/{:05}", n - 3))
            .await
            .unwrap(),
    );
    let expected: Vec<String> = (n - 2..n).map(|i| format!("p/{i:05}")).collect();
    assert_eq!(
        tail, expected,
        "list_after starts after the key it is given"
    );
    let from_start = store.list_after("p/", "p/").await.unwrap();
    assert_eq!(from_start.len(), n, "list_after pages past 1,000 keys");
    let between = keys(store.list_after("p/", "p/00999x").await.unwrap());
    assert_eq!(between.first().map(String::as_str), Some("p/01000"));
    assert!(store.list_after("p/", "p/99999").await.unwrap().is_empty());
    // `after` may sort before the prefix: only the prefix's keys come back.
    let before = store.list_after("p/", "a").await.unwrap();
    assert_eq!(before.len(), n);
}
