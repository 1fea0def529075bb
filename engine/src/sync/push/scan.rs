//! Walking a synced folder.
//!
//! The walk never follows symlinks, skips `.coffer/` and paths matched by
//! `.cofferignore` (gitignore syntax), and reports unreadable directories instead of
//! failing: their previously synced contents are *not* taken as deleted. Sockets,
//! FIFOs and devices are never synced; the walk lists the ones it skips.

use crate::error::{Error, Result};
use crate::format::path::{RepoPath, STATE_DIR};
use crate::journal::{LocalKind, StatEntry};
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

/// `.cofferignore` rules of a folder, and what is left out without a rule: every
/// `.coffer` directory at any depth, a synced folder nested in this one, and a
/// local store inside the folder ([`IgnoreRules::exclude_store`]).
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    root: PathBuf,
    gitignore: Option<Gitignore>,
    store: Option<RepoPath>,
}

/// Why a directory is left out although no `.cofferignore` rule names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excluded {
    /// It holds a `.coffer/`: another synced folder (its own device) lives there.
    NestedFolder,
    /// It is the repository's own local store.
    Store,
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
            store: None,
        })
    }

    /// Rules that ignore nothing but `.coffer/`.
    pub fn none(root: &Path) -> IgnoreRules {
        IgnoreRules {
            root: root.to_path_buf(),
            gitignore: None,
            store: None,
        }
    }

    /// Leaves out `store`, the repository's local store, if it is inside the
    /// folder; returns its path in the folder then.
    pub fn exclude_store(&mut self, store: &Path) -> Option<RepoPath> {
        let store = store.canonicalize().ok()?;
        let rel = store.strip_prefix(&self.root).ok()?;
        let path = RepoPath::from_relative(rel).ok()?;
        self.store = Some(path.clone());
        Some(path)
    }

    /// Why the directory `path` is left out without a rule, if it is: checked
    /// for each directory the walk meets (one `lstat` of `path/.coffer`).
    pub fn excluded(&self, path: &RepoPath) -> Option<Excluded> {
        if self.store.as_ref() == Some(path) {
            return Some(Excluded::Store);
        }
        let state = path.to_fs_path(&self.root).ok()?.join(STATE_DIR);
        fs::symlink_metadata(state)
            .is_ok_and(|m| m.is_dir())
            .then_some(Excluded::NestedFolder)
    }

    /// Whether `path` (a directory if `is_dir`) is ignored, itself or by a
    /// parent: by a rule, for being in a `.coffer` directory, or below the store
    /// (the store itself, like a nested folder, is told by [`IgnoreRules::excluded`]).
    pub fn is_ignored(&self, path: &RepoPath, is_dir: bool) -> bool {
        path.in_state_dir()
            || self
                .store
                .as_ref()
                .is_some_and(|s| path.starts_with(s) && path != s)
            || self.matches_rule(path, is_dir)
    }

    fn matches_rule(&self, path: &RepoPath, is_dir: bool) -> bool {
        match &self.gitignore {
            None => false,
            Some(g) => {
                let full = path.to_fs_path(&self.root).unwrap_or_default();
                g.matched_path_or_any_parents(&full, is_dir).is_ignore()
            }
        }
    }
}

/// How the walk opens directories: for reading, never through a symlink.
fn dir_flags() -> rustix::fs::OFlags {
    use rustix::fs::OFlags;
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// What the walk does with a child of a listed directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// A directory the walk enters: its own listing accounts for what is below it.
    Enter,
    /// A file or a symlink.
    Leaf,
    /// A socket, FIFO or device: never synced, so a synced path that now holds
    /// one is gone (with everything that was below it).
    Special,
    /// Ignored by `.cofferignore`, or of unknown type: neither walked nor taken as
    /// gone.
    Skip,
}

/// A child of a listed directory.
#[derive(Debug)]
pub struct Child {
    pub path: RepoPath,
    pub kind: ChildKind,
    dirent: fs::DirEntry,
}

/// One step of a [`Walk`].
#[derive(Debug)]
pub enum Step {
    /// An entry, in walk order: depth-first, each directory's children in byte
    /// order, a directory before its children.
    Entry(LocalEntry),
    /// A directory (`None`: the root) was read completely; until the next call to
    /// [`Walk::step`], [`Walk::listing`] holds its children. A directory whose
    /// listing broke off is walked but never announced, so nothing below it is
    /// taken as deleted.
    Listed(Option<RepoPath>),
}

