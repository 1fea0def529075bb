//! Keys through the CLI (issue 20, items 1 and 3): passphrases and SSE-C keys
//! from a command, and the passphrase slots managed by `coffer key`.

use crate::{arg, env};
use coffer_tests::env::{Env, PASSPHRASE};
use coffer_tests::tree::assert_same_tree;
use std::fs;

const VAULT: &str = "printf '%s\\n' 'from the vault' 'second line'";

/// A sandbox whose commands get no `COFFER_PASSPHRASE`.
fn bare() -> Env {
    let mut e = env();
    e.unset("COFFER_PASSPHRASE");
    e
}

fn one_line_error(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0]
}

#[test]
fn a_passphrase_from_a_command_inits_and_another_machine_pulls_with_it() {
    let e = bare();
    e.ok(&["--passphrase-command", VAULT, "init", "store"]);
    fs::create_dir_all(e.path("src")).unwrap();
    fs::write(e.path("src/a.txt"), "alpha\n").unwrap();
    e.ok(&["--passphrase-command", VAULT, "push", "src", "store"]);
    let store = arg(&e.path("store"));

    // Only the first line is the passphrase: the second does not open it.
    let mut wrong = e.machine("wrong");
    wrong.set("COFFER_PASSPHRASE", "second line");
    let r = wrong.fails(&["pull", &store, &arg(&wrong.path("dst"))]);
    assert!(r.stderr.contains("wrong passphrase"), "{}", r.stderr);

    // The command wins over COFFER_PASSPHRASE (set, and wrong, here).
    let mut b = e.machine("b");
    b.set("COFFER_PASSPHRASE", PASSPHRASE);
    b.set("COFFER_PASSPHRASE_COMMAND", VAULT);
    let dst = b.path("dst");
    b.ok(&["pull", &store, &arg(&dst)]);
    assert_same_tree(&e.path("src"), &dst);
    fs::write(dst.join("b.txt"), "beta\n").unwrap();
    b.ok(&["push", &arg(&dst), &store]);
    e.ok(&["--passphrase-command", VAULT, "pull", &store, "src"]);
    assert_eq!(fs::read_to_string(e.path("src/b.txt")).unwrap(), "beta\n");
}

