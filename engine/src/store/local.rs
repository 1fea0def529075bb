//! A store in a local directory: the embedded default, no server needed.
//!
//! Every `put` writes a temp file under `<root>/.tmp/`, fsyncs it, renames it into
//! place and fsyncs the directory, so a crash leaves either the whole object or
//! nothing under its key — never a torn object. Leftover temp files are ignored by
//! `list`; the first `put` of each process removes those not written to for
//! [`STALE_TEMP_AFTER`] (a live writer writes its whole object within seconds and
//! renames it at once, so such a file has no writer left), and
//! [`LocalStore::stale_temp`] tells `check` what is there.

use super::{ObjectMeta, ObjectStore};
use crate::error::StoreError;
use async_trait::async_trait;
use bytes::Bytes;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

const TMP_DIR: &str = ".tmp";

/// A temp file not modified for this long belongs to a writer that is gone.
pub const STALE_TEMP_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A store rooted at a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// Whether this process has swept stale temp files yet.
    swept: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LocalStore {
    /// Opens (and creates, if `create`) the directory `root`.
    pub fn open(root: impl Into<PathBuf>, create: bool) -> Result<Self, StoreError> {
        let root: PathBuf = root.into();
        if create {
            fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
        }
        let meta = fs::metadata(&root).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::Unusable {
                detail: format!("store directory {} does not exist", root.display()),
            },
            _ => StoreError::io(&root, e),
        })?;
        if !meta.is_dir() {
            return Err(StoreError::Unusable {
                detail: format!("store {} is not a directory", root.display()),
            });
        }
        let root = root.canonicalize().map_err(|e| StoreError::io(&root, e))?;
        Ok(LocalStore {
            root,
            swept: Default::default(),
        })
    }

    /// Temp files left by writers that are gone (older than
    /// [`STALE_TEMP_AFTER`]): how many, and their bytes.
    pub fn stale_temp(&self) -> (usize, u64) {
        stale_in(&self.root.join(TMP_DIR))
            .iter()
            .fold((0, 0), |(n, b), (_, len)| (n + 1, b + len))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let valid = !key.is_empty()
            && !key.starts_with(TMP_DIR)
            && key
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
        if !valid {
            return Err(StoreError::Rejected {
                detail: format!("invalid object key {key:?}"),
            });
        }
        Ok(self.root.join(key))
    }

    fn put_blocking(&self, key: &str, data: &[u8]) -> Result<(), StoreError> {
        let dest = self.path_of(key)?;
        let tmp_dir = self.root.join(TMP_DIR);
        fs::create_dir_all(&tmp_dir).map_err(|e| StoreError::io(&tmp_dir, e))?;
        if !self.swept.swap(true, std::sync::atomic::Ordering::Relaxed) {
            for (path, _) in stale_in(&tmp_dir) {
                let _ = fs::remove_file(path);
            }
        }
        let mut tmp = tempfile_in(&tmp_dir)?;
        let write = tmp
            .1
            .write_all(data)
            .and_then(|()| tmp.1.sync_all())
            .map_err(|e| StoreError::io(&tmp.0, e));
        if let Err(e) = write {
            let _ = fs::remove_file(&tmp.0);
            return Err(e);
        }
        let parent = dest.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        if let Err(e) = fs::rename(&tmp.0, &dest) {
            let _ = fs::remove_file(&tmp.0);
            return Err(StoreError::io(&dest, e));
        }
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(parent, e))
    }

    fn get_blocking(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let path = self.path_of(key)?;
        let mut f = fs::File::open(&path).map_err(|e| not_found_or_io(key, &path, e))?;
        let len = f.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        let (start, end) = match range {
            None => (0, len),
            Some(r) if r.start >= len || r.start >= r.end => {
                return Err(StoreError::Rejected {
                    detail: format!("range {r:?} not satisfiable for {key} ({len} bytes)"),
                });
            }
            Some(r) => (r.start, r.end.min(len)),
        };
        let mut buf = vec![0u8; usize::try_from(end - start).unwrap_or(usize::MAX)];
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(Bytes::from(buf))
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // Walk only the deepest directory the prefix names.
        let dir_part = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path_of(dir_part)?
        };
        let mut out = Vec::new();
        let mut stack = vec![(start, dir_part.to_string())];
        while let Some((dir, key_prefix)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue; // not a key coffer wrote
                };
                if key_prefix.is_empty() && name == TMP_DIR {
                    continue;
                }
                let key = if key_prefix.is_empty() {
                    name
                } else {
                    format!("{key_prefix}/{name}")
                };
                let meta = entry
                    .metadata()
                    .map_err(|e| StoreError::io(entry.path(), e))?;
                if meta.is_dir() {
                    if prefix.starts_with(&key) || key.starts_with(prefix) {
                        stack.push((entry.path(), key));
                    }
                } else if key.starts_with(prefix) {
                    out.push(ObjectMeta {
                        key,
                        size: meta.len(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete_blocking(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }
}

fn not_found_or_io(key: &str, path: &Path, e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound { key: key.into() },
        std::io::ErrorKind::PermissionDenied => StoreError::Denied {
            detail: format!("permission denied reading {}", path.display()),
        },
        _ => StoreError::io(path, e),
    }
}

/// A new, exclusively created temp file in `dir`.
/// Temp files in `dir` not modified for [`STALE_TEMP_AFTER`], with their sizes.
fn stale_in(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now();
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let m = e.metadata().ok()?;
            let age = now.duration_since(m.modified().ok()?).ok()?;
            (m.is_file() && age >= STALE_TEMP_AFTER).then(|| (e.path(), m.len()))
        })
        .collect()
}

fn tempfile_in(dir: &Path) -> Result<(PathBuf, fs::File), StoreError> {
    loop {
        let mut r = [0u8; 12];
        crate::crypto::fill_random(&mut r);
        let path = dir.join(hex::encode(r));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::io(&path, e)),
        }
    }
}

/// Runs blocking filesystem work off the async executor.
/// The time the file system stamps on a new file in `dir` (its server's
/// clock for a network file system), in Unix ms.
fn file_system_clock(dir: &Path) -> Option<u64> {
    fs::create_dir_all(dir).ok()?;
    let name = format!("clock-{}", crate::format::id::DeviceId::random().to_hex());
    let path = dir.join(name);
    let f = fs::File::create(&path).ok();
    let stamped = f
        .and_then(|f| f.metadata().ok())
        .and_then(|m| m.modified().ok());
    let _ = fs::remove_file(&path);
    let ms = stamped?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis();
    u64::try_from(ms).ok()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Unusable {
            detail: format!("store worker failed: {e}"),
        })
    })
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let (me, key) = (self.clone(), key.to_string());
        blocking(move || me.put_blocking(&key, &data)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let (me, key) = (self.clone(), key.to_string());
        blocking(move || me.get_blocking(&key, None)).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let (me, key) = (self.clone(), key.to_string());
        blocking(move || me.get_blocking(&key, Some(range))).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let (me, prefix) = (self.clone(), prefix.to_string());
        blocking(move || me.list_blocking(&prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let (me, key) = (self.clone(), key.to_string());
        blocking(move || me.delete_blocking(&key)).await
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn local_dir(&self) -> Option<&Path> {
        Some(&self.root)
    }

    async fn clock_ms(&self) -> Option<u64> {
        let dir = self.root.join(TMP_DIR);
        blocking(move || Ok(file_system_clock(&dir)))
            .await
            .ok()
            .flatten()
    }
}
