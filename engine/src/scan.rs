//! Walking a synced folder.
//!
//! The walk never follows symlinks, skips `.coffer/` and paths matched by
//! `.cofferignore` (gitignore syntax), and reports unreadable directories instead of
//! failing: their previously synced contents are *not* taken as deleted.

use crate::error::{Error, Result};
use crate::journal::{LocalKind, StatEntry};
use crate::path::{RepoPath, STATE_DIR};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The ignore file at the top of a synced folder.
pub const IGNORE_FILE: &str = ".cofferignore";

/// A filesystem entry as seen by `lstat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    pub path: RepoPath,
    pub kind: LocalKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    /// Permission bits.
    pub mode: u32,
}

impl LocalEntry {
    /// `None` for sockets, fifos and devices, which are not synced.
    pub fn from_metadata(path: RepoPath, m: &fs::Metadata) -> Option<LocalEntry> {
        let ft = m.file_type();
        let kind = if ft.is_file() {
            LocalKind::File
        } else if ft.is_dir() {
            LocalKind::Dir
        } else if ft.is_symlink() {
            LocalKind::Symlink
        } else {
            return None;
        };
        Some(LocalEntry {
            path,
            kind,
            size: if kind == LocalKind::Dir { 0 } else { m.size() },
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            mode: m.mode() & 0o7777,
        })
    }

    /// `lstat` of `root/path`; `Ok(None)` when it does not exist.
    pub fn stat(root: &Path, path: &RepoPath) -> Result<Option<LocalEntry>> {
        let fs_path = path.to_fs_path(root)?;
        match fs::symlink_metadata(&fs_path) {
            Ok(m) => Ok(LocalEntry::from_metadata(path.clone(), &m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(fs_path, e)),
        }
    }

    /// Whether nothing changed since `stat` was recorded (size, times, inode, mode).
    pub fn unchanged_since(&self, stat: &StatEntry) -> bool {
        self.kind == stat.kind
            && self.size == stat.size
            && self.mtime_ns == stat.mtime_ns
            && self.ctime_ns == stat.ctime_ns
            && self.ino == stat.ino
            && self.mode == stat.mode
    }
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Every syncable entry, in path order (parents before children).
    pub entries: Vec<LocalEntry>,
    /// Subtrees that could not be read; deletions below them are not inferred.
    pub unreadable: Vec<RepoPath>,
    /// One line per problem met (permission denied, vanished entries...).
    pub problems: Vec<String>,
}

impl ScanOutcome {
    /// Whether `path` lies in a subtree this walk could not see.
    pub fn is_unseen(&self, path: &RepoPath) -> bool {
        self.unreadable.iter().any(|u| path.starts_with(u))
    }
}

/// `.cofferignore` rules of a folder.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    root: PathBuf,
    gitignore: Option<Gitignore>,
}

impl IgnoreRules {
    /// Loads `root/.cofferignore` if present.
    pub fn load(root: &Path) -> Result<IgnoreRules> {
        let file = root.join(IGNORE_FILE);
        let gitignore = if file.exists() {
            let mut b = GitignoreBuilder::new(root);
            if let Some(e) = b.add(&file) {
                return Err(Error::Config(format!("{}: {e}", file.display())));
            }
            Some(
                b.build()
                    .map_err(|e| Error::Config(format!("{}: {e}", file.display())))?,
            )
        } else {
            None
        };
        Ok(IgnoreRules {
            root: root.to_path_buf(),
            gitignore,
        })
    }

    /// Rules that ignore nothing but `.coffer/`.
    pub fn none(root: &Path) -> IgnoreRules {
        IgnoreRules {
            root: root.to_path_buf(),
            gitignore: None,
        }
    }

    /// Whether `path` (a directory if `is_dir`) is ignored, itself or by a parent.
    pub fn is_ignored(&self, path: &RepoPath, is_dir: bool) -> bool {
        match &self.gitignore {
            None => false,
            Some(g) => {
                let full = path.to_fs_path(&self.root).unwrap_or_default();
                g.matched_path_or_any_parents(&full, is_dir).is_ignore()
            }
        }
    }
}

/// Walks `root`. Only a failure to read `root` itself is an error.
pub fn scan(root: &Path, rules: &IgnoreRules) -> Result<ScanOutcome> {
    let mut out = ScanOutcome::default();
    let top = fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    // Depth-first, children sorted, so entries come out in path order.
    let mut pending = vec![collect_sorted(None, top, &mut out)];
    while let Some(level) = pending.last_mut() {
        let Some((path, dirent)) = level.pop() else {
            pending.pop();
            continue;
        };
        let meta = match dirent.metadata() {
            Ok(m) => m,
            Err(e) => {
                out.problems.push(format!("{path}: {e}"));
                out.unreadable.push(path);
                continue;
            }
        };
        let is_dir = meta.is_dir();
        if rules.is_ignored(&path, is_dir) {
            continue;
        }
        let Some(entry) = LocalEntry::from_metadata(path.clone(), &meta) else {
            continue;
        };
        out.entries.push(entry);
        if is_dir {
            match fs::read_dir(dirent.path()) {
                Ok(rd) => {
                    pending.push(collect_sorted(Some(&path), rd, &mut out));
                }
                Err(e) => {
                    out.problems
                        .push(format!("{path}: cannot read directory: {e}"));
                    out.unreadable.push(path);
                }
            }
        }
    }
    Ok(out)
}

/// The entries of one directory as repository paths, sorted so that popping from
/// the end yields them in ascending order.
fn collect_sorted(
    parent: Option<&RepoPath>,
    rd: fs::ReadDir,
    out: &mut ScanOutcome,
) -> Vec<(RepoPath, fs::DirEntry)> {
    let mut items = Vec::new();
    for dirent in rd {
        let dirent = match dirent {
            Ok(d) => d,
            Err(e) => {
                out.problems.push(format!(
                    "{}: {e}",
                    parent.map(|p| p.display()).unwrap_or_default()
                ));
                if let Some(p) = parent {
                    out.unreadable.push(p.clone());
                }
                continue;
            }
        };
        let name = dirent.file_name();
        if parent.is_none() && name == STATE_DIR {
            continue;
        }
        let mut rel = parent.map(|p| p.as_bytes().to_vec()).unwrap_or_default();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        let rel = RepoPath::new(rel);
        match rel {
            Ok(p) => items.push((p, dirent)),
            Err(e) => out.problems.push(e.to_string()),
        }
    }
    items.sort_by(|a, b| b.0.cmp(&a.0));
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_in_order_skipping_state_and_ignored() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("b/c")).unwrap();
        fs::create_dir_all(r.join(".coffer/x")).unwrap();
        fs::write(r.join("a.txt"), "a").unwrap();
        fs::write(r.join("b/c/d.txt"), "d").unwrap();
        fs::write(r.join("b/skip.tmp"), "s").unwrap();
        fs::write(r.join(IGNORE_FILE), "*.tmp\n").unwrap();
        std::os::unix::fs::symlink("a.txt", r.join("link")).unwrap();
        let out = scan(r, &IgnoreRules::load(r).unwrap()).unwrap();
        let paths: Vec<String> = out.entries.iter().map(|e| e.path.display()).collect();
        assert_eq!(
            paths,
            [".cofferignore", "a.txt", "b", "b/c", "b/c/d.txt", "link"]
        );
        let link = out
            .entries
            .iter()
            .find(|e| e.path.display() == "link")
            .unwrap();
        assert_eq!(link.kind, LocalKind::Symlink);
        assert!(out.problems.is_empty());
    }
}
