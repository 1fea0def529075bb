//! The one place where pull, restore, get and watch touch the file system below
//! a folder: the folder as an open directory handle, and every path below it
//! resolved one component at a time with `openat(…, O_NOFOLLOW)` (rustix's `*at`
//! calls).
//!
//! No operation through a [`RootFs`] ever follows a symlink below the root: an
//! ancestor that is a symlink (or a file) stops the operation with "parent X is a
//! symlink" before anything is touched, and the final component is acted on by
//! name in its parent's handle with no-follow flags (`unlinkat`, `renameat`,
//! `mkdirat`, `symlinkat`, `utimensat(AT_SYMLINK_NOFOLLOW)`, and `fchmod` on a
//! directory opened `O_NOFOLLOW`). There is no check-then-act window: the handle
//! that was checked is the one acted through, so a directory swapped for a
//! symlink between the two cannot redirect anything. What a handle cannot
//! prevent: a directory *moved* elsewhere (not replaced by a link) after it was
//! opened is still the directory written to, wherever it now lives — the same
//! guarantee `cap-std` gives.
//!
//! Only the path relative to the root counts against `PATH_MAX`: a folder nested
//! deeper than 4096 bytes works as any other.
//!
//! The root itself is opened as the caller names it (symlinks in the root path
//! are the user's choice and are followed, once, at open).

use crate::error::{Error, Result};
use crate::format::path::RepoPath;
use crate::journal::LocalKind;
use crate::sync::push::scan::LocalEntry;
use rustix::fs::{AtFlags, CWD, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open directory that paths are resolved under without following symlinks.
/// Cheap to clone (the handle is shared).
#[derive(Debug, Clone)]
pub struct RootFs {
    dir: Arc<OwnedFd>,
    path: Arc<Path>,
}

/// A directory handle: the root's, or one opened below it.
enum Dir<'a> {
    Root(BorrowedFd<'a>),
    Sub(OwnedFd),
}

impl AsFd for Dir<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Dir::Root(fd) => *fd,
            Dir::Sub(fd) => fd.as_fd(),
        }
    }
}

/// The parent of a path: open, missing (some ancestor does not exist), or
/// blocked (an ancestor is a symlink or not a directory).
enum Parent<'a> {
    Open(Dir<'a>),
    Missing,
    Blocked(Error),
}

/// Flags of every directory handle below the root: no read permission needed,
/// never a symlink.
fn dir_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// An `O_PATH` handle on the directory `path` (the one place a full path is
/// resolved: the folder's root, or a temp dir).
fn open_handle(path: &Path) -> Result<OwnedFd> {
    rustix::fs::openat(
        CWD,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(path, e))
}

/// Whether `e` is `ENAMETOOLONG`: a path too long for the kernel as a whole,
/// whose components [`RootFs`] can still resolve one at a time.
pub fn too_long(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(Errno::NAMETOOLONG.raw_os_error())
}

fn io_err(path: impl Into<PathBuf>, e: Errno) -> Error {
    Error::io(path, std::io::Error::from(e))
}

impl RootFs {
    /// Opens `path` (which must be a directory) as a root.
    pub fn open(path: &Path) -> Result<RootFs> {
        let dir = open_handle(path)?;
        Ok(RootFs {
            dir: Arc::new(dir),
            path: path.into(),
        })
    }

    /// The root as it was named.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path` under the root, for messages only (never opened as such).
    pub fn display(&self, path: &RepoPath) -> PathBuf {
        self.path.join(OsStr::from_bytes(path.as_bytes()))
    }

