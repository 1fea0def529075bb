//! Object stores: where a repository's immutable objects live.
//!
//! [`ObjectStore`] is deliberately narrow (put / get / get_range / list / delete) so
//! that every back-end — [`MemoryStore`], [`LocalStore`], and the S3 store in the
//! binary's store stack — passes the same [`conformance`] suite, and so that
//! cross-cutting behaviour (retries, fault injection, bandwidth limits) is a
//! wrapper of the same trait.
//!
//! Keys are relative to the store's root/prefix and use `/` separators; the engine
//! only ever writes keys from [`layout`]. Objects are never overwritten with different
//! bytes, so no back-end needs conditional writes.

pub mod breaker;
mod bucket;
pub mod conformance;
pub mod failover;
pub mod layout;
mod local;
mod memory;
pub mod retry;
pub mod s3;
pub mod throttle;
mod upload_body;

pub use breaker::BreakerPolicy;
pub use bucket::Created;
pub use failover::FailoverStore;
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use retry::{RetryPolicy, RetryStore};
pub use s3::{S3Options, S3Store, Sse, SseCustomerKey};
pub use throttle::{Bandwidth, Limiter, ThrottledStore};

use crate::error::StoreError;
use async_trait::async_trait;
use bytes::Bytes;
use std::fmt::Debug;
use std::ops::Range;
use std::sync::Arc;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the store root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// An object's bytes as they arrive (see [`ObjectStore::get_range_stream`]).
pub type Pieces = futures::stream::BoxStream<'static, Result<Bytes, StoreError>>;

/// A flat namespace of immutable objects.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// Stores `data` under `key`. When this returns `Ok`, the object is durable and
    /// visible to `get` and `list` from any client. A reader never sees a partial
    /// object.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError>;

    /// The whole object. [`StoreError::NotFound`] when absent.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;

    /// Bytes `range` of the object. A range past the end is an error
    /// ([`StoreError::Rejected`]); a range that ends past the end is truncated.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError>;

    /// Bytes `range` of the object, piece by piece as they arrive, for readers that
    /// work on the first bytes while the rest is on its way. Retries cover opening
    /// the stream only: a stream may end early or with an error, and the reader
    /// asks [`ObjectStore::get_range`] for what it still lacks. The default fetches
    /// the range whole, as one piece.
    async fn get_range_stream(&self, key: &str, range: Range<u64>) -> Result<Pieces, StoreError> {
        let bytes = self.get_range(key, range).await?;
        Ok(Box::pin(futures::stream::once(async move { Ok(bytes) })))
    }

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Every object whose key starts with `prefix` and sorts after `after`,
    /// sorted by key (S3's `start-after`): a listing that resumes where an
    /// earlier one stopped costs only what is new. The default lists `prefix`
    /// whole and keeps what follows `after`.
    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut all = self.list(prefix).await?;
        all.retain(|m| m.key.as_str() > after);
        Ok(all)
    }

    /// The "directories" one level below `prefix` (which ends in `/`, or is
    /// empty): every distinct `prefix + name + "/"` that starts a key, sorted,
    /// each once (S3's `CommonPrefixes` with the delimiter `/`). One request per
    /// 1,000 directories, however many objects they hold. The default lists
    /// `prefix` whole.
    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut dirs: Vec<String> = Vec::new();
        for meta in self.list(prefix).await? {
            let rest = &meta.key[prefix.len()..];
            if let Some(end) = rest.find('/') {
                let dir = &meta.key[..prefix.len() + end + 1];
                if dirs.last().map(String::as_str) != Some(dir) {
                    dirs.push(dir.to_string());
                }
            }
        }
        Ok(dirs)
    }

    /// Removes the object; removing an absent object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// A short human description (URL) for messages.
    fn describe(&self) -> String;

    /// The directory holding the objects, for a store on the local file system
    /// (so that a folder inside it can leave it out).
    fn local_dir(&self) -> Option<&std::path::Path> {
        None
    }

    /// The store's clock now (Unix ms), if it has one to read: the `Date` of
    /// the last S3 response, the time the file system stamps on a new file of a
    /// local store. A device compares it with its own clock (`crate::clock`).
    async fn clock_ms(&self) -> Option<u64> {
        None
    }
}

