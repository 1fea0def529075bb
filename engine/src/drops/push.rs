//! A partner's push into a drop (`DESIGN.md` §4c): PUT only, under
//! `drop/<drop id>/`, resumable after kill -9.
//!
//! The partner's state is a sled tree on its machine (`m/…` the device and
//! its chain, `c/<chunk id>` where each uploaded chunk is, `p/<pack>` the key
//! of each uploaded pack no commit has named yet, `f/<path>` what each file
//! was when last committed). Order of effects, each step durable before the
//! next:
//! 1. a pack is PUT, then its chunks and key are recorded (a pack lost to a
//!    kill is uploaded again; the orphan is harmless);
//! 2. a commit (naming every recorded pack key not yet committed) is kept in
//!    the outbox, then PUT, then applied (seq, chain, files) in one batch;
//! 3. a push that finds an outbox PUTs the same bytes again first, so a
//!    commit key never holds two different objects.

use super::format::{self, ChunkRef, DropCommit, DropFile, PackKey};
use super::token::DropToken;
use crate::chunk::chunker::Chunker;
use crate::error::{Error, Result};
use crate::format::id::{ChunkId, CommitHash, DeviceId, PackId};
use crate::store::{DynStore, layout};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio::task::JoinSet;

mod reader;
use reader::Piece;

/// At most this many files per commit.
pub const COMMIT_FILES: usize = 10_000;
/// A commit is written after this many new bytes.
const COMMIT_BYTES: u64 = 1 << 30;

/// How a drop push runs.
#[derive(Debug, Clone)]
pub struct DropPushOptions {
    /// The partner's name for this machine (one path component).
    pub device_name: String,
    /// Bytes per pack.
    pub pack_target: usize,
    /// Packs uploaded at once.
    pub uploads: usize,
}

impl Default for DropPushOptions {
    fn default() -> Self {
        DropPushOptions {
            device_name: "partner".into(),
            pack_target: 16 << 20,
            uploads: 4,
        }
    }
}

/// What a drop push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropPushReport {
    /// Files sent (new or changed).
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes of new chunks uploaded (after dedup).
    pub uploaded: u64,
    pub packs: usize,
    pub commits: usize,
    /// A commit left by an interrupted push was written first.
    pub resumed: bool,
    /// Entries not sent: symlinks, special files, non-UTF-8 names.
    pub skipped: Vec<String>,
}

/// Keys derived from the write key (the partner's own dedup key and chunker
/// seed: owner data never uses them).
pub fn dedup_key(write_key: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key("coffer-drop1 2026-12 dedup key", write_key)
}

pub fn chunker_seed(write_key: &[u8; 32]) -> u64 {
    let k = blake3::derive_key("coffer-drop1 2026-12 chunker seed", write_key);
    u64::from_le_bytes(k[..8].try_into().expect("8 bytes")).max(1)
}

/// Pushes the files of `dir` that changed since the last push into the drop
/// of `token`, keeping the partner's state in `state` (a directory).
pub async fn push_drop(
    store: &DynStore,
    token: &DropToken,
    dir: &Path,
    state: &Path,
    opts: &DropPushOptions,
) -> Result<DropPushReport> {
    super::check_name(&opts.device_name).map_err(Error::Config)?;
    token.check_expiry(crate::format::version::now_millis())?;
    let st = State::open(state, token, &opts.device_name)?;
    let mut report = DropPushReport::default();
    if let Some(outbox) = st.outbox()? {
        put_commit(store, token, &st, outbox).await?;
        report.resumed = true;
        report.commits += 1;
    }
    let mut run = Run {
        store: store.clone(),
        token,
        st: &st,
        opts,
        chunker: std::sync::Arc::new(Chunker::new(token.chunker, chunker_seed(&token.write_key))),
        dedup: dedup_key(&token.write_key),
        packer: Packer::new(pack_room(opts, token)),
        pending: HashMap::new(),
        files: Vec::new(),
        new_bytes: 0,
        uploads: JoinSet::new(),
        report,
    };
    let res = run.all(dir).await;
    // A failed push stops its uploads before it returns (and so lets go of
    // the state), as a killed one would.
    run.uploads.shutdown().await;
    res?;
    st.db.flush_async().await?;
    Ok(run.report)
}