    fn root(&self) -> Dir<'_> {
        Dir::Root(self.dir.as_fd())
    }

    /// Opens the parent directory of `path`, creating missing ancestors if
    /// `create` (and making a read-only one writable enough to create in).
    fn parent(&self, path: &RepoPath, create: bool) -> Result<Parent<'_>> {
        path.validate()?;
        let bytes = path.as_bytes();
        let mut cur = self.root();
        let mut end = 0;
        for comp in bytes.split(|&b| b == b'/') {
            if end + comp.len() == bytes.len() {
                break; // the last component is not walked
            }
            end += comp.len();
            let name = OsStr::from_bytes(comp);
            let shown = || self.path.join(OsStr::from_bytes(&bytes[..end]));
            match rustix::fs::openat(&cur, name, dir_flags(), Mode::empty()) {
                Ok(fd) => cur = Dir::Sub(fd),
                Err(Errno::NOENT) if create => {
                    mkdir_in(&cur, name).map_err(|e| io_err(shown(), e))?;
                    let fd = rustix::fs::openat(&cur, name, dir_flags(), Mode::empty())
                        .map_err(|e| io_err(shown(), e))?;
                    cur = Dir::Sub(fd);
                }
                Err(Errno::NOENT) => return Ok(Parent::Missing),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let anc = RepoPath::new(bytes[..end].to_vec())?;
                    return Ok(Parent::Blocked(blocked(&cur, name, path, &anc)));
                }
                Err(e) => return Err(io_err(shown(), e)),
            }
            end += 1; // the separator
        }
        #[cfg(test)]
        tests::after_resolve(path);
        Ok(Parent::Open(cur))
    }

    /// The parent of `path`, which must exist and be reachable.
    fn existing_parent(&self, path: &RepoPath) -> Result<Dir<'_>> {
        match self.parent(path, false)? {
            Parent::Open(d) => Ok(d),
            Parent::Blocked(e) => Err(e),
            Parent::Missing => Err(io_err(self.display(path), Errno::NOENT)),
        }
    }

    /// Creates every missing ancestor of `path` as a real directory (refusing to go
    /// through a symlink or a file) and makes the parent writable by its owner.
    pub fn ensure_parents(&self, path: &RepoPath) -> Result<()> {
        let dir = match self.parent(path, true)? {
            Parent::Open(d) => d,
            Parent::Blocked(e) => return Err(e),
            Parent::Missing => return Err(io_err(self.display(path), Errno::NOENT)),
        };
        make_writable(&dir).map_err(|e| io_err(self.display(path), e))
    }

    /// Makes the parent of `path` writable by its owner (a read-only directory
    /// being filled or emptied; the synced mode is set again afterwards).
    pub fn writable_parent(&self, path: &RepoPath) -> Result<()> {
        let dir = self.existing_parent(path)?;
        make_writable(&dir).map_err(|e| io_err(self.display(path), e))
    }

    /// Creates `path` (and its ancestors) as a directory; an existing real
    /// directory is fine, anything else there is an error.
    pub fn ensure_dir(&self, path: &RepoPath) -> Result<()> {
        self.ensure_parents(path)?;
        let dir = self.existing_parent(path)?;
        let name = last(path);
        match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o777)) {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) if self.kind_in(&dir, name) == Some(LocalKind::Dir) => Ok(()),
            Err(e) => Err(io_err(self.display(path), e)),
        }
    }

    fn kind_in(&self, dir: &Dir<'_>, name: &OsStr) -> Option<LocalKind> {
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .and_then(|st| kind_of(st.st_mode))
    }

    /// `lstat` of `path`: `None` when it does not exist, is not a synced kind
    /// (socket, FIFO, device), or lies below a symlink or a file — then it is not
    /// in this folder at all.
    pub fn lstat(&self, path: &RepoPath) -> Result<Option<LocalEntry>> {
        let dir = match self.parent(path, false)? {
            Parent::Open(d) => d,
            Parent::Missing | Parent::Blocked(_) => return Ok(None),
        };
        self.lstat_in(&dir, path)
    }

    fn lstat_in(&self, dir: &Dir<'_>, path: &RepoPath) -> Result<Option<LocalEntry>> {
        match rustix::fs::statat(dir, last(path), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(entry_of(path.clone(), &st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_err(self.display(path), e)),
        }
    }

    /// Opens the regular file `path` for reading (never through a symlink);
    /// `None` if it is not a reachable regular file.
    pub fn open_read(&self, path: &RepoPath) -> Result<Option<std::fs::File>> {
        let dir = match self.parent(path, false)? {
            Parent::Open(d) => d,
            Parent::Missing | Parent::Blocked(_) => return Ok(None),
        };
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        match rustix::fs::openat(&dir, last(path), flags, Mode::empty()) {
            Ok(fd) => {
                let f = std::fs::File::from(fd);
                let is_file = f.metadata().is_ok_and(|m| m.is_file());
                Ok(is_file.then_some(f))
            }
            Err(Errno::NOENT | Errno::LOOP) => Ok(None),
            Err(e) => Err(io_err(self.display(path), e)),
        }
    }

    /// Renames `from` to its sibling `to` (same parent) unless `to` exists
    /// (`RENAME_NOREPLACE`): `Ok(false)` then. Never through a symlink.
    pub fn rename_sibling(&self, from: &RepoPath, to: &RepoPath) -> Result<bool> {
        if from.parent() != to.parent() {
            return Err(Error::Internal(format!("{to} is not a sibling of {from}")));
        }
        let dir = self.existing_parent(from)?;
        match rustix::fs::renameat_with(
            &dir,
            last(from),
            &dir,
            last(to),
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(io_err(self.display(from), e)),
        }
    }

    /// The target of the symlink `path`, `None` if it is not a reachable symlink.
    pub fn read_link(&self, path: &RepoPath) -> Result<Option<Vec<u8>>> {
        let dir = match self.parent(path, false)? {
            Parent::Open(d) => d,
            Parent::Missing | Parent::Blocked(_) => return Ok(None),
        };
        match rustix::fs::readlinkat(&dir, last(path), Vec::new()) {
            Ok(t) => Ok(Some(t.into_bytes())),
            Err(Errno::NOENT | Errno::INVAL) => Ok(None),
            Err(e) => Err(io_err(self.display(path), e)),
        }
    }

    /// Removes the file or symlink `path` (never what a symlink points to).
    pub fn remove_file(&self, path: &RepoPath) -> Result<()> {
        let dir = self.existing_parent(path)?;
        make_writable(&dir).map_err(|e| io_err(self.display(path), e))?;
        rustix::fs::unlinkat(&dir, last(path), AtFlags::empty())
            .map_err(|e| io_err(self.display(path), e))
    }

    /// Removes the empty directory `path`. `Ok(false)`: it is not empty.
    pub fn remove_dir(&self, path: &RepoPath) -> Result<bool> {
        let dir = self.existing_parent(path)?;
        make_writable(&dir).map_err(|e| io_err(self.display(path), e))?;
        match rustix::fs::unlinkat(&dir, last(path), AtFlags::REMOVEDIR) {
            Ok(()) => Ok(true),
            Err(Errno::NOTEMPTY | Errno::EXIST) => Ok(false),
            Err(e) => Err(io_err(self.display(path), e)),
        }
    }

    /// Sets the mode and (if `mtime_ns` is not 0) the modification time of the
    /// directory `path`; a symlink there is refused, not followed. With no
    /// `path`, the root itself.
    pub fn set_dir_meta(&self, path: Option<&RepoPath>, mode: u32, mtime_ns: i64) -> Result<()> {
        let shown = path.map_or_else(|| self.path.to_path_buf(), |p| self.display(p));
        let fd = match path {
            Some(p) => {
                let dir = self.existing_parent(p)?;
                rustix::fs::openat(&dir, last(p), dir_flags(), Mode::empty())
                    .map_err(|e| io_err(&shown, e))?
            }
            None => rustix::fs::openat(&*self.dir, ".", dir_flags(), Mode::empty())
                .map_err(|e| io_err(&shown, e))?,
        };
        if mtime_ns != 0 {
            let times = Timestamps {
                last_access: Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_OMIT,
                },
                last_modification: timespec(mtime_ns),
            };
            set_times_fd(&fd, &times).map_err(|e| io_err(&shown, e))?;
        }
        chmod_fd(&fd, mode).map_err(|e| io_err(&shown, e))
    }

    /// Creates the symlink `path` → `target`, replacing what is there: made under
    /// a temp name in `tmp`, then renamed into place.
    pub fn symlink(&self, target: &[u8], path: &RepoPath, tmp: &TmpDir) -> Result<()> {
        let name = tmp.fresh_name("link");
        rustix::fs::symlinkat(OsStr::from_bytes(target), &tmp.dir, name.as_str())
            .map_err(|e| io_err(self.display(path), e))?;
        let dir = self.existing_parent(path);
        let res = dir.and_then(|d| {
            rustix::fs::renameat(&tmp.dir, name.as_str(), &d, last(path))
                .map_err(|e| io_err(self.display(path), e))
        });
        if res.is_err() {
            let _ = rustix::fs::unlinkat(&tmp.dir, name.as_str(), AtFlags::empty());
        }
        res
    }

    /// Renames the temp file `tmp_name` of `tmp` to `path` if `guard` accepts what
    /// is there now (looked up in the same parent handle the rename goes
    /// through); returns the installed file's `lstat`.
    pub fn install(
        &self,
        tmp: &TmpDir,
        tmp_name: &str,
        path: &RepoPath,
        guard: impl FnOnce(Option<LocalEntry>) -> Result<()>,
    ) -> Result<LocalEntry> {
        let dir = self.existing_parent(path)?;
        guard(self.lstat_in(&dir, path)?)?;
        rustix::fs::renameat(&tmp.dir, tmp_name, &dir, last(path))
            .map_err(|e| io_err(self.display(path), e))?;
        self.lstat_in(&dir, path)?
            .filter(|l| l.kind == LocalKind::File)
            .ok_or_else(|| Error::Internal(format!("{path}: written file is not a file")))
    }
}

