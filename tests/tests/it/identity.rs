//! One device, one writer (issue 23): a copied or cloned folder, a nested
//! synced folder, a store inside the folder. Each test is named after the loss
//! it guards against.

use crate::{arg, env};
use coffer_tests::env::Env;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// Contents of `name` and of its conflict copies in `dir`.
fn versions_of(dir: &Path, name: &str) -> BTreeSet<String> {
    let stem = name.split('.').next().unwrap();
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n == name || (n.starts_with(stem) && n.contains(".sync-conflict-"))
        })
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect()
}

fn binding(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(".coffer/folder.json")).unwrap()).unwrap()
}

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Makes the copy `dir` look like the folder it was copied from, as a clone of
/// a whole VM image would (same machine id, inode and path): only the store
/// can tell the two writers apart then.
fn disguise_as_original(dir: &Path) {
    let mut b = binding(dir);
    let m = fs::metadata(dir).unwrap();
    let path = dir.canonicalize().unwrap();
    b["instance"]["dev"] = m.dev().into();
    b["instance"]["ino"] = m.ino().into();
    b["instance"]["path"] = path.to_str().unwrap().into();
    fs::write(dir.join(".coffer/folder.json"), b.to_string()).unwrap();
}

#[test]
fn a_copied_folder_becomes_a_new_device_and_no_edit_is_lost() {
    let e = env();
    e.ok(&["init", "store"]);
    let (one, copy, three) = (e.path("one"), e.path("copy"), e.path("three"));
    fs::create_dir(&one).unwrap();
    fs::write(one.join("notes.txt"), "v1").unwrap();
    e.ok(&["sync", &arg(&one), "store"]);
    cp_a(&one, &copy);
    fs::write(one.join("notes.txt"), "edit on one").unwrap();
    fs::write(copy.join("notes.txt"), "edit on the copy").unwrap();

    let r = e.ok(&["push", &arg(&copy), "store"]);
    assert!(
        r.stderr.contains("is a copy of the synced folder"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("pushed 1 change(s)"),
        "nothing else is re-sent: {}",
        r.stderr
    );
    e.ok(&["push", &arg(&one), "store"]);
    assert_ne!(binding(&one)["device"], binding(&copy)["device"]);
    let again = e.ok(&["push", &arg(&copy), "store"]);
    assert!(
        !again.stderr.contains("copy"),
        "said once: {}",
        again.stderr
    );

    e.ok(&["pull", "store", &arg(&three)]);
    let want: BTreeSet<String> = ["edit on one", "edit on the copy"].map(String::from).into();
    assert_eq!(versions_of(&three, "notes.txt"), want);
    e.ok(&["check", "store"]);
}

/// Two clones that look identical locally push at one moment (one fresh pair
/// per trial, all in one repository).
pub fn race_clones(e: &Env, store: &str, trials: usize) {
    for t in 0..trials {
        let (one, clone, probe) = (
            e.path(&format!("one{t}")),
            e.path(&format!("clone{t}")),
            e.path(&format!("probe{t}")),
        );
        fs::create_dir(&one).unwrap();
        fs::write(one.join("base.txt"), "base").unwrap();
        e.ok(&["sync", &arg(&one), store]);
        cp_a(&one, &clone);
        disguise_as_original(&clone);
        let (mine, theirs) = (format!("from-one-{t}.txt"), format!("from-clone-{t}.txt"));
        fs::write(one.join(&mine), format!("one {t}")).unwrap();
        fs::write(clone.join(&theirs), format!("clone {t}")).unwrap();
        let spawn = |d: &Path| e.cmd().args(["push", &arg(d), store]).spawn().unwrap();
        let (mut a, mut b) = (spawn(&one), spawn(&clone));
        assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
        // Whichever lost its commit finds out on its next step and sends again.
        for d in [&one, &clone, &one, &clone] {
            e.ok(&["sync", &arg(d), store]);
        }
        e.ok(&["pull", store, &arg(&probe)]);
        assert_eq!(
            fs::read_to_string(probe.join(&mine)).unwrap(),
            format!("one {t}")
        );
        assert_eq!(
            fs::read_to_string(probe.join(&theirs)).unwrap(),
            format!("clone {t}"),
            "trial {t}: the clone's commit must survive"
        );
        assert_ne!(binding(&one)["device"], binding(&clone)["device"]);
    }
}

#[test]
fn clones_pushing_at_the_same_moment_lose_no_commit() {
    let e = env();
    e.ok(&["init", "store"]);
    race_clones(&e, "store", 4);
    e.ok(&["check", "store"]);
}

#[test]
fn a_nested_synced_folder_is_left_out_and_no_coffer_state_is_synced() {
    let e = env();
    e.ok(&["init", "store"]);
    e.ok(&["init", "inner-store"]);
    let (outer, other) = (e.path("outer"), e.path("other"));
    fs::create_dir_all(outer.join("inner")).unwrap();
    fs::write(outer.join("a.txt"), "a").unwrap();
    fs::write(outer.join("inner/x.txt"), "x").unwrap();
    e.ok(&["sync", &arg(&outer.join("inner")), "inner-store"]);
    let r = e.ok(&["push", &arg(&outer), "store"]);
    assert!(
        r.stderr.contains("inner/ is another synced folder"),
        "{}",
        r.stderr
    );
    let s = e.ok(&["status", &arg(&outer)]);
    assert!(s.stdout.contains("left out:   inner/"), "{}", s.stdout);

    e.ok(&["pull", "store", &arg(&other)]);
    assert_eq!(fs::read_to_string(other.join("a.txt")).unwrap(), "a");
    assert!(
        !other.join("inner").exists(),
        "the nested folder is not part of the outer one"
    );
    let ls = e.ok(&["ls", "store"]);
    assert!(!ls.stdout.contains(".coffer"), "{}", ls.stdout);
}

#[test]
fn a_store_inside_the_folder_is_left_out() {
    let e = env();
    let dir = e.path("dir");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a.txt"), "a").unwrap();
    e.ok(&["init", "dir/store"]);
    let r = e.ok(&["push", &arg(&dir), "dir/store"]);
    assert!(
        r.stderr.contains("store/ is this repository's store"),
        "{}",
        r.stderr
    );
    let size = coffer_tests::tree::du(&e.path("dir/store"));
    let again = e.ok(&["push", &arg(&dir), "dir/store"]);
    assert!(again.stderr.contains("nothing to push"), "{}", again.stderr);
    assert_eq!(coffer_tests::tree::du(&e.path("dir/store")), size);
}

/// What a path holds in the type-change matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Link,
    Dir,
}

