//! The upload pipeline: files → chunks → sealed blobs in packs → store.
//!
//! ```text
//!  reader thread ──jobs──► sealer threads (one pack builder each) ──msgs──► collector
//!  (open, chunk)           (id, dedup claim, compress, seal)                (file chunk lists,
//!                                                                            uploads ≤ window)
//! ```
//! - The reader streams each file through the chunker; chunks are `Bytes` slices of
//!   its read blocks (no copy).
//! - Sealers run on every core. A chunk already in the index (this device, earlier
//!   runs, other devices) or claimed earlier in this run is not sealed again.
//!   Each sealer seals straight into its own pack buffer; full packs go to the
//!   collector, partial ones are merged at the end (blobs are position-independent).
//! - The collector uploads packs with at most `window` in flight; each acknowledged
//!   pack is recorded in the journal (index + uncommitted packs) and flushed before
//!   anything relies on it.
//! - Bounded channels give backpressure end to end, and [`PackTokens`] bound the
//!   packs alive at once (being filled, queued or in flight) to the window's
//!   maximum: a sealer takes a token before it starts a pack, the upload gives it
//!   back once the store answered. While the store is the bottleneck, nearly all
//!   of them are in flight (a pack is filled in ~40 ms). Pack memory stays bounded
//!   whatever the data size: `window ×` [`crate::format::pack::max_finished_len`] (8 × 12 MiB
//!   with the defaults) plus a few read blocks; per-file state is that of one call,
//!   which a push bounds to [`UploadOptions::batch_changes`] files (README,
//!   "Memory on huge trees").

use crate::chunk::chunker::Chunker;
use crate::chunk::codec::Compressor;
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::format::id::{ChunkId, PackId};
use crate::format::pack::{FinishedPack, PackBuilder};
use crate::format::path::RepoPath;
use crate::journal::Journal;
use crate::progress::{Phase, Progress};
use crate::store::{DynStore, layout};
use crate::sync::push::scan::LocalEntry;
use crate::sync::pull::rootfs::RootFs;
use crate::sync::push::window::{Congestion, UploadWindow};
use bytes::Bytes;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Tuning of the pipeline.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Pack size at which a pack is closed (default 12 MiB).
    pub pack_target: usize,
    /// Sealer threads (default: available cores).
    pub workers: usize,
    /// The adaptive upload window (default 8 in flight).
    pub window: Arc<UploadWindow>,
    /// Changes per commit of a push (default [`DEFAULT_BATCH_CHANGES`]): what a
    /// push holds in memory per file is bounded by this, not by the folder.
    pub batch_changes: usize,
}

/// Changes per commit of a push: ~1 KiB of state each (task, outcome, pending
/// version, stat entry) while the batch is in flight.
pub const DEFAULT_BATCH_CHANGES: usize = 16_384;

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            pack_target: crate::format::pack::DEFAULT_PACK_TARGET,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            window: UploadWindow::new(8),
            batch_changes: DEFAULT_BATCH_CHANGES,
        }
    }
}

/// A file to read.
#[derive(Debug, Clone)]
pub struct FileTask {
    pub path: RepoPath,
    pub fs_path: PathBuf,
    /// `lstat` at scan time.
    pub before: LocalEntry,
    /// Chunk ends of the version last synced, if any: the chunker falls back in
    /// step with them after an edit (see [`Chunker::chunks_resyncing`]).
    pub previous: Vec<u64>,
}

/// What became of a file.
#[derive(Debug, Clone)]
pub enum FileOutcome {
    /// Every chunk is in the index or in an acknowledged pack of this run.
    Done {
        chunks: Vec<ChunkId>,
        size: u64,
        /// `fstat` after reading.
        after: LocalEntry,
    },
    /// Unreadable, or changed while being read; it stays pending.
    Failed(String),
}

/// Counters of one run.
#[derive(Debug, Default, Clone, Copy)]
pub struct UploadStats {
    pub bytes_read: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_chunk_bytes: u64,
    pub packs: u64,
    pub bytes_uploaded: u64,
}

