//! A store wrapper that counts: bytes and objects moved, requests, transient
//! failures by reason, and whether the store answers. It sits right above the
//! back-end, below the retries, so it sees every attempt: a retried request
//! counts once per failure (`coffer_store_retries_total`) and once when it
//! succeeds.

use super::Ops;
use super::metrics::{Kind, Op, Reason, object_kind};
use async_trait::async_trait;
use bytes::Bytes;
use coffer_engine::StoreError;
use coffer_engine::store::{DynStore, ObjectMeta, ObjectStore, Pieces};
use futures::StreamExt as _;
use std::ops::Range;
use std::sync::Arc;

/// Counts what passes through to `inner`.
#[derive(Debug)]
pub struct MeteredStore {
    inner: DynStore,
    ops: Arc<Ops>,
}

impl MeteredStore {
    pub fn new(inner: DynStore, ops: Arc<Ops>) -> MeteredStore {
        MeteredStore { inner, ops }
    }

    /// Records the outcome of one request of `op`.
    fn outcome<T>(&self, op: &'static str, r: &Result<T, StoreError>) {
        let m = &self.ops.metrics;
        match r {
            Ok(_) => {
                m.requests.get_or_create(&Op { op }).inc();
                self.ops.store_answered(None);
            }
            // An absent object is an answer.
            Err(StoreError::NotFound { .. }) => self.ops.store_answered(None),
            Err(e) => {
                if let Some(cause) = e.transient_cause() {
                    m.retries
                        .get_or_create(&Reason {
                            reason: cause.label(),
                        })
                        .inc();
                }
                if no_answer(e) {
                    self.ops.store_answered(Some(e.to_string()));
                }
            }
        }
    }

    fn downloaded(&self, key: &str, n: u64) {
        let m = &self.ops.metrics;
        m.downloaded_bytes.inc_by(n);
        m.downloaded_objects
            .get_or_create(&Kind {
                kind: object_kind(key),
            })
            .inc();
    }
}

/// The store did not answer: a reset, stall or timeout, or (local stores) an
/// I/O error. A SlowDown, a 5xx or a refusal is an answer: the step's error
/// tells about it.
fn no_answer(e: &StoreError) -> bool {
    use coffer_engine::Transient;
    matches!(
        e.transient_cause(),
        Some(Transient::Reset | Transient::Stall | Transient::Timeout)
    ) || matches!(e, StoreError::Io { .. })
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let n = data.len() as u64;
        let r = self.inner.put(key, data).await;
        self.outcome("put", &r);
        if r.is_ok() {
            let m = &self.ops.metrics;
            m.uploaded_bytes.inc_by(n);
            m.uploaded_objects
                .get_or_create(&Kind {
                    kind: object_kind(key),
                })
                .inc();
        }
        r
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let r = self.inner.get(key).await;
        self.outcome("get", &r);
        if let Ok(b) = &r {
            self.downloaded(key, b.len() as u64);
        }
        r
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let r = self.inner.get_range(key, range).await;
        self.outcome("get", &r);
        if let Ok(b) = &r {
            self.downloaded(key, b.len() as u64);
        }
        r
    }

    async fn get_range_stream(&self, key: &str, range: Range<u64>) -> Result<Pieces, StoreError> {
        let r = self.inner.get_range_stream(key, range).await;
        self.outcome("get", &r);
        let pieces = r?;
        self.downloaded(key, 0);
        let ops = self.ops.clone();
        Ok(Box::pin(pieces.inspect(move |piece| match piece {
            Ok(b) => {
                ops.metrics.downloaded_bytes.inc_by(b.len() as u64);
            }
            Err(e) => {
                if let Some(cause) = e.transient_cause() {
                    ops.metrics
                        .retries
                        .get_or_create(&Reason {
                            reason: cause.label(),
                        })
                        .inc();
                }
                if no_answer(e) {
                    ops.store_answered(Some(e.to_string()));
                }
            }
        })))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let r = self.inner.list(prefix).await;
        self.outcome("list", &r);
        r
    }

    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let r = self.inner.list_after(prefix, after).await;
        self.outcome("list", &r);
        r
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let r = self.inner.list_dirs(prefix).await;
        self.outcome("list", &r);
        r
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let r = self.inner.delete(key).await;
        self.outcome("delete", &r);
        r
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn local_dir(&self) -> Option<&std::path::Path> {
        self.inner.local_dir()
    }

    async fn clock_ms(&self) -> Option<u64> {
        self.inner.clock_ms().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffer_engine::store::MemoryStore;

    #[tokio::test]
    async fn counts_bytes_objects_and_requests() {
        let ops = Arc::new(Ops::new("test", false));
        let s = MeteredStore::new(Arc::new(MemoryStore::new()), ops.clone());
        s.put("log/x", Bytes::from_static(b"12345")).await.unwrap();
        assert_eq!(s.get("log/x").await.unwrap().len(), 5);
        assert!(s.get("log/absent").await.is_err());
        let m = &ops.metrics;
        assert_eq!(m.uploaded_bytes.get(), 5);
        assert_eq!(m.downloaded_bytes.get(), 5);
        assert_eq!(m.requests.get_or_create(&Op { op: "put" }).get(), 1);
        assert_eq!(m.requests.get_or_create(&Op { op: "get" }).get(), 1);
        assert!(ops.snapshot().store_reachable);
    }
}
