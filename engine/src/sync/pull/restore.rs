//! Writing files out of the repository, pack by pack.
//!
//! [`write_files`] plans which blobs of which packs every file needs, fetches each
//! pack once (adjacent blobs coalesced into one ranged GET, read as a stream), opens
//! and verifies every blob as soon as its bytes are in (AEAD, then the chunk id
//! recomputed), and writes it at its offsets into temp files under the folder's
//! `.coffer/tmp/`. A file is renamed into place only when all its chunks are
//! written, and only if its destination still is what the caller expects
//! ([`Guard`]); a file any of whose chunks fails verification is never renamed —
//! its temp file is removed and the error reported — while every other file is
//! still written. A GET whose body breaks off is resumed from the first byte not
//! yet received ([`RangeReader`]), not fetched again. Memory: at most
//! `FETCH_CONCURRENCY` ranges in flight, each holding at most two blobs (one being
//! received, one being opened).
//!
//! Writes into one file take that file's lock in user space: concurrent `pwrite`s
//! into one inode otherwise spin on the kernel's inode lock.

use crate::error::{Error, Result};
use crate::format::commit::FileEntry;
use crate::format::id::{ChunkId, PackId};
use crate::format::pack::{self, BlobEntry};
use crate::format::path::RepoPath;
use crate::journal::{Journal, Location, StatEntry};
use crate::progress::{Phase, Progress};
use crate::repo::Repository;
use crate::store::layout;
use crate::sync::pull::rootfs::{RootFs, TmpDir};
use crate::sync::push::scan::LocalEntry;
use bytes::BytesMut;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

mod write;
pub use write::system_time;
#[cfg(any(test, feature = "testing"))]
pub use write::check_guard;
use write::{deliver, finish_if_complete, reserve};

/// Ranged GETs in flight.
const FETCH_CONCURRENCY: usize = 4;
/// Blobs closer than this are fetched in one ranged GET.
const COALESCE_GAP: u64 = 256 * 1024;

/// What the destination must look like for the rename to happen.
#[derive(Debug, Clone)]
pub enum Guard {
    /// Nothing may exist there.
    Absent,
    /// It must still match this stat entry (it was not modified locally).
    Unchanged(StatEntry),
    /// Replace whatever is there (`get`/`restore --force`).
    Any,
    /// Nothing, or a regular file with the very bytes written (then it is left
    /// as it is): `get` and `restore` never replace other content unless forced.
    Same,
}

/// One file to write.
#[derive(Debug, Clone)]
pub struct FileJob {
    /// The file in the repository.
    pub path: RepoPath,
    /// Where it goes, below the [`RootFs`] it is written into.
    pub dest: RepoPath,
    pub entry: FileEntry,
    pub guard: Guard,
}

struct JobState {
    /// The temp file's name in the [`TmpDir`].
    tmp: String,
    /// Held while writing into `tmp`.
    writing: Arc<Mutex<()>>,
    remaining: usize,
    /// Set by the one thread that installs the complete file (ranges are
    /// delivered concurrently, so several may see `remaining` reach zero).
    installing: bool,
    result: Option<Result<LocalEntry>>,
}

/// One blob to fetch and where its plaintext goes.
struct Need {
    loc: Location,
    chunk: ChunkId,
    targets: Vec<(usize, u64)>,
}

