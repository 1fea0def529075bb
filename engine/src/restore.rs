//! Writing files out of the repository, pack by pack.
//!
//! [`write_files`] plans which blobs of which packs every file needs, fetches each
//! pack once (adjacent blobs coalesced into one ranged GET), opens and verifies
//! every blob (AEAD, then the chunk id recomputed), and writes it at its offsets
//! into temp files under the folder's `.coffer/tmp/`. A file is renamed into place
//! only when all its chunks are written, and only if its destination still is what
//! the caller expects ([`Guard`]); a file any of whose chunks fails verification is
//! never renamed — its temp file is removed and the error reported — while every
//! other file is still written. Memory: at most `FETCH_CONCURRENCY` ranges of at
//! most one pack each.
//!
//! Writes into one file take that file's lock in user space: concurrent `pwrite`s
//! into one inode otherwise spin on the kernel's inode lock.

use crate::commit::FileEntry;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use crate::journal::{Journal, Location, StatEntry};
use crate::pack::{self, BlobEntry};
use crate::path::RepoPath;
use crate::progress::{Phase, Progress};
use crate::repo::Repository;
use crate::scan::LocalEntry;
use crate::store::layout;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    /// Replace whatever is there (explicit output paths).
    Any,
}

/// One file to write.
#[derive(Debug, Clone)]
pub struct FileJob {
    pub path: RepoPath,
    pub dest: PathBuf,
    pub entry: FileEntry,
    pub guard: Guard,
}

