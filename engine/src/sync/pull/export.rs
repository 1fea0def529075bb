//! Writing part of a repository into a plain directory or file (`get`, `restore
//! --to`): no device, no journal of its own. An existing file or symlink with
//! other content is kept and reported (it may be an edit no repository has)
//! unless `force`; one with the same content is left as it is. Every file still
//! goes through a temp file and a rename, and every chunk is verified.

use crate::error::{Error, Result};
use crate::format::commit::Entry;
use crate::format::path::RepoPath;
use crate::journal::{Journal, LocalKind};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::sync::pull::WRITE_BATCH_FILES;
use crate::sync::pull::merge::{self, MergedWalk, Scope};
use crate::sync::pull::restore::{self, FileJob, Guard};
use crate::sync::pull::rootfs::{RootFs, TmpDir};
use crate::sync::push::scan::LocalEntry;
use std::fs;
use std::os::unix::ffi::OsStrExt;
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
    force: bool,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    let mut report = ExportReport::default();
    let st = staging(out, single_file)?;
    let scope = Scope::deciding(prefix);
    let mut jobs = Vec::new();
    for item in MergedWalk::scope(journal, scope.clone()) {
        let (path, m) = item?;
        let Some(rel) = relative(&path, prefix).filter(|_| !path.in_state_dir()) else {
            continue;
        };
        // Where it goes below the staging root: `None` is the root itself.
        let dest = rel.or_else(|| st.name.clone());
        if let Some(d) = &dest
            && let Err(e) = st.root.ensure_parents(d)
        {
            report.errors.push(e.to_string());
            continue;
        }
        let res = match (m.entry, dest) {
            (Entry::File(f), Some(dest)) => {
                let size = f.size;
                let checked = match force {
                    true => Ok(()),
                    false => refuse_other(&st.root, &dest, |l| {
                        l.kind == LocalKind::File && l.size == size
                    }),
                };
                checked.map(|()| {
                    let guard = if force { Guard::Any } else { Guard::Same };
                    jobs.push(FileJob {
                        path,
                        dest,
                        entry: f,
                        guard,
                    });
                })
            }
            (Entry::Dir { .. }, Some(d)) => st.root.ensure_dir(&d),
            (Entry::Symlink { target, .. }, Some(d)) => export_symlink(&st, &target, &d, force)
                .map(|wrote| {
                    report.symlinks += usize::from(wrote);
                }),
            (Entry::Dir { .. } | Entry::Deleted, _) => Ok(()),
            (_, None) => Err(Error::Config(format!(
                "{}: a file cannot be written as a directory",
                out.display()
            ))),
        };
        if let Err(e) = res {
            report.errors.push(e.to_string());
        }
        if jobs.len() >= WRITE_BATCH_FILES {
            let batch = std::mem::take(&mut jobs);
            write_batch(repo, journal, batch, &st, progress, &mut report).await;
        }
    }
    write_batch(repo, journal, jobs, &st, progress, &mut report).await;
    let _ = fs::remove_dir_all(st.tmp.path());
    for item in merge::dirs_descending(journal, &scope) {
        let (path, m) = item?;
        let rel = relative(&path, prefix).filter(|_| !path.in_state_dir());
        let (Some(rel), Entry::Dir { mode, mtime_ns }) = (rel, m.entry) else {
            continue;
        };
        report.dirs += 1;
        let dest = rel.or_else(|| st.name.clone());
        if let Err(e) = st.root.set_dir_meta(dest.as_ref(), mode, mtime_ns) {
            report.errors.push(e.to_string());
        }
    }
    Ok(report)
}

/// Writes one batch of files.
async fn write_batch(
    repo: &Repository,
    journal: &Journal,
    jobs: Vec<FileJob>,
    st: &Staging,
    progress: &dyn Progress,
    report: &mut ExportReport,
) {
    if jobs.is_empty() {
        return;
    }
    for res in restore::write_files(repo, journal, jobs, &st.root, &st.tmp, progress).await {
        match res {
            Ok(l) => {
                report.files += 1;
                report.bytes += l.size;
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
}

/// Writes the symlink `d` unless it is already there (`Ok(false)`), or
/// something else is and `force` is not given.
fn export_symlink(st: &Staging, target: &[u8], d: &RepoPath, force: bool) -> Result<bool> {
    if st.root.read_link(d)?.is_some_and(|t| t == target) {
        return Ok(false);
    }
    if !force {
        refuse_other(&st.root, d, |_| false)?;
    }
    st.root.symlink(target, d, &st.tmp)?;
    Ok(true)
}

/// An error naming `dest` if something is there that `may_be_same` rules out
/// (without `--force`, other content is kept).
fn refuse_other(
    root: &RootFs,
    dest: &RepoPath,
    may_be_same: impl FnOnce(&LocalEntry) -> bool,
) -> Result<()> {
    match root.lstat(dest)? {
        Some(l) if !may_be_same(&l) => Err(Error::Config(format!(
            "{}: exists with other content; kept it (--force replaces it)",
            root.display(dest).display()
        ))),
        _ => Ok(()),
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

/// Where an export writes: the directory everything is placed under (as a
/// handle), the name of `out` in it when `out` is a single file, and a temp dir
/// on the same filesystem.
struct Staging {
    root: RootFs,
    name: Option<RepoPath>,
    tmp: TmpDir,
}

fn staging(out: &Path, single_file: bool) -> Result<Staging> {
    let (root, name) = if single_file {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = out
            .file_name()
            .ok_or_else(|| Error::Config(format!("{}: not a file name", out.display())))?;
        (parent.to_path_buf(), Some(RepoPath::new(name.as_bytes())?))
    } else {
        (out.to_path_buf(), None)
    };
    fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let tmp: PathBuf = root.join(format!(
        ".coffer-tmp-{}",
        crate::format::id::DeviceId::random().to_hex()
    ));
    fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Ok(Staging {
        root: RootFs::open(&root)?,
        name,
        tmp: TmpDir::open(&tmp)?,
    })
}
