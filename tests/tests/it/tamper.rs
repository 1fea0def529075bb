//! Damaged and forged repositories: refused clearly, nothing bad written.

use crate::{arg, env};
use coffer_engine::crypto::Keys;
use coffer_engine::crypto::keyring::Keyring;
use coffer_engine::format::commit::{Change, Commit, Entry, FileEntry};
use coffer_engine::format::id::{CommitHash, DeviceId, RepoId};
use coffer_engine::format::path::RepoPath;
use coffer_engine::format::version::{Hlc, VersionVector};
use coffer_tests::env::Env;
use coffer_tests::tree::{random_file, snapshot};
use std::fs;
use std::path::{Path, PathBuf};

/// Ten 700 KB files in 1 MiB packs: each file's data lands in its own pack(s).
fn repo_with_many_packs() -> (Env, PathBuf) {
    let e = env();
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..10u64 {
        random_file(&src.join(format!("file{i}.bin")), 700_000, i);
    }
    e.ok(&["init", "store"]);
    e.ok(&["push", "--pack-mib", "1", "src", "store"]);
    (e, src)
}

fn packs(store: &Path) -> Vec<PathBuf> {
    let mut v = coffer_tests::tree::files(&store.join("data"));
    v.sort();
    v
}

/// Every file `pull` wrote has exactly the pushed content, at least one file is
/// missing (the damaged one), and most still arrive: a 1 MiB pack holds chunks of
/// at most four of the 700 KB files.
fn assert_partial_restore(src: &Path, dst: &Path) {
    let n = written_files_are_intact(src, dst);
    assert!((5..10).contains(&n), "{n} of 10 files restored");
}

/// Every file `pull` wrote has exactly the pushed content; returns how many.
fn written_files_are_intact(src: &Path, dst: &Path) -> usize {
    let (a, b) = (snapshot(src), snapshot(dst));
    for (p, node) in &b {
        if let coffer_tests::tree::Node::File { .. } = node {
            assert_eq!(
                Some(node),
                a.get(p),
                "{} was written with other content",
                p.display()
            );
        }
    }
    b.len()
}

#[test]
fn a_flipped_byte_in_a_pack_fails_check_and_pull_writes_only_intact_files() {
    let (e, src) = repo_with_many_packs();
    let store = e.path("store");
    let victim = &packs(&store)[1];
    let mut bytes = fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(victim, bytes).unwrap();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();

    let r = e.fails(&["check", "store", "--read-data"]);
    assert!(
        r.stderr.contains(&name),
        "check must name the pack: {}",
        r.stderr
    );

    let r = e.fails(&["pull", "store", "dst"]);
    assert!(r.stderr.contains(&name), "{}", r.stderr);
    assert_partial_restore(&src, &e.path("dst"));
    assert!(
        coffer_tests::tree::files(&e.path("dst/.coffer/tmp")).is_empty(),
        "temp files are removed"
    );
}

#[test]
fn a_truncated_pack_is_reported_without_reading_data() {
    let (e, src) = repo_with_many_packs();
    let victim = packs(&e.path("store"))[0].clone();
    let len = fs::metadata(&victim).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let r = e.fails(&["check", "store"]);
    assert!(r.stderr.contains("truncated"), "{}", r.stderr);
    e.fails(&["pull", "store", "dst"]);
    assert_partial_restore(&src, &e.path("dst"));
}

#[test]
fn a_missing_pack_is_reported() {
    let (e, src) = repo_with_many_packs();
    let victim = packs(&e.path("store"))[2].clone();
    fs::remove_file(&victim).unwrap();
    let r = e.fails(&["check", "store"]);
    assert!(r.stderr.contains("missing"), "{}", r.stderr);
    let r = e.fails(&["pull", "store", "dst"]);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
    assert_partial_restore(&src, &e.path("dst"));
}

#[test]
fn a_damaged_commit_is_refused_naming_it() {
    let (e, _) = repo_with_many_packs();
    let logs = coffer_tests::tree::files(&e.path("store/log"));
    assert_eq!(logs.len(), 1);
    let len = fs::metadata(&logs[0]).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&logs[0])
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let other = e.machine("b");
    let r = other.run(&["pull", &arg(&e.path("store")), &arg(&other.path("dst"))]);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(
        r.stderr.contains("/0000000000000001 cannot be read"),
        "{}",
        r.stderr
    );
    assert!(
        coffer_tests::tree::files(&other.path("dst"))
            .iter()
            .all(|p| p.starts_with(other.path("dst/.coffer")))
    );
}