/// A directory for temp files (`.coffer/tmp/`, or an export's staging dir), held
/// open so that temp files are created and renamed by handle.
#[derive(Debug, Clone)]
pub struct TmpDir {
    dir: Arc<OwnedFd>,
    path: Arc<Path>,
}

impl TmpDir {
    /// Opens the existing directory `path`.
    pub fn open(path: &Path) -> Result<TmpDir> {
        let dir = open_handle(path)?;
        Ok(TmpDir {
            dir: Arc::new(dir),
            path: path.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A random name that no other temp file has.
    pub fn fresh_name(&self, ext: &str) -> String {
        format!("{}.{ext}", crate::format::id::ChunkId::random().to_hex())
    }

    /// Creates the temp file `name` (0600, must not exist).
    pub fn create(&self, name: &str) -> std::io::Result<std::fs::File> {
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Opens the temp file `name` for writing.
    pub fn open_write(&self, name: &str) -> std::io::Result<std::fs::File> {
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Opens the temp file `name` for reading.
    pub fn open_read(&self, name: &str) -> std::io::Result<std::fs::File> {
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Removes the temp file `name`, then returns `res`.
    pub fn remove_after<T>(&self, name: &str, res: T) -> T {
        self.remove(name);
        res
    }

    /// Removes the temp file `name`, if it is there.
    pub fn remove(&self, name: &str) {
        let _ = rustix::fs::unlinkat(&self.dir, name, AtFlags::empty());
    }
}

/// Why an ancestor could not be opened as a directory.
fn blocked(dir: &Dir<'_>, name: &OsStr, path: &RepoPath, anc: &RepoPath) -> Error {
    let is_link = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| kind_of(st.st_mode) == Some(LocalKind::Symlink));
    if is_link {
        Error::UnsafePath {
            path: path.display(),
            reason: format!("parent {anc} is a symlink"),
        }
    } else {
        Error::Config(format!("{path}: parent {anc} is not a directory here"))
    }
}

/// `mkdirat`, making a read-only parent writable first if needed; an existing
/// entry is left for the caller's next `openat` to judge.
fn mkdir_in(dir: &Dir<'_>, name: &OsStr) -> rustix::io::Result<()> {
    let mode = Mode::from_raw_mode(0o777);
    match rustix::fs::mkdirat(dir, name, mode) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(Errno::ACCESS) => {
            make_writable(dir)?;
            match rustix::fs::mkdirat(dir, name, mode) {
                Ok(()) | Err(Errno::EXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn last(path: &RepoPath) -> &OsStr {
    OsStr::from_bytes(path.file_name())
}

/// Adds owner rwx to a directory that lacks owner write permission.
fn make_writable(dir: &impl AsFd) -> rustix::io::Result<()> {
    let st = rustix::fs::fstat(dir)?;
    let mode = st.st_mode & 0o7777;
    if mode & 0o200 == 0 {
        chmod_fd(dir, mode | 0o700)?;
    }
    Ok(())
}

/// `fchmod` of a handle. Linux refuses `fchmod` on `O_PATH` handles (and
/// `fchmodat` cannot refuse to follow a symlink), so those go through their
/// `/proc/self/fd` entry, which names exactly the opened inode.
fn chmod_fd(fd: &impl AsFd, mode: u32) -> rustix::io::Result<()> {
    let mode = Mode::from_raw_mode(mode & 0o7777);
    match rustix::fs::fchmod(fd, mode) {
        Err(Errno::BADF) => {
            rustix::fs::chmodat(CWD, proc_path(fd).as_str(), mode, AtFlags::empty())
        }
        r => r,
    }
}

/// `futimens` of a handle, through `/proc/self/fd` for `O_PATH` handles.
fn set_times_fd(fd: &impl AsFd, times: &Timestamps) -> rustix::io::Result<()> {
    match rustix::fs::futimens(fd, times) {
        Err(Errno::BADF) => {
            rustix::fs::utimensat(CWD, proc_path(fd).as_str(), times, AtFlags::empty())
        }
        r => r,
    }
}

fn proc_path(fd: &impl AsFd) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())
}

fn timespec(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000),
    }
}

fn kind_of(mode: u32) -> Option<LocalKind> {
    match rustix::fs::FileType::from_raw_mode(mode) {
        rustix::fs::FileType::RegularFile => Some(LocalKind::File),
        rustix::fs::FileType::Directory => Some(LocalKind::Dir),
        rustix::fs::FileType::Symlink => Some(LocalKind::Symlink),
        _ => None,
    }
}

// The field types of `struct stat` differ between architectures.
#[allow(clippy::unnecessary_cast)]
fn entry_of(path: RepoPath, st: &rustix::fs::Stat) -> Option<LocalEntry> {
    let kind = kind_of(st.st_mode as u32)?;
    Some(LocalEntry {
        path,
        kind,
        size: if kind == LocalKind::Dir {
            0
        } else {
            st.st_size as u64
        },
        mtime_ns: st.st_mtime as i64 * 1_000_000_000 + st.st_mtime_nsec as i64,
        ctime_ns: st.st_ctime as i64 * 1_000_000_000 + st.st_ctime_nsec as i64,
        ino: st.st_ino as u64,
        mode: st.st_mode as u32 & 0o7777,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    type Hook = Box<dyn FnMut(&RepoPath)>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = RefCell::new(None);
    }

    /// Runs the test's hook between resolving a parent and acting in it: the
    /// window in which a racing process would swap a directory for a symlink.
    pub(super) fn after_resolve(path: &RepoPath) {
        HOOK.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f(path);
            }
        });
    }

    fn p(s: &str) -> RepoPath {
        RepoPath::new(s.as_bytes().to_vec()).unwrap()
    }

    /// `root/` and `outside/` with `outside/x` (a file), `outside/d/` (0755)
    /// and `outside/keep` (a symlink).
    struct Sandbox {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
        fs: RootFs,
        tmp: TmpDir,
    }

    impl Sandbox {
        fn new() -> Sandbox {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            let outside = dir.path().join("outside");
            fs::create_dir_all(root.join(".coffer/tmp")).unwrap();
            fs::create_dir_all(outside.join("d")).unwrap();
            fs::set_permissions(outside.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
            fs::write(outside.join("x"), "outside").unwrap();
            std::os::unix::fs::symlink("x", outside.join("keep")).unwrap();
            let fs = RootFs::open(&root).unwrap();
            let tmp = TmpDir::open(&root.join(".coffer/tmp")).unwrap();
            Sandbox {
                _dir: dir,
                root,
                outside,
                fs,
                tmp,
            }
        }

        /// `root/a` → `outside`.
        fn link_a(&self) {
            std::os::unix::fs::symlink(&self.outside, self.root.join("a")).unwrap();
        }

        /// `root/a` as a real directory with the same entries as `outside`.
        fn real_a(&self) {
            fs::create_dir_all(self.root.join("a/d")).unwrap();
            fs::write(self.root.join("a/x"), "inside").unwrap();
            std::os::unix::fs::symlink("x", self.root.join("a/keep")).unwrap();
        }

        /// What `outside` holds: names, contents, modes and mtimes.
        fn outside_state(&self) -> Vec<(String, String, u32, i64)> {
            use std::os::unix::fs::MetadataExt;
            let mut out: Vec<_> = fs::read_dir(&self.outside)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let m = fs::symlink_metadata(e.path()).unwrap();
                    let content = fs::read_to_string(e.path()).unwrap_or_default();
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, content, m.mode(), m.mtime())
                })
                .collect();
            out.sort();
            out
        }

        fn temp_file(&self) -> String {
            let name = self.tmp.fresh_name("part");
            let mut f = self.tmp.create(&name).unwrap();
            std::io::Write::write_all(&mut f, b"new").unwrap();
            name
        }
    }

    type Op = fn(&Sandbox) -> Result<()>;

    fn install(s: &Sandbox, path: &str) -> Result<()> {
        let name = s.temp_file();
        s.fs.install(&s.tmp, &name, &p(path), |_| Ok(()))
            .map(|_| ())
    }

    /// Every operation, each on `a/...`; each must leave `outside` as it was.
    const OPERATIONS: &[(&str, Op)] = &[
        ("write", |s| install(s, "a/new")),
        ("rename into place", |s| install(s, "a/x")),
        ("delete file", |s| s.fs.remove_file(&p("a/x"))),
        ("delete symlink", |s| s.fs.remove_file(&p("a/keep"))),
        ("delete dir", |s| s.fs.remove_dir(&p("a/d")).map(|_| ())),
        ("mode", |s| s.fs.set_dir_meta(Some(&p("a/d")), 0o700, 0)),
        ("mtime", |s| {
            s.fs.set_dir_meta(Some(&p("a/d")), 0o755, 1_000_000_000)
        }),
        ("mkdir", |s| s.fs.ensure_dir(&p("a/newdir"))),
        ("mkdir parents", |s| s.fs.ensure_parents(&p("a/b/c/f"))),
        ("symlink", |s| s.fs.symlink(b"x", &p("a/link"), &s.tmp)),
        ("conflict copy", |s| {
            install(s, "a/x.sync-conflict-20260101-000000-abcd.txt")
        }),
        ("make writable", |s| s.fs.writable_parent(&p("a/x"))),
    ];

    #[test]
    fn nothing_is_done_through_a_symlinked_ancestor() {
        let s = Sandbox::new();
        s.link_a();
        let before = s.outside_state();
        for (what, op) in OPERATIONS {
            let err = op(&s).expect_err(what).to_string();
            assert!(err.contains("parent a is a symlink"), "{what}: {err}");
        }
        assert_eq!(s.outside_state(), before);
        assert_eq!(s.fs.lstat(&p("a/x")).unwrap(), None);
        assert_eq!(s.fs.read_link(&p("a/keep")).unwrap(), None);
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_mid_operation_is_not_followed() {
        let s = Sandbox::new();
        let before = s.outside_state();
        for (what, op) in OPERATIONS {
            s.real_a();
            let (root, outside) = (s.root.clone(), s.outside.clone());
            // Once the parent is resolved, `a` moves away and a link to the
            // outside takes its place: the operation must still act in the
            // directory it resolved (now `a.moved`), or fail.
            HOOK.with(|h| {
                *h.borrow_mut() = Some(Box::new(move |_: &RepoPath| {
                    if fs::symlink_metadata(root.join("a")).is_ok_and(|m| m.is_dir()) {
                        fs::rename(root.join("a"), root.join("a.moved")).unwrap();
                        std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();
                    }
                }))
            });
            let res = op(&s);
            HOOK.with(|h| *h.borrow_mut() = None);
            assert!(
                fs::symlink_metadata(s.root.join("a")).unwrap().is_symlink(),
                "{what}: the swap happened"
            );
            assert_eq!(s.outside_state(), before, "{what}: {res:?}");
            fs::remove_file(s.root.join("a")).unwrap();
            let moved = s.root.join("a.moved");
            fs::set_permissions(&moved, fs::Permissions::from_mode(0o755)).unwrap();
            fs::remove_dir_all(&moved).unwrap();
        }
    }

    #[test]
    fn a_symlink_as_the_last_component_is_acted_on_itself() {
        let s = Sandbox::new();
        std::os::unix::fs::symlink(s.outside.join("d"), s.root.join("ld")).unwrap();
        let before = s.outside_state();
        assert!(s.fs.set_dir_meta(Some(&p("ld")), 0o700, 0).is_err());
        assert!(s.fs.ensure_dir(&p("ld")).is_err());
        assert!(!s.fs.remove_dir(&p("ld")).unwrap_or(false));
        assert_eq!(s.outside_state(), before);
        s.fs.remove_file(&p("ld")).unwrap();
        assert!(fs::symlink_metadata(s.root.join("ld")).is_err());
        assert_eq!(s.outside_state(), before, "the link went, not its target");
    }

    #[test]
    fn operations_below_the_root_work_at_any_depth() {
        let outer = Sandbox::new();
        let names = |n: usize| {
            (0..n)
                .map(|i| format!("d{i:03}-{}", "x".repeat(96)))
                .collect::<Vec<_>>()
        };
        // A root 1,000 bytes deep, and a path of 3,800 bytes below it: only the
        // relative part has to fit in PATH_MAX.
        let root_rel = p(&names(10).join("/"));
        outer.fs.ensure_dir(&root_rel).unwrap();
        let root = outer.root.join(OsStr::from_bytes(root_rel.as_bytes()));
        fs::create_dir_all(root.join(".coffer/tmp")).unwrap();
        let s = Sandbox {
            fs: RootFs::open(&root).unwrap(),
            tmp: TmpDir::open(&root.join(".coffer/tmp")).unwrap(),
            root,
            ..outer
        };
        let path = p(&format!("{}/f", names(37).join("/")));
        assert!(path.as_bytes().len() + s.root.as_os_str().len() > 4096);
        s.fs.ensure_parents(&path).unwrap();
        let name = s.temp_file();
        let l = s.fs.install(&s.tmp, &name, &path, |cur| {
            assert!(cur.is_none());
            Ok(())
        });
        assert_eq!(l.unwrap().size, 3);
        let parent = path.parent().unwrap();
        s.fs.set_dir_meta(Some(&parent), 0o500, 1_000_000_000)
            .unwrap();
        let st = s.fs.lstat(&parent).unwrap().unwrap();
        assert_eq!((st.mode, st.mtime_ns), (0o500, 1_000_000_000));
        // A read-only parent is made writable to delete in it.
        s.fs.remove_file(&path).unwrap();
        assert_eq!(s.fs.lstat(&path).unwrap(), None);
    }
}
