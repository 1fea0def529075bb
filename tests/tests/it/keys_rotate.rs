//! Key rotation through the CLI (issue 20, item 4): a removed slot and a saved
//! keyring read nothing written after `coffer key rotate`, history on both
//! sides restores identically, a device that slept through the rotation
//! writes under the new epoch, and kill -9 in the middle of a rotation on
//! Garage leaves a repository every device opens and `check --read-data`
//! accepts.

use crate::{arg, env};
use coffer_engine::crypto::MasterKey;
use coffer_engine::crypto::epoch::{EpochName, nonce_tag};
use coffer_tests::env::{Env, PASSPHRASE};
use coffer_tests::proxy::{FaultProxy, Faults};
use coffer_tests::s3::S3Env;
use coffer_tests::tree::assert_same_tree;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PARTNER: &str = "the partner's own passphrase";

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0]
}

/// The keys of the newest epoch in a keyring file of `home`.
fn newest_epoch_key(home: &Path) -> (EpochName, MasterKey) {
    let dir = home.join("keyring");
    let file = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let json: serde_json::Value = serde_json::from_slice(&fs::read(file).unwrap()).unwrap();
    let epochs = json["epochs"].as_array().unwrap();
    let (name, key) = epochs
        .iter()
        .map(|e| {
            let name = EpochName::parse(e[0].as_str().unwrap()).unwrap();
            let key = hex::decode(e[1].as_str().unwrap()).unwrap();
            (name, MasterKey::from_bytes(key.try_into().unwrap()))
        })
        .max_by_key(|(n, _)| *n)
        .unwrap();
    (name, key)
}

/// The sealed bytes of the newest commit of the device bound to `dir`.
fn newest_commit_of(store: &Path, dir: &Path) -> Vec<u8> {
    let binding: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(".coffer/folder.json")).unwrap()).unwrap();
    let log = store.join("log").join(binding["device"].as_str().unwrap());
    let newest = fs::read_dir(&log)
        .unwrap()
        .map(|d| d.unwrap().path())
        .max()
        .unwrap();
    fs::read(newest).unwrap()
}

/// Another machine of `e` holding a copy of `from`'s keyring and no passphrase.
fn keyring_copy(e: &Env, from: &Env, name: &str) -> Env {
    let mut to = e.machine(name);
    to.unset("COFFER_PASSPHRASE");
    fs::create_dir_all(to.home().join("keyring")).unwrap();
    for f in fs::read_dir(from.home().join("keyring")).unwrap() {
        let f = f.unwrap();
        fs::copy(f.path(), to.home().join("keyring").join(f.file_name())).unwrap();
    }
    to
}

