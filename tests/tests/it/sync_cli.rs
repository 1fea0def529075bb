//! `coffer sync`, `log` and `restore` on a local store: several folders converge.

use crate::{arg, env};
use coffer_tests::env::Env;
use coffer_tests::tree::assert_same_tree;
use std::fs;
use std::path::{Path, PathBuf};

/// Three folders of one repository (one machine: the keyring is shared).
fn three() -> (Env, [PathBuf; 3]) {
    let e = env();
    e.ok(&["init", "store"]);
    let dirs = ["a", "b", "c"].map(|d| e.path(d));
    (e, dirs)
}

fn sync(e: &Env, dir: &Path) {
    e.ok(&["sync", &arg(dir), "store"]);
}

/// Three rounds of syncs, then every folder must hold the same tree.
fn converge(e: &Env, dirs: &[PathBuf]) {
    for _ in 0..3 {
        for d in dirs {
            sync(e, d);
        }
    }
    for d in &dirs[1..] {
        assert_same_tree(&dirs[0], d);
    }
}

fn conflict_copies(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".sync-conflict-"))
        .collect();
    out.sort();
    out
}

#[test]
fn a_concurrent_edit_leaves_one_conflict_copy_with_both_versions() {
    let (e, [a, b, c]) = three();
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("notes.txt"), "base\n").unwrap();
    sync(&e, &a);
    sync(&e, &b);
    sync(&e, &c);
    assert_eq!(fs::read_to_string(b.join("notes.txt")).unwrap(), "base\n");

    fs::write(a.join("notes.txt"), "edited on a\n").unwrap();
    fs::write(b.join("notes.txt"), "edited on b\n").unwrap();
    converge(&e, &[a.clone(), b.clone(), c.clone()]);

    let copies = conflict_copies(&c);
    assert_eq!(copies.len(), 1, "{copies:?}");
    let name = copies[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("notes.sync-conflict-") && name.ends_with(".txt"),
        "{name}"
    );
    let mut both = [
        fs::read_to_string(c.join("notes.txt")).unwrap(),
        fs::read_to_string(&copies[0]).unwrap(),
    ];
    both.sort();
    assert_eq!(both, ["edited on a\n", "edited on b\n"]);
}

#[test]
fn causally_ordered_edits_never_conflict() {
    let (e, dirs) = three();
    fs::create_dir_all(&dirs[0]).unwrap();
    for round in 0..6 {
        let d = &dirs[round % 3];
        sync(&e, d);
        fs::write(d.join("shared.txt"), format!("round {round}\n")).unwrap();
        sync(&e, d);
    }
    converge(&e, &dirs);
    assert!(conflict_copies(&dirs[0]).is_empty());
    assert_eq!(
        fs::read_to_string(dirs[1].join("shared.txt")).unwrap(),
        "round 5\n"
    );
}

#[test]
fn an_edit_beats_a_concurrent_delete_and_renames_and_deletes_propagate() {
    let (e, [a, b, c]) = three();
    fs::create_dir_all(a.join("docs/empty")).unwrap();
    fs::write(a.join("keep.txt"), "v1\n").unwrap();
    fs::write(a.join("old-name.txt"), "renamed\n").unwrap();
    fs::write(a.join("docs/gone.txt"), "bye\n").unwrap();
    converge(&e, &[a.clone(), b.clone(), c.clone()]);

    fs::remove_file(a.join("keep.txt")).unwrap();
    fs::write(b.join("keep.txt"), "v2 from b\n").unwrap();
    fs::rename(c.join("old-name.txt"), c.join("new-name.txt")).unwrap();
    fs::remove_file(c.join("docs/gone.txt")).unwrap();
    converge(&e, &[a.clone(), b.clone(), c.clone()]);

    assert_eq!(
        fs::read_to_string(a.join("keep.txt")).unwrap(),
        "v2 from b\n"
    );
    assert!(!a.join("old-name.txt").exists());
    assert_eq!(
        fs::read_to_string(a.join("new-name.txt")).unwrap(),
        "renamed\n"
    );
    assert!(!b.join("docs/gone.txt").exists());
    assert!(b.join("docs/empty").is_dir(), "empty directories propagate");
    assert!(conflict_copies(&a).is_empty());
}

