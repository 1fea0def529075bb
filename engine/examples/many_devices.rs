//! What a set of many devices costs: a device joining it, and a step that
//! finds nothing new (`DESIGN.md` §6b).
//!
//! ```text
//! cargo run --release -p coffer-engine --example many_devices -- [DEVICES] [COMMITS] [s3://BUCKET]
//! ```
//! Writes DEVICES devices' logs of COMMITS commits each (default 100 × 1,000)
//! into a `MemoryStore` (or an existing S3 bucket, reached through the
//! standard AWS variables: `AWS_ENDPOINT_URL`, `AWS_REGION`, credentials), as
//! those devices would: sealed, hash-chained, with
//! their head markers; commit `n` of a device changes its file `n mod 100`
//! (empty files, so no packs: what is measured is logs and merge, not data).
//! A device that has read every log then commits once (writing a checkpoint,
//! as any device does) and every device commits 10 more times after it:
//! recent activity that no checkpoint covers. Then it measures:
//! - join: a new folder's first pull (checkpoint, the commits after it,
//!   merge, writing DEVICES × 100 files), its wall time and store requests;
//! - a step that finds nothing new (push, then `pull_after_push`) of that
//!   folder, in store requests;
//! - the peak RSS of the join (`VmHWM`, reset before it; it includes the
//!   in-memory store and what the generator left, printed as "before it").