/// After the rotation that removed the partner's slot: its saved keyring, its
/// own machine and its passphrase all fail with one clear line, writing nothing.
fn locked_out(e: &Env, store: &str, (partner, thief): (&Env, &Env)) {
    fs::create_dir_all(thief.path("out")).unwrap();
    let out = thief.path("out/b.txt");
    let r = thief.fails(&["get", store, "b.txt", &arg(&out)]);
    assert!(
        one_line(&r.stderr).contains("no key for the repository's current key epoch"),
        "{}",
        r.stderr
    );
    assert!(!out.exists());
    let pdst = partner.path("dst");
    let r = partner.fails(&["pull", store, &arg(&pdst)]);
    assert!(r.stderr.contains("current key epoch"), "{}", r.stderr);
    assert_eq!(fs::read_to_string(pdst.join("a.txt")).unwrap(), "v1\n");
    assert!(!pdst.join("b.txt").exists());
    let mut fresh = e.machine("fresh-partner");
    fresh.set("COFFER_PASSPHRASE", PARTNER);
    let r = fresh.fails(&["ls", store]);
    assert!(r.stderr.contains("wrong passphrase"), "{}", r.stderr);
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_removed_slot_and_a_saved_keyring_read_nothing_written_after_the_rotation() {
    let e = env();
    e.ok(&["init", "store"]);
    let store = arg(&e.path("store"));
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), "v1\n").unwrap();
    e.ok(&["push", "src", "store"]);
    fs::write(e.path("partner.pass"), PARTNER).unwrap();
    let added = e.ok(&[
        "key",
        "add",
        "store",
        "--new-passphrase-file",
        "partner.pass",
    ]);
    let partner_slot = added.stdout.trim().to_string();

    // The partner and a laptop sync before the rotation; a thief copies the
    // partner's keyring.
    let mut partner = e.machine("partner");
    partner.set("COFFER_PASSPHRASE", PARTNER);
    let pdst = partner.path("dst");
    partner.ok(&["pull", &store, &arg(&pdst)]);
    let thief = keyring_copy(&e, &partner, "thief");
    let laptop = e.machine("laptop");
    let ldst = laptop.path("dst");
    laptop.ok(&["pull", &store, &arg(&ldst)]);
    std::thread::sleep(Duration::from_millis(1100));
    let before = unix_secs();
    std::thread::sleep(Duration::from_millis(1100));

    let r = e.ok(&["key", "rotate", "store", "--remove", &partner_slot[..8]]);
    assert_eq!(r.stdout.trim(), "1", "{}", r.stderr);
    assert!(r.stderr.contains("removed"), "{}", r.stderr);
    fs::write(src.join("a.txt"), "v2\n").unwrap();
    fs::write(src.join("b.txt"), "after the rotation\n").unwrap();
    e.ok(&["push", "src", "store"]);

    locked_out(&e, &store, (&partner, &thief));

    // The laptop slept through the rotation: its next push writes under the
    // new epoch, which it picked up by itself.
    fs::write(ldst.join("c.txt"), "from the laptop\n").unwrap();
    laptop.ok(&["sync", &arg(&ldst), &store]);
    let (epoch, key) = newest_epoch_key(e.home());
    assert_eq!(epoch.level, 1);
    let sealed = newest_commit_of(&e.path("store"), &ldst);
    assert_eq!(sealed[..8], nonce_tag(&key), "sealed under epoch 1");
    assert_eq!(
        fs::read_to_string(ldst.join("b.txt")).unwrap(),
        "after the rotation\n"
    );

    // History on both sides, on a new machine with the owner's passphrase.
    let owner = e.machine("owner-vm");
    let dst = owner.path("dst");
    owner.ok(&["pull", &store, &arg(&dst)]);
    e.ok(&["pull", "store", "src"]);
    assert_same_tree(&src, &dst);
    let old = owner.path("old");
    owner.ok(&[
        "restore",
        &store,
        ".",
        "--at",
        &format!("@{before}"),
        "--to",
        &arg(&old),
    ]);
    assert_eq!(fs::read_to_string(old.join("a.txt")).unwrap(), "v1\n");
    assert!(!old.join("b.txt").exists());
    owner.ok(&["check", &store, "--read-data"]);
}

/// A copy of the engine's `slot-v2` fixture: a repository (config and one
/// version-2 passphrase slot) made before key epochs.
fn pre_epoch_repository(e: &Env) -> String {
    const FIXTURE_PASSPHRASE: &str = "coffer-slot-v2-fixture";
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/it/fixtures/slot-v2");
    let store = e.path("old-store");
    fs::create_dir_all(store.join("keys")).unwrap();
    fs::copy(fixture.join("config"), store.join("config")).unwrap();
    for f in fs::read_dir(fixture.join("keys")).unwrap() {
        let f = f.unwrap();
        fs::copy(f.path(), store.join("keys").join(f.file_name())).unwrap();
    }
    fs::write(e.path("fixture.pass"), FIXTURE_PASSPHRASE).unwrap();
    arg(&store)
}

#[test]
fn a_repository_made_before_key_epochs_rotates_with_its_passphrase() {
    let e = env();
    let store = pre_epoch_repository(&e);
    let pass_file = arg(&e.path("fixture.pass"));
    let pass = ["--passphrase-file", pass_file.as_str()];
    fs::create_dir_all(e.path("src")).unwrap();
    fs::write(e.path("src/a.txt"), "before\n").unwrap();
    e.ok(&[&pass[..], &["push", "src", &store]].concat());
    fs::write(e.path("wrong.pass"), "not it").unwrap();
    let wrong = arg(&e.path("wrong.pass"));
    let r = e.fails(&["--passphrase-file", &wrong, "key", "rotate", &store]);
    assert!(
        one_line(&r.stderr).contains("cannot receive the new key without its passphrase"),
        "{}",
        r.stderr
    );
    let r = e.ok(&[&pass[..], &["key", "rotate", &store]].concat());
    assert!(r.stderr.contains("carried over"), "{}", r.stderr);
    let list = e.ok(&["key", "list", &store, "--json"]);
    assert!(list.stdout.contains("\"version\":3"), "{}", list.stdout);
    assert_eq!(list.stdout.lines().count(), 1, "{}", list.stdout);
    fs::write(e.path("src/b.txt"), "after\n").unwrap();
    e.ok(&["push", "src", &store]);
    let vm = e.machine("vm");
    let dst = vm.path("dst");
    vm.ok(&[&pass[..], &["pull", &store, &arg(&dst)]].concat());
    assert_same_tree(&e.path("src"), &dst);
    vm.ok(&["check", &store, "--read-data"]);
}