struct JobState {
    tmp: PathBuf,
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

/// Writes every job; returns one result per job, in order: the written file's
/// `lstat` after the rename.
pub async fn write_files(
    repo: &Repository,
    journal: &Journal,
    jobs: Vec<FileJob>,
    tmp_dir: &Path,
    progress: &dyn Progress,
) -> Vec<Result<LocalEntry>> {
    let total: u64 = jobs.iter().map(|j| j.entry.size).sum();
    progress.start(Phase::Download, Some(total), Some(jobs.len() as u64));
    let jobs = Arc::new(jobs);
    let (states, packs) = plan(journal, &jobs, tmp_dir);
    let states = Arc::new(Mutex::new(states));
    for i in 0..jobs.len() {
        finish_if_complete(&jobs, &states, i);
    }
    let mut order: Vec<(PackId, Vec<Need>)> = packs.into_iter().collect();
    order.sort_by_key(|(_, needs)| {
        needs
            .iter()
            .flat_map(|n| n.targets.iter().map(|t| t.0))
            .min()
    });
    let ranges: Vec<(PackId, Vec<Need>)> = order
        .into_iter()
        .flat_map(|(pack, needs)| coalesce(needs).into_iter().map(move |r| (pack, r)))
        .collect();
    // Fetching, opening and writing a range is one unit of work, `FETCH_CONCURRENCY`
    // of them at once: the network stays busy while earlier ranges are decrypted
    // and written on blocking threads (on every core).
    let mut stream = futures::stream::iter(ranges)
        .map(|(pack, needs)| {
            let store = repo.store().clone();
            let (keys, jobs, states) = (repo.keys().clone(), jobs.clone(), states.clone());
            async move {
                let start = u64::from(needs[0].loc.offset);
                let last = needs.last().expect("ranges are never empty");
                let end = u64::from(last.loc.offset) + u64::from(last.loc.sealed_len);
                let bytes = store.get_range(&layout::pack(&pack), start..end).await;
                tokio::task::spawn_blocking(move || {
                    // Blobs are opened in place: the fetched bytes are ours alone.
                    let mut bytes = bytes.map(|b| {
                        b.try_into_mut()
                            .unwrap_or_else(|shared| bytes::BytesMut::from(&shared[..]))
                    });
                    let mut written = 0u64;
                    for need in needs {
                        let result = match &mut bytes {
                            Ok(b) => open_range(&keys, &pack, &need, b, start),
                            Err(e) => Err(Error::Store(e.clone())),
                        };
                        written += deliver(&jobs, &states, &need, result.as_deref());
                    }
                    if let Ok(b) = bytes {
                        crate::buffers::GLOBAL.give(b);
                    }
                    written
                })
                .await
                .unwrap_or(0)
            }
        })
        .buffer_unordered(FETCH_CONCURRENCY);
    while let Some(written) = stream.next().await {
        progress.advance(written, 0);
    }
    drop(stream);
    let states = Arc::try_unwrap(states)
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_default();
    progress.finish(Phase::Download);
    states
        .into_iter()
        .map(|st| {
            let res = st
                .result
                .unwrap_or_else(|| Err(Error::Internal("file left incomplete".into())));
            if res.is_err() {
                let _ = fs::remove_file(&st.tmp);
            }
            res
        })
        .collect()
}

/// Locates every chunk; creates the temp files.
fn plan(
    journal: &Journal,
    jobs: &[FileJob],
    tmp_dir: &Path,
) -> (Vec<JobState>, HashMap<PackId, Vec<Need>>) {
    let mut states = Vec::with_capacity(jobs.len());
    let mut packs: HashMap<PackId, BTreeMap<u32, Need>> = HashMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let tmp = tmp_dir.join(format!("{}.part", crate::id::ChunkId::random().to_hex()));
        let mut st = JobState {
            tmp,
            writing: Arc::default(),
            remaining: job.entry.chunks.len(),
            installing: false,
            result: None,
        };
        if let Err(e) = plan_job(journal, i, job, &st.tmp, &mut packs) {
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
    tmp: &Path,
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
    let f = fs::File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    reserve(&f, job.entry.size).map_err(|e| Error::io(tmp, e))?;
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

/// Sizes a temp file and allocates its blocks up front (`fallocate`), so a disk
/// too small fails the file before anything is downloaded for it, and the writes
/// that follow skip the filesystem's delayed-allocation bookkeeping (measured on
/// ext4: ~8 % less system time in a 1 GiB restore). Filesystems without
/// `fallocate` get a sparse file, as before.
fn reserve(f: &fs::File, size: u64) -> std::io::Result<()> {
    if size > 0 {
        match rustix::fs::fallocate(f, rustix::fs::FallocateFlags::empty(), 0, size) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {}
            Err(e) => return Err(e.into()),
        }
    }
    f.set_len(size)
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

fn open_range<'a>(
    keys: &crate::crypto::Keys,
    pack: &PackId,
    need: &Need,
    bytes: &'a mut [u8],
    start: u64,
) -> Result<std::borrow::Cow<'a, [u8]>> {
    let from = usize::try_from(u64::from(need.loc.offset) - start).unwrap_or(usize::MAX);
    let to = from.saturating_add(need.loc.sealed_len as usize);
    let sealed = bytes
        .get_mut(from..to)
        .ok_or_else(|| Error::corrupt(layout::pack(pack), "object shorter than its index says"))?;
    let entry = BlobEntry {
        chunk: need.chunk,
        offset: need.loc.offset,
        sealed_len: need.loc.sealed_len,
        raw_len: need.loc.raw_len,
    };
    pack::open_blob_in_place(keys, pack, &entry, sealed)
}

/// Writes one opened blob (or its failure) to every file that needs it; returns
/// the bytes written.
fn deliver(
    jobs: &[FileJob],
    states: &Mutex<Vec<JobState>>,
    need: &Need,
    data: std::result::Result<&[u8], &Error>,
) -> u64 {
    let mut written = 0;
    for &(i, off) in &need.targets {
        let (tmp, writing) = {
            let st = &states.lock().unwrap_or_else(|p| p.into_inner())[i];
            if st.result.is_some() {
                continue; // already failed
            }
            (st.tmp.clone(), st.writing.clone())
        };
        let outcome = match &data {
            Ok(d) => {
                let _one_writer = writing.lock().unwrap_or_else(|p| p.into_inner());
                OpenOptions::new()
                    .write(true)
                    .open(&tmp)
                    .and_then(|f| f.write_all_at(d, off))
                    .map(|()| d.len() as u64)
                    .map_err(|e| Error::io(&tmp, e))
            }
            Err(e) => Err((*e).clone()),
        };
        {
            let mut all = states.lock().unwrap_or_else(|p| p.into_inner());
            let st = &mut all[i];
            match outcome {
                Ok(n) => {
                    written += n;
                    st.remaining -= 1;
                }
                Err(e) => st.result = Some(Err(e)),
            }
        }
        finish_if_complete(jobs, states, i);
    }
    written
}

/// Renames a complete file into place.
fn finish_if_complete(jobs: &[FileJob], states: &Mutex<Vec<JobState>>, i: usize) {
    let tmp = {
        let st = &mut states.lock().unwrap_or_else(|p| p.into_inner())[i];
        if st.remaining != 0 || st.result.is_some() || st.installing {
            return;
        }
        st.installing = true;
        st.tmp.clone()
    };
    let res = install(&jobs[i], &tmp);
    states.lock().unwrap_or_else(|p| p.into_inner())[i].result = Some(res);
}

fn install(job: &FileJob, tmp: &Path) -> Result<LocalEntry> {
    let f = OpenOptions::new()
        .write(true)
        .open(tmp)
        .map_err(|e| Error::io(tmp, e))?;
    f.set_times(fs::FileTimes::new().set_modified(system_time(job.entry.mtime_ns)))
        .map_err(|e| Error::io(tmp, e))?;
    f.set_permissions(fs::Permissions::from_mode(job.entry.mode & 0o7777))
        .map_err(|e| Error::io(tmp, e))?;
    drop(f);
    check_guard(&job.dest, &job.guard, &job.path)?;
    fs::rename(tmp, &job.dest).map_err(|e| Error::io(&job.dest, e))?;
    let meta = fs::symlink_metadata(&job.dest).map_err(|e| Error::io(&job.dest, e))?;
    LocalEntry::from_metadata(job.path.clone(), &meta)
        .ok_or_else(|| Error::Internal("written file is not a file".into()))
}

/// Refuses to replace a destination that changed since the plan was made.
pub fn check_guard(dest: &Path, guard: &Guard, path: &RepoPath) -> Result<()> {
    let current = match fs::symlink_metadata(dest) {
        Ok(m) => LocalEntry::from_metadata(path.clone(), &m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(dest, e)),
    };
    let ok = match (guard, &current) {
        (Guard::Any, _) | (Guard::Absent, None) => true,
        (Guard::Unchanged(s), Some(c)) => c.unchanged_since(s),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{path}: changed locally while being updated; kept the local version"
        )))
    }
}

