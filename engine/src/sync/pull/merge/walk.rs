//! The merged state, streamed: [`MergedWalk`] evaluates the merge path by path
//! in key order over a [`VersionSource`] (the journal, or a map in memory), with
//! [`Scope`]s for one subtree or the keys that decide one path, and
//! [`dirs_descending`] for directory metadata children-first. Memory does not
//! grow with the tree (DESIGN.md §8).

use super::{BLOCKED_DIR, MergedEntry, conflict_name, resolve};
use crate::error::Result;
use crate::format::commit::Entry;
use crate::format::path::RepoPath;
use crate::journal::{Journal, Version};
use std::collections::BTreeMap;

/// Version sets in path order, as a [`VersionSource`] yields them.
pub type VersionIter<'a> = Box<dyn Iterator<Item = Result<(RepoPath, Vec<Version>)>> + Send + 'a>;

/// Where the merge reads the maximal version sets from: the journal's `versions`
/// tree, or a map in memory.
pub trait VersionSource {
    /// Every path with versions from `from` on, in byte order.
    fn versions_from<'a>(&'a self, from: &[u8]) -> VersionIter<'a>;
    /// The versions of one path (empty if none).
    fn versions_of(&self, path: &RepoPath) -> Result<Vec<Version>>;
}

impl VersionSource for Journal {
    fn versions_from<'a>(&'a self, from: &[u8]) -> VersionIter<'a> {
        Box::new(self.versions_iter_from(from))
    }

    fn versions_of(&self, path: &RepoPath) -> Result<Vec<Version>> {
        self.versions(path)
    }
}

impl VersionSource for BTreeMap<RepoPath, Vec<Version>> {
    fn versions_from<'a>(&'a self, from: &[u8]) -> VersionIter<'a> {
        let from = from.to_vec();
        Box::new(
            self.iter()
                .skip_while(move |(p, _)| p.as_bytes() < from.as_slice())
                .map(|(p, v)| Ok((p.clone(), v.clone()))),
        )
    }

    fn versions_of(&self, path: &RepoPath) -> Result<Vec<Version>> {
        Ok(self.get(path).cloned().unwrap_or_default())
    }
}

#[cfg(any(test, feature = "testing"))]
/// The merged folder in memory: every live path, conflict copies included.
pub fn merged_view(all: Vec<(RepoPath, Vec<Version>)>) -> BTreeMap<RepoPath, MergedEntry> {
    let source: BTreeMap<RepoPath, Vec<Version>> = all.into_iter().collect();
    MergedWalk::new(&source)
        .collect::<Result<BTreeMap<_, _>>>()
        .expect("an in-memory source does not fail")
}

/// The merged folder of `source`, collected (sorted by path).
pub fn merged_view_of(source: &impl VersionSource) -> Result<BTreeMap<RepoPath, MergedEntry>> {
    MergedWalk::new(source).collect()
}

