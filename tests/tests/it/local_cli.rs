//! The CLI on a local store, end to end.

use crate::{arg, env};
use bytes::Bytes;
use coffer_engine::chunk::chunker::Chunker;
use coffer_engine::crypto::keyring::Keyring;
use coffer_engine::repo::RepoConfig;
use coffer_tests::env::Env;
use coffer_tests::tree::{
    MixedSpec, assert_same_tree, du, files, mixed_tree, overwrite, random_file,
};
use std::collections::HashSet;
use std::fs;

const MIB: u64 = 1024 * 1024;

#[test]
fn a_mixed_tree_round_trips_with_modes_onto_a_fresh_machine() {
    let e = env();
    let src = e.path("src");
    mixed_tree(
        &src,
        MixedSpec {
            small_files: 400,
            big_file: 9 * MIB,
            medium_files: 3,
            seed: 1,
        },
    );
    e.ok(&["init", "store"]);
    e.ok(&["push", "src", "store"]);
    let other = e.machine("b");
    let dst = other.path("dst");
    other.ok(&["pull", &arg(&e.path("store")), &arg(&dst)]);
    assert_same_tree(&src, &dst);
    let again = other.ok(&["pull", &arg(&e.path("store")), &arg(&dst)]);
    assert!(
        again.stderr.contains("0 file(s) written"),
        "{}",
        again.stderr
    );
}

/// The repository's chunker, from the key the CLI left in the keyring.
fn chunker_of(e: &Env) -> Chunker {
    let config: RepoConfig =
        serde_json::from_slice(&fs::read(e.path("store/config")).unwrap()).unwrap();
    let master = Keyring::new(e.home())
        .load(&config.repo_id().unwrap())
        .unwrap()
        .unwrap();
    Chunker::new(config.chunker, master.chain.keys().chunker_seed())
}

/// Cuts `data` as push does, resyncing on the previous version's chunk ends.
fn cut(chunker: &Chunker, data: &[u8], previous: &[Bytes]) -> Vec<Bytes> {
    let ends = previous
        .iter()
        .scan(0u64, |at, c| {
            *at += c.len() as u64;
            Some(*at)
        })
        .collect();
    chunker
        .chunks_resyncing(data, None, ends)
        .map(|c| c.unwrap())
        .collect()
}

/// The bytes in `chunks` that `known` does not have, and the range they span.
fn fresh_range(known: &[Bytes], chunks: &[Bytes]) -> (u64, u64, u64) {
    let known: HashSet<&Bytes> = known.iter().collect();
    let (mut fresh, mut first, mut last, mut at) = (0, u64::MAX, 0, 0u64);
    for chunk in chunks {
        let len = chunk.len() as u64;
        if !known.contains(chunk) {
            fresh += len;
            first = first.min(at);
            last = at + len;
        }
        at += len;
    }
    (fresh, first, last)
}

/// Checks that an edit of `[at, at + len)` made exactly one range of new chunks
/// around it, and that the store grew by those bytes plus pack and commit overhead.
fn assert_edit_cost(known: &[Bytes], chunks: &[Bytes], at: u64, len: u64, added: u64) {
    let (fresh, first, last) = fresh_range(known, chunks);
    assert!(
        first <= at && last >= at + len && last - first == fresh,
        "the new chunks [{first}, {last}) are not one range around the edit"
    );
    assert!(
        added >= fresh && added <= fresh + fresh / 16 + 64 * 1024,
        "the edit added {added} bytes for {fresh} bytes of new chunks"
    );
}

