//! Partner drops through the CLI on Garage (issue 21, item 1: the `s3s2`
//! workflow). Partners hold Garage keys allowed to write the bucket but not
//! to read it; they push through the fault proxy and are killed once each;
//! the owner pulls both drops identical. Partners read nothing (GET and LIST
//! denied; the token opens no repository data). Objects planted, replayed or
//! moved by the store are reported by name and nothing they carry is
//! written; writes after `drop remove` are ignored and reported; a token
//! past its expiry is refused.

use crate::{arg, env};
use coffer_engine::store::ObjectStore;
use coffer_tests::env::Env;
use coffer_tests::proxy::{FaultProxy, Faults};
use coffer_tests::s3::S3Env;
use coffer_tests::tree::{random_file, snapshot};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// `garage ARGS` on the test instance (the env `scripts/garage up` prints).
fn garage(args: &[&str]) -> String {
    let var = |n: &str| std::env::var(n).unwrap_or_else(|_| panic!("{n}: run scripts/test"));
    let out = Command::new(var("COFFER_GARAGE_BIN"))
        .arg("-c")
        .arg(var("COFFER_GARAGE_CONF"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "garage {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Gives `bucket` (made through S3, so with a name only its creator's key
/// knows) a global name, so that other keys can reach it.
fn globally_named(bucket: &str) {
    let list = garage(&["bucket", "list"]);
    let id = list
        .lines()
        .find(|l| l.contains(&format!(":{bucket}")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{bucket} not in {list}"));
    garage(&["bucket", "alias", id, bucket]);
}

/// A new Garage key allowed to write `bucket` but not to read it.
fn write_only_key(bucket: &str, name: &str) -> (String, String) {
    let out = garage(&["key", "create", name]);
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {label} in {out}"))
    };
    let (id, secret) = (field("Key ID:"), field("Secret key:"));
    garage(&["bucket", "allow", "--write", bucket, "--key", &id]);
    (id, secret)
}

/// A partner machine: its own home, the write-only key, the proxy.
fn partner(e: &Env, s3: &S3Env, name: &str, key: &(String, String), endpoint: &str) -> Env {
    let mut m = e.machine(name);
    s3.configure(&mut m, endpoint);
    m.set("AWS_ACCESS_KEY_ID", &key.0);
    m.set("AWS_SECRET_ACCESS_KEY", &key.1);
    m.unset("COFFER_PASSPHRASE");
    m
}

/// A partner's folder of ~`mib` MiB: three big files and some small ones.
fn folder(dir: &Path, mib: u64, seed: u64) {
    fs::create_dir_all(dir.join("reports/2026")).unwrap();
    for (i, share) in [(0, 45), (1, 35), (2, 20)] {
        random_file(
            &dir.join(format!("scan-{i}.raw")),
            mib * MIB * share / 100,
            seed * 10 + i,
        );
    }
    for i in 0..40 {
        fs::write(
            dir.join(format!("reports/2026/r{i}.csv")),
            format!("{seed},{i}\n").repeat(100),
        )
        .unwrap();
    }
}

/// `drop push TOKEN DIR` killed (SIGKILL) once it has made `puts` PUTs
/// through `proxy`, then run again to the end.
fn push_killed_once(m: &Env, token: &str, dir: &str, proxy: &FaultProxy, puts: usize) {
    let base = proxy.log().iter().filter(|l| l.method == "PUT").count();
    let mut child = m
        .cmd()
        .args([
            "drop",
            "push",
            token,
            dir,
            "--device-name",
            "site1",
            "--pack-mib",
            "8",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while proxy.log().iter().filter(|l| l.method == "PUT").count() < base + puts {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the push ended before it was killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the push made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    m.ok(&[
        "drop",
        "push",
        token,
        dir,
        "--device-name",
        "site1",
        "--pack-mib",
        "8",
    ]);
}

#[test]
fn two_partners_with_write_only_keys_push_through_faults_and_a_kill_and_only_the_owner_reads() {
    let s3 = S3Env::from_env();
    let mut e = env();
    s3.configure(&mut e, &s3.endpoint);
    let bucket = S3Env::unique_bucket("drops");
    e.ok(&["create", &bucket]);
    globally_named(&bucket);
    e.ok(&["drop", "create", &bucket, "alpha", "--out", "alpha.token"]);
    e.ok(&["drop", "create", &bucket, "beta", "--out", "beta.token"]);
    let faults = Faults {
        slow_down: 0.05,
        reset: 0.03,
        drop_put_response: 0.05,
        ..Faults::default()
    };
    let proxy = FaultProxy::start(&s3.endpoint, faults, 21);
    let mut pulled = Vec::new();
    for (i, name) in ["alpha", "beta"].into_iter().enumerate() {
        let key = write_only_key(&bucket, &format!("{bucket}-{name}"));
        let mut m = partner(&e, &s3, name, &key, &proxy.url());
        let token = m.path("drop.token");
        fs::copy(e.path(&format!("{name}.token")), &token).unwrap();
        let src = m.path("src");
        folder(&src, 200, i as u64 + 1);
        push_killed_once(&m, &arg(&token), &arg(&src), &proxy, 6);
        // Nothing left to send; the partner reads nothing, not even its own drop.
        let again = m.ok(&[
            "drop",
            "push",
            &arg(&token),
            &arg(&src),
            "--device-name",
            "site1",
        ]);
        assert!(again.stderr.contains("sent 0 file(s)"), "{}", again.stderr);
        // GET and LIST are denied to the key: no repository, no drop.
        m.set("COFFER_PASSPHRASE", "guessed");
        for args in [vec!["ls", &bucket], vec!["drop", "list", &bucket]] {
            let r = m.fails(&args);
            assert!(
                r.stderr.to_lowercase().contains("denied"),
                "{args:?}: {}",
                r.stderr
            );
        }
        m.unset("COFFER_PASSPHRASE");
        let (t, x) = (arg(&token), arg(&m.path("x")));
        for args in [
            vec!["ls", &t],
            vec!["pull", &t, &x],
            vec!["get", &t, "a", &x],
        ] {
            let r = m.fails(&args);
            assert!(r.stderr.contains("is a drop token"), "{}", r.stderr);
        }
        pulled.push((m, key, src));
    }
    assert!(
        proxy.injected().values().sum::<u64>() > 0,
        "faults were injected"
    );
    let list = e.ok(&["drop", "list", &bucket, "--json"]);
    for line in list.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["devices"][0]["name"], "site1", "{v}");
        assert_eq!(v["files"].as_u64(), Some(43), "{v}");
        assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    }
    for (name, (_, _, src)) in ["alpha", "beta"].into_iter().zip(&pulled) {
        let out = e.path(&format!("in-{name}"));
        e.ok(&["drop", "pull", &bucket, name, &arg(&out)]);
        assert_eq!(snapshot(src), snapshot(&out.join("site1")), "{name}");
    }
    planted_objects_are_reported(&e, &s3, &bucket);
}

/// Objects planted by the store: a copy of beta's first commit as alpha's
/// next one, and as beta's next one (a replay). Both are reported by name,
/// and a pull writes nothing new.
fn planted_objects_are_reported(e: &Env, s3: &S3Env, bucket: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let planted = rt.block_on(async {
        let admin = s3.store(bucket, &s3.endpoint).await;
        let logs: Vec<String> = admin
            .list("drop/")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .filter(|k| k.contains("/log/"))
            .collect();
        let beta_first = logs
            .iter()
            .find(|k| k.ends_with("0000000000000000"))
            .unwrap()
            .clone();
        let bytes = admin.get(&beta_first).await.unwrap();
        let mut planted = Vec::new();
        for k in &logs {
            let next = format!("{}{:016x}", &k[..k.len() - 16], 1000);
            if !planted.contains(&next) {
                admin.put(&next, bytes.clone()).await.unwrap();
                planted.push(next);
            }
        }
        planted
    });
    for name in ["alpha", "beta"] {
        let out = e.path(&format!("in-{name}"));
        let before = snapshot(&out);
        let r = e.run(&["drop", "pull", bucket, name, &arg(&out)]);
        assert_eq!(r.code, Some(3), "{}", r.stderr);
        assert!(
            planted.iter().any(|p| r.stderr.contains(p.as_str())),
            "{}",
            r.stderr
        );
        assert_eq!(snapshot(&out), before, "{name}: nothing written");
    }
}

#[test]
fn after_remove_later_writes_are_reported_and_ignored_and_an_expired_token_is_refused() {
    let s3 = S3Env::from_env();
    let mut e = env();
    s3.configure(&mut e, &s3.endpoint);
    let bucket = S3Env::unique_bucket("dropsrm");
    e.ok(&["create", &bucket]);
    globally_named(&bucket);
    e.ok(&["drop", "create", &bucket, "gone", "--out", "gone.token"]);
    e.ok(&[
        "drop",
        "create",
        &bucket,
        "brief",
        "--out",
        "brief.token",
        "--expires",
        "4s",
    ]);
    let key = write_only_key(&bucket, &format!("{bucket}-p"));
    let m = partner(&e, &s3, "p", &key, &s3.endpoint);
    let src = m.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("before.txt"), "before").unwrap();
    for t in ["gone", "brief"] {
        m.ok(&[
            "drop",
            "push",
            &arg(&e.path(&format!("{t}.token"))),
            &arg(&src),
        ]);
    }
    e.ok(&["drop", "remove", &bucket, "gone"]);
    fs::write(src.join("after.txt"), "after").unwrap();
    m.ok(&["drop", "push", &arg(&e.path("gone.token")), &arg(&src)]);
    let out = e.path("in");
    let r = e.ok(&["drop", "pull", &bucket, "gone", &arg(&out)]);
    assert!(
        r.stderr.contains("ignored") && r.stderr.contains("after the drop was removed"),
        "{}",
        r.stderr
    );
    assert!(out.join(host()).join("before.txt").exists());
    assert!(!out.join(host()).join("after.txt").exists());
    watch_sends_changes(&e, &m, &bucket);
    std::thread::sleep(Duration::from_secs(5));
    let r = m.fails(&["drop", "push", &arg(&e.path("brief.token")), &arg(&src)]);
    assert!(r.stderr.contains("expired on"), "{}", r.stderr);
    let list = e.ok(&["drop", "list", &bucket]);
    assert!(
        list.stdout.contains("expired") && list.stdout.contains("removed"),
        "{}",
        list.stdout
    );
}

/// `watch --drop TOKEN DIR`: a file written while the daemon runs reaches
/// the owner; SIGTERM ends it with status 0.
fn watch_sends_changes(e: &Env, m: &Env, bucket: &str) {
    e.ok(&["drop", "create", bucket, "live", "--out", "live.token"]);
    let dir = m.path("live");
    fs::create_dir_all(&dir).unwrap();
    let child = m
        .cmd()
        .args([
            "watch",
            "--drop",
            &arg(&e.path("live.token")),
            &arg(&dir),
            "--poll",
            "30",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    fs::write(dir.join("fresh.txt"), "written while watching").unwrap();
    let out = e.path("live-in");
    let start = Instant::now();
    loop {
        e.ok(&["drop", "pull", bucket, "live", &arg(&out)]);
        if out.join(host()).join("fresh.txt").exists() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the daemon did not send the new file"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        fs::read_to_string(out.join(host()).join("fresh.txt")).unwrap(),
        "written while watching"
    );
    let stderr = crate::watch_cli::stop(child);
    assert!(stderr.contains("sent 1 file(s)"), "{stderr}");
}

/// The device name a partner gets by default.
fn host() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "partner".into()
    } else {
        name
    }
}