/// Whether some path strictly below `dir` is live (has a non-deleted version).
pub fn has_live_below(source: &(impl VersionSource + ?Sized), dir: &RepoPath) -> Result<bool> {
    let mut prefix = dir.as_bytes().to_vec();
    prefix.push(b'/');
    for item in source.versions_from(&prefix) {
        let (path, set) = item?;
        if !path.as_bytes().starts_with(&prefix) {
            break;
        }
        if set.iter().any(|v| !v.entry.is_deleted()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A range of keys of the `versions` tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub start: Vec<u8>,
    /// Exclusive; `None`: to the end.
    pub end: Option<Vec<u8>>,
}

impl Scope {
    /// Every key.
    pub fn all() -> Scope {
        Scope {
            start: Vec::new(),
            end: None,
        }
    }

    /// The keys strictly below `dir`: `[dir/, dir0)`.
    pub fn below(dir: &RepoPath) -> Scope {
        let mut start = dir.as_bytes().to_vec();
        let mut end = start.clone();
        start.push(b'/');
        end.push(b'0');
        Scope {
            start,
            end: Some(end),
        }
    }

    /// The keys that decide the merged entries at and below `path`: its parent's
    /// subtree (a path's conflict copies are its siblings, and may sort before
    /// or after it). `None` means the whole folder.
    pub fn deciding(path: Option<&RepoPath>) -> Scope {
        match path.and_then(RepoPath::parent) {
            Some(parent) => Scope::below(&parent),
            None => Scope::all(),
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_ref().is_none_or(|e| key < e.as_slice())
    }
}

/// The merged folder as a stream, one path at a time, without holding the view:
/// each path in byte order, followed by the virtual conflict copies it spawns.
/// Memory: one version set, plus the names of the copies made so far.
///
/// For every path with a maximal version set:
/// - no live version → nothing (deleted);
/// - the winner, under the path;
/// - each live loser with other content, as a virtual copy
///   ([`conflict_name`]) unless some version already exists under that name or an
///   earlier copy took it;
/// - a file or symlink that is also the parent of live paths (devices concurrently
///   made `p` a file and created `p/x`) becomes a directory (mode 0755), its
///   content a conflict copy beside it, unless that name is live or taken.
pub struct MergedWalk<'a, S: VersionSource + ?Sized> {
    source: &'a S,
    iter: std::iter::Peekable<VersionIter<'a>>,
    /// The keys of the walk.
    scope: Scope,
    /// Copies of the path just yielded, to yield next.
    queue: std::collections::VecDeque<(RepoPath, MergedEntry)>,
    /// Every copy name yielded so far.
    copies: std::collections::HashSet<RepoPath>,
}

impl<S: VersionSource + ?Sized> std::fmt::Debug for MergedWalk<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergedWalk")
            .field("queued", &self.queue.len())
            .field("copies", &self.copies.len())
            .finish_non_exhaustive()
    }
}

impl<'a, S: VersionSource + ?Sized> MergedWalk<'a, S> {
    /// The whole merged folder.
    pub fn new(source: &'a S) -> Self {
        Self::scope(source, Scope::all())
    }

    /// The merged entries of the paths whose keys lie in `scope` (and their
    /// conflict copies, which are siblings, so in the same scope when it is a
    /// directory's subtree).
    pub fn scope(source: &'a S, scope: Scope) -> Self {
        MergedWalk {
            source,
            iter: source.versions_from(&scope.start).peekable(),
            scope,
            queue: Default::default(),
            copies: Default::default(),
        }
    }

    /// Whether a live path lies below `path`. The next key of the walk usually
    /// answers it without a lookup: keys below `path/` sort in `[path/, path0)`.
    fn blocks(&mut self, path: &RepoPath) -> Result<bool> {
        match self.iter.peek() {
            None => return Ok(false),
            Some(Ok((next, _))) if !may_be_below(path, next) => return Ok(false),
            _ => {}
        }
        has_live_below(self.source, path)
    }

    fn copy_name_free(&self, name: &RepoPath, even_if_dead: bool) -> Result<bool> {
        if self.copies.contains(name) {
            return Ok(false);
        }
        let set = self.source.versions_of(name)?;
        Ok(if even_if_dead {
            resolve(&set).is_none()
        } else {
            set.is_empty()
        })
    }

    fn advance(&mut self) -> Result<Option<(RepoPath, MergedEntry)>> {
        if let Some(item) = self.queue.pop_front() {
            return Ok(Some(item));
        }
        loop {
            let Some(item) = self.iter.next() else {
                return Ok(None);
            };
            let (path, set) = item?;
            if !self.scope.contains(path.as_bytes()) {
                return Ok(None);
            }
            let Some(r) = resolve(&set) else { continue };
            let (merged, losers) = r.split();
            for l in losers {
                let Some(name) = conflict_name(&path, l.hlc, &l.origin, Some(l.vv.get(&l.origin)))
                else {
                    continue;
                };
                if self.copy_name_free(&name, false)? {
                    self.copies.insert(name.clone());
                    let copy = MergedEntry {
                        entry: l.entry,
                        vv: l.vv,
                        hlc: l.hlc,
                        origin: l.origin,
                        conflict_of: Some(path.clone()),
                    };
                    // Only if a real path was created under the copy's very name.
                    let blocked = has_live_below(self.source, &name)?;
                    let copy = self.unblock(&name, copy, blocked)?;
                    self.queue.push_back((name, copy));
                }
            }
            let blocked = !matches!(merged.entry, Entry::Dir { .. }) && self.blocks(&path)?;
            let merged = self.unblock(&path, merged, blocked)?;
            return Ok(Some((path, merged)));
        }
    }