/// Writes every job below `root` (temp files in `tmp`); returns one result per
/// job, in order: the written file's `lstat` after the rename.
pub async fn write_files(
    repo: &Repository,
    journal: &Journal,
    jobs: Vec<FileJob>,
    root: &RootFs,
    tmp: &TmpDir,
    progress: &dyn Progress,
) -> Vec<Result<LocalEntry>> {
    let total: u64 = jobs.iter().map(|j| j.entry.size).sum();
    // Bytes are counted as ranges arrive; files complete out of order, so
    // no item count is given.
    progress.start(Phase::Download, Some(total), None);
    let jobs = Arc::new(jobs);
    let (states, packs) = plan(journal, &jobs, root, tmp);
    let out = Arc::new(Out {
        root: root.clone(),
        tmp: tmp.clone(),
        jobs,
        states: Mutex::new(states),
    });
    for i in 0..out.jobs.len() {
        finish_if_complete(&out, i);
    }
    let mut order: Vec<(PackId, Vec<Need>)> = packs.into_iter().collect();
    order.sort_by_key(|(_, needs)| first_file(needs));
    let ranges = interleave_files(
        order
            .into_iter()
            .flat_map(|(pack, needs)| coalesce(needs).into_iter().map(move |r| (pack, r)))
            .collect(),
    );
    // Fetching a range and opening and writing its blobs is one unit of work,
    // `FETCH_CONCURRENCY` of them at once. Each blob is opened (on a blocking
    // thread, so on every core) as soon as its bytes are in, while the next one
    // arrives: the work follows the network instead of waiting for whole ranges.
    let store = repo.store().clone();
    let keys = repo.keys().clone();
    let mut stream = futures::stream::iter(ranges)
        .map(|(pack, needs)| {
            let sink = Sink {
                keys: keys.clone(),
                out: out.clone(),
                pack,
            };
            fetch_range(store.clone(), sink, needs)
        })
        .buffer_unordered(FETCH_CONCURRENCY);
    while let Some(written) = stream.next().await {
        progress.advance(written, 0);
    }
    drop(stream);
    progress.finish(Phase::Download);
    let Ok(out) = Arc::try_unwrap(out) else {
        return Vec::new(); // unreachable: every range has finished
    };
    let states = out.states.into_inner().unwrap_or_else(|p| p.into_inner());
    states
        .into_iter()
        .map(|st| {
            let res = st
                .result
                .unwrap_or_else(|| Err(Error::Internal("file left incomplete".into())));
            if res.is_err() {
                out.tmp.remove(&st.tmp);
            }
            res
        })
        .collect()
}

/// Where a batch's files go, shared by every range being fetched.
struct Out {
    root: RootFs,
    tmp: TmpDir,
    jobs: Arc<Vec<FileJob>>,
    states: Mutex<Vec<JobState>>,
}

impl Out {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JobState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Locates every chunk; creates the temp files.
fn plan(
    journal: &Journal,
    jobs: &[FileJob],
    root: &RootFs,
    tmp: &TmpDir,
) -> (Vec<JobState>, HashMap<PackId, Vec<Need>>) {
    let mut states = Vec::with_capacity(jobs.len());
    let mut packs: HashMap<PackId, BTreeMap<u32, Need>> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let mut st = JobState {
            tmp: tmp.fresh_name("part"),
            writing: Arc::default(),
            remaining: job.entry.chunks.len(),
            installing: false,
            result: None,
        };
        let made = (root, tmp, st.tmp.as_str());
        if let Err(e) = plan_job(journal, i, job, made, &mut packs) {
            st.result = Some(Err(e));
        }
        states.push(st);
    }
    let packs = packs
        .into_iter()
        .map(|(p, m)| (p, m.into_values().collect()))
        .collect();
    (states, packs)
}

fn plan_job(
    journal: &Journal,
    i: usize,
    job: &FileJob,
    (root, tmp, tmp_name): (&RootFs, &TmpDir, &str),
    packs: &mut HashMap<PackId, BTreeMap<u32, Need>>,
) -> Result<()> {
    let mut locs = Vec::with_capacity(job.entry.chunks.len());
    let mut offset = 0u64;
    for chunk in &job.entry.chunks {
        let loc = journal.location(chunk)?.ok_or_else(|| {
            Error::corrupt(
                job.path.display(),
                format!("chunk {chunk} is in no known pack"),
            )
        })?;
        locs.push((loc, offset));
        offset += u64::from(loc.raw_len);
    }
    if offset != job.entry.size {
        return Err(Error::corrupt(
            job.path.display(),
            "chunk sizes do not add up to the file size",
        ));
    }
    // Errors name the file being written, not its temp file.
    let shown = || root.display(&job.dest);
    let f = tmp.create(tmp_name).map_err(|e| Error::io(shown(), e))?;
    if let Err(e) = reserve(&f, job.entry.size) {
        tmp.remove(tmp_name);
        return Err(Error::io(shown(), e));
    }
    for ((loc, off), chunk) in locs.into_iter().zip(&job.entry.chunks) {
        packs
            .entry(loc.pack)
            .or_default()
            .entry(loc.offset)
            .or_insert_with(|| Need {
                loc,
                chunk: *chunk,
                targets: Vec::new(),
            })
            .targets
            .push((i, off));
    }
    Ok(())
}