use coffer_engine::Device;
use coffer_engine::device::{PendingChange, StatUpdate};
use coffer_engine::format::commit::{Change, Commit, Entry, FileEntry};
use coffer_engine::format::id::{CommitHash, DeviceId};
use coffer_engine::format::path::RepoPath;
use coffer_engine::format::version::{Hlc, VersionVector};
use coffer_engine::journal::Journal;
use coffer_engine::store::s3::{S3Options, S3Store};
use coffer_engine::store::{DynStore, MemoryStore, ObjectMeta, ObjectStore, layout};
use coffer_engine::{Folder, KdfParams, NoProgress, Repository, StoreError, UploadOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Files per device: commit `n` changes file `n mod FILES`.
const FILES: u64 = 100;
/// Commits per device after the checkpoint.
const RECENT: u64 = 10;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> coffer_engine::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut number = |default: u64| {
        args.next()
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (devices, commits) = (number(100), number(1000));
    let store = Arc::new(Counting::new(backend(args.next()).await?));
    let dyn_store: DynStore = store.clone();
    let repo = Repository::init(dyn_store, b"bench", KdfParams::MINIMUM, None).await?;

    let t = Instant::now();
    let mut logs: Vec<Log> = (0..devices).map(|i| Log::new(i as u16)).collect();
    append_all(&mut logs, &repo, &store.inner, commits).await?;
    let veteran = Device::new(DeviceId::random(), Journal::temporary()?);
    veteran.refresh(&repo, &NoProgress).await?;
    veteran.commit(&repo, vec![change_of_veteran()]).await?;
    drop(veteran);
    append_all(&mut logs, &repo, &store.inner, RECENT).await?;
    let stored: u64 = store.inner.list("").await?.iter().map(|m| m.size).sum();
    println!(
        "generated {devices} devices x {commits} commits (+1 checkpoint, +{RECENT} each after it) in {:.1} s; store {:.1} MiB",
        t.elapsed().as_secs_f64(),
        stored as f64 / 1048576.0
    );

    join(&repo, &store, "join", false).await?;
    let folder = join(
        &repo,
        &store,
        "join replaying every log (no checkpoint)",
        true,
    )
    .await?;

    let opts = UploadOptions::default();
    for round in 0..2 {
        let pushed = coffer_engine::push(&repo, &folder, &opts, &NoProgress).await?;
        coffer_engine::pull_after_push(&repo, &folder, &pushed, &NoProgress).await?;
        let seen = store.take();
        println!(
            "no-change step {}: {} requests: {}",
            round + 1,
            seen.len(),
            seen.join(", ")
        );
    }
    Ok(())
}

/// A new folder's first pull, measured; with `replay`, as a journal that must
/// not start from a checkpoint.
async fn join(
    repo: &Repository,
    store: &Counting,
    what: &str,
    replay: bool,
) -> coffer_engine::Result<Folder> {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let folder = Folder::open(&dir, repo.id(), "memory:", true)?;
    if replay {
        folder
            .journal()
            .meta_put(coffer_engine::sync::pull::logs::REPLAY_ALL, &true)?;
    }
    reset_peak_rss();
    let before = peak_rss_mib();
    store.take();
    store.take_listing_s();
    let t = Instant::now();
    let pulled = coffer_engine::pull(repo, &folder, &NoProgress).await?;
    println!(
        "{what}: {:.2} s ({:.2} s of it listing), {} commits fetched, {} files written, requests {}, peak RSS {:.0} MiB ({before:.0} MiB before it)",
        t.elapsed().as_secs_f64(),
        store.take_listing_s(),
        pulled.commits,
        pulled.files_written,
        summary(&store.take()),
        peak_rss_mib()
    );
    Ok(folder)
}

/// The store to write to: memory, or `s3://BUCKET` (which must exist).
async fn backend(url: Option<String>) -> coffer_engine::Result<DynStore> {
    let Some(url) = url else {
        return Ok(Arc::new(MemoryStore::new()));
    };
    let bucket = url.strip_prefix("s3://").expect("the store is s3://BUCKET");
    let mut opts = S3Options::new(bucket, "");
    opts.endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    opts.region = std::env::var("AWS_REGION").ok();
    opts.allow_http = true;
    Ok(Arc::new(S3Store::connect(opts).await?))
}

/// Appends `n` commits to every log, the devices writing at once.
async fn append_all(
    logs: &mut [Log],
    repo: &Repository,
    store: &DynStore,
    n: u64,
) -> coffer_engine::Result<()> {
    let writes = logs.iter_mut().map(|log| log.append(repo, store, n));
    futures::future::try_join_all(writes).await.map(|_| ())
}

/// One generated device's log.
struct Log {
    index: u16,
    device: DeviceId,
    seq: u64,
    prev: CommitHash,
}

impl Log {
    fn new(index: u16) -> Log {
        Log {
            index,
            device: DeviceId::random(),
            seq: 0,
            prev: CommitHash([0; 32]),
        }
    }

    /// Appends `n` commits and moves the device's head marker.
    async fn append(
        &mut self,
        repo: &Repository,
        store: &DynStore,
        n: u64,
    ) -> coffer_engine::Result<()> {
        let first = self.seq;
        for _ in 0..n {
            self.seq += 1;
            let commit = self.next_commit();
            let sealed = commit.seal(&repo.keys())?;
            let key = layout::commit(&self.device, self.seq);
            store.put(&key, sealed.bytes.into()).await?;
            self.prev = sealed.hash;
        }
        store
            .put(
                &layout::head_marker(&self.device, self.seq),
                bytes::Bytes::new(),
            )
            .await?;
        if first > 0 {
            store
                .delete(&layout::head_marker(&self.device, first))
                .await?;
        }
        Ok(())
    }

    fn next_commit(&self) -> Commit {
        let seq = self.seq;
        let time_ms = 1_700_000_000_000 + seq * 1000 + u64::from(self.index);
        Commit {
            device: self.device,
            seq,
            prev: self.prev,
            hlc: Hlc::from_parts(time_ms, 0),
            time_ms,
            packs: Vec::new(),
            changes: self.changes(seq, time_ms),
        }
    }

    /// Commit `seq` changes one file; the first one also makes the device's
    /// directory.
    fn changes(&self, seq: u64, time_ms: u64) -> Vec<Change> {
        let mtime_ns = i64::try_from(time_ms).unwrap_or(0) * 1_000_000;
        let vv = VersionVector::new().advanced(self.device, seq);
        let dir = format!("d{:03}", self.index);
        let file = Change {
            path: RepoPath::new(format!("{dir}/f{:03}", seq % FILES).into_bytes()).expect("a path"),
            vv: vv.clone(),
            entry: Entry::File(FileEntry {
                size: 0,
                mode: 0o644,
                mtime_ns,
                chunks: Vec::new(),
            }),
        };
        let mut changes = vec![file];
        if seq == 1 {
            changes.push(Change {
                path: RepoPath::new(dir.into_bytes()).expect("a path"),
                vv,
                entry: Entry::Dir {
                    mode: 0o755,
                    mtime_ns,
                },
            });
        }
        changes
    }
}

fn change_of_veteran() -> PendingChange {
    PendingChange {
        path: RepoPath::new(b"veteran".to_vec()).expect("a valid path"),
        base: VersionVector::new(),
        entry: Entry::Deleted,
        stat: StatUpdate::None,
    }
}

/// Requests by kind, e.g. `LIST 3, GET 1,010`.
fn summary(seen: &[String]) -> String {
    let mut by: BTreeMap<&str, u64> = BTreeMap::new();
    for s in seen {
        *by.entry(s.split(' ').next().unwrap_or("?")).or_default() += 1;
    }
    by.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resets the kernel's peak-RSS counter of this process (`VmHWM`).
fn reset_peak_rss() {
    // Linux: writing 5 to clear_refs resets the peak resident set size.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `VmHWM` of this process, in MiB (0 where /proc is not Linux's).
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A store that notes every request as `"LIST prefix"`, `"GET key"`...
#[derive(Debug)]
struct Counting {
    inner: DynStore,
    seen: Mutex<Vec<String>>,
    /// Wall time with at least one LIST in flight, in µs.
    listing_us: std::sync::atomic::AtomicU64,
    /// LISTs in flight, and when the first of them started.
    in_flight: Mutex<(usize, Instant)>,
}

impl Counting {
    fn new(inner: DynStore) -> Counting {
        Counting {
            inner,
            seen: Mutex::new(Vec::new()),
            listing_us: Default::default(),
            in_flight: Mutex::new((0, Instant::now())),
        }
    }

    fn note(&self, what: &str, key: &str) {
        self.seen
            .lock()
            .expect("lock")
            .push(format!("{what} {key}"));
    }

    /// Runs one LIST, adding to `listing_us` the time during which it was the
    /// only one in flight or the first to start of those in flight: the wall
    /// time with at least one LIST in flight.
    async fn listing<T>(&self, list: impl std::future::Future<Output = T>) -> T {
        let started = {
            let mut flight = self.in_flight.lock().expect("lock");
            if flight.0 == 0 {
                flight.1 = Instant::now();
            }
            flight.0 += 1;
            flight.1
        };
        let out = list.await;
        let mut flight = self.in_flight.lock().expect("lock");
        flight.0 -= 1;
        if flight.0 == 0 {
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.listing_us
                .fetch_add(us, std::sync::atomic::Ordering::Relaxed);
        }
        out
    }

    /// Wall seconds with a LIST in flight since the last call.
    fn take_listing_s(&self) -> f64 {
        let us = self
            .listing_us
            .swap(0, std::sync::atomic::Ordering::Relaxed);
        us as f64 / 1e6
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn put(&self, key: &str, data: bytes::Bytes) -> Result<(), StoreError> {
        self.note("PUT", key);
        self.inner.put(key, data).await
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, StoreError> {
        self.note("GET", key);
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
    ) -> Result<bytes::Bytes, StoreError> {
        self.note("GET", key);
        self.inner.get_range(key, range).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.note("LIST", prefix);
        self.listing(self.inner.list(prefix)).await
    }
    async fn list_after(&self, prefix: &str, after: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.note("LIST", prefix);
        self.listing(self.inner.list_after(prefix, after)).await
    }
    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.note("LIST", prefix);
        self.listing(self.inner.list_dirs(prefix)).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.note("DELETE", key);
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        format!("{} (counted)", self.inner.describe())
    }
}