/// A streaming, depth-first walk of a synced folder. Memory: the listings of the
/// directories on the current path, never the whole tree.
#[derive(Debug)]
pub struct Walk {
    rules: IgnoreRules,
    /// One listing per open directory, sorted in descending order (popped from
    /// the end).
    levels: Vec<Vec<Child>>,
    /// A handle on each open directory (same depth as `levels`): a child
    /// directory is opened relative to its parent's, so only the path relative
    /// to the folder counts against `PATH_MAX`.
    handles: Vec<Option<std::os::fd::OwnedFd>>,
    /// A listing read by the last step, to announce next.
    announce: Option<Option<RepoPath>>,
    problems: Vec<String>,
    /// Directories left out without a rule, in walk order.
    excluded: Vec<(RepoPath, Excluded)>,
    /// Sockets, FIFOs and devices skipped (not ignored by a rule), in walk order.
    special: Vec<RepoPath>,
}

impl Walk {
    /// Starts a walk; only a failure to read `root` itself is an error.
    pub fn new(root: &Path, rules: IgnoreRules) -> Result<Walk> {
        let top = fs::read_dir(root).map_err(|e| Error::io(root, e))?;
        let handle = rustix::fs::open(root, dir_flags(), rustix::fs::Mode::empty()).ok();
        let mut walk = Walk {
            rules,
            levels: Vec::new(),
            handles: Vec::new(),
            announce: None,
            problems: Vec::new(),
            excluded: Vec::new(),
            special: Vec::new(),
        };
        walk.open_level(None, top, handle);
        Ok(walk)
    }

    /// The next step; `None` once the walk is over.
    pub fn step(&mut self) -> Option<Step> {
        if let Some(dir) = self.announce.take() {
            return Some(Step::Listed(dir));
        }
        loop {
            let level = self.levels.last_mut()?;
            let Some(child) = level.pop() else {
                self.levels.pop();
                self.handles.pop();
                continue;
            };
            match child.kind {
                ChildKind::Skip => continue,
                ChildKind::Special => {
                    self.special.push(child.path);
                    continue;
                }
                ChildKind::Enter | ChildKind::Leaf => {}
            }
            let meta = match child.dirent.metadata() {
                Ok(m) => m,
                Err(e) => {
                    self.problems.push(format!("{}: {e}", child.path));
                    continue;
                }
            };
            let Some(entry) = LocalEntry::from_metadata(child.path.clone(), &meta) else {
                // Replaced by a socket, FIFO or device since the listing.
                self.special.push(child.path);
                continue;
            };
            if meta.is_dir() && child.kind == ChildKind::Enter {
                match self.read_child_dir(&child) {
                    Ok((rd, handle)) => self.open_level(Some(child.path), rd, handle),
                    Err(e) => self
                        .problems
                        .push(format!("{}: cannot read directory: {e}", child.path)),
                }
            }
            return Some(Step::Entry(entry));
        }
    }

    /// The children of the directory the last [`Step::Listed`] announced, sorted
    /// by path; only meaningful right after that step.
    pub fn listing(&self) -> &[Child] {
        self.levels.last().map(Vec::as_slice).unwrap_or_default()
    }

    /// Looks `path` up in [`Walk::listing`].
    pub fn listed_kind(&self, path: &[u8]) -> Option<ChildKind> {
        // Descending order: compare reversed.
        let list = self.listing();
        list.binary_search_by(|c| path.cmp(c.path.as_bytes()))
            .ok()
            .map(|i| list[i].kind)
    }

    /// Problems met so far (unreadable entries and directories).
    pub fn take_problems(&mut self) -> Vec<String> {
        std::mem::take(&mut self.problems)
    }

    /// Directories left out without a rule (nested folders, the store) so far.
    pub fn take_excluded(&mut self) -> Vec<(RepoPath, Excluded)> {
        std::mem::take(&mut self.excluded)
    }

    /// Sockets, FIFOs and devices skipped so far.
    pub fn take_special(&mut self) -> Vec<RepoPath> {
        std::mem::take(&mut self.special)
    }

