//! The folder against its stat cache, streamed: what `push` sends and what
//! `status` reports.
//!
//! [`Diff`] walks the folder ([`Walk`]) and yields every entry with its stat entry,
//! and every synced path that is gone. Deletions are found per directory: right
//! after a directory is listed, the stat entries below it are read in key order
//! and each one is looked up in the listing (a binary search):
//! - a child the walk enters accounts for its own subtree: its keys are skipped
//!   with one seek, and its own listing handles them later;
//! - a child present as a file or symlink is not gone, but anything synced
//!   *below* it is (the path was a directory before);
//! - a child present as a socket, FIFO or device (never synced) is gone, itself
//!   and below;
//! - an ignored child is left alone, itself and below;
//! - a name not in the listing is gone, with everything below it, unless
//!   `.cofferignore` now ignores it.
//!
//! A directory that cannot be read (or whose listing broke off) is never listed,
//! so nothing below it is taken as deleted. Memory is the listings of the open
//! directories plus one sled cursor, whatever the size of the tree.

use crate::error::Result;
use crate::format::path::RepoPath;
use crate::journal::{Journal, LocalKind, StatEntry};
use crate::sync::push::scan::{ChildKind, IgnoreRules, LocalEntry, Step, Walk};
use std::path::Path;

/// One item of a [`Diff`].
#[derive(Debug)]
pub enum DiffItem {
    /// An entry of the folder and what was last synced at its path, if anything.
    /// `stat` matching `entry` ([`LocalEntry::unchanged_since`]) means unchanged.
    Seen {
        entry: LocalEntry,
        stat: Option<StatEntry>,
    },
    /// A synced path that is no longer in the folder.
    Gone { path: RepoPath, stat: StatEntry },
}

/// The stat keys below one listed directory, being compared with its listing.
struct GoneCursor {
    /// `dir/`, or empty for the root.
    prefix: Vec<u8>,
    iter: sled::Iter,
}

impl std::fmt::Debug for GoneCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoneCursor")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .finish_non_exhaustive()
    }
}

/// A streaming comparison of a folder with its journal's stat cache.
#[derive(Debug)]
pub struct Diff {
    walk: Walk,
    journal: Journal,
    rules: IgnoreRules,
    cursor: Option<GoneCursor>,
}

impl Diff {
    /// Starts comparing `root` (with its `.cofferignore` `rules`) with `journal`.
    pub fn new(root: &Path, rules: IgnoreRules, journal: Journal) -> Result<Diff> {
        Ok(Diff {
            walk: Walk::new(root, rules.clone())?,
            journal,
            rules,
            cursor: None,
        })
    }

    /// Directories the walk left out without a rule so far.
    pub fn take_excluded(&mut self) -> Vec<(RepoPath, crate::sync::push::scan::Excluded)> {
        self.walk.take_excluded()
    }

    /// Sockets, FIFOs and devices the walk skipped so far.
    pub fn take_special(&mut self) -> Vec<RepoPath> {
        self.walk.take_special()
    }

    /// Problems the walk met so far (unreadable entries and directories).
    pub fn take_problems(&mut self) -> Vec<String> {
        self.walk.take_problems()
    }

    /// The next synced path below the directory just listed that is gone.
    fn next_gone(&mut self) -> Result<Option<DiffItem>> {
        let Some(cur) = self.cursor.as_mut() else {
            return Ok(None);
        };
        while let Some(kv) = cur.iter.next() {
            let (key, value) = kv?;
            if !key.starts_with(&cur.prefix) {
                break;
            }
            let rest = &key[cur.prefix.len()..];
            let child_len = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
            let child = &key[..cur.prefix.len() + child_len];
            let below = child.len() < key.len();
            let gone = match self.walk.listed_kind(child) {
                Some(ChildKind::Enter | ChildKind::Skip) => {
                    if below {
                        // '0' follows '/': past every key below `child/`.
                        let mut past = child.to_vec();
                        past.push(b'0');
                        cur.iter = self.journal.stat_iter_from(&past);
                    }
                    false
                }
                Some(ChildKind::Leaf) => below,
                Some(ChildKind::Special) | None => true,
            };
            if !gone {
                continue;
            }
            let path = RepoPath::new(key.to_vec())?;
            let stat = Journal::decode_stat(&value)?;
            if self.rules.is_ignored(&path, stat.kind == LocalKind::Dir) {
                continue;
            }
            return Ok(Some(DiffItem::Gone { path, stat }));
        }
        self.cursor = None;
        Ok(None)
    }