/// The first file a range writes into.
fn first_file(needs: &[Need]) -> usize {
    needs
        .iter()
        .flat_map(|n| n.targets.iter().map(|t| t.0))
        .min()
        .unwrap_or(0)
}

/// Deals the ranges (in file order) round-robin over the files they start in, so
/// that the ranges in flight together write into different files: writes into
/// one file are serialized, so four ranges of one big file would wait on each
/// other's writes. Ranges of small files (one range, many files) keep their order.
fn interleave_files(ranges: Vec<(PackId, Vec<Need>)>) -> Vec<(PackId, Vec<Need>)> {
    let mut groups: Vec<std::collections::VecDeque<(PackId, Vec<Need>)>> = Vec::new();
    let mut last = None;
    for r in ranges {
        let file = first_file(&r.1);
        if last != Some(file) {
            groups.push(Default::default());
            last = Some(file);
        }
        groups.last_mut().expect("just pushed").push_back(r);
    }
    let mut out = Vec::new();
    while !groups.is_empty() {
        for g in &mut groups {
            out.extend(g.pop_front());
        }
        groups.retain(|g| !g.is_empty());
    }
    out
}

/// Splits a pack's needs (sorted by offset) into ranges worth one GET each.
fn coalesce(needs: Vec<Need>) -> Vec<Vec<Need>> {
    let mut out: Vec<Vec<Need>> = Vec::new();
    for n in needs {
        let join = out.last().and_then(|r| r.last()).is_some_and(|prev| {
            let prev_end = u64::from(prev.loc.offset) + u64::from(prev.loc.sealed_len);
            u64::from(n.loc.offset) <= prev_end + COALESCE_GAP
        });
        if join {
            out.last_mut().expect("checked").push(n);
        } else {
            out.push(vec![n]);
        }
    }
    out
}

/// Where a range's opened blobs go.
#[derive(Clone)]
struct Sink {
    keys: Arc<crate::crypto::Keys>,
    out: Arc<Out>,
    pack: PackId,
}

/// Fetches one range of a pack and writes each of its blobs as soon as it is in;
/// returns the bytes written. A blob is opened while the next one arrives (at
/// most one waits to be opened), so a range holds at most two blobs in memory.
async fn fetch_range(store: crate::store::DynStore, sink: Sink, needs: Vec<Need>) -> u64 {
    let start = u64::from(needs[0].loc.offset);
    let last = needs.last().expect("ranges are never empty");
    let end = u64::from(last.loc.offset) + u64::from(last.loc.sealed_len);
    let mut source = RangeReader::open(store, layout::pack(&sink.pack), start..end).await;
    let mut written = 0u64;
    let mut opening: Option<tokio::task::JoinHandle<u64>> = None;
    for need in needs {
        let sealed = source
            .read(u64::from(need.loc.offset), need.loc.sealed_len as usize)
            .await;
        if let Some(previous) = opening.take() {
            written += previous.await.unwrap_or(0);
        }
        let sink = sink.clone();
        opening = Some(tokio::task::spawn_blocking(move || {
            open_and_deliver(&sink, &need, sealed)
        }));
    }
    if let Some(previous) = opening {
        written += previous.await.unwrap_or(0);
    }
    written
}

/// Opens one blob (AEAD, then its chunk id) and writes it to every file that
/// needs it; returns the bytes written.
fn open_and_deliver(sink: &Sink, need: &Need, sealed: Result<BytesMut>) -> u64 {
    let entry = BlobEntry {
        chunk: need.chunk,
        offset: need.loc.offset,
        sealed_len: need.loc.sealed_len,
        raw_len: need.loc.raw_len,
    };
    match sealed {
        Ok(mut buf) => {
            let opened = pack::open_blob_in_place(&sink.keys, &sink.pack, &entry, &mut buf);
            let written = deliver(&sink.out, need, opened.as_deref());
            drop(opened);
            crate::chunk::buffers::GLOBAL.give(buf);
            written
        }
        Err(e) => deliver(&sink.out, need, Err(&e)),
    }
}

