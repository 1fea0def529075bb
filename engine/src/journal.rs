//! The journal: a device's local state in sled, `DIR/.coffer/journal/`.
//!
//! It is a cache of truth that lives in the folder and the bucket: if it is lost or
//! its schema is unknown, it is rebuilt by a rescan plus a log replay. Trees
//! (`DESIGN.md` §Journal, values postcard-encoded):
//!
//! | tree       | key                 | value                                          |
//! |------------|---------------------|------------------------------------------------|
//! | `meta`     | name                | schema version, hlc, last sync/error           |
//! | `stat`     | path bytes          | [`StatEntry`]: stat cache + synced version     |
//! | `index`    | chunk id            | [`Location`] of the chunk in a pack            |
//! | `packs`    | pack id             | acknowledged [`PackRecord`] not yet committed  |
//! | `versions` | path bytes          | maximal [`Version`]s of the path (merge input) |
//! | `heads`    | device id           | [`Head`]: highest seq seen + its hash          |
//! | `outbox`   | seq (u64 BE)        | sealed own commit, written before its PUT      |
//! | `pending`  | path bytes          | `()`: paths the watcher saw change             |
//!
//! Write ordering: an acknowledged pack goes into `packs`, then its blobs into
//! `index`, flushed before anything relies on it; a commit is put in the `outbox`
//! and flushed before its PUT.
//!
//! This file opens, flushes and resets the database and keeps `meta` (schema,
//! hybrid clock); the trees are in `journal/` by what they keep: `stat.rs`,
//! `index.rs` (chunk index and acknowledged packs), `versions.rs` (merge
//! state), `heads.rs` (logs seen and the outbox), `pending.rs`, and `rows.rs`,
//! every row's type and encoding.

mod heads;
mod index;
mod pending;
mod rows;
mod stat;
mod versions;