impl UploadStats {
    /// Adds the counters of another run (a push of several batches).
    pub fn add(&mut self, o: &UploadStats) {
        self.bytes_read += o.bytes_read;
        self.chunks += o.chunks;
        self.new_chunks += o.new_chunks;
        self.new_chunk_bytes += o.new_chunk_bytes;
        self.packs += o.packs;
        self.bytes_uploaded += o.bytes_uploaded;
    }
}

struct Job {
    file: u32,
    index: u32,
    data: Bytes,
}

enum Msg {
    Chunk {
        file: u32,
        index: u32,
        id: ChunkId,
        len: u64,
        new: bool,
    },
    FileEnd {
        file: u32,
        chunks: u32,
        size: u64,
        after: LocalEntry,
    },
    FileFailed {
        file: u32,
        error: String,
    },
    Pack(FinishedPack),
    Leftover(PackBuilder),
    Fatal(Error),
}

#[derive(Default)]
struct FileState {
    chunks: Vec<Option<ChunkId>>,
    received: u32,
    end: Option<(u32, u64, LocalEntry)>,
    failed: Option<String>,
}

/// Dedup claims of one run on top of the journal's index.
struct Claims {
    journal: Journal,
    run: Mutex<HashSet<ChunkId>>,
}

impl Claims {
    /// True exactly once per chunk id not yet in the repository.
    fn claim(&self, id: ChunkId) -> Result<bool> {
        if self.journal.has_chunk(&id)? {
            return Ok(false);
        }
        Ok(self
            .run
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id))
    }
}

/// Reads, chunks, seals and uploads `tasks`; returns one outcome per task.
pub async fn upload_files(
    keys: Arc<Keys>,
    chunker: Arc<Chunker>,
    store: DynStore,
    journal: &Journal,
    tasks: Vec<FileTask>,
    opts: &UploadOptions,
    progress: &dyn Progress,
) -> Result<(Vec<FileOutcome>, UploadStats)> {
    let total: u64 = tasks.iter().map(|t| t.before.size).sum();
    progress.start(Phase::Upload, Some(total), Some(tasks.len() as u64));
    let workers = opts.workers.max(1);
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(2 * workers);
    let tokens = PackTokens::new(opts.window.max());
    let (msg_tx, mut msg_rx) = mpsc::channel::<Msg>(64);
    let n = tasks.len();
    let mut threads = Vec::new();
    {
        let (chunker, msg_tx) = (chunker.clone(), msg_tx.clone());
        threads.push(tokio::task::spawn_blocking(move || {
            read_files(&tasks, &chunker, &job_tx, &msg_tx)
        }));
    }
    let claims = Arc::new(Claims {
        journal: journal.clone(),
        run: Mutex::new(HashSet::new()),
    });
    for _ in 0..workers {
        let (keys, claims, rx, tx) = (keys.clone(), claims.clone(), job_rx.clone(), msg_tx.clone());
        let tokens = tokens.clone();
        let target = opts.pack_target;
        let max_chunk = chunker.params().max as usize;
        threads.push(tokio::task::spawn_blocking(move || {
            seal_worker(&keys, &claims, &tokens, &rx, &tx, target, max_chunk)
        }));
    }
    drop((job_rx, msg_tx));

    let mut got = Collected {
        files: (0..n).map(|_| FileState::default()).collect(),
        leftovers: Vec::new(),
        stats: UploadStats::default(),
    };
    let mut uploader = Uploader::new(store, journal.clone(), opts.window.clone(), tokens);
    let mut fatal = None;
    while let Some(msg) = msg_rx.recv().await {
        let failed = match got.take(msg, progress) {
            Next::Go => continue,
            Next::Upload(pack) => uploader.upload(pack).await.err(),
            Next::Stop(e) => Some(e),
        };
        if failed.is_some() {
            fatal = failed;
            break;
        }
    }
    // Dropping the receiver makes every pipeline thread stop at its next send.
    drop(msg_rx);
    for t in threads {
        t.await
            .map_err(|e| Error::Internal(format!("pipeline thread failed: {e}")))?;
    }
    if let Some(e) = fatal {
        uploader.abort().await;
        return Err(e);
    }
    let Collected {
        files,
        leftovers,
        mut stats,
    } = got;
    for pack in merge_leftovers(&keys, leftovers, opts.pack_target) {
        uploader.upload(pack).await?;
    }
    let (packs, bytes) = uploader.finish().await?;
    stats.packs = packs;
    stats.bytes_uploaded = bytes;
    progress.finish(Phase::Upload);
    Ok((files.into_iter().map(outcome).collect(), stats))
}

