//! Safety of the folder's surroundings and of its metadata (issue 17): nothing
//! outside DIR is ever touched, directory modes and times sync, binding is
//! exclusive.

use crate::{arg, env};
use coffer_tests::env::Env;
use coffer_tests::tree::{Node, snapshot};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Every entry below `dir` with its content, mode and mtime (to the nanosecond).
fn state(dir: &Path) -> BTreeMap<PathBuf, (Node, i64, i64)> {
    snapshot(dir)
        .into_iter()
        .map(|(rel, node)| {
            let m = fs::symlink_metadata(dir.join(&rel)).unwrap();
            (rel, (node, m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

fn set_mtime(path: &Path, secs: u64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    fs::File::open(path).unwrap().set_modified(t).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Three folders of one repository with `a/x.txt`, `a/keep.txt` and `a/d/`.
fn synced_three() -> (Env, [PathBuf; 3]) {
    let e = env();
    e.ok(&["init", "store"]);
    let dirs = ["one", "two", "three"].map(|d| e.path(d));
    fs::create_dir_all(dirs[0].join("a/d")).unwrap();
    fs::write(dirs[0].join("a/x.txt"), "x").unwrap();
    fs::write(dirs[0].join("a/keep.txt"), "keep").unwrap();
    for d in &dirs {
        e.ok(&["sync", &arg(d), "store"]);
    }
    (e, dirs)
}

#[test]
fn pull_never_touches_anything_through_a_symlinked_ancestor() {
    let (e, [one, two, three]) = synced_three();
    // On `two` the user moves `a` away and leaves a symlink in its place.
    let outside = e.path("outside");
    fs::create_dir(&outside).unwrap();
    fs::rename(two.join("a"), outside.join("a")).unwrap();
    std::os::unix::fs::symlink(outside.join("a"), two.join("a")).unwrap();
    let before = state(&outside);

    // Elsewhere: a deletion, a directory mode and time, a new file, a new
    // directory, an edit (a rename into place), and a concurrent edit that
    // makes a conflict copy.
    fs::remove_file(one.join("a/x.txt")).unwrap();
    fs::set_permissions(one.join("a/d"), fs::Permissions::from_mode(0o700)).unwrap();
    set_mtime(&one.join("a/d"), 1_500_000_000);
    fs::write(one.join("a/new.txt"), "new").unwrap();
    fs::create_dir(one.join("a/newdir")).unwrap();
    fs::write(one.join("a/keep.txt"), "edited on one").unwrap();
    fs::write(three.join("a/keep.txt"), "edited on three").unwrap();
    e.ok(&["push", &arg(&one), "store"]);
    e.ok(&["push", &arg(&three), "store"]);

    let r = e.fails(&["pull", "store", &arg(&two)]);
    assert!(r.stderr.contains("parent a is a symlink"), "{}", r.stderr);
    assert_eq!(state(&outside), before, "nothing outside DIR may change");
    assert!(fs::symlink_metadata(two.join("a")).unwrap().is_symlink());
}

#[test]
fn directory_mode_and_mtime_changes_propagate() {
    let e = env();
    e.ok(&["init", "store"]);
    let (one, two) = (e.path("one"), e.path("two"));
    fs::create_dir_all(one.join("d")).unwrap();
    fs::write(one.join("d/f.txt"), "f").unwrap();
    e.ok(&["sync", &arg(&one), "store"]);
    e.ok(&["sync", &arg(&two), "store"]);
    assert_eq!(mode(&two.join("d")), mode(&one.join("d")));

    fs::set_permissions(one.join("d"), fs::Permissions::from_mode(0o700)).unwrap();
    let r = e.ok(&["push", &arg(&one), "store"]);
    assert!(!r.stderr.contains("nothing to push"), "{}", r.stderr);
    e.ok(&["pull", "store", &arg(&two)]);
    assert_eq!(mode(&two.join("d")), 0o700);

    set_mtime(&one.join("d"), 1_600_000_000);
    e.ok(&["push", &arg(&one), "store"]);
    e.ok(&["pull", "store", &arg(&two)]);
    assert_eq!(fs::metadata(two.join("d")).unwrap().mtime(), 1_600_000_000);

    // And back the other way; a second push has nothing left to send.
    fs::set_permissions(two.join("d"), fs::Permissions::from_mode(0o750)).unwrap();
    e.ok(&["push", &arg(&two), "store"]);
    let again = e.ok(&["push", &arg(&two), "store"]);
    assert!(again.stderr.contains("nothing to push"), "{}", again.stderr);
    e.ok(&["pull", "store", &arg(&one)]);
    assert_eq!(mode(&one.join("d")), 0o750);
    assert_eq!(fs::metadata(one.join("d")).unwrap().mtime(), 1_600_000_000);
}

#[test]
fn a_folder_is_bound_once_even_by_concurrent_first_pushes() {
    let e = env();
    e.ok(&["init", "store"]);
    for round in 0..4 {
        let dir = e.path(&format!("folder{round}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("f.txt"), format!("round {round}")).unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                e.cmd()
                    .args(["push", &arg(&dir), "store"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() || stderr.contains("in use by another coffer process"),
                "{stderr}"
            );
        }
        e.ok(&["push", &arg(&dir), "store"]);
        let binding: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join(".coffer/folder.json")).unwrap()).unwrap();
        let device = binding["device"].as_str().unwrap();
        let devices: Vec<String> = fs::read_dir(e.path("store/log"))
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            devices.iter().any(|d| d == device),
            "{device} not in {devices:?}"
        );
        assert_eq!(
            devices.len(),
            round + 1,
            "one device per folder: {devices:?}"
        );
    }
}

/// A key slot in the store asks for 1 GiB of Argon2 memory (the most a slot may),
/// on a machine that cannot give it: opening skips it with a warning when another
/// slot opens, and fails with one line — never an abort — when it is the only one.
#[test]
fn a_key_slot_asking_for_more_memory_than_the_machine_has_is_an_error_not_an_abort() {
    let e = env();
    e.ok(&["init", "store"]);
    let keys = e.path("store/keys");
    let good: Vec<PathBuf> = fs::read_dir(&keys)
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(good.len(), 1);
    let hostile = serde_json::json!({
        "version": 1, "kind": "passphrase", "kdf": "argon2id",
        "m_cost_kib": 1u32 << 20, "t_cost": 2, "p_cost": 1,
        "salt": "11".repeat(32), "wrapped": "22".repeat(72),
    });
    // Sorted first, so it is tried before the good slot.
    fs::write(keys.join("0".repeat(32)), hostile.to_string()).unwrap();
    let limit_kib = 700 * 1024;

    let fresh = e.machine("fresh");
    let r = fresh.run_with_memory_limit(limit_kib, &["ls", &arg(&e.path("store"))]);
    assert!(r.ok(), "{:?}\n{}", r.code, r.stderr);
    assert!(r.stderr.contains("could not be allocated"), "{}", r.stderr);

    fs::rename(&good[0], e.path("good-slot")).unwrap();
    let fresh = e.machine("fresh2");
    let r = fresh.run_with_memory_limit(limit_kib, &["ls", &arg(&e.path("store"))]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("Argon2id needs 1024 MiB"), "{}", r.stderr);
}

/// `init` where a repository's objects are but its `config` is gone refuses, and
/// leaves every object as it was.
#[test]
fn init_refuses_a_store_that_lost_its_config() {
    let e = env();
    e.ok(&["init", "store"]);
    let dir = e.path("dir");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("f.txt"), "data").unwrap();
    e.ok(&["push", &arg(&dir), "store"]);
    fs::remove_file(e.path("store/config")).unwrap();
    let before = state(&e.path("store"));
    let r = e.fails(&["init", "store"]);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("already holds coffer objects"),
        "{}",
        r.stderr
    );
    assert_eq!(state(&e.path("store")), before);
}

/// A store operator who edits `config` (here: halves the chunker sizes) is refused
/// by every device, with or without a key in its keyring.
#[test]
fn a_config_edited_in_the_store_is_refused() {
    let e = env();
    e.ok(&["init", "store"]);
    let path = e.path("store/config");
    let mut config: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    config["chunker"]["min"] = 65536.into();
    config["chunker"]["avg"] = 262144.into();
    fs::write(&path, config.to_string()).unwrap();
    for machine in [e.machine("same-keyring-dir"), e.machine("fresh")] {
        let r = machine.fails(&["ls", &arg(&e.path("store"))]);
        assert!(r.stderr.contains("not authentic"), "{}", r.stderr);
    }
    let r = e.fails(&["ls", "store"]);
    assert!(r.stderr.contains("not authentic"), "{}", r.stderr);
}

/// A directory the merge makes up (one device made `p` a file while another
/// created `p/x`) gets a real time where it is created, not 1970-01-01.
#[test]
fn a_directory_made_up_by_the_merge_does_not_get_the_epoch_as_its_time() {
    let e = env();
    e.ok(&["init", "store"]);
    let (one, two, three) = (e.path("one"), e.path("two"), e.path("three"));
    fs::create_dir(&one).unwrap();
    fs::write(one.join("p"), "a file").unwrap();
    fs::create_dir_all(two.join("p")).unwrap();
    fs::write(two.join("p/x"), "below").unwrap();
    e.ok(&["push", &arg(&one), "store"]);
    e.ok(&["push", &arg(&two), "store"]);
    e.ok(&["pull", "store", &arg(&three)]);
    let meta = fs::symlink_metadata(three.join("p")).unwrap();
    assert!(meta.is_dir());
    assert!(meta.mtime() > 1_700_000_000, "mtime {}", meta.mtime());
    assert_eq!(fs::read(three.join("p/x")).unwrap(), b"below");
}

/// Names that are not UTF-8 or hold control characters are listed escaped (two
/// names never print alike), carried losslessly in JSON, and can be fetched.
#[test]
fn odd_names_are_listed_escaped_and_can_be_fetched() {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::OsStrExt;
    let e = env();
    e.ok(&["init", "store"]);
    let dir = e.path("dir");
    fs::create_dir(&dir).unwrap();
    let raw: &[u8] = b"bad\xffname";
    fs::write(dir.join(OsStr::from_bytes(raw)), "raw bytes").unwrap();
    fs::write(dir.join("bad\u{fffd}name"), "lookalike").unwrap();
    fs::write(dir.join("two\nlines"), "newline").unwrap();
    e.ok(&["push", &arg(&dir), "store"]);

    let ls = e.ok(&["ls", "store"]).stdout;
    assert!(ls.contains(" bad\\xffname\n"), "{ls}");
    assert!(ls.contains(" bad\u{fffd}name\n"), "{ls}");
    assert!(ls.contains(" two\\nlines\n"), "{ls}");
    assert_eq!(ls.lines().count(), 3, "{ls}");

    let json = e.ok(&["ls", "--json", "store"]).stdout;
    let raws: Vec<String> = json
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.get("path_bytes").map(|b| b.as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(raws, ["YmFk/25hbWU="], "{json}"); // base64 of b"bad\xffname"

    let out = e.path("out");
    let args: Vec<OsString> = vec![
        "get".into(),
        "store".into(),
        OsStr::from_bytes(raw).into(),
        out.clone().into(),
    ];
    e.ok(&args);
    assert_eq!(fs::read(&out).unwrap(), b"raw bytes");
}

/// A sparse file (64 MiB with a few bytes of data) comes back sparse: its
/// zero runs are holes, not allocated blocks, and its bytes are the same.
#[test]
fn a_sparse_file_comes_back_sparse() {
    let e = env();
    e.ok(&["init", "store"]);
    let (one, two) = (e.path("one"), e.path("two"));
    fs::create_dir(&one).unwrap();
    let f = fs::File::create(one.join("sparse.img")).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"hello", 40 << 20).unwrap();
    drop(f);
    e.ok(&["push", &arg(&one), "store"]);
    e.ok(&["pull", "store", &arg(&two)]);
    let (a, b) = (
        fs::read(one.join("sparse.img")).unwrap(),
        fs::read(two.join("sparse.img")).unwrap(),
    );
    assert!(a == b, "same bytes");
    let allocated = fs::metadata(two.join("sparse.img")).unwrap().blocks() * 512;
    assert!(
        allocated < 8 << 20,
        "{allocated} bytes allocated for 5 bytes of data"
    );
}

/// A folder whose files lie deeper than `PATH_MAX` (4096 bytes of absolute
/// path) below `/`, with relative paths that fit (coffer's limit is 4096 bytes
/// relative to the folder): push reads them, pull writes them, nothing stays
/// pending. The tree is made and read with relative `cd`s, as a user would.
#[test]
fn files_deeper_than_path_max_sync_by_their_relative_path() {
    let e = env();
    e.ok(&["init", "store"]);
    let (one, two) = (e.path("one"), e.path("two"));
    fs::create_dir(&one).unwrap();
    let name = "d".repeat(255);
    let file = format!("{}.txt", "f".repeat(246));
    // 15 levels of 256 bytes and a 250-byte name: 4,090 bytes relative (coffer
    // allows 4,096), over 4,096 absolute.
    let script = format!(
        "cd \"$1\" && for i in $(seq 15); do mkdir {name} && cd {name} || exit 1; done && \
         printf deep > {file} && ln -s {file} link"
    );
    let st = std::process::Command::new("sh")
        .args(["-c", &script, "sh", one.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(one.to_str().unwrap().len() + 15 * 256 + 1 + file.len() > 4096);
    let r = e.ok(&["push", &arg(&one), "store"]);
    assert!(r.stderr.contains("pushed 17 change(s)"), "{}", r.stderr);
    e.ok(&["pull", "store", &arg(&two)]);
    let read = format!(
        "cd \"$1\" && for i in $(seq 15); do cd {name} || exit 1; done && cat {file} && readlink link"
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &read, "sh", two.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("deep{file}\n")
    );
    let again = e.ok(&["push", &arg(&one), "store"]);
    assert!(again.stderr.contains("nothing to push"), "{}", again.stderr);
}