#[test]
fn an_unchanged_push_adds_nothing_and_small_edits_add_little() {
    let e = env();
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = src.join("big.bin");
    random_file(&big, 100 * MIB, 7);
    fs::write(src.join("notes.txt"), "hello\n").unwrap();
    e.ok(&["init", "store"]);
    e.ok(&["push", "src", "store"]);
    let s0 = du(&e.path("store"));
    assert!(s0 > 100 * MIB && s0 < 104 * MIB, "initial store size {s0}");

    let r = e.ok(&["push", "src", "store"]);
    assert!(r.stderr.contains("nothing to push"), "{}", r.stderr);
    assert_eq!(
        du(&e.path("store")),
        s0,
        "a no-change push must upload nothing"
    );

    // 1 MiB overwritten in the middle: only the chunks around it are new (how many
    // bytes that is depends on the key; `engine/examples/edit_cost.rs` measures the
    // distribution), and the store grows by just those.
    let chunker = chunker_of(&e);
    let v1 = cut(&chunker, &fs::read(&big).unwrap(), &[]);
    overwrite(&big, 50 * MIB, MIB as usize, 99);
    let v2 = cut(&chunker, &fs::read(&big).unwrap(), &v1);
    e.ok(&["push", "src", "store"]);
    let s1 = du(&e.path("store"));
    assert_edit_cost(&v1, &v2, 50 * MIB, MIB, s1 - s0);

    // 100 bytes inserted in the middle shift everything after them.
    let mut data = fs::read(&big).unwrap();
    data.splice(30 * MIB as usize..30 * MIB as usize, [42u8; 100]);
    fs::write(&big, &data).unwrap();
    let v3 = cut(&chunker, &data, &v2);
    e.ok(&["push", "src", "store"]);
    let s2 = du(&e.path("store"));
    assert_edit_cost(&v2, &v3, 30 * MIB, 100, s2 - s1);

    let dst = e.path("dst");
    e.ok(&["pull", "store", "dst"]);
    assert_same_tree(&src, &dst);
}

#[test]
fn the_store_holds_no_names_paths_or_plaintext() {
    let e = env();
    let src = e.path("src");
    let secret_dir = src.join("QuarterlyResultsDir");
    fs::create_dir_all(&secret_dir).unwrap();
    let marker = "PLAINTEXT-MARKER-7f3a";
    fs::write(
        secret_dir.join("TopSecretPlan.txt"),
        format!("{marker}\n").repeat(2000),
    )
    .unwrap();
    fs::write(src.join("tiny-SmallName.txt"), marker).unwrap();
    random_file(&src.join("random-BlobName.bin"), 300_000, 3);
    e.ok(&["init", "store"]);
    e.ok(&["push", "src", "store"]);
    let needles = [
        "QuarterlyResultsDir",
        "TopSecretPlan",
        "tiny-SmallName",
        "random-BlobName",
        marker,
    ];
    let mut unkeyed: Vec<String> = files(&src)
        .iter()
        .map(|f| blake3::hash(&fs::read(f).unwrap()).to_hex().to_string())
        .collect();
    unkeyed.extend(files(&src).iter().map(|f| {
        hex::encode(&fs::read(f).unwrap()[..16.min(fs::metadata(f).unwrap().len() as usize)])
    }));
    let store = e.path("store");
    for obj in files(&store) {
        let key = obj
            .strip_prefix(&store)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let bytes = fs::read(&obj).unwrap();
        for n in needles {
            assert!(!key.contains(n), "object key {key} contains {n}");
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "object {key} contains {n}"
            );
        }
        for h in &unkeyed {
            assert!(
                !key.contains(h.as_str()),
                "object key {key} is an unkeyed hash of a file"
            );
        }
    }
}