fn make(path: &Path, kind: Kind, tag: &str) {
    match kind {
        Kind::File => fs::write(path, format!("file {tag}")).unwrap(),
        Kind::Link => std::os::unix::fs::symlink(format!("target-{tag}"), path).unwrap(),
        Kind::Dir => {
            fs::create_dir(path).unwrap();
            fs::write(path.join("inner.txt"), format!("inner {tag}")).unwrap();
        }
    }
}

fn remove(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).unwrap(),
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// What `path` holds: its kind and content.
fn held(path: &Path) -> (Kind, String) {
    let m = fs::symlink_metadata(path).unwrap();
    if m.is_symlink() {
        (
            Kind::Link,
            fs::read_link(path).unwrap().to_string_lossy().into_owned(),
        )
    } else if m.is_dir() {
        (
            Kind::Dir,
            fs::read_to_string(path.join("inner.txt")).unwrap(),
        )
    } else {
        (Kind::File, fs::read_to_string(path).unwrap())
    }
}

/// Every type change (file ↔ symlink ↔ directory) made on one device reaches
/// the other, and a change back the other way reaches the first again.
#[test]
fn every_type_change_propagates_in_both_directions() {
    use Kind::*;
    let e = env();
    e.ok(&["init", "store"]);
    let (a, b) = (e.path("a"), e.path("b"));
    fs::create_dir(&a).unwrap();
    let pairs = [
        (File, Link),
        (File, Dir),
        (Link, File),
        (Link, Dir),
        (Dir, File),
        (Dir, Link),
    ];
    for (i, (from, _)) in pairs.iter().enumerate() {
        make(&a.join(format!("p{i}")), *from, "1");
    }
    e.ok(&["sync", &arg(&a), "store"]);
    e.ok(&["sync", &arg(&b), "store"]);
    for (i, (from, to)) in pairs.iter().enumerate() {
        let p = format!("p{i}");
        assert_eq!(held(&b.join(&p)).0, *from);
        remove(&a.join(&p));
        make(&a.join(&p), *to, "2");
    }
    e.ok(&["sync", &arg(&a), "store"]);
    e.ok(&["sync", &arg(&b), "store"]);
    for (i, _) in pairs.iter().enumerate() {
        let p = format!("p{i}");
        assert_eq!(held(&b.join(&p)), held(&a.join(&p)), "{p}: a → b");
        // And back: b turns it into what it was at first.
        remove(&b.join(&p));
        make(&b.join(&p), pairs[i].0, "3");
    }
    e.ok(&["sync", &arg(&b), "store"]);
    let r = e.ok(&["sync", &arg(&a), "store"]);
    assert!(!r.stderr.contains("not overwritten"), "{}", r.stderr);
    for (i, (from, _)) in pairs.iter().enumerate() {
        let p = format!("p{i}");
        assert_eq!(held(&a.join(&p)).0, *from, "{p}: b → a");
        assert_eq!(held(&a.join(&p)), held(&b.join(&p)), "{p}: b → a");
    }
}

