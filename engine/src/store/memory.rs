//! An in-process store: a sorted map behind a mutex. Real, complete, and fast; used
//! by unit tests, model-based tests and benchmarks.

use super::{ObjectMeta, ObjectStore};
use crate::error::StoreError;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// A store held in memory. Clones share the same objects.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Total bytes stored (for tests and benches).
    pub fn total_bytes(&self) -> u64 {
        self.lock().values().map(|b| b.len() as u64).sum()
    }

    /// Keys under `prefix`, sorted (for tests).
    pub fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Replaces an object's bytes unconditionally: a test hook to simulate a
    /// tampering or faulty server.
    pub fn tamper(&self, key: &str, data: Bytes) {
        self.lock().insert(key.to_string(), data);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        // A panic while holding this lock cannot leave the map half-updated.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.lock().insert(key.to_string(), data);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.lock()
            .get(key)
            .cloned()
            .ok_or_else(|| StoreError::NotFound { key: key.into() })
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let all = self.get(key).await?;
        slice_range(key, &all, range)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory://".into()
    }
}

/// Applies S3 range semantics to a whole object.
pub(crate) fn slice_range(key: &str, all: &Bytes, range: Range<u64>) -> Result<Bytes, StoreError> {
    let len = all.len() as u64;
    if range.start >= len || range.start >= range.end {
        return Err(StoreError::Rejected {
            detail: format!("range {range:?} not satisfiable for {key} ({len} bytes)"),
        });
    }
    let end = range.end.min(len);
    let (start, end) = (range.start as usize, end as usize);
    Ok(all.slice(start..end))
}