    fn advance(&mut self) -> Result<Option<DiffItem>> {
        loop {
            if let Some(item) = self.next_gone()? {
                return Ok(Some(item));
            }
            match self.walk.step() {
                None => return Ok(None),
                Some(Step::Listed(dir)) => {
                    let prefix = match dir {
                        Some(d) => {
                            let mut p = d.as_bytes().to_vec();
                            p.push(b'/');
                            p
                        }
                        None => Vec::new(),
                    };
                    self.cursor = Some(GoneCursor {
                        iter: self.journal.stat_iter_from(&prefix),
                        prefix,
                    });
                }
                Some(Step::Entry(entry)) => {
                    let stat = self.journal.stat_get(&entry.path)?;
                    return Ok(Some(DiffItem::Seen { entry, stat }));
                }
            }
        }
    }
}

impl Iterator for Diff {
    type Item = Result<DiffItem>;

    fn next(&mut self) -> Option<Result<DiffItem>> {
        self.advance().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::version::VersionVector;
    use std::fs;

    fn stat(kind: LocalKind) -> StatEntry {
        StatEntry {
            kind,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            ino: 0,
            mode: 0o644,
            chunks: Vec::new(),
            synced: VersionVector::new(),
        }
    }

    fn p(s: &str) -> RepoPath {
        RepoPath::new(s.as_bytes().to_vec()).unwrap()
    }

    /// Records `synced` in a journal, diffs `root` against it; returns the seen
    /// paths and the gone ones.
    fn diff(root: &Path, synced: &[(&str, LocalKind)]) -> (Vec<String>, Vec<String>) {
        let j = Journal::temporary().unwrap();
        for (path, kind) in synced {
            j.stat_put(&p(path), &stat(*kind)).unwrap();
        }
        let rules = IgnoreRules::load(root).unwrap();
        let (mut seen, mut gone) = (Vec::new(), Vec::new());
        for item in Diff::new(root, rules, j).unwrap() {
            match item.unwrap() {
                DiffItem::Seen { entry, .. } => seen.push(entry.path.display()),
                DiffItem::Gone { path, .. } => gone.push(path.display()),
            }
        }
        gone.sort();
        (seen, gone)
    }

    #[test]
    fn gone_paths_are_found_at_every_depth() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::write(r.join("a/b/kept.txt"), "k").unwrap();
        fs::write(r.join("a.txt"), "x").unwrap();
        use LocalKind::*;
        let (seen, gone) = diff(
            r,
            &[
                ("a", Dir),
                ("a-b", File),
                ("a.txt", File),
                ("a/b", Dir),
                ("a/b/kept.txt", File),
                ("a/b/lost.txt", File),
                ("a/gone", Dir),
                ("a/gone/deep/x", File),
                ("z", File),
            ],
        );
        assert_eq!(seen, ["a", "a/b", "a/b/kept.txt", "a.txt"]);
        assert_eq!(
            gone,
            ["a-b", "a/b/lost.txt", "a/gone", "a/gone/deep/x", "z"]
        );
    }

    #[test]
    fn a_directory_that_became_a_file_loses_its_children() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::write(r.join("x"), "now a file").unwrap();
        fs::create_dir(r.join("y")).unwrap();
        use LocalKind::*;
        let (seen, gone) = diff(r, &[("x", Dir), ("x/child", File), ("y", File)]);
        assert_eq!(seen, ["x", "y"]);
        assert_eq!(gone, ["x/child"]);
    }

    #[test]
    fn a_synced_path_now_holding_a_socket_is_gone() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        // Sockets are never synced: what was synced at their names is gone.
        let _file = std::os::unix::net::UnixListener::bind(r.join("f.sock")).unwrap();
        let _dir = std::os::unix::net::UnixListener::bind(r.join("d")).unwrap();
        let _new = std::os::unix::net::UnixListener::bind(r.join("new.sock")).unwrap();
        fs::write(r.join("kept"), "k").unwrap();
        use LocalKind::*;
        let (seen, gone) = diff(
            r,
            &[("d", Dir), ("d/x", File), ("f.sock", File), ("kept", File)],
        );
        assert_eq!(seen, ["kept"]);
        assert_eq!(gone, ["d", "d/x", "f.sock"]);
    }

    #[test]
    fn ignored_paths_are_neither_walked_nor_deleted() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::write(r.join(".cofferignore"), "build/\n*.tmp\n").unwrap();
        fs::create_dir(r.join("build")).unwrap();
        fs::write(r.join("build/out"), "o").unwrap();
        fs::write(r.join("x.tmp"), "t").unwrap();
        use LocalKind::*;
        let (seen, gone) = diff(
            r,
            &[
                ("build", Dir),
                ("build/old", File),
                ("gone.tmp", File),
                ("x.tmp", File),
                ("lost", File),
            ],
        );
        assert_eq!(seen, [".cofferignore"]);
        assert_eq!(gone, ["lost"]);
    }
}
