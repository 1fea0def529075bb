//! KMS key slots (issue 20, item 2) against a real KMS API: the moto server
//! that `scripts/moto up` starts, reached directly or through the fault proxy
//! (which counts the requests, and answers refusals moto would not give).

use crate::{arg, env};
use coffer_tests::env::{Env, PASSPHRASE};
use coffer_tests::kms::{KmsEnv, TestKey};
use coffer_tests::proxy::{FaultProxy, Faults};
use coffer_tests::s3::S3Env;
use coffer_tests::tree::assert_same_tree;
use std::fs;
use std::time::{Duration, Instant};

/// A sandbox with no passphrase, reaching KMS at `endpoint`.
fn machine_at(kms: &KmsEnv, endpoint: &str) -> Env {
    let mut e = env();
    e.unset("COFFER_PASSPHRASE");
    kms.configure(&mut e, endpoint);
    e
}

/// Another machine of `e`'s sandbox (empty keyring, no passphrase) reaching KMS
/// at `endpoint`.
fn vm(e: &Env, kms: &KmsEnv, name: &str, endpoint: &str) -> Env {
    let mut m = e.machine(name);
    m.unset("COFFER_PASSPHRASE");
    kms.configure(&mut m, endpoint);
    m
}

/// The KMS requests of one action the proxy saw (`Decrypt`, `Encrypt`).
fn requests(proxy: &FaultProxy, action: &str) -> usize {
    let target = format!("TrentService.{action}");
    proxy
        .log()
        .iter()
        .filter(|r| {
            r.headers
                .iter()
                .any(|(k, v)| k == "x-amz-target" && v == &target)
        })
        .count()
}

fn one_line_error(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0]
}

fn keyring_files(e: &Env) -> usize {
    fs::read_dir(e.home().join("keyring")).map_or(0, |d| d.count())
}

/// A KMS-only repository in `e`'s `store` with `src/a.txt` pushed.
fn kms_repository(e: &Env, key: &TestKey) -> String {
    let r = e.ok(&["init", "store", "--kms", &key.alias]);
    assert!(!r.stderr.contains("passphrase"), "{}", r.stderr);
    fs::create_dir_all(e.path("src")).unwrap();
    fs::write(e.path("src/a.txt"), "alpha\n").unwrap();
    e.ok(&["push", "src", "store"]);
    arg(&e.path("store"))
}

#[test]
fn a_vm_pushes_and_pulls_a_kms_only_repository_with_one_kms_call() {
    let kms = KmsEnv::from_env();
    let key = kms.create_key("vm");
    let proxy = FaultProxy::start(&kms.endpoint, Faults::default(), 1);
    let e = machine_at(&kms, &proxy.url());
    let store = kms_repository(&e, &key);
    assert_eq!(requests(&proxy, "Encrypt"), 1);
    assert_eq!(
        requests(&proxy, "Decrypt"),
        0,
        "init keeps the key in the keyring"
    );

    let list = e.ok(&["key", "list", &store]);
    assert!(list.stdout.contains(" kms "), "{}", list.stdout);
    assert!(list.stdout.contains(&key.alias), "{}", list.stdout);
    let json = e.ok(&["key", "list", &store, "--json"]);
    let slot: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(slot["kind"], "kms");
    assert_eq!(slot["key_id"], key.alias.as_str());
    assert_eq!(slot["usable"], true);

    // A VM: no passphrase, no terminal, nothing in its keyring.
    let m = vm(&e, &kms, "vm", &proxy.url());
    let dst = m.path("dst");
    m.ok(&["pull", &store, &arg(&dst)]);
    assert_same_tree(&e.path("src"), &dst);
    assert_eq!(
        requests(&proxy, "Decrypt"),
        1,
        "one KMS call for the first start"
    );
    fs::write(dst.join("b.txt"), "beta\n").unwrap();
    m.ok(&["push", &arg(&dst), &store]);
    assert_eq!(
        requests(&proxy, "Decrypt"),
        1,
        "later starts use the keyring"
    );
    assert_eq!(keyring_files(&m), 1);
    e.ok(&["pull", &store, "src"]);
    assert_eq!(fs::read_to_string(e.path("src/b.txt")).unwrap(), "beta\n");

    // --no-keyring: asks KMS at every start (once), and never saves the key.
    let n = vm(&e, &kms, "no-keyring", &proxy.url());
    let ndst = n.path("dst");
    n.ok(&["--no-keyring", "pull", &store, &arg(&ndst)]);
    assert_eq!(requests(&proxy, "Decrypt"), 2);
    n.ok(&["--no-keyring", "push", &arg(&ndst), &store]);
    assert_eq!(requests(&proxy, "Decrypt"), 3);
    assert_same_tree(&dst, &ndst);
    assert_eq!(keyring_files(&n), 0, "--no-keyring saved a key");
    assert!(!n.home().join("keyring").exists());
}

