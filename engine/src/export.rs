//! Writing part of a repository into a plain directory or file (`get`, `restore
//! --to`): no device, no journal of its own, existing outputs are replaced. Every
//! file still goes through a temp file and a rename, and every chunk is verified.

use crate::apply::WRITE_BATCH_FILES;
use crate::commit::Entry;
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::merge::{self, MergedWalk, Scope};
use crate::path::RepoPath;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::restore::{self, FileJob, Guard, ensure_dir, ensure_parents, system_time};
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

/// Writes the merged entries of `journal` at or below `prefix` under `out`:
/// `prefix` itself becomes `out`, `prefix/a/b` becomes `out/a/b`. With no prefix,
/// `out` is the top. `single_file`: `prefix` is a file or symlink (the caller
/// has looked it up), so `out` is written beside its parent. The merged state is streamed ([`MergedWalk`] over the keys
/// that decide `prefix`), files are written in batches of
/// [`WRITE_BATCH_FILES`], and directory modes and times are set last, deepest
/// first: memory does not grow with the tree.
pub async fn export_tree(
    repo: &Repository,
    journal: &Journal,
    prefix: Option<&RepoPath>,
    single_file: bool,
    out: &Path,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let mut report = ExportReport::default();
    let (root, tmp) = staging(out, single_file)?;
    let scope = Scope::deciding(prefix);
    let mut jobs = Vec::new();
    for item in MergedWalk::scope(journal, scope.clone()) {
        let (path, m) = item?;
        let Some(rel) = relative(&path, prefix) else {
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
        let res = match m.entry {
            Entry::File(f) => {
                jobs.push(FileJob {
                    path,
                    dest,
                    entry: f,
                    guard: Guard::Any,
                });
                Ok(())
            }
            Entry::Dir { .. } => match &rel {
                Some(r) => ensure_dir(&root, r),
                None => fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e)),
            },
            Entry::Symlink { target, .. } => {
                write_symlink(&dest, &target, &tmp).map(|()| report.symlinks += 1)
            }
            Entry::Deleted => Ok(()),
        };
        if let Err(e) = res {
            report.errors.push(e.to_string());
        }
        if jobs.len() >= WRITE_BATCH_FILES {
            write_batch(
                repo,
                journal,
                std::mem::take(&mut jobs),
                &tmp,
                progress,
                &mut report,
            )
            .await;
        }
    }
    write_batch(repo, journal, jobs, &tmp, progress, &mut report).await;
    let _ = fs::remove_dir_all(&tmp);
    for item in merge::dirs_descending(journal, &scope) {
        let (path, m) = item?;
        let (Some(rel), Entry::Dir { mode, mtime_ns }) = (relative(&path, prefix), m.entry) else {
            continue;
        };
        let dest = match &rel {
            Some(r) => r.to_fs_path(&root)?,
            None => out.to_path_buf(),
        };
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

/// Writes one batch of files.
async fn write_batch(
    repo: &Repository,
    journal: &Journal,
    jobs: Vec<FileJob>,
    tmp: &Path,
    progress: &dyn Progress,
    report: &mut ExportReport,
) {
    if jobs.is_empty() {
        return;
    }
    for res in restore::write_files(repo, journal, jobs, tmp, progress).await {
        match res {
            Ok(l) => {
                report.files += 1;
                report.bytes += l.size;
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
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
