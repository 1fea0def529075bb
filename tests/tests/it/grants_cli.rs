//! Expiring grants through the CLI on Garage (issue 21, item 2: hcs3's
//! `useraccess -e`): a grant reads until it expires, is refused after (one
//! line, nothing written), is gone after the owner's next `sync`, and a saved
//! copy of its keyring reads nothing pushed after that sync; a grant to an
//! age recipient opens with `--identity` until `grant remove`.

use crate::{arg, env};
use coffer_engine::SlotIdentity;
use coffer_tests::env::Env;
use coffer_tests::s3::S3Env;
use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const GRANT: &str = "the grantee's passphrase";

fn now_ms() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(d.as_millis()).unwrap()
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0]
}

/// A machine of `e` on Garage.
fn machine(e: &Env, s3: &S3Env, name: &str) -> Env {
    let mut m = e.machine(name);
    s3.configure(&mut m, &s3.endpoint);
    m
}

/// A copy of `from`'s keyring on a new machine, as a dishonest client keeps
/// it: the grant's expiry dropped.
fn dishonest_copy(e: &Env, s3: &S3Env, from: &Env) -> Env {
    let mut to = machine(e, s3, "thief");
    to.unset("COFFER_PASSPHRASE");
    fs::create_dir_all(to.home().join("keyring")).unwrap();
    for f in fs::read_dir(from.home().join("keyring")).unwrap() {
        let f = f.unwrap();
        let mut json: serde_json::Value =
            serde_json::from_slice(&fs::read(f.path()).unwrap()).unwrap();
        assert_eq!(json["version"], 3, "a grant's keyring entry: {json}");
        json.as_object_mut().unwrap().remove("expires");
        json["version"] = 2.into();
        fs::write(
            to.home().join("keyring").join(f.file_name()),
            json.to_string(),
        )
        .unwrap();
    }
    to
}

/// An owner on Garage with a new bucket and `src/a.txt` (`text`) pushed.
fn owner(s3: &S3Env, prefix: &str, text: &str) -> (Env, String, std::path::PathBuf) {
    let mut e = env();
    s3.configure(&mut e, &s3.endpoint);
    let bucket = S3Env::unique_bucket(prefix);
    e.ok(&["create", &bucket]);
    let src = e.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), text).unwrap();
    e.ok(&["push", "src", &bucket]);
    (e, bucket, src)
}

/// After the expiry, the grantee's machine refuses in one line, writing nothing.
fn refused_after_expiry(grantee: &Env, bucket: &str, dst: &std::path::Path, expires: &str) {
    let r = grantee.fails(&["pull", bucket, &arg(dst)]);
    let line = one_line(&r.stderr);
    assert!(
        line.contains(&format!("this grant expired on {expires}")),
        "{line}"
    );
    assert!(!dst.join("b.txt").exists());
    let out = grantee.path("b.txt");
    let r = grantee.fails(&["get", bucket, "a.txt", &arg(&out)]);
    assert!(
        one_line(&r.stderr).contains("this grant expired on"),
        "{}",
        r.stderr
    );
    assert!(!out.exists(), "nothing written");
}