/// One push in progress.
struct Run<'a> {
    store: DynStore,
    token: &'a DropToken,
    st: &'a State,
    opts: &'a DropPushOptions,
    chunker: std::sync::Arc<Chunker>,
    dedup: [u8; 32],
    packer: Packer,
    /// Chunks of this run's packs, uploaded or not yet.
    pending: HashMap<ChunkId, ChunkRef>,
    files: Vec<DropFile>,
    new_bytes: u64,
    uploads: JoinSet<Result<()>>,
    report: DropPushReport,
}

impl Run<'_> {
    /// Sends every changed file of `dir` (read and cut by [`reader`] while
    /// this task hashes, seals and packs), then commits.
    async fn all(&mut self, dir: &Path) -> Result<()> {
        let files = walk(dir, &mut self.report.skipped)?;
        let mut pieces = reader::spawn(files.clone(), self.st.tree.clone(), self.chunker.clone());
        let mut current: Option<DropFile> = None;
        while let Some(piece) = pieces.recv().await {
            match piece {
                Piece::Start { index, seen } => {
                    current = Some(DropFile {
                        path: files[index].0.clone(),
                        size: 0,
                        mode: seen.mode,
                        mtime_ms: seen.mtime_ms,
                        chunks: Vec::new(),
                    });
                }
                Piece::Chunk(data) => {
                    let r = self.chunk(&data).await?;
                    let file = current.as_mut().ok_or_else(|| Error::Internal("a chunk before its file".into()))?;
                    file.size += data.len() as u64;
                    file.chunks.push(r);
                }
                Piece::End => {
                    let file = current.take().ok_or_else(|| Error::Internal("a file end before its start".into()))?;
                    self.file_done(file).await?;
                }
                Piece::Failed(e) => return Err(e),
            }
        }
        self.commit().await
    }

    /// Adds a file whose chunks are all placed; commits when the batch is full.
    async fn file_done(&mut self, file: DropFile) -> Result<()> {
        self.report.files += 1;
        self.report.bytes += file.size;
        self.files.push(file);
        if self.files.len() >= COMMIT_FILES || self.new_bytes >= COMMIT_BYTES {
            self.commit().await?;
        }
        Ok(())
    }

    /// Where `data` is: an earlier chunk, or a new blob in the current pack.
    async fn chunk(&mut self, data: &[u8]) -> Result<ChunkRef> {
        let id = ChunkId(crate::crypto::keyed_hash(&self.dedup, data));
        if let Some(r) = self.pending.get(&id) {
            return Ok(*r);
        }
        if let Some(r) = self.st.chunk(&id)? {
            return Ok(r);
        }
        let r = self.packer.add(self.token, id, data);
        self.pending.insert(id, r);
        self.new_bytes += data.len() as u64;
        self.report.uploaded += data.len() as u64;
        if self.packer.buf.len() >= self.opts.pack_target {
            self.ship().await?;
        }
        Ok(r)
    }

    /// Uploads the current pack (in the background, at most `uploads` at once).
    async fn ship(&mut self) -> Result<()> {
        let room = pack_room(self.opts, self.token);
        let pack = std::mem::replace(&mut self.packer, Packer::new(room));
        if pack.chunks.is_empty() {
            return Ok(());
        }
        while self.uploads.len() >= self.opts.uploads.max(1) {
            joined(self.uploads.join_next().await)?;
        }
        let (store, tree) = (self.store.clone(), self.st.tree.clone());
        let key = layout::drop_pack(&self.token.drop, &pack.id);
        self.uploads.spawn(async move {
            store.put(&key, Bytes::from(pack.buf)).await?;
            let mut batch = sled::Batch::default();
            for (id, r) in &pack.chunks {
                batch.insert(chunk_key(id), postcard(r)?);
            }
            batch.insert(pack_key(&pack.id), &pack.key[..]);
            tree.apply_batch(batch)?;
            Ok(())
        });
        self.report.packs += 1;
        Ok(())
    }

    /// Waits for every upload, then writes a commit of the pending files.
    async fn commit(&mut self) -> Result<()> {
        self.ship().await?;
        while let Some(r) = self.uploads.join_next().await {
            joined(Some(r))?;
        }
        self.pending.clear();
        self.new_bytes = 0;
        let packs = self.st.uncommitted_packs()?;
        if self.files.is_empty() && packs.is_empty() {
            return Ok(());
        }
        let (seq, prev) = self.st.head()?;
        let commit = DropCommit {
            version: format::COMMIT_VERSION,
            drop: self.token.drop,
            device: self.st.device,
            device_name: self.opts.device_name.clone(),
            seq,
            prev,
            time_ms: crate::format::version::now_millis(),
            packs,
            files: std::mem::take(&mut self.files),
        };
        let object = format::seal_commit(&commit, &self.token.recipient, &self.token.write_key)?;
        let outbox = Outbox { object, commit };
        self.st.set_outbox(&outbox).await?;
        put_commit(&self.store, self.token, self.st, outbox).await?;
        self.report.commits += 1;
        Ok(())
    }
}

