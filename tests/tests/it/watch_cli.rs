//! `coffer watch`: two daemons keep two folders converged, ride out an unreachable
//! store, and stop cleanly on SIGTERM; a daemon tells the special files it skips
//! only when they change.

use crate::{arg, env};
use coffer_tests::env::Env;
use coffer_tests::tree::assert_same_tree;
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn daemon(e: &Env, dir: &Path) -> Child {
    daemon_on(e, dir, "store", 1)
}

/// `coffer watch DIR STORE --poll POLL` with a short debounce, stderr captured.
pub(crate) fn daemon_on(e: &Env, dir: &Path, store: &str, poll: u64) -> Child {
    e.cmd()
        .args([
            "watch",
            &arg(dir),
            store,
            "--poll",
            &poll.to_string(),
            "--debounce-ms",
            "200",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `cond` every 100 ms for up to `limit`.
pub(crate) fn within(limit: Duration, what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn same(a: &Path, b: &Path) -> bool {
    coffer_tests::tree::snapshot(a) == coffer_tests::tree::snapshot(b)
}

pub(crate) fn stop(mut child: Child) -> String {
    assert!(child.try_wait().unwrap().is_none(), "the daemon died early");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    stderr
}

/// Two watched folders, `a` holding `gone-later.txt`: a new file in `a` reaches
/// `b`, then an edit of it in `b` reaches `a` (each within 20 s).
pub(crate) fn exchange_a_file(a: &Path, b: &Path) {
    let limit = Duration::from_secs(20);
    fs::write(a.join("new.txt"), "from a\n").unwrap();
    within(limit, "a new file reaches b", || {
        fs::read_to_string(b.join("new.txt")).is_ok_and(|s| s == "from a\n")
    });
    fs::write(b.join("new.txt"), "edited on b\n").unwrap();
    within(limit, "an edit reaches a", || {
        fs::read_to_string(a.join("new.txt")).is_ok_and(|s| s == "edited on b\n")
    });
}

/// The changes made while the store is away: 20 files added in `a`, a directory
/// created in `b`, `a`'s `gone-later.txt` deleted.
pub(crate) fn change_both_while_offline(a: &Path, b: &Path) {
    for i in 0..20 {
        fs::write(a.join(format!("offline-{i}.txt")), format!("{i}\n")).unwrap();
    }
    fs::create_dir_all(b.join("made-offline/inner")).unwrap();
    fs::remove_file(a.join("gone-later.txt")).unwrap();
}

/// Both folders hold all of [`change_both_while_offline`] within 60 s.
pub(crate) fn converge_after_the_outage(a: &Path, b: &Path) {
    within(
        Duration::from_secs(60),
        "both folders converge after the store returns",
        || same(a, b) && b.join("offline-19.txt").exists() && a.join("made-offline/inner").is_dir(),
    );
    assert!(!b.join("gone-later.txt").exists());
}

#[test]
fn two_daemons_converge_and_ride_out_an_unreachable_store() {
    let e = env();
    e.ok(&["init", "store"]);
    let (a, b) = (e.path("a"), e.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("gone-later.txt"), "old\n").unwrap();
    let (da, db) = (daemon(&e, &a), daemon(&e, &b));
    exchange_a_file(&a, &b);

    // The store goes away (and a file takes its place, so nothing can recreate it).
    let store = e.path("store");
    let away = e.path("store-away");
    fs::rename(&store, &away).unwrap();
    fs::write(&store, "not a store").unwrap();
    change_both_while_offline(&a, &b);
    std::thread::sleep(Duration::from_secs(3));
    // The daemon holds a's journal: status shows what it recorded, with the failure.
    let st = e.ok(&["status", &arg(&a), "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(st["live"], false, "{st}");
    assert!(st["last_error"].is_string(), "{st}");
    assert!(st["pending"].as_u64().unwrap() >= 20, "{st}");
    fs::remove_file(&store).unwrap();
    fs::rename(&away, &store).unwrap();

    converge_after_the_outage(&a, &b);
    let (la, lb) = (stop(da), stop(db));
    assert!(la.contains("retrying"), "{la}");
    assert!(lb.contains("stopped"), "{lb}");
    assert_same_tree(&a, &b);
}

/// When the daemon holding `dir` recorded its last push, if it did.
fn pushed_at(e: &Env, dir: &Path) -> Option<u64> {
    let r = e.run(&["status", &arg(dir), "--json"]);
    let s: serde_json::Value = serde_json::from_str(&r.stdout).ok()?;
    s["last_push"]["at_ms"].as_u64()
}

/// Waits until the daemon holding `dir` has recorded `n` more pushes.
fn more_pushes(e: &Env, dir: &Path, n: usize) {
    for _ in 0..n {
        let before = pushed_at(e, dir);
        within(Duration::from_secs(20), "a daemon step", || {
            pushed_at(e, dir) > before
        });
    }
}

#[test]
fn a_daemon_tells_the_special_files_it_skips_only_when_they_change() {
    let e = env();
    e.ok(&["init", "store"]);
    let dir = e.path("dir");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a.txt"), "a\n").unwrap();
    crate::ops_cli::mkfifo(&dir.join("p1"));
    let d = daemon(&e, &dir);
    more_pushes(&e, &dir, 3);
    crate::ops_cli::mkfifo(&dir.join("p2"));
    more_pushes(&e, &dir, 3);
    fs::remove_file(dir.join("p2")).unwrap();
    more_pushes(&e, &dir, 3);
    let log = stop(d);
    let told: Vec<&str> = log.lines().filter(|l| l.contains("special file")).collect();
    assert_eq!(told.len(), 3, "{log}");
    assert!(told[0].contains("skipped 1 special file(s)") && told[0].ends_with(": p1"));
    assert!(told[1].contains("skipped 2 special file(s)") && told[1].ends_with(": p1, p2"));
    assert!(told[2].contains("skipped 1 special file(s)") && told[2].ends_with(": p1"));
}