/// Reads one byte range of an object front to back, piece by piece as it
/// arrives. If the stream breaks off, the rest is asked for once more with a
/// plain (retried) ranged GET; if that fails too, every later read fails.
struct RangeReader {
    store: crate::store::DynStore,
    key: String,
    pieces: Option<crate::store::Pieces>,
    /// Received but not yet read; starts at `pos`.
    current: bytes::Bytes,
    pos: u64,
    end: u64,
    failed: Option<Error>,
}

impl RangeReader {
    async fn open(store: crate::store::DynStore, key: String, range: std::ops::Range<u64>) -> Self {
        let (pieces, failed) = match store.get_range_stream(&key, range.clone()).await {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(Error::Store(e))),
        };
        RangeReader {
            store,
            key,
            pieces,
            current: bytes::Bytes::new(),
            pos: range.start,
            end: range.end,
            failed,
        }
    }

    /// The `len` bytes at `offset` (at or after everything read so far).
    async fn read(&mut self, offset: u64, len: usize) -> Result<BytesMut> {
        while self.pos < offset {
            let skip = usize::try_from(offset - self.pos).unwrap_or(usize::MAX);
            let piece = self.next_piece(skip).await?;
            self.pos += piece.len() as u64;
        }
        // Blobs of every size go into pooled buffers (most are under the pool's
        // minimum).
        let mut buf =
            crate::chunk::buffers::GLOBAL.take(len.max(crate::chunk::buffers::MIN_POOLED));
        while buf.len() < len {
            let piece = self.next_piece(len - buf.len()).await?;
            self.pos += piece.len() as u64;
            buf.extend_from_slice(&piece);
        }
        Ok(buf)
    }

    /// Up to `max` received bytes at `pos`, waiting for more when none are left.
    async fn next_piece(&mut self, max: usize) -> Result<bytes::Bytes> {
        while self.current.is_empty() {
            if let Some(e) = &self.failed {
                return Err(e.clone());
            }
            if self.pos >= self.end {
                return Err(self.fail_short());
            }
            let next = match &mut self.pieces {
                Some(p) => p.next().await,
                None => None,
            };
            match next {
                Some(Ok(piece)) => self.current = piece,
                Some(Err(e)) => self.resume(Some(e)).await?,
                None => self.resume(None).await?,
            }
        }
        let n = max.min(self.current.len());
        Ok(self.current.split_to(n))
    }

    /// The stream ended early: one plain GET for the rest (the stream is gone once
    /// resumed, so a second break fails the reader).
    async fn resume(&mut self, why: Option<crate::error::StoreError>) -> Result<()> {
        if self.pieces.take().is_none() {
            return Err(match why {
                Some(e) => self.fail(Error::Store(e)),
                None => self.fail_short(),
            });
        }
        if let Some(e) = &why {
            tracing::debug!(key = %self.key, error = %e, "range stream broke off; fetching the rest");
        }
        match self.store.get_range(&self.key, self.pos..self.end).await {
            Ok(rest) if !rest.is_empty() => {
                self.current = rest;
                Ok(())
            }
            Ok(_) => Err(self.fail_short()),
            Err(e) => Err(self.fail(Error::Store(e))),
        }
    }

    fn fail_short(&mut self) -> Error {
        let e = Error::corrupt(&self.key, "object shorter than its index says");
        self.fail(e)
    }

    fn fail(&mut self, e: Error) -> Error {
        self.failed = Some(e.clone());
        e
    }
}