/// The slots `grant list --json` shows.
fn grants(e: &Env, bucket: &str) -> Vec<serde_json::Value> {
    let r = e.ok(&["grant", "list", bucket, "--json"]);
    r.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_grant_reads_until_it_expires_and_the_owners_next_sync_revokes_it() {
    let s3 = S3Env::from_env();
    let (e, bucket, src) = owner(&s3, "grant", "before\n");
    fs::write(e.path("grant.pass"), GRANT).unwrap();
    let args = [
        "grant",
        "add",
        &bucket,
        "--expires",
        "5s",
        "--grant-passphrase-file",
        "grant.pass",
        "--json",
    ];
    let added: serde_json::Value = serde_json::from_str(e.ok(&args).stdout.trim()).unwrap();
    let slot = added["slot"].as_str().unwrap().to_string();
    let expires = added["expires_ms"].as_u64().unwrap();
    let listed = grants(&e, &bucket);
    assert_eq!(
        (listed.len(), listed[0]["slot"].as_str()),
        (1, Some(slot.as_str()))
    );
    assert_eq!(listed[0]["expired"], false);

    let mut grantee = machine(&e, &s3, "grantee");
    grantee.set("COFFER_PASSPHRASE", GRANT);
    let dst = grantee.path("dst");
    grantee.ok(&["pull", &bucket, &arg(&dst)]);
    assert_eq!(fs::read_to_string(dst.join("a.txt")).unwrap(), "before\n");
    let thief = dishonest_copy(&e, &s3, &grantee);
    assert!(
        now_ms() < expires,
        "the grant expired before it was used: slow machine"
    );

    // Waiting for the expiry instant itself (the only sleep).
    std::thread::sleep(Duration::from_millis(expires.saturating_sub(now_ms()) + 50));
    fs::write(src.join("b.txt"), "after the expiry\n").unwrap();
    refused_after_expiry(&grantee, &bucket, &dst, added["expires"].as_str().unwrap());
    assert_eq!(grants(&e, &bucket)[0]["expired"], true);

    // The owner's next sync removes the grant and rotates before it pushes.
    // Its folder's journal knows of the grants as of its push before the
    // grant was made, and lists `keys/` again 12 minutes after that push:
    // its clock is moved past then.
    let r = e.ok_with_clock("+13m", &["sync", "src", &bucket]);
    assert!(
        r.stderr.contains(&format!("removed expired grant {slot}")),
        "{}",
        r.stderr
    );
    assert!(grants(&e, &bucket).is_empty());
    let r = e.ok(&["key", "list", &bucket, "--json"]);
    assert!(!r.stdout.contains(&slot), "{}", r.stdout);

    // The saved keyring, expiry dropped, reads nothing pushed after that sync.
    fs::create_dir_all(thief.path("out")).unwrap();
    let stolen = thief.path("out/b.txt");
    let r = thief.fails(&["get", &bucket, "b.txt", &arg(&stolen)]);
    assert!(
        one_line(&r.stderr).contains("no key for the repository's current key epoch"),
        "{}",
        r.stderr
    );
    assert!(!stolen.exists());
    let owner = machine(&e, &s3, "owner-vm");
    let fresh = owner.path("fresh");
    owner.ok(&["pull", &bucket, &arg(&fresh)]);
    assert_eq!(
        fs::read_to_string(fresh.join("b.txt")).unwrap(),
        "after the expiry\n"
    );
}

#[test]
fn a_grant_to_an_age_recipient_opens_with_its_identity_until_removed() {
    let s3 = S3Env::from_env();
    let (e, bucket, src) = owner(&s3, "grant-age", "for the recipient\n");
    let identity = SlotIdentity::generate();
    let r = e.ok(&[
        "grant",
        "add",
        &bucket,
        "--expires",
        "7d",
        "--recipient",
        &identity.recipient(),
    ]);
    let slot = r.stdout.trim().to_string();

    let mut reader = machine(&e, &s3, "reader");
    reader.unset("COFFER_PASSPHRASE");
    let file = reader.path("identity.txt");
    fs::write(
        &file,
        format!(
            "# created: now\n# public key: {}\n{}\n",
            identity.recipient(),
            *identity.secret()
        ),
    )
    .unwrap();
    reader.set("COFFER_IDENTITY_FILE", &arg(&file));
    let out = reader.path("a.txt");
    reader.ok(&["get", &bucket, "a.txt", &arg(&out)]);
    assert_eq!(fs::read_to_string(&out).unwrap(), "for the recipient\n");
    let mine = reader.path("mine");
    fs::create_dir_all(&mine).unwrap();
    fs::write(mine.join("c.txt"), "from the reader\n").unwrap();
    let r = reader.fails(&["push", &arg(&mine), &bucket]);
    assert!(
        one_line(&r.stderr).contains("which only reads"),
        "{}",
        r.stderr
    );

    e.ok(&["grant", "remove", &bucket, &slot[..8]]);
    fs::write(src.join("b.txt"), "not for the recipient\n").unwrap();
    e.ok(&["push", "src", &bucket]);
    let b = reader.path("b.txt");
    reader.fails(&["get", &bucket, "b.txt", &arg(&b)]);
    assert!(!b.exists());
}