#[test]
fn kms_unreachable_is_one_clear_line_within_the_request_budget() {
    let kms = KmsEnv::from_env();
    let key = kms.create_key("gone");
    let e = machine_at(&kms, &kms.endpoint);
    let store = kms_repository(&e, &key);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let m = vm(&e, &kms, "vm", &closed);
    let t = Instant::now();
    let r = m.fails(&["--request-budget", "5", "ls", &store]);
    let took = t.elapsed();
    let line = one_line_error(&r.stderr);
    assert!(
        line.contains(&format!("KMS Decrypt with key {} failed", key.alias)),
        "{line}"
    );
    // Refused connections, retried within the budget (or its timeout).
    assert!(line.contains(&format!("KMS at {closed}")), "{line}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(keyring_files(&m), 0);
}

#[test]
fn kms_refusals_name_the_key_and_the_passphrase_slot_is_tried_next() {
    let kms = KmsEnv::from_env();
    let key = kms.create_key("denied");
    let proxy = FaultProxy::start(&kms.endpoint, Faults::default(), 2);
    let mut e = machine_at(&kms, &proxy.url());
    let store = kms_repository(&e, &key);
    fs::write(e.path("new-pw"), format!("{PASSPHRASE}\n")).unwrap();
    e.ok(&["key", "add", &store, "--new-passphrase-file", "new-pw"]);
    e.set("COFFER_PASSPHRASE", PASSPHRASE);

    for (exception, message) in [
        (
            "AccessDeniedException",
            "User is not authorized to perform kms:Decrypt",
        ),
        ("DisabledException", "The key is disabled."),
    ] {
        let body = format!(r#"{{"__type":"{exception}","message":"{message}"}}"#);
        proxy.set_faults(Faults {
            answer: Some((400, body)),
            ..Faults::default()
        });
        let said = format!(
            "KMS Decrypt with key {} denied: {exception}: {message}",
            key.alias
        );
        let before = requests(&proxy, "Decrypt");

        // No passphrase slot can be tried without a passphrase: the refusal,
        // then why the passphrase slots could not be tried.
        let m = vm(&e, &kms, exception, &proxy.url());
        let r = m.fails(&["ls", &store]);
        assert!(r.stderr.contains(&said), "{}", r.stderr);
        assert!(r.stderr.contains("a passphrase is needed"), "{}", r.stderr);
        let mut wrong = vm(&e, &kms, &format!("{exception}-wrong"), &proxy.url());
        wrong.set("COFFER_PASSPHRASE", "not it");
        let r = wrong.fails(&["ls", &store]);
        assert!(r.stderr.contains("wrong passphrase"), "{}", r.stderr);

        // The right passphrase opens it, after the refusal is told.
        let mut right = vm(&e, &kms, &format!("{exception}-right"), &proxy.url());
        right.set("COFFER_PASSPHRASE", PASSPHRASE);
        let r = right.ok(&["ls", &store]);
        assert!(r.stdout.contains("a.txt"), "{}", r.stdout);
        assert!(r.stderr.contains(&said), "{}", r.stderr);
        assert_eq!(
            requests(&proxy, "Decrypt") - before,
            3,
            "one KMS call per start"
        );
    }
}

#[test]
fn a_kms_refusal_is_the_one_line_error_of_a_kms_only_repository() {
    let kms = KmsEnv::from_env();
    let only = kms.create_key("denied-only");
    let proxy = FaultProxy::start(&kms.endpoint, Faults::default(), 3);
    let o = machine_at(&kms, &proxy.url());
    let store = kms_repository(&o, &only);
    let body = r#"{"__type":"AccessDeniedException","message":"no"}"#;
    proxy.set_faults(Faults {
        answer: Some((400, body.into())),
        ..Faults::default()
    });
    let m = vm(&o, &kms, "only", &proxy.url());
    let r = m.fails(&["pull", &store, &arg(&m.path("dst"))]);
    let line = one_line_error(&r.stderr);
    let said = format!(
        "KMS Decrypt with key {} denied: AccessDeniedException: no",
        only.alias
    );
    assert!(line.contains(&said), "{line}");
    assert!(!m.path("dst").exists(), "pull created its target");

    // init --kms refused: one line, and no store left behind.
    let r = m.fails(&["init", "store3", "--kms", &only.alias]);
    let line = one_line_error(&r.stderr);
    let said = format!(
        "KMS Encrypt with key {} denied: AccessDeniedException: no",
        only.alias
    );
    assert!(line.contains(&said), "{line}");
    assert!(!m.path("store3").exists(), "init left a store");
}

/// The one slot object of a repository's `keys/` directory.
fn only_slot(store: &std::path::Path) -> std::path::PathBuf {
    let slots: Vec<_> = fs::read_dir(store.join("keys"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(slots.len(), 1, "{slots:?}");
    slots[0].clone()
}

#[test]
fn a_wrapped_key_moved_to_another_slot_id_or_repository_does_not_open() {
    let kms = KmsEnv::from_env();
    let key = kms.create_key("moved");
    let e = machine_at(&kms, &kms.endpoint);
    let store = kms_repository(&e, &key);

    // Another slot id in the same repository.
    let slot = only_slot(&e.path("store"));
    let moved = slot.with_file_name("0123456789abcdef0123456789abcdef");
    fs::rename(&slot, &moved).unwrap();
    let m = vm(&e, &kms, "moved", &kms.endpoint);
    let r = m.fails(&["ls", &store]);
    let line = one_line_error(&r.stderr);
    assert!(line.contains("KMS Decrypt with key"), "{line}");
    assert!(line.contains("InvalidCiphertextException"), "{line}");
    fs::rename(&moved, &slot).unwrap();
    let back = vm(&e, &kms, "back", &kms.endpoint);
    back.ok(&["ls", &store]);

    // The same slot id in another repository (same KMS key).
    let mut other = e.machine("other");
    other.ok(&["init", "store2", "--kms", &key.alias]);
    let theirs = only_slot(&other.path("store2"));
    fs::remove_file(&theirs).unwrap();
    fs::copy(&slot, theirs.with_file_name(slot.file_name().unwrap())).unwrap();
    other.set("COFFER_NO_KEYRING", "1");
    let r = other.fails(&["ls", &arg(&other.path("store2"))]);
    let line = one_line_error(&r.stderr);
    assert!(line.contains("InvalidCiphertextException"), "{line}");
}

#[test]
fn a_kms_repository_on_garage_reaches_kms_at_its_own_endpoint() {
    let kms = KmsEnv::from_env();
    let s3 = S3Env::from_env();
    let key = kms.create_key("garage");
    let bucket = S3Env::unique_bucket("kms");
    let mut e = machine_at(&kms, &kms.endpoint);
    s3.configure(&mut e, &s3.endpoint);
    let s3_store = format!("s3://{bucket}");
    // The ARN carries KMS's region; the store keeps Garage's.
    let mut admin = e.machine("admin");
    admin.set("COFFER_PASSPHRASE", PASSPHRASE);
    admin.ok(&["create", &bucket]);
    admin.ok(&["key", "add", &s3_store, "--kms", &key.arn]);
    fs::create_dir_all(admin.path("src")).unwrap();
    fs::write(admin.path("src/a.txt"), "on garage\n").unwrap();
    admin.ok(&["push", &arg(&admin.path("src")), &s3_store]);

    let m = e.machine("vm");
    let dst = m.path("dst");
    m.ok(&["pull", &s3_store, &arg(&dst)]);
    assert_same_tree(&admin.path("src"), &dst);
}

/// Polls `cond` every 100 ms for up to 30 s.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: not within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_vm_watches_a_kms_only_repository_asking_kms_once_for_its_whole_run() {
    let kms = KmsEnv::from_env();
    let key = kms.create_key("watch");
    let proxy = FaultProxy::start(&kms.endpoint, Faults::default(), 4);
    let e = machine_at(&kms, &proxy.url());
    let store = kms_repository(&e, &key);
    let mut m = vm(&e, &kms, "vm", &proxy.url());
    m.set("COFFER_NO_KEYRING", "1");
    let dst = m.path("dst");
    fs::create_dir_all(&dst).unwrap();

    let child = crate::watch_cli::daemon_on(&m, &dst, &store, 1);
    eventually("the daemon pulls a.txt", || dst.join("a.txt").exists());
    fs::write(dst.join("w.txt"), "from the watcher\n").unwrap();
    eventually("the daemon pushes w.txt", || {
        e.ok(&["pull", &store, "src"]);
        e.path("src/w.txt").exists()
    });
    let stderr = crate::watch_cli::stop(child);
    assert!(!stderr.contains("passphrase"), "{stderr}");
    assert_eq!(
        requests(&proxy, "Decrypt"),
        1,
        "one KMS call for the daemon's run"
    );
    assert_eq!(keyring_files(&m), 0, "--no-keyring saved a key");
}

/// Key rotation with KMS slots (issue 20, item 4): a VM with only KMS and no
/// keyring follows a rotation by itself, still with one `Decrypt` per process.
/// (moto lets every caller use every key, so what a removed KMS slot's holder
/// can read is checked with passphrase slots, in `keys_rotate.rs`.)
#[test]
fn a_kms_vm_follows_a_rotation_with_one_decrypt_per_process() {
    let kms = KmsEnv::from_env();
    let (kept, gone) = (kms.create_key("rot-kept"), kms.create_key("rot-gone"));
    let proxy = FaultProxy::start(&kms.endpoint, Faults::default(), 3);
    let e = machine_at(&kms, &proxy.url());
    let store = kms_repository(&e, &kept);
    let added = e.ok(&["key", "add", &store, "--kms", &gone.alias]);
    let gone_slot = added.stdout.trim().to_string();
    let mut vm = vm(&e, &kms, "vm", &proxy.url());
    vm.set("COFFER_NO_KEYRING", "1");
    let dst = vm.path("dst");
    vm.ok(&["pull", &store, &arg(&dst)]);

    let r = e.ok(&["key", "rotate", &store, "--remove", &gone_slot]);
    assert_eq!(r.stdout.trim(), "1", "{}", r.stderr);
    fs::write(e.path("src/b.txt"), "after\n").unwrap();
    e.ok(&["push", "src", "store"]);

    let before = requests(&proxy, "Decrypt");
    vm.ok(&["pull", &store, &arg(&dst)]);
    assert_eq!(
        requests(&proxy, "Decrypt") - before,
        1,
        "one Decrypt per process"
    );
    assert_same_tree(&e.path("src"), &dst);
    assert_eq!(keyring_files(&vm), 0);

    let list = e.ok(&["key", "list", &store, "--json"]);
    assert!(!list.stdout.contains(&gone_slot), "{}", list.stdout);
}