/// Nanoseconds since the epoch (may be negative) as a `SystemTime`.
pub fn system_time(ns: i64) -> std::time::SystemTime {
    let d = std::time::Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 {
        std::time::UNIX_EPOCH + d
    } else {
        std::time::UNIX_EPOCH - d
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

/// Creates the directory `path` (and its parents) under `root`.
pub fn ensure_dir(root: &Path, path: &RepoPath) -> Result<()> {
    ensure_parents(root, path)?;
    let fs_path = path.to_fs_path(root)?;
    match fs::create_dir(&fs_path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && is_real_dir(&fs_path) => Ok(()),
        Err(e) => Err(Error::io(&fs_path, e)),
    }
}

fn is_real_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// Makes every ancestor of `path` a real, writable directory under `root`; refuses
/// to go through a symlink or a file.
pub fn ensure_parents(root: &Path, path: &RepoPath) -> Result<()> {
    for anc in path.ancestors() {
        let p = anc.to_fs_path(root)?;
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::UnsafePath {
                    path: path.display(),
                    reason: format!("parent {anc} is a symlink"),
                });
            }
            Ok(_) => {
                return Err(Error::Config(format!(
                    "{path}: parent {anc} is not a directory here"
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(&p).map_err(|e| Error::io(&p, e))?;
            }
            Err(e) => return Err(Error::io(&p, e)),
        }
    }
    writable_parent(root, path)
}

/// Adds owner write permission to the parent of `path` if it lacks it (a
/// read-only directory being filled); `finish_dirs` restores the synced mode.
pub fn writable_parent(root: &Path, path: &RepoPath) -> Result<()> {
    let parent = match path.parent() {
        Some(p) => p.to_fs_path(root)?,
        None => root.to_path_buf(),
    };
    let meta = fs::symlink_metadata(&parent).map_err(|e| Error::io(&parent, e))?;
    let mode = meta.permissions().mode();
    if mode & 0o200 == 0 {
        fs::set_permissions(&parent, fs::Permissions::from_mode(mode | 0o700))
            .map_err(|e| Error::io(&parent, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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