/// What the collector keeps while the pipeline runs.
struct Collected {
    files: Vec<FileState>,
    leftovers: Vec<PackBuilder>,
    stats: UploadStats,
}

/// What to do after a message.
enum Next {
    Go,
    Upload(FinishedPack),
    Stop(Error),
}

impl Collected {
    /// Records one message of the pipeline.
    fn take(&mut self, msg: Msg, progress: &dyn Progress) -> Next {
        match msg {
            Msg::Chunk {
                file,
                index,
                id,
                len,
                new,
            } => {
                let st = &mut self.files[file as usize];
                let i = index as usize;
                if st.chunks.len() <= i {
                    st.chunks.resize(i + 1, None);
                }
                st.chunks[i] = Some(id);
                st.received += 1;
                let stats = &mut self.stats;
                stats.chunks += 1;
                stats.bytes_read += len;
                if new {
                    stats.new_chunks += 1;
                    stats.new_chunk_bytes += len;
                }
                progress.advance(len, 0);
            }
            Msg::FileEnd {
                file,
                chunks,
                size,
                after,
            } => {
                self.files[file as usize].end = Some((chunks, size, after));
                progress.advance(0, 1);
            }
            Msg::FileFailed { file, error } => {
                self.files[file as usize].failed = Some(error);
                progress.advance(0, 1);
            }
            Msg::Pack(pack) => return Next::Upload(pack),
            Msg::Leftover(b) => self.leftovers.push(b),
            Msg::Fatal(e) => return Next::Stop(e),
        }
        Next::Go
    }
}

fn outcome(st: FileState) -> FileOutcome {
    if let Some(e) = st.failed {
        return FileOutcome::Failed(e);
    }
    match st.end {
        Some((count, size, after))
            if count == st.received && st.chunks.iter().all(Option::is_some) =>
        {
            FileOutcome::Done {
                chunks: st.chunks.into_iter().flatten().collect(),
                size,
                after,
            }
        }
        _ => FileOutcome::Failed("incomplete read".into()),
    }
}

/// Merges partial packs of the workers into as few packs as the target allows.
fn merge_leftovers(keys: &Keys, leftovers: Vec<PackBuilder>, target: usize) -> Vec<FinishedPack> {
    let mut out = Vec::new();
    let mut cur = PackBuilder::default();
    for b in leftovers {
        if !cur.is_empty() && !cur.fits_builder(&b, target) {
            out.push(std::mem::take(&mut cur).finish(keys, PackId::random()));
        }
        cur.append(b);
    }
    if !cur.is_empty() {
        out.push(cur.finish(keys, PackId::random()));
    }
    out
}

fn read_files(
    tasks: &[FileTask],
    chunker: &Chunker,
    jobs: &crossbeam_channel::Sender<Job>,
    msgs: &mpsc::Sender<Msg>,
) {
    for (i, task) in tasks.iter().enumerate() {
        let file = u32::try_from(i).expect("fewer than 4 billion files per run");
        let msg = match read_one(file, task, chunker, jobs) {
            Ok((chunks, size, after)) => Msg::FileEnd {
                file,
                chunks,
                size,
                after,
            },
            Err(error) => Msg::FileFailed { file, error },
        };
        if msgs.blocking_send(msg).is_err() {
            return; // the collector is gone (aborted)
        }
    }
}