/// Runs `key rotate` through `proxy` holding every PUT whose path contains
/// `hold`, and kills it (-9) there.
fn kill_rotation_at(e: &Env, args: &[&str], proxy: &FaultProxy, hold: &str) {
    let held = || proxy.injected().get("hold").copied().unwrap_or(0);
    let before = held();
    proxy.set_faults(Faults {
        hold_put: Some(hold.into()),
        ..Faults::default()
    });
    let mut child = e
        .cmd()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while held() == before {
        assert!(
            Instant::now() < deadline,
            "the rotation never reached {hold}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the rotation ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.set_faults(Faults::default());
}

#[test]
fn kill_9_during_a_rotation_on_garage_is_harmless_and_a_rerun_finishes() {
    let s3 = S3Env::from_env();
    let proxy = FaultProxy::start(&s3.endpoint, Faults::default(), 20);
    let mut e = env();
    s3.configure(&mut e, &proxy.url());
    let bucket = S3Env::unique_bucket("rotate-kill");
    e.ok(&["create", &bucket]);
    let src = e.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("a.txt"), "alpha\n").unwrap();
    fs::write(src.join("d/b.bin"), vec![7u8; 300_000]).unwrap();
    e.ok(&["push", "src", &bucket]);

    for (round, hold) in ["/grants/", "/epochs/"].iter().enumerate() {
        kill_rotation_at(&e, &["key", "rotate", &bucket], &proxy, hold);
        // Every device still opens it, `check --read-data` accepts it, and the
        // owner keeps syncing.
        e.ok(&["check", &bucket, "--read-data"]);
        let mut vm = e.machine(&format!("vm{round}"));
        s3.configure(&mut vm, &s3.endpoint);
        let dst = vm.path("dst");
        vm.ok(&["pull", &bucket, &arg(&dst)]);
        fs::write(src.join(format!("r{round}.txt")), "more\n").unwrap();
        e.ok(&["push", "src", &bucket]);
    }
    let r = e.ok(&["key", "rotate", &bucket]);
    assert_eq!(r.stdout.trim(), "1", "{}", r.stderr);
    fs::write(src.join("last.txt"), "under epoch 1\n").unwrap();
    e.ok(&["push", "src", &bucket]);
    let mut vm = e.machine("last");
    s3.configure(&mut vm, &s3.endpoint);
    vm.set("COFFER_PASSPHRASE", PASSPHRASE);
    let dst = vm.path("dst");
    vm.ok(&["pull", &bucket, &arg(&dst)]);
    assert_same_tree(&src, &dst);
    vm.ok(&["check", &bucket, "--read-data"]);

    // --reencrypt killed while it rewrites a pack: every pack is whole (old or
    // new), everything opens; --reencrypt-only finishes the job.
    kill_rotation_at(
        &e,
        &["key", "rotate", "--reencrypt", &bucket],
        &proxy,
        "/data/",
    );
    e.ok(&["check", &bucket, "--read-data"]);
    vm.ok(&["pull", &bucket, &arg(&dst)]);
    let r = e.ok(&["key", "rotate", "--reencrypt-only", &bucket]);
    assert!(r.stderr.contains("again under epoch 2"), "{}", r.stderr);
    let r = e.ok(&["key", "rotate", "--reencrypt-only", &bucket]);
    assert!(r.stderr.contains("sealed 0 pack(s)"), "{}", r.stderr);
    vm.ok(&["check", &bucket, "--read-data"]);
    let fresh = vm.path("fresh");
    vm.ok(&["pull", &bucket, &arg(&fresh)]);
    assert_same_tree(&src, &fresh);
}
