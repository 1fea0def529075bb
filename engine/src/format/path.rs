//! Repository paths: the only way a path from a commit reaches the filesystem.
//!
//! A [`RepoPath`] is raw bytes (any Unix file name, UTF-8 or not) with `/`
//! separators, relative to the synced folder. [`RepoPath::new`] refuses anything that
//! could escape the folder or touch coffer's own state: absolute paths, `.`/`..`,
//! empty components, NUL, and `.coffer` at the top. Commits are validated on decode,
//! and [`RepoPath::to_fs_path`] validates again before any write.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Name of the per-folder state directory, never synced.
pub const STATE_DIR: &str = ".coffer";

const MAX_PATH: usize = 4096;
const MAX_NAME: usize = 255;

/// A validated relative path inside a synced folder.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RepoPath(#[serde(with = "serde_bytes")] Vec<u8>);

impl RepoPath {
    /// Validates raw path bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<RepoPath, Error> {
        let bytes = bytes.into();
        check(&bytes).map_err(|reason| Error::UnsafePath {
            path: String::from_utf8_lossy(&bytes).into_owned(),
            reason: reason.into(),
        })?;
        Ok(RepoPath(bytes))
    }

    /// Re-checks a path decoded from untrusted bytes.
    pub fn validate(&self) -> Result<(), Error> {
        check(&self.0).map_err(|reason| Error::UnsafePath {
            path: self.display(),
            reason: reason.into(),
        })
    }

    /// From a path relative to the folder root, as produced by a directory walk.
    pub fn from_relative(rel: &Path) -> Result<RepoPath, Error> {
        let mut out = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(name) => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(name.as_bytes());
                }
                _ => {
                    return Err(Error::UnsafePath {
                        path: rel.display().to_string(),
                        reason: "not a plain relative path".into(),
                    });
                }
            }
        }
        RepoPath::new(out)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path below `root`, after validating again.
    pub fn to_fs_path(&self, root: &Path) -> Result<PathBuf, Error> {
        self.validate()?;
        Ok(root.join(OsStr::from_bytes(&self.0)))
    }

    /// Lossy UTF-8 for messages and listings.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// The last component.
    pub fn file_name(&self) -> &[u8] {
        self.0.rsplit(|&b| b == b'/').next().unwrap_or(&self.0)
    }

    /// The parent path, `None` at the top level.
    pub fn parent(&self) -> Option<RepoPath> {
        let i = self.0.iter().rposition(|&b| b == b'/')?;
        Some(RepoPath(self.0[..i].to_vec()))
    }

    /// Every proper ancestor, nearest last (`a`, `a/b` for `a/b/c`).
    pub fn ancestors(&self) -> Vec<RepoPath> {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| RepoPath(self.0[..i].to_vec()))
            .collect()
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RepoPath) -> bool {
        self.0 == other.0
            || (self.0.len() > other.0.len()
                && self.0.starts_with(&other.0)
                && self.0[other.0.len()] == b'/')
    }

    /// A sibling path with `name` as the last component.
    pub fn with_file_name(&self, name: &[u8]) -> Result<RepoPath, Error> {
        let mut out = match self.parent() {
            Some(p) => {
                let mut v = p.0;
                v.push(b'/');
                v
            }
            None => Vec::new(),
        };
        out.extend_from_slice(name);
        RepoPath::new(out)
    }

    /// Number of components.
    /// Whether any component is `.coffer` (a synced folder's state directory,
    /// at the top or in a nested folder): never synced, never written by a pull.
    pub fn in_state_dir(&self) -> bool {
        self.as_bytes()
            .split(|&b| b == b'/')
            .any(|c| c == STATE_DIR.as_bytes())
    }

    pub fn depth(&self) -> usize {
        self.0.iter().filter(|&&b| b == b'/').count() + 1
    }
}

fn check(bytes: &[u8]) -> Result<(), &'static str> {
    if bytes.is_empty() {
        return Err("empty path");
    }
    if bytes.len() > MAX_PATH {
        return Err("path too long");
    }
    if bytes[0] == b'/' {
        return Err("absolute path");
    }
    if bytes.contains(&0) {
        return Err("NUL byte in path");
    }
    for (i, comp) in bytes.split(|&b| b == b'/').enumerate() {
        match comp {
            b"" => return Err("empty path component"),
            b"." | b".." => return Err("'.' or '..' component"),
            c if c.len() > MAX_NAME => return Err("file name too long"),
            c if i == 0 && c == STATE_DIR.as_bytes() => return Err("reserved .coffer directory"),
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Debug for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_odd_but_safe_names() {
        for p in [
            &b"a"[..],
            b"dir/sub/file.txt",
            b"with space/\xe2\x9c\x93 unicode",
            b"not-utf8-\xff\xfe",
            b"..hidden",
            b"a/.coffer",
            b"back\\slash",
        ] {
            assert!(RepoPath::new(p.to_vec()).is_ok(), "{p:?}");
        }
    }

    #[test]
    fn refuses_escapes_and_reserved_names() {
        for p in [
            &b""[..],
            b"/etc/passwd",
            b"../x",
            b"a/../../x",
            b"a/./b",
            b"a//b",
            b"a/",
            b".coffer/journal",
            b".coffer",
            b"nul\0byte",
        ] {
            assert!(RepoPath::new(p.to_vec()).is_err(), "{p:?}");
        }
    }

    #[test]
    fn structure_helpers() {
        let p = RepoPath::new(b"a/b/c.txt".to_vec()).unwrap();
        assert_eq!(p.file_name(), b"c.txt");
        assert_eq!(p.parent().unwrap().as_bytes(), b"a/b");
        let anc: Vec<_> = p.ancestors().iter().map(|a| a.display()).collect();
        assert_eq!(anc, ["a", "a/b"]);
        assert!(p.starts_with(&RepoPath::new(b"a/b".to_vec()).unwrap()));
        assert!(!p.starts_with(&RepoPath::new(b"a/b/c".to_vec()).unwrap()));
        assert_eq!(p.depth(), 3);
        assert_eq!(p.with_file_name(b"d").unwrap().as_bytes(), b"a/b/d");
    }

    #[test]
    fn postcard_encoding_is_length_prefixed_bytes() {
        let p = RepoPath::new(b"ab".to_vec()).unwrap();
        assert_eq!(postcard::to_allocvec(&p).unwrap(), [2, b'a', b'b']);
        let back: RepoPath = postcard::from_bytes(&[2, b'a', b'b']).unwrap();
        assert_eq!(back, p);
    }
}
