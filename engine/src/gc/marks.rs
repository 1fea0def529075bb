//! Garbage-collection marks (`gc/<created>-<nonce>`, DESIGN.md §11): which
//! unreferenced packs `prune` will delete, and from when.

use crate::error::{Error, Result};
use crate::format::id::PackId;
use crate::store::{ObjectStore, get_at_most, layout};
use serde::{Deserialize, Serialize};

/// The mark format this build writes and reads.
pub const MARK_VERSION: u32 = 1;

/// The most packs one mark names; a larger set is written as several marks.
pub const PACKS_PER_MARK: usize = 65_536;

/// A mark's bytes (plaintext JSON; pack ids are random, so they tell nothing).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkFile {
    version: u32,
    created_ms: u64,
    not_before_ms: u64,
    safety_ms: u64,
    packs: Vec<(String, u64)>,
}

/// One mark as read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub key: String,
    pub created_ms: u64,
    /// Writers may resurrect its packs (name them in a commit) before this time.
    pub not_before_ms: u64,
    /// A sweep waits this much after `not_before_ms` (clock bounds, PUT bound).
    pub safety_ms: u64,
    /// The packs and their listed sizes.
    pub packs: Vec<(PackId, u64)>,
}

impl Mark {
    /// Whether a sweep at `now_ms` may delete its packs.
    pub fn is_due(&self, now_ms: u64) -> bool {
        now_ms >= self.not_before_ms.saturating_add(self.safety_ms)
    }

    /// Encodes the mark as stored.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let file = MarkFile {
            version: MARK_VERSION,
            created_ms: self.created_ms,
            not_before_ms: self.not_before_ms,
            safety_ms: self.safety_ms,
            packs: self.packs.iter().map(|(p, s)| (p.to_hex(), *s)).collect(),
        };
        serde_json::to_vec(&file).map_err(|e| Error::Internal(format!("cannot encode mark: {e}")))
    }

    /// Decodes the mark stored under `key`.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Mark> {
        let file: MarkFile = serde_json::from_slice(bytes)
            .map_err(|e| Error::corrupt(key, format!("unreadable mark: {e}")))?;
        if file.version != MARK_VERSION {
            return Err(Error::UnsupportedVersion {
                what: key.to_string(),
                found: file.version,
                supported: MARK_VERSION,
            });
        }
        let packs = file
            .packs
            .into_iter()
            .map(|(hex, size)| {
                PackId::from_hex(&hex)
                    .map(|id| (id, size))
                    .ok_or_else(|| Error::corrupt(key, format!("bad pack id {hex:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Mark {
            key: key.to_string(),
            created_ms: file.created_ms,
            not_before_ms: file.not_before_ms,
            safety_ms: file.safety_ms,
            packs,
        })
    }
}

/// Every mark in the store, and one message per mark that could not be read
/// (prune leaves those alone; a writer skips them: nobody deletes their packs).
pub async fn read_all(store: &dyn ObjectStore) -> Result<(Vec<Mark>, Vec<String>)> {
    let mut marks = Vec::new();
    let mut unreadable = Vec::new();
    for meta in store.list(layout::GC_PREFIX).await? {
        if layout::parse_mark(&meta.key).is_none() {
            continue;
        }
        let read = match get_at_most(store, &meta.key, layout::MARK_MAX, "mark").await {
            Ok(bytes) => Mark::parse(&meta.key, &bytes),
            Err(Error::Store(crate::error::StoreError::NotFound { .. })) => continue, // swept meanwhile
            Err(e) => Err(e),
        };
        match read {
            Ok(m) => marks.push(m),
            Err(e) => unreadable.push(e.to_string()),
        }
    }
    Ok((marks, unreadable))
}

/// Writes marks for `packs` (several when there are many); returns their keys.
pub async fn write(
    store: &dyn ObjectStore,
    packs: Vec<(PackId, u64)>,
    now_ms: u64,
    grace_ms: u64,
    safety_ms: u64,
) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for part in packs.chunks(PACKS_PER_MARK) {
        let mark = Mark {
            key: layout::mark(now_ms, nonce()),
            created_ms: now_ms,
            not_before_ms: now_ms.saturating_add(grace_ms),
            safety_ms,
            packs: part.to_vec(),
        };
        store
            .put(&mark.key, bytes::Bytes::from(mark.to_bytes()?))
            .await?;
        keys.push(mark.key);
    }
    Ok(keys)
}

/// A random number telling apart marks written in the same millisecond.
fn nonce() -> u64 {
    let id = PackId::random();
    let mut first = [0u8; 8];
    first.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_round_trips_and_refuses_what_it_does_not_know() {
        let m = Mark {
            key: layout::mark(5, 9),
            created_ms: 5,
            not_before_ms: 10,
            safety_ms: 3,
            packs: vec![(PackId::random(), 4096)],
        };
        let back = Mark::parse(&m.key, &m.to_bytes().unwrap()).unwrap();
        assert_eq!(back, m);
        assert!(!m.is_due(12) && m.is_due(13));
        let newer = br#"{"version":2,"created_ms":1,"not_before_ms":1,"safety_ms":0,"packs":[]}"#;
        assert!(matches!(
            Mark::parse("gc/x", newer),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        let extra = br#"{"version":1,"created_ms":1,"not_before_ms":1,"safety_ms":0,"packs":[],"x":1}"#;
        assert!(Mark::parse("gc/x", extra).is_err());
        let bad_id = br#"{"version":1,"created_ms":1,"not_before_ms":1,"safety_ms":0,"packs":[["zz",1]]}"#;
        assert!(Mark::parse("gc/x", bad_id).is_err());
    }
}