/// `restore` and `get` into a synced folder never replace an edit that was not
/// pushed: it is kept and named (exit 1), `--force` replaces it, and a file
/// that already has the content is left alone (exit 0).
#[test]
fn restore_and_get_into_a_live_folder_keep_an_unpushed_edit() {
    let e = env();
    e.ok(&["init", "store"]);
    let dir = e.path("dir");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("notes.txt"), "v1").unwrap();
    fs::write(dir.join("same.txt"), "same").unwrap();
    e.ok(&["push", &arg(&dir), "store"]);
    fs::write(dir.join("notes.txt"), "v2 important unpushed edit").unwrap();

    let r = e.run(&[
        "restore",
        "store",
        "notes.txt",
        "--at",
        "0s",
        "--to",
        &arg(&dir),
    ]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("exists with other content; kept it"),
        "{}",
        r.stderr
    );
    let out = arg(&dir.join("notes.txt"));
    let r = e.run(&["get", "store", "notes.txt", &out]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(
        fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "v2 important unpushed edit"
    );

    e.ok(&["get", "store", "same.txt", &arg(&dir.join("same.txt"))]);
    e.ok(&[
        "restore",
        "store",
        ".",
        "--at",
        "0s",
        "--to",
        &arg(&e.path("elsewhere")),
    ]);
    e.ok(&["get", "store", "notes.txt", &out, "--force"]);
    assert_eq!(fs::read_to_string(dir.join("notes.txt")).unwrap(), "v1");
}

