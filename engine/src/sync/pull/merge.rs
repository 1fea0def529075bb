//! The merge: a pure function from the set of all versions to one folder state.
//!
//! For each path the journal keeps only the *maximal* versions (those no other
//! version saw), which is order-independent: the maximal elements of a union do not
//! depend on the order it was built in. From that set:
//! - one maximal version → it is the state;
//! - several → live versions beat tombstones (an edit beats a concurrent delete), and
//!   among live versions the highest `(HLC, device)` wins; every other live version
//!   with different content is kept as a conflict copy
//!   `name.sync-conflict-<yyyymmdd-hhmmss>-<device>.ext`;
//! - the state carries the join of all maximal vectors, so the next local edit of the
//!   path supersedes every one of them.
//!
//! Conflict copies are *virtual* until some device writes them and pushes them as an
//! ordinary new file; devices that do so concurrently push identical content, which
//! does not conflict again.

use crate::error::Result;
use crate::format::commit::Entry;
use crate::format::id::DeviceId;
use crate::format::path::RepoPath;
use crate::format::version::{Hlc, VersionVector};
use crate::journal::{Journal, Version};
use std::collections::BTreeMap;

/// Adds `v` to a maximal set. Returns whether the set changed.
pub fn insert_version(set: &mut Vec<Version>, v: Version) -> bool {
    if set.iter().any(|s| s.vv.dominates(&v.vv)) {
        return false;
    }
    set.retain(|s| !v.vv.dominates(&s.vv));
    set.push(v);
    set.sort_by_key(|a| (a.hlc, a.origin));
    true
}

/// The resolved state of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The winning entry; never [`Entry::Deleted`].
    pub entry: Entry,
    /// Join of every maximal version: what a device that applies this state has seen.
    pub vv: VersionVector,
    pub hlc: Hlc,
    pub origin: DeviceId,
    /// Live versions with other content, to keep as conflict copies.
    pub losers: Vec<Version>,
}

impl Resolved {
    /// The winner as the merged entry of its own path, and the losers.
    fn split(self) -> (MergedEntry, Vec<Version>) {
        let winner = MergedEntry {
            entry: self.entry,
            vv: self.vv,
            hlc: self.hlc,
            origin: self.origin,
            conflict_of: None,
        };
        (winner, self.losers)
    }
}

/// What a file or symlink becomes when live paths lie below it (devices
/// concurrently made `p` a file and created `p/x`).
const BLOCKED_DIR: Entry = Entry::Dir {
    mode: 0o755,
    mtime_ns: 0,
};

/// Resolves a maximal set; `None` when the path is deleted or unknown.
pub fn resolve(set: &[Version]) -> Option<Resolved> {
    let winner = set
        .iter()
        .filter(|v| !v.entry.is_deleted())
        .max_by_key(|v| (v.hlc, v.origin))?;
    let vv = set
        .iter()
        .fold(VersionVector::new(), |acc, v| acc.join(&v.vv));
    let mut losers: Vec<Version> = Vec::new();
    let mut live: Vec<&Version> = set.iter().filter(|v| !v.entry.is_deleted()).collect();
    live.sort_by_key(|v| std::cmp::Reverse((v.hlc, v.origin)));
    for v in live {
        let seen = v.entry.same_content(&winner.entry)
            || losers.iter().any(|l| l.entry.same_content(&v.entry));
        // Directories never need a copy: the winner's mode is simply taken.
        if !seen && !matches!(v.entry, Entry::Dir { .. }) {
            losers.push(v.clone());
        }
    }
    Some(Resolved {
        entry: winner.entry.clone(),
        vv,
        hlc: winner.hlc,
        origin: winner.origin,
        losers,
    })
}