fn read_one(
    file: u32,
    task: &FileTask,
    chunker: &Chunker,
    jobs: &crossbeam_channel::Sender<Job>,
) -> std::result::Result<(u32, u64, LocalEntry), String> {
    let f = open_deep(task).map_err(|e| format!("{}: {e}", task.path))?;
    let mut index = 0u32;
    let mut size = 0u64;
    for chunk in chunker.chunks_resyncing(&f, Some(task.before.size), task.previous.clone()) {
        let data = chunk.map_err(|e| format!("{}: read error: {e}", task.path))?;
        size += data.len() as u64;
        jobs.send(Job { file, index, data })
            .map_err(|_| "pipeline stopped".to_string())?;
        index += 1;
    }
    let meta = f.metadata().map_err(|e| format!("{}: {e}", task.path))?;
    let after = LocalEntry::from_metadata(task.path.clone(), &meta)
        .ok_or_else(|| format!("{}: no longer a regular file", task.path))?;
    // ctime too: a tool that rewrites in place and puts the mtime back
    // (pwrite + futimens) cannot put the ctime back.
    let b = &task.before;
    if after.size != size
        || after.mtime_ns != b.mtime_ns
        || after.ctime_ns != b.ctime_ns
        || after.ino != b.ino
    {
        return Err(format!(
            "{}: changed while being read; it will be sent next time",
            task.path
        ));
    }
    Ok((index, size, after))
}

/// Opens the file of `task`; a path too long for the kernel as a whole is
/// opened one component at a time from the folder's root (only the path
/// relative to the folder counts against `PATH_MAX`).
fn open_deep(task: &FileTask) -> std::io::Result<std::fs::File> {
    match std::fs::File::open(&task.fs_path) {
        Err(e) if crate::sync::pull::rootfs::too_long(&e) => {
            let root = task.fs_path.ancestors().nth(task.path.depth()).ok_or(e)?;
            let found = RootFs::open(root).and_then(|fs| fs.open_read(&task.path));
            found
                .map_err(std::io::Error::other)?
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        }
        other => other,
    }
}

/// Bounds the packs alive at once (see the module docs) and recycles their
/// buffers: a pool of `n` buffers, taken by sealer threads (blocking) and given
/// back by upload tasks once the store answered for a pack. Reuse keeps the
/// allocator from fragmenting and spares the page faults of fresh pack buffers.
#[derive(Debug, Clone)]
struct PackTokens {
    give: crossbeam_channel::Sender<Bytes>,
    take: crossbeam_channel::Receiver<Bytes>,
}

impl PackTokens {
    fn new(n: usize) -> Self {
        let n = n.max(1);
        let (give, take) = crossbeam_channel::bounded(n);
        for _ in 0..n {
            let _ = give.send(Bytes::new());
        }
        PackTokens { give, take }
    }

    /// Waits for a buffer; `None` once `closed()` says the pipeline is stopping.
    /// The buffer is reclaimed only now, when the HTTP stack has long let go of
    /// the pack it carried (a fresh one if something still holds it).
    fn take(&self, closed: impl Fn() -> bool) -> Option<Vec<u8>> {
        loop {
            match self.take.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(bytes) => return Some(crate::format::pack::reclaim(bytes).unwrap_or_default()),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if !closed() => {}
                Err(_) => return None,
            }
        }
    }

    /// Gives a token back, with the bytes of the pack it carried.
    fn give(&self, bytes: Bytes) {
        // Full only when a pack made without a token (the merged leftovers) ends.
        let _ = self.give.try_send(bytes);
    }
}