/// A folder whose journal was lost (`rm -rf DIR/.coffer`) joins again: files
/// equal to the repository's are in sync, a stale copy does not beat another
/// device's newer edit, a file deleted elsewhere does not come back under its
/// name, and both survive as conflict copies.
#[test]
fn a_lost_journal_keeps_newer_edits_and_deletions_of_other_devices() {
    let e = env();
    e.ok(&["init", "store"]);
    let (one, two) = (e.path("one"), e.path("two"));
    fs::create_dir(&one).unwrap();
    fs::write(one.join("a.txt"), "v1").unwrap();
    fs::write(one.join("gone.txt"), "x").unwrap();
    fs::write(one.join("same.txt"), "same").unwrap();
    fs::write(one.join("mode.txt"), "m").unwrap();
    e.ok(&["sync", &arg(&one), "store"]);
    e.ok(&["sync", &arg(&two), "store"]);
    fs::write(one.join("a.txt"), "v2 newer").unwrap();
    fs::remove_file(one.join("gone.txt")).unwrap();
    e.ok(&["sync", &arg(&one), "store"]);

    fs::remove_dir_all(two.join(".coffer")).unwrap();
    fs::set_permissions(two.join("mode.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    // A pull first (as `watch` may do) does not end the joining.
    e.run(&["pull", "store", &arg(&two)]);
    let r = e.ok(&["sync", &arg(&two), "store"]);
    assert!(
        r.stderr.contains("joined a repository that already had 2"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read_to_string(two.join("a.txt")).unwrap(), "v2 newer");
    assert!(
        !two.join("gone.txt").exists(),
        "a deletion elsewhere stays a deletion"
    );
    let want: BTreeSet<String> = ["v1", "v2 newer"].map(String::from).into();
    assert_eq!(versions_of(&two, "a.txt"), want);
    assert_eq!(
        versions_of(&two, "gone.txt"),
        BTreeSet::from(["x".to_string()])
    );
    assert_eq!(
        versions_of(&two, "same.txt"),
        BTreeSet::from(["same".to_string()])
    );
    assert_eq!(
        versions_of(&two, "mode.txt"),
        BTreeSet::from(["m".to_string()]),
        "a mode change alone is no conflict"
    );
    e.ok(&["sync", &arg(&one), "store"]);
    assert_eq!(fs::read_to_string(one.join("a.txt")).unwrap(), "v2 newer");
}

/// A device whose clock is off by `offset` edits a file in turn with one whose
/// clock is right: every edit is kept in order (no false conflict), the right
/// clock is not dragged along, and `restore --at` on the right device finds
/// what was current at each moment of its own edits.
fn edits_with_a_skewed_device(offset: &str) {
    let e = env();
    e.ok(&["init", "store"]);
    skewed_edits_in(&e, "store", offset);
}

/// [`edits_with_a_skewed_device`] in the repository `store` of `e`.
pub fn skewed_edits_in(e: &Env, store: &str, offset: &str) {
    let tag = offset.replace(['+', '-'], "_");
    let (skewed, right) = (
        e.path(&format!("skewed{tag}")),
        e.path(&format!("right{tag}")),
    );
    fs::create_dir(&skewed).unwrap();
    fs::write(skewed.join("f.txt"), "s1").unwrap();
    let r = e.ok_with_clock(offset, &["sync", &arg(&skewed), store]);
    assert!(
        r.stderr.contains("this machine's clock is"),
        "{offset}: {}",
        r.stderr
    );
    e.ok(&["sync", &arg(&right), store]);
    fs::write(right.join("f.txt"), "r1").unwrap();
    e.ok(&["sync", &arg(&right), store]);
    let after_r1 = std::time::SystemTime::now();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    e.ok_with_clock(offset, &["sync", &arg(&skewed), store]);
    assert_eq!(fs::read_to_string(skewed.join("f.txt")).unwrap(), "r1");
    fs::write(skewed.join("f.txt"), "s2").unwrap();
    e.ok_with_clock(offset, &["sync", &arg(&skewed), store]);
    e.ok(&["sync", &arg(&right), store]);
    assert_eq!(fs::read_to_string(right.join("f.txt")).unwrap(), "s2");
    fs::write(right.join("f.txt"), "r2").unwrap();
    e.ok(&["sync", &arg(&right), store]);
    e.ok_with_clock(offset, &["sync", &arg(&skewed), store]);
    for d in [&skewed, &right] {
        assert_eq!(
            versions_of(d, "f.txt"),
            BTreeSet::from(["r2".to_string()]),
            "{offset}"
        );
    }
    // Every commit carries real time (the skewed one's corrected by the
    // store's clock), and no hybrid clock was dragged far ahead.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for line in e.ok(&["log", store, "--json"]).stdout.lines() {
        let c: serde_json::Value = serde_json::from_str(line).unwrap();
        let (t, h) = (
            c["time_ms"].as_u64().unwrap(),
            c["hlc_ms"].as_u64().unwrap(),
        );
        assert!(
            t.abs_diff(now_ms) < 120_000,
            "{offset}: commit time {t} vs now {now_ms}"
        );
        assert!(
            h < now_ms + 6 * 60_000,
            "{offset}: hlc {h} dragged ahead of {now_ms}"
        );
    }
    let secs = after_r1
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    e.ok(&[
        "restore",
        store,
        "f.txt",
        "--at",
        &format!("@{secs}"),
        "--to",
        &arg(&e.path(".")),
    ]);
    let restored = fs::read_to_string(e.path("f.txt")).unwrap();
    assert_eq!(restored, "r1", "{offset}: restore --at the moment after r1");
    fs::remove_file(e.path("f.txt")).unwrap();
    e.ok(&[
        "restore",
        store,
        "f.txt",
        "--at",
        "0s",
        "--to",
        &arg(&e.path(".")),
    ]);
    assert_eq!(
        fs::read_to_string(e.path("f.txt")).unwrap(),
        "r2",
        "{offset}: now"
    );
}

#[test]
fn a_device_a_day_ahead_neither_loses_edits_nor_drags_the_clock() {
    edits_with_a_skewed_device("+1d");
}

#[test]
fn a_device_a_day_behind_loses_no_edit() {
    edits_with_a_skewed_device("-1d");
}

#[test]
fn a_device_ten_minutes_off_loses_no_edit() {
    edits_with_a_skewed_device("+10m");
    edits_with_a_skewed_device("-10m");
}