/// Streams one file's content to `out`, verifying every chunk, in order.
pub async fn stream_file(
    repo: &Repository,
    journal: &Journal,
    path: &RepoPath,
    entry: &FileEntry,
    out: &mut (dyn std::io::Write + Send),
) -> Result<()> {
    let mut locs = Vec::with_capacity(entry.chunks.len());
    for chunk in &entry.chunks {
        let loc = journal.location(chunk)?.ok_or_else(|| {
            Error::corrupt(path.display(), format!("chunk {chunk} is in no known pack"))
        })?;
        locs.push((*chunk, loc));
    }
    let mut blobs = futures::stream::iter(locs)
        .map(|(chunk, loc)| {
            let (store, keys) = (repo.store().clone(), repo.keys().clone());
            async move {
                let start = u64::from(loc.offset);
                let end = start + u64::from(loc.sealed_len);
                let sealed = store
                    .get_range(&layout::pack(&loc.pack), start..end)
                    .await?;
                let entry = BlobEntry {
                    chunk,
                    offset: loc.offset,
                    sealed_len: loc.sealed_len,
                    raw_len: loc.raw_len,
                };
                tokio::task::spawn_blocking(move || {
                    let mut sealed = sealed
                        .try_into_mut()
                        .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]));
                    pack::open_blob_in_place(&keys, &loc.pack, &entry, &mut sealed)
                        .map(std::borrow::Cow::into_owned)
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
            }
        })
        .buffered(FETCH_CONCURRENCY);
    while let Some(data) = blobs.next().await {
        out.write_all(&data?)
            .map_err(|e| Error::io("<output>", e))?;
    }
    out.flush().map_err(|e| Error::io("<output>", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreError;
    use std::fs;
    use crate::store::{MemoryStore, ObjectMeta, ObjectStore, Pieces};
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A range of pack `pack` whose first blob goes to `files`.
    fn range(pack: u8, files: &[usize]) -> (PackId, Vec<Need>) {
        let loc = Location {
            pack: PackId([pack; 32]),
            offset: 0,
            sealed_len: 10,
            raw_len: 1,
        };
        let need = Need {
            loc,
            chunk: ChunkId([pack; 32]),
            targets: files.iter().map(|&f| (f, 0)).collect(),
        };
        (loc.pack, vec![need])
    }

    #[test]
    fn ranges_in_flight_together_write_different_files() {
        let order = |ranges: Vec<(PackId, Vec<Need>)>| -> Vec<u8> {
            interleave_files(ranges)
                .iter()
                .map(|(p, _)| p.0[0])
                .collect()
        };
        // Three big files: their ranges are dealt round-robin.
        let big = vec![
            range(1, &[0]),
            range(2, &[0]),
            range(3, &[0]),
            range(4, &[1]),
            range(5, &[1]),
            range(6, &[2]),
        ];
        assert_eq!(order(big), [1, 4, 6, 2, 5, 3]);
        // Small files, a few per range: the order stays.
        let small = vec![range(1, &[0, 1]), range(2, &[2, 3]), range(3, &[4])];
        assert_eq!(order(small), [1, 2, 3]);
    }

    /// Streams break off after `keep` bytes (with an error, or silently); plain
    /// ranged GETs fail while `get_failures` lasts.
    #[derive(Debug)]
    struct BreakingStore {
        inner: MemoryStore,
        keep: usize,
        with_error: bool,
        get_failures: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl ObjectStore for BreakingStore {
        async fn put(&self, key: &str, data: bytes::Bytes) -> std::result::Result<(), StoreError> {
            self.inner.put(key, data).await
        }
        async fn get(&self, key: &str) -> std::result::Result<bytes::Bytes, StoreError> {
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &str,
            r: std::ops::Range<u64>,
        ) -> std::result::Result<bytes::Bytes, StoreError> {
            let failing = self
                .get_failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(StoreError::Transient {
                    detail: "injected".into(),
                    cause: crate::error::Transient::Reset,
                });
            }
            self.inner.get_range(key, r).await
        }
        async fn get_range_stream(
            &self,
            key: &str,
            r: std::ops::Range<u64>,
        ) -> std::result::Result<Pieces, StoreError> {
            let all = self.inner.get_range(key, r).await?;
            let head = all.slice(..self.keep.min(all.len()));
            // Small pieces, as a network delivers them.
            let mut pieces: Vec<std::result::Result<bytes::Bytes, StoreError>> = head
                .chunks(1000)
                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                .collect();
            if self.with_error {
                pieces.push(Err(StoreError::Transient {
                    detail: "body interrupted".into(),
                    cause: crate::error::Transient::Reset,
                }));
            }
            Ok(Box::pin(futures::stream::iter(pieces)))
        }
        async fn list(&self, p: &str) -> std::result::Result<Vec<ObjectMeta>, StoreError> {
            self.inner.list(p).await
        }
        async fn delete(&self, key: &str) -> std::result::Result<(), StoreError> {
            self.inner.delete(key).await
        }
        fn describe(&self) -> String {
            "breaking".into()
        }
    }

    async fn store_with(
        data: &[u8],
        keep: usize,
        with_error: bool,
        get_failures: usize,
    ) -> crate::store::DynStore {
        let s = BreakingStore {
            inner: MemoryStore::new(),
            keep,
            with_error,
            get_failures: AtomicUsize::new(get_failures),
        };
        s.put("obj", bytes::Bytes::copy_from_slice(data))
            .await
            .unwrap();
        Arc::new(s)
    }

    fn data() -> Vec<u8> {
        (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_range_is_read_in_pieces_with_gaps_skipped() {
        let d = data();
        let store = store_with(&d, usize::MAX, false, 0).await;
        let mut r = RangeReader::open(store, "obj".into(), 100..19_000).await;
        assert_eq!(&r.read(100, 2500).await.unwrap()[..], &d[100..2600]);
        assert_eq!(&r.read(4000, 3001).await.unwrap()[..], &d[4000..7001]);
        assert_eq!(&r.read(7001, 11_999).await.unwrap()[..], &d[7001..19_000]);
    }

    #[tokio::test]
    async fn a_stream_that_breaks_off_is_resumed_where_it_stopped() {
        let d = data();
        for with_error in [true, false] {
            let store = store_with(&d, 5_500, with_error, 0).await;
            let mut r = RangeReader::open(store, "obj".into(), 0..20_000).await;
            assert_eq!(&r.read(0, 4000).await.unwrap()[..], &d[..4000]);
            // This read straddles the break.
            assert_eq!(&r.read(4500, 9000).await.unwrap()[..], &d[4500..13_500]);
            assert_eq!(&r.read(13_500, 6500).await.unwrap()[..], &d[13_500..]);
        }
    }

    #[tokio::test]
    async fn when_the_rest_cannot_be_fetched_every_later_read_fails() {
        let d = data();
        let store = store_with(&d, 5_500, true, 1).await;
        let mut r = RangeReader::open(store, "obj".into(), 0..20_000).await;
        assert_eq!(&r.read(0, 5000).await.unwrap()[..], &d[..5000]);
        let e = r.read(5000, 1000).await.unwrap_err();
        assert!(e.to_string().contains("injected"), "{e}");
        assert!(r.read(6000, 1000).await.is_err());
    }

    #[tokio::test]
    async fn an_object_shorter_than_the_range_is_corrupt_not_a_hang() {
        let d = data();
        let store = store_with(&d[..3000], usize::MAX, false, 0).await;
        let mut r = RangeReader::open(store, "obj".into(), 0..20_000).await;
        // The stream ends after 3000 bytes; asking for the rest is refused.
        let e = r.read(0, 5000).await.unwrap_err();
        assert!(e.to_string().contains("3000..20000"), "{e}");
        assert!(r.read(5000, 10).await.is_err());
    }

    #[test]
    fn reserve_sizes_the_file_and_allocates_where_the_filesystem_can() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.part");
        let f = fs::File::create(&path).unwrap();
        let size = 3 * 1024 * 1024 + 17;
        reserve(&f, size).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), size);
        let probe = fs::File::create(dir.path().join("probe")).unwrap();
        if rustix::fs::fallocate(&probe, rustix::fs::FallocateFlags::empty(), 0, 4096).is_ok() {
            assert!(meta.blocks() * 512 >= size, "{} blocks", meta.blocks());
        }
        reserve(&f, 0).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    }
}