/// One path of the merged folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedEntry {
    pub entry: Entry,
    pub vv: VersionVector,
    pub hlc: Hlc,
    pub origin: DeviceId,
    /// For a virtual conflict copy: the path it is a copy of.
    pub conflict_of: Option<RepoPath>,
}

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
fn may_be_below(path: &RepoPath, key: &RepoPath) -> bool {
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

/// `dir/name.sync-conflict-<yyyymmdd-hhmmss>-<device>.ext` (UTC, from the version's
/// HLC). `None` if the result would not be a valid path.
///
/// With `seq` (the commit of `origin` that made the version), `-<seq>` follows the
/// device: two versions of one device stamped in the same second must not share a
/// name, or one would hide the other.
pub fn conflict_name(
    path: &RepoPath,
    hlc: Hlc,
    origin: &DeviceId,
    seq: Option<u64>,
) -> Option<RepoPath> {
    let name = path.file_name();
    let (stem, ext) = match name.iter().rposition(|&b| b == b'.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, &b""[..]),
    };
    let stamp = conflict_stamp(hlc.millis());
    let mut out = Vec::with_capacity(name.len() + 40);
    let tag = match seq {
        Some(seq) => format!(".sync-conflict-{stamp}-{}-{seq}", origin.short()),
        None => format!(".sync-conflict-{stamp}-{}", origin.short()),
    };
    let keep = stem
        .len()
        .min(255usize.saturating_sub(tag.len() + ext.len()));
    out.extend_from_slice(&stem[..keep]);
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(ext);
    path.with_file_name(&out).ok()
}

/// `yyyymmdd-hhmmss` in UTC.
fn conflict_stamp(millis: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
    let s = humantime::format_rfc3339_seconds(t).to_string(); // 2026-11-24T16:01:26Z
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    format!("{}-{}", &digits[..8], &digits[8..14])
}

/// Whether `name` looks like a conflict copy.
pub fn is_conflict_copy(path: &RepoPath) -> bool {
    path.file_name()
        .windows(b".sync-conflict-".len())
        .any(|w| w == b".sync-conflict-")
}

#[cfg(test)]
pub(crate) mod oracle {
    use super::*;

    /// The in-memory merge as it was before [`MergedWalk`]: the oracle the
    /// streaming walk is checked against.
    pub fn merged_view(all: Vec<(RepoPath, Vec<Version>)>) -> BTreeMap<RepoPath, MergedEntry> {
        let known: std::collections::BTreeSet<RepoPath> =
            all.iter().map(|(p, _)| p.clone()).collect();
        let mut view = BTreeMap::new();
        let mut copies = Vec::new();
        for (path, set) in all {
            let Some(r) = resolve(&set) else { continue };
            for l in &r.losers {
                copies.push((
                    conflict_name(&path, l.hlc, &l.origin, Some(l.vv.get(&l.origin))),
                    path.clone(),
                    l.clone(),
                ));
            }
            view.insert(
                path,
                MergedEntry {
                    entry: r.entry,
                    vv: r.vv,
                    hlc: r.hlc,
                    origin: r.origin,
                    conflict_of: None,
                },
            );
        }
        for (name, of, v) in copies {
            let Some(name) = name else { continue };
            if known.contains(&name) || view.contains_key(&name) {
                continue; // already materialized by some device, or taken
            }
            view.insert(
                name,
                MergedEntry {
                    entry: v.entry,
                    vv: v.vv,
                    hlc: v.hlc,
                    origin: v.origin,
                    conflict_of: Some(of),
                },
            );
        }
        fix_structure(&mut view);
        view
    }

    /// A file or symlink that is also the parent of live paths (devices concurrently made
    /// `p` a file and created `p/x`) becomes a directory; its content is kept as a
    /// conflict copy beside it.
    fn fix_structure(view: &mut BTreeMap<RepoPath, MergedEntry>) {
        let mut blocked: Vec<RepoPath> = Vec::new();
        for path in view.keys() {
            for anc in path.ancestors() {
                if view
                    .get(&anc)
                    .is_some_and(|e| !matches!(e.entry, Entry::Dir { .. }))
                    && !blocked.contains(&anc)
                {
                    blocked.push(anc);
                }
            }
        }
        for path in blocked {
            let Some(old) = view.remove(&path) else {
                continue;
            };
            if let Some(name) =
                conflict_name(&path, old.hlc, &old.origin, Some(old.vv.get(&old.origin)))
                && !view.contains_key(&name)
            {
                view.insert(
                    name,
                    MergedEntry {
                        conflict_of: Some(path.clone()),
                        ..old.clone()
                    },
                );
            }
            view.insert(
                path,
                MergedEntry {
                    entry: Entry::Dir {
                        mode: 0o755,
                        mtime_ns: 0,
                    },
                    ..old
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::commit::FileEntry;
    use crate::format::id::ChunkId;

    fn dev(n: u8) -> DeviceId {
        DeviceId([n; 16])
    }

    fn file(byte: u8) -> Entry {
        Entry::File(FileEntry {
            size: 1,
            mode: 0o644,
            mtime_ns: 0,
            chunks: vec![ChunkId([byte; 32])],
        })
    }

    fn v(vv: &[(u8, u64)], hlc: u64, origin: u8, entry: Entry) -> Version {
        let mut vec = VersionVector::new();
        for (d, s) in vv {
            vec = vec.advanced(dev(*d), *s);
        }
        Version {
            vv: vec,
            hlc: Hlc(hlc),
            origin: dev(origin),
            entry,
        }
    }

    fn p(s: &str) -> RepoPath {
        RepoPath::new(s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn may_be_below_is_the_end_of_scope_below() {
        let keys = [
            "0", "a", "a-b", "a.b", "a/b", "a/b/c", "a/b0", "a0", "a00", "a1", "ab", "b",
        ];
        for path in ["a", "a/b", "ab"] {
            for key in keys {
                let end = Scope::below(&p(path)).end.unwrap();
                assert_eq!(
                    may_be_below(&p(path), &p(key)),
                    p(key).as_bytes() < end.as_slice(),
                    "{path} vs {key}"
                );
            }
        }
    }

    #[test]
    fn maximal_set_is_order_independent() {
        let a = v(&[(1, 1)], 1, 1, file(1));
        let b = v(&[(1, 1), (2, 1)], 2, 2, file(2));
        let c = v(&[(1, 1), (3, 1)], 3, 3, file(3));
        let orders = [[&a, &b, &c], [&c, &b, &a], [&b, &a, &c]];
        let sets: Vec<Vec<Version>> = orders
            .iter()
            .map(|o| {
                let mut s = Vec::new();
                for x in o {
                    insert_version(&mut s, (*x).clone());
                }
                s
            })
            .collect();
        assert!(sets.iter().all(|s| *s == sets[0]));
        assert_eq!(sets[0].len(), 2, "a was superseded by both");
    }

    #[test]
    fn concurrent_edits_keep_the_loser_as_a_copy() {
        let set = [v(&[(1, 1)], 10, 1, file(1)), v(&[(2, 1)], 20, 2, file(2))];
        let r = resolve(&set).unwrap();
        assert_eq!(r.entry, file(2));
        assert_eq!(r.losers.len(), 1);
        assert_eq!(r.losers[0].entry, file(1));
        assert!(r.vv.dominates(&set[0].vv) && r.vv.dominates(&set[1].vv));
    }

    #[test]
    fn edit_beats_concurrent_delete_and_identical_edits_do_not_conflict() {
        let set = [
            v(&[(1, 2)], 99, 1, Entry::Deleted),
            v(&[(2, 1)], 5, 2, file(7)),
        ];
        let r = resolve(&set).unwrap();
        assert_eq!(r.entry, file(7));
        assert!(r.losers.is_empty());
        let same = [v(&[(1, 1)], 1, 1, file(3)), v(&[(2, 1)], 2, 2, file(3))];
        assert!(resolve(&same).unwrap().losers.is_empty());
        assert!(resolve(&[v(&[(1, 1)], 1, 1, Entry::Deleted)]).is_none());
    }

    #[test]
    fn view_materializes_conflict_copies_once() {
        let set = vec![
            v(
                &[(1, 1)],
                Hlc::from_parts(1_700_000_000_000, 0).0,
                1,
                file(1),
            ),
            v(
                &[(2, 1)],
                Hlc::from_parts(1_700_000_001_000, 0).0,
                2,
                file(2),
            ),
        ];
        let view = merged_view(vec![(p("dir/report.txt"), set)]);
        let names: Vec<String> = view.keys().map(|k| k.display()).collect();
        assert_eq!(
            names,
            [
                "dir/report.sync-conflict-20231114-221320-01010101-1.txt",
                "dir/report.txt"
            ]
        );
        assert!(is_conflict_copy(view.keys().next().unwrap()));
    }

    #[test]
    fn conflict_names_handle_dotfiles_and_no_extension() {
        let h = Hlc::from_parts(0, 0);
        assert_eq!(
            conflict_name(&p(".bashrc"), h, &dev(0xab), None)
                .unwrap()
                .display(),
            ".bashrc.sync-conflict-19700101-000000-abababab"
        );
        assert_eq!(
            conflict_name(&p("a/Makefile"), h, &dev(1), Some(7))
                .unwrap()
                .display(),
            "a/Makefile.sync-conflict-19700101-000000-01010101-7"
        );
        assert_eq!(
            conflict_name(&p("notes.txt"), h, &dev(1), Some(12))
                .unwrap()
                .display(),
            "notes.sync-conflict-19700101-000000-01010101-12.txt"
        );
    }

    #[test]
    fn a_file_that_must_be_a_directory_becomes_a_copy() {
        let view = merged_view(vec![
            (p("x"), vec![v(&[(1, 1)], 1, 1, file(1))]),
            (p("x/y"), vec![v(&[(2, 1)], 2, 2, file(2))]),
        ]);
        assert!(matches!(view[&p("x")].entry, Entry::Dir { .. }));
        assert!(
            view.keys()
                .any(|k| k.display().starts_with("x.sync-conflict-"))
        );
        assert_eq!(view[&p("x/y")].entry, file(2));
    }

    #[test]
    fn a_copy_name_taken_even_by_a_tombstone_is_not_reused() {
        let loser = v(&[(1, 1)], Hlc::from_parts(10, 0).0, 1, file(1));
        let winner = v(&[(2, 1)], Hlc::from_parts(20, 0).0, 2, file(2));
        let copy = "a/b.sync-conflict-19700101-000000-01010101-1";
        let deleted = v(&[(3, 1)], 5, 3, Entry::Deleted);
        let all = vec![
            (p("a/b"), vec![loser.clone(), winner.clone()]),
            (p(copy), vec![deleted]),
        ];
        let view = merged_view(all.clone());
        assert_eq!(view, oracle::merged_view(all));
        assert!(!view.contains_key(&p(copy)), "the name is known");
        let open = merged_view(vec![(p("a/b"), vec![loser, winner])]);
        assert_eq!(open[&p(copy)].entry, file(1));
    }

    /// A few paths where structure matters: parents, children, siblings that
    /// sort between a directory and its children (`a.txt`, `a-b`), and a name a
    /// conflict copy of `a/b` would take.
    const PATHS: &[&str] = &[
        "a",
        "a-b",
        "a.txt",
        "a/b",
        "a/b.sync-conflict-19700101-000000-01010101-1",
        "a/b/c",
        "a/d",
        "b",
    ];

    fn entry_strategy() -> impl proptest::strategy::Strategy<Value = Entry> {
        use proptest::prelude::*;
        prop_oneof![
            (1u8..4).prop_map(file),
            Just(Entry::Dir {
                mode: 0o755,
                mtime_ns: 1
            }),
            Just(Entry::Symlink {
                target: b"t".to_vec(),
                mtime_ns: 1
            }),
            Just(Entry::Deleted),
        ]
    }

    /// Random maximal sets: versions of 3 devices, seqs 1..3, hlc in the first
    /// seconds of 1970 (so copies of one device collide in name unless the seq
    /// tells them apart).
    fn sets_strategy() -> impl proptest::strategy::Strategy<Value = Vec<(RepoPath, Vec<Version>)>> {
        use proptest::prelude::*;
        let version =
            (1u8..4, 1u64..4, 0u64..3000, entry_strategy()).prop_map(|(dev_n, seq, ms, entry)| {
                v(&[(dev_n, seq)], Hlc::from_parts(ms, 0).0, dev_n, entry)
            });
        proptest::collection::btree_map(
            0..PATHS.len(),
            proptest::collection::vec(version, 1..4),
            0..PATHS.len(),
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(i, vs)| {
                    let mut set = Vec::new();
                    for x in vs {
                        insert_version(&mut set, x);
                    }
                    (p(PATHS[i]), set)
                })
                .collect()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The streaming walk, over memory and over a journal, is the in-memory
        /// merge it replaced.
        #[test]
        fn the_streaming_merge_is_the_in_memory_one(all in sets_strategy()) {
            let expected = oracle::merged_view(all.clone());
            let journal = Journal::temporary().unwrap();
            for (path, set) in &all {
                journal.put_versions(path, set).unwrap();
            }
            proptest::prop_assert_eq!(&merged_view_of(&journal).unwrap(), &expected);
            proptest::prop_assert_eq!(&merged_view(all), &expected);

            // Directories, deepest first (copies are never directories here).
            let dirs: Vec<RepoPath> = dirs_descending(&journal, &Scope::all())
                .map(|d| d.unwrap().0)
                .collect();
            let mut want: Vec<RepoPath> = expected
                .iter()
                .filter(|(_, m)| matches!(m.entry, Entry::Dir { .. }))
                .map(|(p, _)| p.clone())
                .collect();
            want.reverse();
            proptest::prop_assert_eq!(dirs, want);

            // A subtree, walked from the keys that decide it.
            for top in PATHS.iter().map(|s| p(s)) {
                let scoped: BTreeMap<RepoPath, MergedEntry> =
                    MergedWalk::scope(&journal, Scope::deciding(Some(&top)))
                        .map(Result::unwrap)
                        .filter(|(k, _)| k.starts_with(&top))
                        .collect();
                let want: BTreeMap<RepoPath, MergedEntry> = expected
                    .iter()
                    .filter(|(k, _)| k.starts_with(&top))
                    .map(|(k, m)| (k.clone(), m.clone()))
                    .collect();
                proptest::prop_assert_eq!(scoped, want, "below {}", top);
            }
        }
    }
}