use crate::error::{Error, Result};
use crate::format::version::{Hlc, now_millis};
pub use rows::{Head, LocalKind, Location, StatEntry, Version};
use rows::{dec, enc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// The `meta` key set while the journal knows nothing of its folder's files
/// (built anew or reset), until a push completes.
pub const JOINING: &str = "joining";

/// Journal schema version; an unknown one triggers a rebuild.
pub const SCHEMA_VERSION: u32 = 1;

/// The sled-backed journal.
#[derive(Debug, Clone)]
pub struct Journal {
    db: sled::Db,
    meta: sled::Tree,
    stat: sled::Tree,
    index: sled::Tree,
    packs: sled::Tree,
    versions: sled::Tree,
    heads: sled::Tree,
    outbox: sled::Tree,
    pending: sled::Tree,
}

/// sled's page cache (its default is 1 GiB): the journal of a big tree must not
/// grow the process past its memory bound; pages beyond this are read back from
/// the file (the OS page cache keeps them warm).
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// Whether opening failed on the database's file lock. sled 0.34 reports it as an
/// `ErrorKind::Other` error whose text names the lock (wrapping the OS's
/// `WouldBlock`), so the kind alone does not tell.
fn is_lock_conflict(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

/// Keys per sled batch. sled keeps every page a batch replaces until the batch
/// ends (~3.5 KiB per key: 70 MiB for one pack of 20,000 small files), so large
/// runs of inserts go in batches of this size; each is atomic, the run is not
/// (callers only need a prefix of it to be durable).
const BATCH_KEYS: usize = 1024;

/// Inserts `entries` into `tree` in batches of [`BATCH_KEYS`], in order.
fn insert_in_batches<K: AsRef<[u8]>>(tree: &sled::Tree, entries: Vec<(K, Vec<u8>)>) -> Result<()> {
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() {
        let mut batch = sled::Batch::default();
        for (k, v) in entries.by_ref().take(BATCH_KEYS) {
            batch.insert(k.as_ref(), v);
        }
        tree.apply_batch(batch)?;
    }
    Ok(())
}

/// How far ahead of this machine's clock another device's commit may move its
/// hybrid logical clock (see [`Journal::observe_hlc`]).
pub const MAX_CLOCK_AHEAD_MS: u64 = 5 * 60 * 1000;

/// How long [`Journal::open`] waits for a lock held by a closing handle.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Journal {
    /// Opens (creating if needed) the journal in `dir`. Returns whether it was
    /// (re)built empty, in which case the caller must rescan and replay the logs.
    pub fn open(dir: &Path) -> Result<(Journal, bool)> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::HighThroughput);
        // sled releases its file lock only when its background I/O threads let go
        // of the page cache, a moment after the last handle is dropped. So a
        // journal closed and reopened at once (the daemon's next cycle, a test,
        // a coffer process that is just exiting) can find it still locked: wait
        // for that briefly before concluding another coffer holds the folder.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(io))
                    if is_lock_conflict(&io) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(sled::Error::Io(io)) => {
                    return Err(Error::Journal(format!(
                        "cannot open {} ({io}); is another coffer running on this folder?",
                        dir.display()
                    )));
                }
                Err(e) => return Err(Error::from(e)),
            }
        };
        Self::from_db(db)
    }

    /// A throw-away journal, for commands that read a repository without a folder.
    pub fn temporary() -> Result<Journal> {
        Self::temporary_in(None)
    }

    /// A throw-away journal under `scratch` (else the system temp dir).
    pub fn temporary_in(scratch: Option<&Path>) -> Result<Journal> {
        let mut config = sled::Config::new()
            .temporary(true)
            .cache_capacity(CACHE_BYTES);
        if let Some(dir) = scratch {
            let name = format!("coffer-{}", crate::format::id::DeviceId::random());
            config = config.path(dir.join(name));
        }
        Ok(Self::from_db(config.open()?)?.0)
    }

    fn from_db(db: sled::Db) -> Result<(Journal, bool)> {
        let j = Journal {
            meta: db.open_tree("meta")?,
            stat: db.open_tree("stat")?,
            index: db.open_tree("index")?,
            packs: db.open_tree("packs")?,
            versions: db.open_tree("versions")?,
            heads: db.open_tree("heads")?,
            outbox: db.open_tree("outbox")?,
            pending: db.open_tree("pending")?,
            db,
        };
        let schema: Option<u32> = j.meta_get("schema")?;
        let fresh = schema != Some(SCHEMA_VERSION);
        if fresh {
            if schema.is_some() {
                tracing::warn!(
                    ?schema,
                    "unknown journal schema; rebuilding from the folder and the store"
                );
            }
            j.reset()?;
        }
        Ok((j, fresh))
    }

    /// Empties every tree, as for a journal built anew: the logs are replayed on
    /// the next fetch and the next push rescans the folder.
    pub fn reset(&self) -> Result<()> {
        for t in [
            &self.meta,
            &self.stat,
            &self.index,
            &self.packs,
            &self.versions,
            &self.heads,
            &self.outbox,
            &self.pending,
        ] {
            t.clear()?;
        }
        self.meta_put("schema", &SCHEMA_VERSION)?;
        // Knowing nothing of the folder's files, its next push joins
        // (`sync::push::join`), whatever runs first.
        self.meta_put(JOINING, &true)?;
        self.flush()
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// [`Journal::flush`] without blocking the async executor. Not sled's own
    /// `flush_async`: in sled 0.34.7 concurrent calls of it deadlock
    /// (spacejam/sled#1308, seen here as a push hung with every sled-io thread in
    /// `make_stable`); the blocking flush runs on tokio's blocking pool instead.
    pub async fn flush_async(&self) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| Error::Internal(format!("journal flush: {e}")))??;
        Ok(())
    }

    // ---- meta

    pub fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.meta.get(key)?.map(|v| dec(&v)).transpose()
    }

    pub fn meta_put<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.meta.insert(key, enc(value)?)?;
        Ok(())
    }

    pub fn meta_remove(&self, key: &str) -> Result<()> {
        self.meta.remove(key)?;
        Ok(())
    }

    /// The HLC after this journal's last issued or observed stamp.
    pub fn next_hlc(&self, now_ms: u64) -> Result<Hlc> {
        let last: Hlc = self.meta_get("hlc")?.unwrap_or_default();
        let next = last.tick(now_ms);
        self.meta_put("hlc", &next)?;
        Ok(next)
    }

    ///
    /// A stamp more than [`MAX_CLOCK_AHEAD_MS`] ahead of this machine's clock
    /// (a device whose clock runs fast) moves this clock only that far: the
    /// commit is merged as usual (versions are ordered by their vectors; the
    /// HLC only breaks ties between concurrent ones), but it does not drag
    /// every later commit of this device into the future.
    pub fn observe_hlc(&self, seen: Hlc) -> Result<()> {
        let cap = Hlc::from_parts(now_millis().saturating_add(MAX_CLOCK_AHEAD_MS), 0);
        let seen = seen.min(cap);
        let last: Hlc = self.meta_get("hlc")?.unwrap_or_default();
        if seen > last {
            self.meta_put("hlc", &seen)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::commit::PackRecord;
    use crate::format::id::{ChunkId, PackId};
    use crate::format::pack::BlobEntry;
    use crate::format::path::RepoPath;

    /// Many flushes at once, as parallel upload workers make them, all finish
    /// (sled's own `flush_async` can deadlock here: spacejam/sled#1308).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_all_finish() {
        let j = Journal::temporary().unwrap();
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let j = j.clone();
                tokio::spawn(async move {
                    j.meta_put(&format!("k{i}"), &i).unwrap();
                    j.flush_async().await.unwrap();
                })
            })
            .collect();
        let all = futures::future::join_all(tasks);
        let done = tokio::time::timeout(std::time::Duration::from_secs(30), all).await;
        assert!(done.is_ok(), "flushes hung");
    }

    #[test]
    fn uploaded_packs_are_indexed_until_committed() {
        let j = Journal::temporary().unwrap();
        let chunk = ChunkId::random();
        let rec = PackRecord {
            id: PackId::random(),
            size: 100,
            blobs: vec![BlobEntry {
                chunk,
                offset: 0,
                sealed_len: 50,
                raw_len: 10,
            }],
        };
        j.record_uploaded_pack(&rec).unwrap();
        assert!(j.has_chunk(&chunk).unwrap());
        assert_eq!(j.uncommitted_packs().unwrap(), vec![rec.clone()]);
        j.record_committed_packs(std::slice::from_ref(&rec))
            .unwrap();
        assert!(j.uncommitted_packs().unwrap().is_empty());
        assert_eq!(j.location(&chunk).unwrap().unwrap().pack, rec.id);
    }

    #[test]
    fn a_journal_released_while_waiting_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let (held, _) = Journal::open(dir.path()).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let start = std::time::Instant::now();
        let opened = Journal::open(dir.path());
        release.join().unwrap();
        assert!(opened.is_ok(), "{:?}", opened.err());
        assert!(start.elapsed() >= std::time::Duration::from_millis(250));
    }

    #[test]
    fn a_journal_held_past_the_wait_is_reported_as_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (_held, _) = Journal::open(dir.path()).unwrap();
        let start = std::time::Instant::now();
        let Err(err) = Journal::open(dir.path()) else {
            panic!("opened a journal whose lock is held");
        };
        assert!(start.elapsed() >= LOCK_WAIT);
        assert!(err.to_string().contains("another coffer"), "{err}");
    }

    #[test]
    fn unknown_schema_rebuilds() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (j, fresh) = Journal::open(dir.path()).unwrap();
            assert!(fresh);
            j.mark_pending(&RepoPath::new(b"x".to_vec()).unwrap())
                .unwrap();
            j.meta_put("schema", &99u32).unwrap();
            j.flush().unwrap();
        }
        let (j, fresh) = Journal::open(dir.path()).unwrap();
        assert!(fresh);
        assert_eq!(j.pending_len(), 0);
        drop(j);
        let (_, fresh) = Journal::open(dir.path()).unwrap();
        assert!(!fresh);
    }
}