    /// A non-directory with live paths below it becomes a directory; its content
    /// is queued as a conflict copy if that name is free.
    fn unblock(
        &mut self,
        path: &RepoPath,
        mut merged: MergedEntry,
        blocked: bool,
    ) -> Result<MergedEntry> {
        if !blocked || matches!(merged.entry, Entry::Dir { .. }) {
            return Ok(merged);
        }
        let seq = Some(merged.vv.get(&merged.origin));
        if let Some(name) = conflict_name(path, merged.hlc, &merged.origin, seq)
            && self.copy_name_free(&name, true)?
        {
            self.copies.insert(name.clone());
            self.queue.push_back((
                name,
                MergedEntry {
                    conflict_of: Some(path.clone()),
                    ..merged.clone()
                },
            ));
        }
        merged.entry = BLOCKED_DIR;
        Ok(merged)
    }
}

impl<S: VersionSource + ?Sized> Iterator for MergedWalk<'_, S> {
    type Item = Result<(RepoPath, MergedEntry)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.advance().transpose()
    }
}

/// The merged entry at `path` (a real path or a virtual copy), reading only
/// the keys that decide it.
pub fn entry_at(
    source: &(impl VersionSource + ?Sized),
    path: &RepoPath,
) -> Result<Option<MergedEntry>> {
    for item in MergedWalk::scope(source, Scope::deciding(Some(path))) {
        let (p, m) = item?;
        if p == *path {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// Whether `key`, a key above `path`, sorts before `path0`: then keys below
/// `path/` may exist (when it sorts at or past `path0`, none can lie between).
/// The end of [`Scope::below`], compared without building it.
pub(super) fn may_be_below(path: &RepoPath, key: &RepoPath) -> bool {
    let (p, k) = (path.as_bytes(), key.as_bytes());
    match k.strip_prefix(p) {
        // `path` itself, or `path` followed by a byte before '0' (e.g. '/', '-', '.').
        Some(rest) => rest.first().is_none_or(|&b| b < b'0'),
        // Diverges from `path` within its length (or is a proper prefix of it):
        // compares with `path0` as with `path`.
        None => k < p,
    }
}

/// The directories of the merged folder whose keys lie in `scope`, deepest
/// first (descending key order): for setting modes and times once everything
/// below them is written. Files that must be directories (see [`MergedWalk`])
/// come as mode 0755.
pub fn dirs_descending<'a>(
    journal: &'a Journal,
    scope: &Scope,
) -> impl Iterator<Item = Result<(RepoPath, MergedEntry)>> + 'a {
    // The smallest key above the current one: keys below `p/` sort in
    // `[p/, p0)`, so when it is at or past `p0` nothing lies below `p`.
    let mut above: Option<RepoPath> = None;
    journal
        .versions_rev(&scope.start, scope.end.as_deref())
        .filter_map(move |item| {
            let dir = (|| {
                let (path, set) = item?;
                let later = above.replace(path.clone());
                let Some(r) = resolve(&set) else {
                    return Ok(None);
                };
                let (mut merged, _) = r.split();
                match merged.entry {
                    Entry::Dir { .. } => {}
                    _ if later.is_some_and(|l| may_be_below(&path, &l))
                        && has_live_below(journal, &path)? =>
                    {
                        merged.entry = BLOCKED_DIR;
                    }
                    _ => return Ok(None),
                }
                Ok(Some((path, merged)))
            })();
            dir.transpose()
        })
}

