//! One device, one writer (issue 23): a copied or cloned folder, a nested
//! synced folder, a store inside the folder. Each test is named after the loss
//! it guards against.

use crate::{arg, env};
use coffer_tests::env::Env;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
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
