//! Writing part of a repository into a plain directory or file (`get`, `restore
//! --to`): no device, no journal of its own, existing outputs are replaced. Every
//! file still goes through a temp file and a rename, and every chunk is verified.

use crate::commit::Entry;
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::merge::MergedEntry;
use crate::path::RepoPath;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::{self, FileJob, Guard, ensure_dir, ensure_parents, system_time};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What an export wrote.
#[derive(Debug, Default)]
pub struct ExportReport {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub bytes: u64,
    /// Paths that could not be written, with why.
    pub errors: Vec<String>,
}

/// Writes `entries` (all at or below `prefix`) under `out`: `prefix` itself becomes
/// `out`, `prefix/a/b` becomes `out/a/b`. With no prefix, `out` is the top.
pub async fn export_tree(
    repo: &Repository,
    journal: &Journal,
    entries: &BTreeMap<RepoPath, MergedEntry>,
    prefix: Option<&RepoPath>,
    out: &Path,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let mut report = ExportReport::default();
    let single_file = prefix
        .and_then(|p| entries.get(p))
        .is_some_and(|m| !matches!(m.entry, Entry::Dir { .. }));
    let (root, tmp) = staging(out, single_file)?;
    let mut jobs = Vec::new();
    let mut dirs = Vec::new();
    for (path, m) in entries {
        let Some(rel) = relative(path, prefix) else {
            continue;
        };
        let dest = match &rel {
            Some(r) => r.to_fs_path(&root)?,
            None => out.to_path_buf(),
        };
        if let Some(r) = &rel
            && let Err(e) = ensure_parents(&root, r)
        {
            report.errors.push(e.to_string());
            continue;
        }
        let res = match &m.entry {
            Entry::File(f) => {
                jobs.push(FileJob {
                    path: path.clone(),
                    dest,
                    entry: f.clone(),
                    guard: Guard::Any,
                });
                Ok(())
            }
            Entry::Dir { mode, mtime_ns } => {
                dirs.push((dest.clone(), *mode, *mtime_ns, path.depth()));
                match &rel {
                    Some(r) => ensure_dir(&root, r),
                    None => fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e)),
                }
            }
            Entry::Symlink { target, .. } => {
                write_symlink(&dest, target, &tmp).map(|()| report.symlinks += 1)
            }
            Entry::Deleted => Ok(()),
        };
        if let Err(e) = res {
            report.errors.push(e.to_string());
        }
    }
    for res in restore::write_files(repo, journal, jobs, &tmp, progress).await {
        match res {
            Ok(l) => {
                report.files += 1;
                report.bytes += l.size;
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    let _ = fs::remove_dir_all(&tmp);
    dirs.sort_by_key(|d| std::cmp::Reverse(d.3));
    for (dest, mode, mtime_ns, _) in dirs {
        report.dirs += 1;
        let res = (|| -> std::io::Result<()> {
            if mtime_ns != 0 {
                fs::File::open(&dest)?.set_modified(system_time(mtime_ns))?;
            }
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o7777))
        })();
        if let Err(e) = res {
            report.errors.push(Error::io(&dest, e).to_string());
        }
    }
    Ok(report)
}

/// `Some(None)` for the prefix itself, `Some(Some(rel))` below it, `None` outside.
fn relative(path: &RepoPath, prefix: Option<&RepoPath>) -> Option<Option<RepoPath>> {
    let Some(p) = prefix else {
        return Some(Some(path.clone()));
    };
    if path == p {
        return Some(None);
    }
    if !path.starts_with(p) {
        return None;
    }
    RepoPath::new(path.as_bytes()[p.as_bytes().len() + 1..].to_vec())
        .ok()
        .map(Some)
}

/// The directory files are placed under, and a temp dir on the same filesystem.
fn staging(out: &Path, single_file: bool) -> Result<(PathBuf, PathBuf)> {
    let root = if single_file {
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    } else {
        out.to_path_buf()
    };
    fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let tmp = root.join(format!(
        ".coffer-tmp-{}",
        crate::id::DeviceId::random().to_hex()
    ));
    fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Ok((root, tmp))
}

fn write_symlink(dest: &Path, target: &[u8], tmp: &Path) -> Result<()> {
    let t = tmp.join(format!("{}.link", crate::id::DeviceId::random().to_hex()));
    std::os::unix::fs::symlink(OsStr::from_bytes(target), &t).map_err(|e| Error::io(&t, e))?;
    fs::rename(&t, dest).map_err(|e| Error::io(dest, e))
}