#[test]
fn hiding_the_newest_commit_is_reported_as_a_rollback() {
    let e = env();
    fs::create_dir_all(e.path("src")).unwrap();
    fs::write(e.path("src/a"), "1").unwrap();
    e.ok(&["init", "store"]);
    e.ok(&["push", "src", "store"]);
    fs::write(e.path("src/a"), "2").unwrap();
    e.ok(&["push", "src", "store"]);
    e.ok(&["pull", "store", "dst"]);
    let mut logs = coffer_tests::tree::files(&e.path("store/log"));
    logs.sort();
    fs::remove_file(logs.last().unwrap()).unwrap();
    // Within 10 minutes of a full listing only head markers are listed
    // (DESIGN.md §6b): nothing changes; the next full listing tells.
    e.ok(&["pull", "store", "dst"]);
    let r = e.run_with_clock("+11m", &["pull", "store", "dst"]);
    assert!(!r.ok(), "{}", r.stderr);
    assert!(
        r.stderr.contains("rollback detected for device"),
        "{}",
        r.stderr
    );
    assert_eq!(
        fs::read_to_string(e.path("dst/a")).unwrap(),
        "2",
        "nothing was applied"
    );
}

#[test]
fn ls_keeps_its_view_between_calls_and_catches_a_rollback_behind_it() {
    let e = env();
    fs::create_dir_all(e.path("src")).unwrap();
    fs::write(e.path("src/a"), "1").unwrap();
    e.ok(&["init", "store"]);
    e.ok(&["push", "src", "store"]);
    assert!(e.ok(&["ls", "store"]).stdout.contains(" a\n"));
    fs::write(e.path("src/b"), "22").unwrap();
    e.ok(&["push", "src", "store"]);
    let ls = e.ok(&["ls", "store"]).stdout;
    assert!(ls.contains(" a\n") && ls.contains(" b\n"), "{ls}");
    let views: Vec<_> = fs::read_dir(e.home().join("views")).unwrap().collect();
    assert_eq!(views.len(), 1, "one view cache, of the one repository");
    // The newest commit hidden: a fresh replay would not know it existed; the
    // kept view does, and says so at its next full listing.
    let mut logs = coffer_tests::tree::files(&e.path("store/log"));
    logs.sort();
    fs::remove_file(logs.last().unwrap()).unwrap();
    let r = e.run_with_clock("+11m", &["ls", "store"]);
    assert!(!r.ok(), "{}", r.stdout);
    assert!(
        r.stderr.contains("rollback detected for device"),
        "{}",
        r.stderr
    );
    let fresh = e.machine("fresh");
    let ls = fresh.ok(&["ls", e.path("store").to_str().unwrap()]).stdout;
    assert!(
        !ls.contains(" b\n"),
        "a new machine sees the store as it is: {ls}"
    );
}

/// Seals commits the way a malicious holder of the key would.
struct Forger {
    keys: Keys,
    store: PathBuf,
}

impl Forger {
    fn new(e: &Env) -> Forger {
        let config: serde_json::Value =
            serde_json::from_slice(&fs::read(e.path("store/config")).unwrap()).unwrap();
        let repo = RepoId::from_hex(config["repository"].as_str().unwrap()).unwrap();
        let master = Keyring::new(e.home()).load(&repo).unwrap().unwrap();
        Forger {
            keys: master.chain.keys(),
            store: e.path("store"),
        }
    }

    /// Writes a device's log of one commit per change list.
    fn write_log(&self, commits: Vec<Vec<(RepoPath, Entry)>>) {
        let device = DeviceId::random();
        let mut prev = CommitHash([0; 32]);
        for (i, changes) in commits.into_iter().enumerate() {
            let seq = i as u64 + 1;
            let c = Commit {
                device,
                seq,
                prev,
                hlc: Hlc::from_parts(1_800_000_000_000 + seq, 0),
                time_ms: 1_800_000_000_000,
                packs: Vec::new(),
                changes: changes
                    .into_iter()
                    .map(|(path, entry)| Change {
                        path,
                        vv: VersionVector::new().advanced(device, seq),
                        entry,
                    })
                    .collect(),
            };
            let sealed = c.seal(&self.keys).unwrap();
            let key = coffer_engine::store::layout::commit(&device, seq);
            let file = self.store.join(key);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(file, &sealed.bytes).unwrap();
            prev = sealed.hash;
        }
    }
}