fn joined(r: Option<std::result::Result<Result<()>, tokio::task::JoinError>>) -> Result<()> {
    match r {
        None => Ok(()),
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(Error::Internal(format!("a drop upload failed: {e}"))),
    }
}

/// PUTs the outbox's commit, then applies it to the state.
async fn put_commit(store: &DynStore, token: &DropToken, st: &State, outbox: Outbox) -> Result<()> {
    let key = layout::drop_commit(&token.drop, &st.device, outbox.commit.seq);
    store.put(&key, Bytes::from(outbox.object.clone())).await?;
    st.apply(&outbox).await
}

/// The most a pack grows to: the target, plus one chunk that crosses it.
fn pack_room(opts: &DropPushOptions, token: &DropToken) -> usize {
    opts.pack_target + token.chunker.max as usize + crate::crypto::SEAL_OVERHEAD
}

/// The pack being filled.
struct Packer {
    id: PackId,
    key: [u8; 32],
    buf: Vec<u8>,
    chunks: Vec<(ChunkId, ChunkRef)>,
}

impl Packer {
    /// An empty pack with room for `capacity` bytes (a full pack is never
    /// copied to grow).
    fn new(capacity: usize) -> Packer {
        let mut key = [0u8; 32];
        crate::crypto::fill_random(&mut key);
        Packer {
            id: PackId::random(),
            key,
            buf: Vec::with_capacity(capacity),
            chunks: Vec::new(),
        }
    }

    fn add(&mut self, token: &DropToken, id: ChunkId, data: &[u8]) -> ChunkRef {
        let offset = self.buf.len() as u64;
        let len = format::seal_blob(&self.key, (&token.drop, &self.id, &id), data, &mut self.buf);
        let r = ChunkRef {
            id,
            pack: self.id,
            offset,
            len,
        };
        self.chunks.push((id, r));
        r
    }
}

/// What a file was when committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSeen {
    size: u64,
    mtime_ms: u64,
    mode: u32,
}

impl FileSeen {
    fn of(meta: &std::fs::Metadata) -> FileSeen {
        use std::os::unix::fs::PermissionsExt;
        let mtime_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        FileSeen {
            size: meta.len(),
            mtime_ms,
            mode: meta.permissions().mode() & 0o7777,
        }
    }
}

/// A commit written but perhaps not yet PUT.
#[derive(Serialize, Deserialize)]
struct Outbox {
    object: Vec<u8>,
    commit: DropCommit,
}

/// The partner's sled state of one drop.
struct State {
    db: sled::Db,
    tree: sled::Tree,
    device: DeviceId,
}