#[test]
fn log_lists_commits_and_restore_brings_back_the_past() {
    let e = env();
    e.ok(&["init", "store"]);
    let a = e.path("a");
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("report.txt"), "first draft\n").unwrap();
    sync(&e, &a);
    let log = e.ok(&["log", "store", "--json"]);
    let first: serde_json::Value =
        serde_json::from_str(log.stdout.lines().next().unwrap()).unwrap();
    let at = first["time_ms"].as_u64().unwrap();
    // The next commit must be stamped after `at` (HLC milliseconds).
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(a.join("report.txt"), "final\n").unwrap();
    fs::write(a.join("later.txt"), "x").unwrap();
    sync(&e, &a);

    let log = e.ok(&["log", "store"]);
    assert_eq!(log.stdout.lines().count(), 2, "{}", log.stdout);
    assert!(log.stdout.contains("report.txt"), "{}", log.stdout);

    let to = e.path("restored");
    fs::create_dir_all(&to).unwrap();
    let when = humantime_like(at);
    e.ok(&[
        "restore",
        "store",
        "report.txt",
        "--at",
        &when,
        "--to",
        &arg(&to),
    ]);
    assert_eq!(
        fs::read_to_string(to.join("report.txt")).unwrap(),
        "first draft\n"
    );
    let all = e.path("all-then");
    e.ok(&["restore", "store", ".", "--at", &when, "--to", &arg(&all)]);
    assert!(all.join("report.txt").exists() && !all.join("later.txt").exists());
    let r = e.fails(&["restore", "store", ".", "--at", "not a time"]);
    assert!(r.stderr.contains("expected a time"), "{}", r.stderr);
}

/// `time_ms` as an RFC 3339 time with milliseconds.
fn humantime_like(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[test]
fn sync_without_a_store_uses_the_bound_one_and_explains_otherwise() {
    let e = env();
    e.ok(&["init", "store"]);
    let a = e.path("a");
    fs::create_dir_all(&a).unwrap();
    let r = e.fails(&["sync", &arg(&a)]);
    assert!(r.stderr.contains("not bound"), "{}", r.stderr);
    sync(&e, &a);
    fs::write(a.join("x.txt"), "x").unwrap();
    e.ok(&["sync", &arg(&a)]);
    let ls = e.ok(&["ls", "store"]);
    assert!(ls.stdout.contains("x.txt"), "{}", ls.stdout);
}

#[test]
fn status_dir_shows_pending_changes_last_sync_and_conflicts() {
    let (e, [a, b, _]) = three();
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("one.txt"), "1").unwrap();
    fs::write(a.join("two.txt"), "2").unwrap();
    sync(&e, &a);
    sync(&e, &b);
    let status = |dir: &Path| -> serde_json::Value {
        serde_json::from_str(&e.ok(&["status", &arg(dir), "--json"]).stdout).unwrap()
    };
    let s = status(&a);
    assert_eq!(s["pending"], 0, "{s}");
    assert!(
        s["last_sync_ms"].as_u64().is_some() && s["last_error"].is_null(),
        "{s}"
    );

    fs::write(a.join("three.txt"), "333").unwrap();
    fs::remove_file(a.join("one.txt")).unwrap();
    let s = status(&a);
    assert_eq!(
        (s["pending"].as_u64(), s["pending_deletes"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    assert_eq!(s["pending_bytes"], 3, "{s}");

    fs::write(b.join("two.txt"), "b's two").unwrap();
    fs::write(a.join("two.txt"), "a's two").unwrap();
    sync(&e, &a);
    sync(&e, &b);
    let s = status(&b);
    assert_eq!(s["conflicts"].as_array().map(Vec::len), Some(1), "{s}");
    let text = e.ok(&["status", &arg(&b)]).stdout;
    assert!(
        text.contains("conflicts:  1") && text.contains("pending:"),
        "{text}"
    );
    let r = e.fails(&["status", &arg(&e.path("nowhere"))]);
    assert!(r.stderr.contains("not a synced folder"), "{}", r.stderr);
}