/// A path that bypasses validation, as a forger's own encoder would produce.
fn raw_path(bytes: &[u8]) -> RepoPath {
    postcard::from_bytes(&postcard::to_allocvec(&bytes.to_vec()).unwrap()).unwrap()
}

fn empty_file() -> Entry {
    Entry::File(FileEntry {
        size: 0,
        mode: 0o644,
        mtime_ns: 0,
        chunks: Vec::new(),
    })
}

#[test]
fn forged_commits_cannot_write_outside_the_folder() {
    let e = env();
    fs::create_dir_all(e.path("src")).unwrap();
    fs::write(e.path("src/honest.txt"), "honest").unwrap();
    e.ok(&["init", "store"]);
    e.ok(&["push", "src", "store"]);
    let outside = e.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let forger = Forger::new(&e);
    forger.write_log(vec![vec![(raw_path(b"../escaped.txt"), empty_file())]]);
    let abs = format!("{}/absolute.txt", outside.display());
    forger.write_log(vec![vec![(raw_path(abs.as_bytes()), empty_file())]]);
    forger.write_log(vec![vec![(raw_path(b"a/../../dotdot.txt"), empty_file())]]);
    // A symlink to the outside, then a file "through" it.
    let link = RepoPath::new(b"evil".to_vec()).unwrap();
    let target = outside.as_os_str().as_encoded_bytes().to_vec();
    forger.write_log(vec![
        vec![(
            link,
            Entry::Symlink {
                target,
                mtime_ns: 0,
            },
        )],
        vec![(
            RepoPath::new(b"evil/planted.txt".to_vec()).unwrap(),
            empty_file(),
        )],
    ]);

    let r = e.fails(&["pull", "store", "dst"]);
    assert!(r.stderr.contains("unsafe path"), "{}", r.stderr);
    assert!(!e.path("escaped.txt").exists() && !e.path("dotdot.txt").exists());
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing may be written outside the folder"
    );
    assert_eq!(
        fs::read_to_string(e.path("dst/honest.txt")).unwrap(),
        "honest",
        "honest files still arrive"
    );
}

/// A sparse file of `gib` GiB at `key` of the local store `store`: a hostile
/// object that costs no disk.
fn junk_object(store: &Path, key: &str, gib: u64) {
    let path = store.join(key);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = fs::File::create(&path).unwrap();
    f.set_len(gib << 30).unwrap();
}

/// Several-GiB junk objects at a commit key of a known device, at a new
/// device's first commit, at a checkpoint key and at a key slot: `pull` into a
/// new folder and `check` on a new machine stay under 700 MiB of address space,
/// say what is wrong, and what could be read still syncs.
#[test]
fn junk_objects_of_gigabytes_under_every_key_kind_stay_within_memory() {
    let e = env();
    e.ok(&["init", "store"]);
    let one = e.path("one");
    fs::create_dir(&one).unwrap();
    fs::write(one.join("a.txt"), "a").unwrap();
    e.ok(&["push", &arg(&one), "store"]);
    let b: serde_json::Value =
        serde_json::from_slice(&fs::read(one.join(".coffer/folder.json")).unwrap()).unwrap();
    let dev = b["device"].as_str().unwrap().to_string();
    let store = e.path("store");
    let other = DeviceId::random().to_hex();
    junk_object(&store, &format!("log/{dev}/{:016x}", 2), 3);
    junk_object(&store, &format!("log/{other}/{:016x}", 1), 3);
    junk_object(&store, &format!("checkpoint/{other}/{:016x}", 1), 3);
    junk_object(
        &store,
        &format!("keys/{}", &DeviceId::random().to_hex().repeat(2)[..32]),
        3,
    );
    let limit_kib = 700 * 1024;

    let fresh = e.machine("fresh");
    let two = e.path("two");
    let r = fresh.run_with_memory_limit(limit_kib, &["pull", &arg(&store), &arg(&two)]);
    assert_eq!(
        r.code,
        Some(3),
        "synced, with damage in the store: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("more than a commit may weigh"),
        "{}",
        r.stderr
    );
    assert_eq!(
        fs::read_to_string(two.join("a.txt")).unwrap(),
        "a",
        "{}",
        r.stderr
    );

    let r = e
        .machine("checker")
        .run_with_memory_limit(limit_kib, &["check", &arg(&store)]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("more than a commit may weigh"),
        "{}",
        r.stderr
    );
}