    /// Opens the directory `child` of the innermost open directory: by its
    /// parent's handle (`openat`, not following a symlink), listed through
    /// `/proc/self/fd`, so a deep path never meets `PATH_MAX`; by its full path
    /// where that is not possible (no `/proc`).
    fn read_child_dir(
        &self,
        child: &Child,
    ) -> std::io::Result<(fs::ReadDir, Option<std::os::fd::OwnedFd>)> {
        use std::os::fd::AsRawFd;
        if let Some(Some(parent)) = self.handles.last() {
            let name = child.dirent.file_name();
            if let Ok(fd) =
                rustix::fs::openat(parent, &name, dir_flags(), rustix::fs::Mode::empty())
                && let Ok(rd) = fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            {
                return Ok((rd, Some(fd)));
            }
        }
        Ok((fs::read_dir(child.dirent.path())?, None))
    }

    fn open_level(
        &mut self,
        parent: Option<RepoPath>,
        rd: fs::ReadDir,
        handle: Option<std::os::fd::OwnedFd>,
    ) {
        let mut items = Vec::new();
        let mut complete = true;
        for dirent in rd {
            let dirent = match dirent {
                Ok(d) => d,
                Err(e) => {
                    let at = parent.as_ref().map(RepoPath::display).unwrap_or_default();
                    self.problems.push(format!("{at}: {e}"));
                    complete = false;
                    continue;
                }
            };
            let name = dirent.file_name();
            if name == STATE_DIR {
                continue;
            }
            let mut rel = parent
                .as_ref()
                .map(|p| p.as_bytes().to_vec())
                .unwrap_or_default();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let path = match RepoPath::new(rel) {
                Ok(p) => p,
                Err(e) => {
                    self.problems.push(e.to_string());
                    continue;
                }
            };
            let kind = match dirent.file_type() {
                Ok(t) if self.rules.is_ignored(&path, t.is_dir()) => ChildKind::Skip,
                Ok(t) if t.is_dir() => match self.rules.excluded(&path) {
                    Some(why) => {
                        self.excluded.push((path.clone(), why));
                        ChildKind::Skip
                    }
                    None => ChildKind::Enter,
                },
                Ok(t) if t.is_file() || t.is_symlink() => ChildKind::Leaf,
                Ok(_) => ChildKind::Special,
                Err(e) => {
                    self.problems.push(format!("{path}: {e}"));
                    ChildKind::Skip
                }
            };
            items.push(Child { path, kind, dirent });
        }
        items.sort_by(|a, b| b.path.cmp(&a.path));
        self.levels.push(items);
        self.handles.push(handle);
        if complete {
            self.announce = Some(parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry of a whole walk, and its problems.
    fn walk_all(root: &Path) -> (Vec<LocalEntry>, Vec<String>) {
        let (entries, problems, _) = walk_with_special(root);
        (entries, problems)
    }

    /// Every entry of a whole walk, its problems and the special files it skipped.
    fn walk_with_special(root: &Path) -> (Vec<LocalEntry>, Vec<String>, Vec<String>) {
        let mut walk = Walk::new(root, IgnoreRules::load(root).unwrap()).unwrap();
        let mut entries = Vec::new();
        while let Some(step) = walk.step() {
            if let Step::Entry(e) = step {
                entries.push(e);
            }
        }
        let special = walk.take_special().iter().map(RepoPath::display).collect();
        (entries, walk.take_problems(), special)
    }

    #[test]
    fn special_files_are_skipped_and_listed_unless_ignored() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir(r.join("sub")).unwrap();
        fs::write(r.join("a.txt"), "a").unwrap();
        fs::write(r.join(IGNORE_FILE), "*.ignored\n").unwrap();
        let _sockets = ["sub/s.sock", "z.sock", "x.ignored"]
            .map(|p| std::os::unix::net::UnixListener::bind(r.join(p)).unwrap());
        let (entries, problems, special) = walk_with_special(r);
        let paths: Vec<String> = entries.iter().map(|e| e.path.display()).collect();
        assert_eq!(paths, [".cofferignore", "a.txt", "sub"]);
        assert_eq!(special, ["sub/s.sock", "z.sock"]);
        assert!(problems.is_empty());
    }

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
        let (entries, problems) = walk_all(r);
        let paths: Vec<String> = entries.iter().map(|e| e.path.display()).collect();
        assert_eq!(
            paths,
            [".cofferignore", "a.txt", "b", "b/c", "b/c/d.txt", "link"]
        );
        let link = entries.iter().find(|e| e.path.display() == "link").unwrap();
        assert_eq!(link.kind, LocalKind::Symlink);
        assert!(problems.is_empty());
    }
}