/// A shared, type-erased store.
pub type DynStore = Arc<dyn ObjectStore>;

/// The whole object `key`, which may weigh at most `max` bytes (`what` it is,
/// for the message): at most `max + 1` bytes are ever transferred, so an
/// oversized object costs no more than that and is refused as corrupt.
pub async fn get_at_most(
    store: &dyn ObjectStore,
    key: &str,
    max: u64,
    what: &str,
) -> crate::error::Result<Bytes> {
    match store.get_range(key, 0..max.saturating_add(1)).await {
        Ok(b) if b.len() as u64 > max => Err(crate::error::Error::corrupt(
            key,
            format!("larger than {max} bytes, the most a {what} may weigh; not read further"),
        )),
        Ok(b) => Ok(b),
        // A range from 0 is unsatisfiable only for an empty object.
        Err(e @ StoreError::Rejected { .. }) => {
            let listed = store.list(key).await?;
            match listed.iter().find(|m| m.key == key) {
                Some(m) if m.size == 0 => Ok(Bytes::new()),
                _ => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Where a store lives, as parsed from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A local directory (`/path`, `./path` or `file:///abs/path`).
    Local(std::path::PathBuf),
    /// `s3://bucket[/prefix]`.
    S3 { bucket: String, prefix: String },
    /// `memory://name` — only meaningful inside one process (tests).
    Memory(String),
}

impl StoreLocation {
    /// Parses a STORE argument. A bare word with no `/` is *not* guessed to be a
    /// bucket here; callers that accept a bare bucket (hcs3-style commands) say so.
    pub fn parse(s: &str) -> Result<StoreLocation, StoreError> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            validate_bucket(bucket)?;
            let prefix = prefix.trim_matches('/').to_string();
            return Ok(StoreLocation::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if let Some(rest) = s.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(StoreError::Unusable {
                    detail: format!("{s}: file:// URLs need an absolute path (file:///abs/path)"),
                });
            }
            return Ok(StoreLocation::Local(rest.into()));
        }
        if let Some(rest) = s.strip_prefix("memory://") {
            return Ok(StoreLocation::Memory(rest.to_string()));
        }
        if s.contains("://") {
            return Err(StoreError::Unusable {
                detail: format!(
                    "{s}: unsupported store URL (use a path, file:///path or s3://bucket/prefix)"
                ),
            });
        }
        if s.is_empty() {
            return Err(StoreError::Unusable {
                detail: "empty store location".into(),
            });
        }
        Ok(StoreLocation::Local(s.into()))
    }
}

/// S3 bucket naming rules (the subset that matters for addressing).
pub fn validate_bucket(bucket: &str) -> Result<(), StoreError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(StoreError::Unusable {
            detail: format!(
                "invalid bucket name {bucket:?}: 3-63 characters of a-z, 0-9, '-' and '.'"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_locations() {
        assert_eq!(
            StoreLocation::parse("s3://my-bucket/a/b/").unwrap(),
            StoreLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            StoreLocation::parse("s3://my-bucket").unwrap(),
            StoreLocation::S3 {
                bucket: "my-bucket".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            StoreLocation::parse("file:///srv/x").unwrap(),
            StoreLocation::Local("/srv/x".into())
        );
        assert_eq!(
            StoreLocation::parse("rel/dir").unwrap(),
            StoreLocation::Local("rel/dir".into())
        );
        assert!(StoreLocation::parse("file://rel").is_err());
        assert!(StoreLocation::parse("ftp://x").is_err());
        assert!(StoreLocation::parse("s3://Bad_Bucket").is_err());
    }
}