fn postcard<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| Error::Internal(format!("drop state: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Journal(format!("drop state {what}: {e}")))
}

fn chunk_key(id: &ChunkId) -> Vec<u8> {
    [b"c/".as_slice(), id.as_bytes()].concat()
}

fn pack_key(id: &PackId) -> Vec<u8> {
    [b"p/".as_slice(), id.as_bytes()].concat()
}

fn file_key(path: &str) -> Vec<u8> {
    [b"f/".as_slice(), path.as_bytes()].concat()
}

impl State {
    fn open(dir: &Path, token: &DropToken, name: &str) -> Result<State> {
        let db = sled::Config::new().path(dir).open().map_err(|e| {
            Error::Journal(format!(
                "{}: {e} (is another `coffer drop push` of this drop running?)",
                dir.display()
            ))
        })?;
        let tree = db.open_tree("drop")?;
        let drop = tree.get("m/drop")?;
        if drop.as_deref().is_some_and(|d| d != token.drop.as_bytes()) {
            return Err(Error::Config(format!("{}: the state of another drop", dir.display())));
        }
        let device = match tree.get("m/device")? {
            Some(d) => DeviceId(d.as_ref().try_into().map_err(|_| Error::Journal("drop state: bad device".into()))?),
            None => {
                let d = DeviceId::random();
                tree.insert("m/drop", &token.drop.as_bytes()[..])?;
                tree.insert("m/device", &d.as_bytes()[..])?;
                d
            }
        };
        tree.insert("m/name", name.as_bytes())?;
        Ok(State { db, tree, device })
    }

    /// The next seq and the hash of the last commit.
    fn head(&self) -> Result<(u64, CommitHash)> {
        let seq = match self.tree.get("m/seq")? {
            Some(b) => u64::from_be_bytes(b.as_ref().try_into().map_err(|_| Error::Journal("drop state: bad seq".into()))?),
            None => 0,
        };
        let prev = match self.tree.get("m/prev")? {
            Some(b) => CommitHash(b.as_ref().try_into().map_err(|_| Error::Journal("drop state: bad chain".into()))?),
            None => CommitHash([0; 32]),
        };
        Ok((seq, prev))
    }

    fn chunk(&self, id: &ChunkId) -> Result<Option<ChunkRef>> {
        self.tree.get(chunk_key(id))?.map(|b| decode(&b, "chunk")).transpose()
    }

    fn uncommitted_packs(&self) -> Result<Vec<PackKey>> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(b"p/") {
            let (k, v) = kv?;
            let bad = || Error::Journal("drop state: bad pack".into());
            out.push(PackKey {
                pack: PackId(k[2..].try_into().map_err(|_| bad())?),
                key: v.as_ref().try_into().map_err(|_| bad())?,
            });
        }
        Ok(out)
    }

    fn outbox(&self) -> Result<Option<Outbox>> {
        self.tree.get("m/outbox")?.map(|b| decode(&b, "outbox")).transpose()
    }

    async fn set_outbox(&self, outbox: &Outbox) -> Result<()> {
        self.tree.insert("m/outbox", postcard(outbox)?)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Records a commit as written: next seq, chain, its files; forgets its
    /// pack keys and the outbox. One atomic batch, then flushed.
    async fn apply(&self, outbox: &Outbox) -> Result<()> {
        let c = &outbox.commit;
        let mut batch = sled::Batch::default();
        batch.insert("m/seq", &(c.seq + 1).to_be_bytes()[..]);
        batch.insert("m/prev", &format::commit_hash(&outbox.object).0[..]);
        for f in &c.files {
            let seen = FileSeen {
                size: f.size,
                mtime_ms: f.mtime_ms,
                mode: f.mode,
            };
            batch.insert(file_key(&f.path), postcard(&seen)?);
        }
        for p in &c.packs {
            batch.remove(pack_key(&p.pack));
        }
        batch.remove("m/outbox");
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }
}

/// Every regular file below `dir`, sorted, as (`/`-separated relative path,
/// absolute path). Symlinks, special files and non-UTF-8 names go to `skipped`.
fn walk(dir: &Path, skipped: &mut Vec<String>) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((rel, abs)) = stack.pop() {
        let entries = std::fs::read_dir(&abs).map_err(|e| Error::io(&abs, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&abs, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                skipped.push(path.display().to_string());
                continue;
            };
            let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let ty = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if ty.is_dir() {
                stack.push((child, path));
            } else if ty.is_file() && crate::format::path::RepoPath::new(child.as_bytes()).is_ok() {
                out.push((child, path));
            } else {
                skipped.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}