#[test]
fn a_failing_passphrase_command_is_one_line_with_its_code_and_stderr() {
    let e = bare();
    let fail = "echo starting >&2; echo 'vault: permission denied' >&2; echo pw; exit 7";
    let r = e.fails(&["--passphrase-command", fail, "init", "store"]);
    let line = one_line_error(&r.stderr);
    assert!(
        line.contains("--passphrase-command exited with code 7"),
        "{line}"
    );
    assert!(line.ends_with("vault: permission denied"), "{line}");
    assert!(!e.path("store").exists(), "init wrote a store");

    e.ok(&["--passphrase-command", VAULT, "init", "store"]);
    let m = e.machine("m");
    let dst = m.path("dst");
    let store = arg(&e.path("store"));
    let r = m.fails(&["--passphrase-command", fail, "pull", &store, &arg(&dst)]);
    let line = one_line_error(&r.stderr);
    assert!(line.contains("exited with code 7"), "{line}");
    assert!(line.ends_with("vault: permission denied"), "{line}");
    assert!(!dst.exists(), "pull created its target");
    assert!(!m.home().join("keyring").exists(), "a key was stored");

    let r = m.fails(&["--passphrase-command", "kill -TERM $$", "ls", &store]);
    assert!(
        one_line_error(&r.stderr).contains("killed by signal 15"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_empty_passphrase_from_a_command_is_refused() {
    let e = bare();
    for cmd in ["true", "printf '\\nsecond line\\n'"] {
        let r = e.fails(&["--passphrase-command", cmd, "init", "store"]);
        let line = one_line_error(&r.stderr);
        assert!(line.contains("printed no passphrase"), "{line}");
        assert!(!e.path("store").exists());
    }
    fs::write(e.path("pw"), "from a file\n").unwrap();
    let r = e.fails(&[
        "--passphrase-file",
        "pw",
        "--passphrase-command",
        VAULT,
        "init",
        "store",
    ]);
    assert!(
        one_line_error(&r.stderr)
            .contains("choose one of --passphrase-file and --passphrase-command"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_sse_c_key_from_a_command_is_checked_before_any_request() {
    let e = env();
    // No server listens on port 9: the key is refused before any request.
    let bad = [
        ("echo 'no key here' >&2; exit 4", "exited with code 4"),
        ("printf tooshort", "--sse-c-key-command printed a bad key"),
    ];
    for (cmd, expected) in bad {
        let r = e.fails(&[
            "--endpoint",
            "http://127.0.0.1:9",
            "--sse-c-key-command",
            cmd,
            "ls",
            "s3://some-bucket",
        ]);
        let line = one_line_error(&r.stderr);
        assert!(line.contains(expected), "{line}");
    }
    fs::write(e.path("k"), "00".repeat(32)).unwrap();
    let r = e.fails(&[
        "--sse-c-key-file",
        "k",
        "--sse-c-key-command",
        "cat k",
        "ls",
        "s3://some-bucket",
    ]);
    assert!(
        one_line_error(&r.stderr)
            .contains("choose one of --sse-c-key-file and --sse-c-key-command"),
        "{}",
        r.stderr
    );
}

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_millis() as u64
}

/// This machine's host name, as a slot records it.
fn host() -> String {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    name.trim().to_string()
}

/// `coffer key list STORE --json`, parsed: one object per line.
fn slots(e: &Env, store: &str) -> Vec<serde_json::Value> {
    let r = e.ok(&["key", "list", store, "--json"]);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn slot_ids(e: &Env, store: &str) -> Vec<String> {
    let listed = slots(e, store);
    listed
        .iter()
        .map(|s| s["slot"].as_str().unwrap().to_string())
        .collect()
}

/// `coffer ls STORE` on a fresh machine with `passphrase`.
fn opens_with(e: &Env, name: &str, passphrase: &str, store: &str) -> Result<(), String> {
    let mut m = e.machine(name);
    m.set("COFFER_PASSPHRASE", passphrase);
    let r = m.run(&["ls", store]);
    match r.ok() {
        true => Ok(()),
        false => Err(one_line_error(&r.stderr).to_string()),
    }
}

#[test]
fn after_key_add_remove_and_passwd_only_the_new_passphrase_opens() {
    let e = env();
    e.ok(&["init", "store"]);
    fs::create_dir_all(e.path("src")).unwrap();
    fs::write(e.path("src/a.txt"), "alpha\n").unwrap();
    e.ok(&["push", "src", "store"]);
    let store = arg(&e.path("store"));
    let listed = slots(&e, &store);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["kind"], "passphrase");
    assert_eq!(listed[0]["usable"], true);
    assert_eq!(listed[0]["kdf"]["m_cost_kib"], 19 * 1024);
    // A new slot records when and on which host it was made.
    let created = listed[0]["created_ms"].as_u64().unwrap();
    assert!(created.abs_diff(now_ms()) < 600_000, "{created}");
    assert_eq!(listed[0]["created_by"], host());
    assert!(listed[0]["created"].as_str().unwrap().ends_with('Z'));
    let first = listed[0]["slot"].as_str().unwrap().to_string();

    fs::write(e.path("second.pw"), "second passphrase\n").unwrap();
    let r = e.ok(&["key", "add", &store, "--new-passphrase-file", "second.pw"]);
    let second = r.stdout.trim().to_string();
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert_eq!(slot_ids(&e, &store), both);
    opens_with(&e, "second", "second passphrase", &store).unwrap();
    opens_with(&e, "first", PASSPHRASE, &store).unwrap();

    // By a unique prefix, as `key list` shows ids.
    e.ok(&["key", "remove", &store, &first[..10]]);
    assert_eq!(slot_ids(&e, &store), [second.as_str()]);
    let err = opens_with(&e, "first-again", PASSPHRASE, &store).unwrap_err();
    assert!(err.contains("wrong passphrase"), "{err}");

    // passwd proves the old passphrase even though the keyring holds the key.
    let new = ["--new-passphrase-command", "echo 'third passphrase'"];
    let r = e.fails(&["key", "passwd", &store, new[0], new[1]]);
    assert!(
        one_line_error(&r.stderr).contains("wrong passphrase"),
        "{}",
        r.stderr
    );
    assert_eq!(
        slot_ids(&e, &store),
        [second.as_str()],
        "a failed passwd changed slots"
    );

    let old = ["--passphrase-file", "second.pw"];
    let r = e.ok(&[old[0], old[1], "key", "passwd", &store, new[0], new[1]]);
    let third = r.stdout.trim().to_string();
    assert_eq!(slot_ids(&e, &store), [third]);
    let err = opens_with(&e, "second-again", "second passphrase", &store).unwrap_err();
    assert!(err.contains("wrong passphrase"), "{err}");
    let mut m = e.machine("third");
    m.set("COFFER_PASSPHRASE", "third passphrase");
    m.ok(&["pull", &store, &arg(&m.path("dst"))]);
    assert_same_tree(&e.path("src"), &m.path("dst"));
    // This machine's keyring still opens: the master key did not change.
    e.ok(&["ls", &store]);
}

#[test]
fn removing_the_last_usable_slot_is_refused_and_names_the_slots() {
    let e = env();
    e.ok(&["init", "store"]);
    let store = arg(&e.path("store"));
    let only = slot_ids(&e, &store).remove(0);
    let r = e.fails(&["key", "remove", &store, &only]);
    let line = one_line_error(&r.stderr);
    assert!(
        line.contains(&format!("refusing to remove key slot {only}")),
        "{line}"
    );
    assert!(line.contains(&format!("(key slots: {only})")), "{line}");
    assert!(e.path(&format!("store/keys/{only}")).exists());

    // A damaged slot does not count as one that remains.
    let damaged = "0123456789abcdef0123456789abcdef";
    fs::write(e.path(&format!("store/keys/{damaged}")), "{ not json").unwrap();
    let r = e.fails(&["key", "remove", &store, &only]);
    let line = one_line_error(&r.stderr);
    assert!(line.contains(&format!("{damaged} (unusable)")), "{line}");
    let text = e.ok(&["key", "list", &store]).stdout;
    assert!(text.starts_with("SLOT"), "{text}");
    assert!(text.contains(&format!("{only}  passphrase")), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&only) && l.ends_with(&host())),
        "{text}"
    );
    assert!(text.contains("(unusable: damaged"), "{text}");
    let listed = slots(&e, &store);
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .any(|s| s["usable"] == false && s["kind"].is_null())
    );

    let r = e.fails(&["key", "remove", &store, "zz"]);
    assert!(
        one_line_error(&r.stderr).contains("no key slot zz (key slots: "),
        "{}",
        r.stderr
    );
    // The damaged one can go: a usable slot remains.
    e.ok(&["key", "remove", &store, damaged]);
    assert_eq!(slot_ids(&e, &store), [only]);
}

#[test]
fn a_format_1_repository_lists_its_old_slot_as_unknown_and_changes_passphrase() {
    let e = env();
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../engine/tests/it/fixtures/v1-repo"
    );
    let status = std::process::Command::new("cp")
        .args(["-R", fixture, &arg(&e.path("store"))])
        .status()
        .unwrap();
    assert!(status.success());
    let store = arg(&e.path("store"));
    let listed = slots(&e, &store);
    assert_eq!(listed.len(), 1);
    // A version-1 slot records neither: shown as unknown, not invented.
    assert!(listed[0]["created"].is_null() && listed[0]["created_by"].is_null());
    let text = e.ok(&["key", "list", &store]).stdout;
    assert!(text.contains("unknown               unknown"), "{text}");

    let old = "coffer-v1-fixture";
    let mut v1 = e.machine("v1");
    v1.set("COFFER_PASSPHRASE", old);
    let new = ["--new-passphrase-command", "echo 'after format 1'"];
    let r = v1.ok(&["key", "passwd", &store, new[0], new[1]]);
    let slot = r.stdout.trim().to_string();
    let listed = slots(&e, &store);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["slot"], slot.as_str());
    assert_eq!(listed[0]["created_by"], host());
    let err = opens_with(&e, "old", old, &store).unwrap_err();
    assert!(err.contains("wrong passphrase"), "{err}");
    let mut m = e.machine("new");
    m.set("COFFER_PASSPHRASE", "after format 1");
    let r = m.ok(&["get", &store, "hello.txt", "-"]);
    assert_eq!(r.stdout, "hello again\n");
}