#[test]
fn a_wrong_passphrase_says_so_and_writes_nothing() {
    let e = env();
    fs::create_dir_all(e.path("src")).unwrap();
    fs::write(e.path("src/a.txt"), "a").unwrap();
    e.ok(&["init", "store"]);
    e.ok(&["push", "src", "store"]);
    let mut other = e.machine("b");
    other.set("COFFER_PASSPHRASE", "not the passphrase");
    let dst = other.path("dst");
    let r = other.fails(&["pull", &arg(&e.path("store")), &arg(&dst)]);
    assert!(r.stderr.contains("wrong passphrase"), "{}", r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.stderr);
    assert!(
        !dst.exists(),
        "pull with a wrong passphrase created its target"
    );
    let fresh = other.path("fresh");
    fs::create_dir_all(&fresh).unwrap();
    other.fails(&["push", &arg(&fresh), &arg(&e.path("store"))]);
    assert!(
        !fresh.join(".coffer").exists(),
        "push with a wrong passphrase bound the folder"
    );
    assert!(
        !other.home().join("keyring").exists()
            || fs::read_dir(other.home().join("keyring"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[test]
fn init_refuses_empty_passphrases_and_existing_repositories() {
    let mut e = env();
    e.ok(&["init", "store"]);
    let r = e.fails(&["init", "store"]);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    e.set("COFFER_PASSPHRASE", "");
    let r = e.fails(&["init", "other"]);
    assert!(r.stderr.contains("empty passphrase"), "{}", r.stderr);
    let r = e.fails(&["init", "--kdf-memory-mib", "8", "weak"]);
    assert!(r.stderr.contains("weaker than the minimum"), "{}", r.stderr);
}

#[test]
fn unusable_stores_fail_in_one_line() {
    let e = env();
    fs::create_dir_all(e.path("empty")).unwrap();
    for (store, expect) in [
        ("empty", "no coffer repository"),
        ("does/not/exist", "does not exist"),
        ("ftp://host/x", "unsupported store URL"),
        ("file://relative", "absolute path"),
    ] {
        let r = e.fails(&["ls", store]);
        assert!(r.stderr.contains(expect), "{store}: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "{store}: {}", r.stderr);
    }
}

#[test]
fn ls_get_and_check_read_the_repository() {
    let e = env();
    let src = e.path("src");
    fs::create_dir_all(src.join("d/e")).unwrap();
    fs::write(src.join("d/e/file.txt"), "content\n").unwrap();
    random_file(&src.join("d/big.bin"), 3 * MIB, 5);
    e.ok(&["init", "store"]);
    e.ok(&["push", "src", "store"]);

    let ls = e.ok(&["ls", "store", "--json"]);
    let lines: Vec<serde_json::Value> = ls
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let paths: Vec<&str> = lines.iter().map(|v| v["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["d", "d/big.bin", "d/e", "d/e/file.txt"]);
    assert_eq!(lines[1]["size"], 3 * MIB);
    assert!(
        e.ok(&["ls", "store", "d/e"])
            .stdout
            .contains("d/e/file.txt")
    );
    assert!(
        e.fails(&["ls", "store", "nope"])
            .stderr
            .contains("not in the repository")
    );

    let out = e.ok(&["get", "store", "d/big.bin", "-"]);
    assert_eq!(out.raw_stdout, fs::read(src.join("d/big.bin")).unwrap());
    e.ok(&["get", "store", "d/e/file.txt"]);
    assert_eq!(fs::read_to_string(e.path("file.txt")).unwrap(), "content\n");
    e.ok(&["get", "store", "d", "restored"]);
    assert_same_tree(&src.join("d"), &e.path("restored"));
    e.ok(&["get", "store", ".", "everything"]);
    assert_same_tree(&src, &e.path("everything"));
    assert!(
        e.fails(&["get", "store", "d/nope"])
            .stderr
            .contains("not in the repository")
    );

    let check = e.ok(&["check", "store", "--read-data", "--json"]);
    let last = check.stdout.lines().last().unwrap();
    let summary: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(summary["type"], "summary");
    let report = &summary["check"];
    assert_eq!(report["errors"].as_array().unwrap().len(), 0);
    assert_eq!(report["packs_verified"], report["packs_referenced"]);
}

#[test]
fn deletes_renames_and_mode_changes_propagate() {
    let e = env();
    let src = e.path("src");
    fs::create_dir_all(src.join("keep/sub")).unwrap();
    fs::write(src.join("keep/a.txt"), "a").unwrap();
    fs::write(src.join("keep/sub/b.txt"), "b").unwrap();
    fs::write(src.join("gone.txt"), "gone").unwrap();
    e.ok(&["init", "store"]);
    e.ok(&["push", "src", "store"]);
    e.ok(&["pull", "store", "dst"]);
    fs::remove_file(src.join("gone.txt")).unwrap();
    fs::rename(src.join("keep/sub"), src.join("moved")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(src.join("keep/a.txt"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(src.join("new-empty")).unwrap();
    e.ok(&["push", "src", "store"]);
    e.ok(&["pull", "store", "dst"]);
    assert_same_tree(&src, &e.path("dst"));
}