fn seal_worker(
    keys: &Keys,
    claims: &Claims,
    tokens: &PackTokens,
    jobs: &crossbeam_channel::Receiver<Job>,
    msgs: &mpsc::Sender<Msg>,
    target: usize,
    max_chunk: usize,
) {
    let capacity = crate::format::pack::max_finished_len(target, max_chunk);
    let mut zstd = Compressor::new();
    let mut builder = PackBuilder::default();
    while let Ok(job) = jobs.recv() {
        let id = keys.chunk_id(&job.data);
        let new = match claims.claim(id) {
            Ok(n) => n,
            Err(e) => {
                let _ = msgs.blocking_send(Msg::Fatal(e));
                return;
            }
        };
        if new {
            if !builder.is_empty() && !builder.fits(job.data.len(), target) {
                // The token travels with the pack; its upload gives it back.
                let full = std::mem::take(&mut builder);
                if msgs
                    .blocking_send(Msg::Pack(full.finish(keys, PackId::random())))
                    .is_err()
                {
                    return;
                }
            }
            if builder.is_empty() {
                // A new pack: wait until fewer than the bound are alive.
                let Some(buf) = tokens.take(|| msgs.is_closed()) else {
                    return;
                };
                builder = PackBuilder::with_buffer(buf, capacity);
            }
            builder.add(keys, id, &job.data, &mut zstd);
        }
        let len = job.data.len() as u64;
        drop(job.data);
        let msg = Msg::Chunk {
            file: job.file,
            index: job.index,
            id,
            len,
            new,
        };
        if msgs.blocking_send(msg).is_err() {
            return;
        }
    }
    if !builder.is_empty() {
        let _ = msgs.blocking_send(Msg::Leftover(builder));
        tokens.give(Bytes::new());
    }
}

/// Uploads packs within the window and records each acknowledged one.
struct Uploader {
    store: DynStore,
    journal: Journal,
    window: Arc<UploadWindow>,
    tokens: PackTokens,
    tasks: JoinSet<Result<u64>>,
    packs: u64,
    bytes: u64,
}

impl Uploader {
    fn new(
        store: DynStore,
        journal: Journal,
        window: Arc<UploadWindow>,
        tokens: PackTokens,
    ) -> Self {
        Uploader {
            store,
            journal,
            window,
            tokens,
            tasks: JoinSet::new(),
            packs: 0,
            bytes: 0,
        }
    }

    fn reap(&mut self, r: std::result::Result<Result<u64>, tokio::task::JoinError>) -> Result<()> {
        let size = r.map_err(|e| Error::Internal(format!("upload task failed: {e}")))??;
        self.packs += 1;
        self.bytes += size;
        Ok(())
    }

    async fn upload(&mut self, pack: FinishedPack) -> Result<()> {
        while let Some(r) = self.tasks.try_join_next() {
            self.reap(r)?;
        }
        let permit = self.window.acquire().await;
        let (store, journal, window, tokens) = (
            self.store.clone(),
            self.journal.clone(),
            self.window.clone(),
            self.tokens.clone(),
        );
        self.tasks.spawn(async move {
            let key = layout::pack(&pack.record.id);
            let size = pack.bytes.len() as u64;
            let put = store.put(&key, pack.bytes.clone()).await;
            tokens.give(pack.bytes);
            put?;
            window.success();
            drop(permit);
            journal.record_uploaded_pack(&pack.record)?;
            journal.flush_async().await?;
            Ok(size)
        });
        Ok(())
    }

    async fn finish(mut self) -> Result<(u64, u64)> {
        let mut first_err = None;
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = self.reap(r) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok((self.packs, self.bytes)),
        }
    }

    async fn abort(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose content changed with its mtime put back (pwrite + futimens)
    /// since it was scanned is "changed while being read", never stored as a
    /// mix of two versions.
    #[test]
    fn a_rewrite_that_puts_the_mtime_back_is_caught_by_the_ctime() {
        let dir = tempfile::tempdir().unwrap();
        let fs_path = dir.path().join("f");
        std::fs::write(&fs_path, vec![1u8; 100_000]).unwrap();
        let path = RepoPath::new(b"f".to_vec()).unwrap();
        let meta = std::fs::symlink_metadata(&fs_path).unwrap();
        let before = LocalEntry::from_metadata(path.clone(), &meta).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Rewritten in place, mtime restored.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&fs_path)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[2u8; 1000], 500).unwrap();
        f.set_modified(meta.modified().unwrap()).unwrap();
        drop(f);
        let task = FileTask {
            path,
            fs_path,
            before,
            previous: Vec::new(),
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let chunker = Chunker::new(crate::chunk::chunker::ChunkerParams::DEFAULT, 0);
        let err = read_one(0, &task, &chunker, &tx).unwrap_err();
        assert!(err.contains("changed while being read"), "{err}");
        drop(rx);
    }
}
