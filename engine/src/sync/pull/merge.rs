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
//!
//! This file is the pure merge of one path's versions; `merge/walk.rs` streams
//! it over a whole tree.

use crate::format::commit::Entry;
use crate::format::id::DeviceId;
use crate::format::path::RepoPath;
use crate::format::version::{Hlc, VersionVector};
use crate::journal::Version;

mod walk;
pub use walk::{MergedWalk, Scope, dirs_descending, entry_at, merged_view_of};
#[cfg(any(test, feature = "testing"))]
pub use walk::{VersionIter, VersionSource, has_live_below};
#[cfg(any(test, feature = "testing"))]
pub use walk::merged_view;

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
pub(crate) const BLOCKED_DIR: Entry = Entry::Dir {
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
    use std::collections::BTreeMap;

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
    use crate::journal::Journal;
    use std::collections::BTreeMap;
    use walk::may_be_below;
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