/// A `config` of 3 GiB is refused after 64 KiB, in one line.
#[test]
fn a_gigabyte_config_is_refused_without_reading_it() {
    let e = env();
    e.ok(&["init", "store"]);
    junk_object(&e.path("store"), "config", 3);
    let r = e.run_with_memory_limit(700 * 1024, &["ls", &arg(&e.path("store"))]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("the most a config may weigh"),
        "{}",
        r.stderr
    );
}

/// One unreadable commit in another device's log: a sync reports it once, as
/// what it is (device, object, damage or tampering), syncs everything else, and
/// exits 3; `coffer distrust` ends it without deleting anything, and
/// `status` tells a failed step.
#[test]
fn an_unreadable_commit_is_reported_once_and_distrust_is_the_way_out() {
    let e = env();
    e.ok(&["init", "store"]);
    let (one, two, three) = (e.path("one"), e.path("two"), e.path("three"));
    fs::create_dir(&one).unwrap();
    fs::write(one.join("a.txt"), "a").unwrap();
    e.ok(&["push", &arg(&one), "store"]);
    e.ok(&["sync", &arg(&two), "store"]);
    fs::write(two.join("b.txt"), "b").unwrap();
    e.ok(&["push", &arg(&two), "store"]);
    fs::write(two.join("c.txt"), "c").unwrap();
    e.ok(&["push", &arg(&two), "store"]);
    let b: serde_json::Value =
        serde_json::from_slice(&fs::read(two.join(".coffer/folder.json")).unwrap()).unwrap();
    let dev = b["device"].as_str().unwrap().to_string();
    let key = e.path(&format!("store/log/{dev}/{:016x}", 2));
    let mut bytes = fs::read(&key).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&key, bytes).unwrap();

    let r = e.run(&["sync", &arg(&three), "store"]);
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("cannot be read").count(),
        1,
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(&format!("device {dev}")), "{}", r.stderr);
    for untrue in ["stay pending", "were not written"] {
        assert!(!r.stderr.contains(untrue), "{}", r.stderr);
    }
    assert_eq!(fs::read_to_string(three.join("a.txt")).unwrap(), "a");
    assert_eq!(fs::read_to_string(three.join("b.txt")).unwrap(), "b");
    assert!(!three.join("c.txt").exists());

    e.ok(&["distrust", "store", &dev]);
    let r = e.ok(&["sync", &arg(&three), "store"]);
    assert!(!r.stderr.contains("cannot be read"), "{}", r.stderr);
    assert!(key.exists(), "nothing is deleted");
    e.ok(&["distrust", "store", &dev, "--undo"]);
    assert_eq!(e.run(&["pull", "store", &arg(&three)]).code, Some(3));
}

/// `status DIR` shows the last push's failure, and when one last succeeded.
#[test]
fn status_shows_the_error_of_a_failed_push() {
    let e = env();
    e.ok(&["init", "store"]);
    let dir = e.path("dir");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("a.txt"), "a").unwrap();
    e.ok(&["push", &arg(&dir), "store"]);
    fs::remove_dir_all(e.path("store/log")).unwrap();
    // Found by the next full listing of the logs (DESIGN.md §6b).
    let r = e.run_with_clock("+11m", &["push", &arg(&dir), "store"]);
    assert!(!r.ok(), "{}", r.stderr);
    let s = e.ok(&["status", &arg(&dir)]).stdout;
    let push = s
        .lines()
        .find(|l| l.starts_with("last push:"))
        .unwrap_or_default();
    assert!(
        push.contains("(failed: ") && push.contains("rollback"),
        "{s}"
    );
    assert!(push.contains("; last ok: 2"), "{s}");
}
