//! coffer against a real S3 server: the Garage that `scripts/garage up` starts,
//! directly or through the fault-injecting proxy.

use crate::{arg, env};
use coffer_engine::store::conformance;
use coffer_tests::env::Env;
use coffer_tests::proxy::{FaultProxy, Faults};
use coffer_tests::s3::S3Env;
use coffer_tests::tree::{MixedSpec, assert_same_tree, mixed_tree, random_file};
use std::fs;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// A sandbox pointed at `endpoint` (Garage itself unless a proxy is given).
fn sandbox(s3: &S3Env, endpoint: Option<&str>) -> Env {
    let mut e = env();
    s3.configure(&mut e, endpoint.unwrap_or(&s3.endpoint));
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_store_passes_the_conformance_suite() {
    let s3 = S3Env::from_env();
    let bucket = S3Env::unique_bucket("conformance");
    let store = s3.store(&bucket, &s3.endpoint).await;
    store.create_bucket().await.unwrap();
    conformance::run(&store).await;
}

#[test]
fn push_pull_check_and_the_hcs3_commands_work_against_garage() {
    let s3 = S3Env::from_env();
    let e = sandbox(&s3, None);
    let bucket = S3Env::unique_bucket("e2e");
    let src = e.path("src");
    mixed_tree(
        &src,
        MixedSpec {
            small_files: 200,
            big_file: 20 * MIB,
            medium_files: 2,
            seed: 11,
        },
    );

    let r = e.ok(&["create", &bucket]);
    assert!(r.stderr.contains("created bucket"), "{}", r.stderr);
    e.ok(&["push", "src", &format!("s3://{bucket}")]);
    let mut other = e.machine("b");
    s3.configure(&mut other, &s3.endpoint);

    let dst = other.path("dst");
    other.ok(&["pull", &bucket, &arg(&dst)]);
    assert_same_tree(&src, &dst);
    e.ok(&["check", &bucket, "--read-data"]);

    fs::write(e.path("note.txt"), "hcs3 style\n").unwrap();
    e.ok(&["add", &bucket, &arg(&e.path("note.txt"))]);
    let list = e.ok(&["list", &bucket]);
    assert!(
        list.stdout.lines().any(|l| l == "note.txt"),
        "{}",
        list.stdout
    );
    let buckets = e.ok(&["list"]);
    assert!(
        buckets.stdout.lines().any(|l| l == bucket),
        "{}",
        buckets.stdout
    );
    fs::create_dir_all(e.path("out")).unwrap();
    e.ok(&["get", &bucket, "note.txt", &arg(&e.path("out"))]);
    assert_eq!(
        fs::read_to_string(e.path("out/note.txt")).unwrap(),
        "hcs3 style\n"
    );
    e.ok(&["rm", &bucket, "note.txt"]);
    assert!(!e.ok(&["list", &bucket]).stdout.contains("note.txt"));
    let status = e.ok(&["status"]);
    assert!(
        status.stdout.contains(&bucket) && status.stdout.contains("Registered Stores"),
        "{}",
        status.stdout
    );

    let r = e.fails(&["delete", &bucket]);
    assert!(r.stderr.contains("is not empty"), "{}", r.stderr);
}

#[test]
fn delete_removes_an_emptied_bucket_and_its_key() {
    let s3 = S3Env::from_env();
    let e = sandbox(&s3, None);
    let bucket = S3Env::unique_bucket("delete");
    e.ok(&["create", &bucket]);
    fs::write(e.path("f.txt"), "x").unwrap();
    e.ok(&["add", &bucket, &arg(&e.path("f.txt"))]);
    e.ok(&["rm", &bucket, "f.txt"]);
    e.ok(&["delete", &bucket]);
    assert!(!e.ok(&["list"]).stdout.lines().any(|l| l == bucket));
    let keyring = e.home().join("keyring");
    assert!(
        fs::read_dir(&keyring).unwrap().next().is_none(),
        "the local key is removed"
    );
}

#[test]
fn a_slowdown_and_reset_storm_ends_in_an_identical_verified_tree() {
    let s3 = S3Env::from_env();
    let proxy = FaultProxy::start(&s3.endpoint, Faults::default(), 42);
    let e = sandbox(&s3, Some(&proxy.url()));
    let bucket = S3Env::unique_bucket("storm");
    let src = e.path("src");
    mixed_tree(
        &src,
        MixedSpec {
            small_files: 1500,
            big_file: 224 * MIB,
            medium_files: 12,
            seed: 5,
        },
    );

    e.ok(&["create", &bucket]);
    proxy.set_faults(Faults {
        slow_down: 0.30,
        error_500: 0.05,
        reset: 0.05,
        drop_put_response: 0.05,
        stall: 0.02,
        deny_all: false,
        answer: None,
        ..Faults::default()
    });
    e.ok(&["push", "--pack-mib", "8", "src", &bucket]);
    let other = {
        let mut m = e.machine("b");
        s3.configure(&mut m, &proxy.url());
        m
    };
    let dst = other.path("dst");
    other.ok(&["pull", &bucket, &arg(&dst)]);
    assert_same_tree(&src, &dst);
    other.ok(&["check", &bucket, "--read-data"]);
    let injected = proxy.injected();
    for kind in ["slowdown", "500", "reset", "dropped", "stall"] {
        assert!(
            injected.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} injected: {injected:?}"
        );
    }
}

#[test]
fn every_request_denied_fails_within_seconds_with_a_clear_message() {
    let s3 = S3Env::from_env();
    let proxy = FaultProxy::start(&s3.endpoint, Faults::default(), 1);
    let e = sandbox(&s3, Some(&proxy.url()));
    let bucket = S3Env::unique_bucket("denied");
    e.ok(&["create", &bucket]);
    fs::create_dir_all(e.path("src")).unwrap();
    random_file(&e.path("src/a.bin"), 3 * MIB, 1);
    proxy.set_faults(Faults {
        deny_all: true,
        ..Faults::default()
    });
    let t = Instant::now();
    let r = e.fails(&["push", "src", &bucket]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        r.stderr.contains(&format!(
            "access denied to bucket {bucket} — check credentials"
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn sse_c_objects_are_unreadable_without_their_key() {
    let s3 = S3Env::from_env();
    let proxy = FaultProxy::start(&s3.endpoint, Faults::default(), 1);
    let e = sandbox(&s3, Some(&proxy.url()));
    let bucket = S3Env::unique_bucket("ssec");
    fs::write(e.path("sse.key"), hex_key()).unwrap();
    let key_arg = arg(&e.path("sse.key"));
    e.ok(&["--sse-c-key-file", &key_arg, "create", &bucket]);
    fs::create_dir_all(e.path("src")).unwrap();
    fs::write(e.path("src/secret.txt"), "protected twice\n").unwrap();
    e.ok(&["--sse-c-key-file", &key_arg, "push", "src", &bucket]);

    // Object requests: a key after the bucket (not CreateBucket, ListObjects...).
    let object_requests: Vec<_> = proxy
        .log()
        .into_iter()
        .filter(|r| {
            let path = r.path.split('?').next().unwrap_or("");
            let key = path.strip_prefix(&format!("/{bucket}/")).unwrap_or("");
            (r.method == "PUT" || r.method == "GET") && !key.is_empty()
        })
        .collect();

    assert!(!object_requests.is_empty());
    for r in &object_requests {
        let has = |h: &str| r.headers.iter().any(|(k, _)| k == h);
        assert!(
            has("x-amz-server-side-encryption-customer-key")
                && has("x-amz-server-side-encryption-customer-key-md5"),
            "{} {} without SSE-C headers",
            r.method,
            r.path
        );
    }

    // A plain S3 client (no key) is refused by the server: HTTP 400.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let store = s3.store(&bucket, &s3.endpoint).await;
        match store
            .client()
            .get_object()
            .bucket(&bucket)
            .key("config")
            .send()
            .await
        {
            Ok(_) => 200,
            Err(e) => e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0),
        }
    });
    assert_eq!(status, 400, "a read without the SSE-C key must be refused");

    let other = {
        let mut m = e.machine("b");
        s3.configure(&mut m, &s3.endpoint);
        m
    };
    let r = other.fails(&["ls", &bucket]);
    assert!(
        r.stderr.contains("this repository needs its SSE-C key"),
        "{}",
        r.stderr
    );
    let dst = other.path("dst");
    other.ok(&["--sse-c-key-file", &key_arg, "pull", &bucket, &arg(&dst)]);
    assert_eq!(
        fs::read_to_string(dst.join("secret.txt")).unwrap(),
        "protected twice\n"
    );

    // The same key from a command (a vault CLI), on a third machine.
    let third = {
        let mut m = e.machine("c");
        s3.configure(&mut m, &s3.endpoint);
        m
    };
    let dst = third.path("dst");
    let cmd = format!("cat '{key_arg}'");
    third.ok(&["--sse-c-key-command", &cmd, "pull", &bucket, &arg(&dst)]);
    assert_eq!(
        fs::read_to_string(dst.join("secret.txt")).unwrap(),
        "protected twice\n"
    );
    let r = third.fails(&[
        "--sse-c-key-command",
        "echo 'sealed' >&2; exit 2",
        "ls",
        &bucket,
    ]);
    assert!(
        r.stderr
            .contains("--sse-c-key-command exited with code 2; its stderr ends with: sealed"),
        "{}",
        r.stderr
    );
}

fn hex_key() -> String {
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n".to_string()
}

#[test]
fn sse_kms_and_checksum_headers_go_with_every_put_and_no_header_names_a_file() {
    let s3 = S3Env::from_env();
    let proxy = FaultProxy::start(&s3.endpoint, Faults::default(), 1);
    let e = sandbox(&s3, Some(&proxy.url()));
    let bucket = S3Env::unique_bucket("kms");
    e.ok(&["create", &bucket]);
    let src = e.path("src");
    fs::create_dir_all(src.join("Confidential Folder")).unwrap();
    fs::write(
        src.join("Confidential Folder/PayrollReport.xlsx"),
        "numbers",
    )
    .unwrap();
    random_file(&src.join("HolidayPhoto.jpg"), 2 * MIB, 3);
    e.ok(&[
        "--sse-kms-key-id",
        "arn:aws:kms:eu-west-1:111122223333:key/test",
        "push",
        "src",
        &bucket,
    ]);
    let log = proxy.log();
    let puts: Vec<_> = log
        .iter()
        .filter(|r| r.method == "PUT" && (r.path.contains("/data/") || r.path.contains("/log/")))
        .collect();
    assert!(puts.len() >= 2, "{} PUTs", puts.len());
    for r in &puts {
        let get = |h: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == h)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("x-amz-server-side-encryption"),
            Some("aws:kms"),
            "{}",
            r.path
        );
        assert_eq!(
            get("x-amz-server-side-encryption-aws-kms-key-id"),
            Some("arn:aws:kms:eu-west-1:111122223333:key/test")
        );
        assert!(
            get("x-amz-checksum-crc32c").is_some(),
            "every PUT carries one explicit CRC32C"
        );
        assert_eq!(get("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
        assert!(
            get("x-amz-trailer").is_none() && get("content-encoding").is_none(),
            "no aws-chunked trailers"
        );
    }
    for r in &log {
        for needle in ["Confidential", "Payroll", "HolidayPhoto", "xlsx", "jpg"] {
            assert!(
                !r.path.contains(needle),
                "request path names a file: {}",
                r.path
            );
            for (k, v) in &r.headers {
                assert!(!v.contains(needle), "header {k} names a file: {v}");
            }
        }
    }
}

#[test]
fn plain_http_goes_only_to_loopback() {
    let s3 = S3Env::from_env();
    let e = sandbox(&s3, Some("http://192.0.2.1:9"));
    let r = e.fails(&["ls", "some-bucket"]);
    assert!(
        r.stderr.contains("refusing plain http to 192.0.2.1"),
        "{}",
        r.stderr
    );
    fs::write(e.path("k"), hex_key()).unwrap();
    let r = e.fails(&[
        "--allow-http",
        "--sse-c-key-file",
        &arg(&e.path("k")),
        "ls",
        "some-bucket",
    ]);
    assert!(
        r.stderr
            .contains("refusing to send an SSE-C key over plain http"),
        "{}",
        r.stderr
    );
}

/// Three folders, each with its own `coffer sync` loop making random edits for two
/// minutes against one Garage bucket; once quiesced, the trees are identical.
#[test]
fn three_sync_loops_converge_on_one_bucket() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    const NAMES: &[&str] = &["a.txt", "b.txt", "docs/c.txt", "docs/deep/d.txt", "e.bin"];
    const BUSY: Duration = Duration::from_secs(120);

    let s3 = S3Env::from_env();
    let e = sandbox(&s3, None);
    let bucket = S3Env::unique_bucket("converge");
    e.ok(&["create", &bucket]);
    let url = format!("s3://{bucket}");
    let dirs: Vec<_> = ["a", "b", "c"].map(|d| e.path(d)).to_vec();
    let start = Instant::now();
    let syncs: Vec<usize> = std::thread::scope(|scope| {
        let loops: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                let (e, url) = (&e, &url);
                scope.spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(i as u64 + 1);
                    fs::create_dir_all(dir).unwrap();
                    let mut n = 0;
                    while start.elapsed() < BUSY {
                        for _ in 0..rng.random_range(0..3) {
                            random_edit(&mut rng, dir, NAMES, n);
                        }
                        e.ok(&["sync", &arg(dir), url]);
                        n += 1;
                        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
                    }
                    n
                })
            })
            .collect();
        loops.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(syncs.iter().all(|&n| n >= 5), "too few syncs: {syncs:?}");
    // Quiesce: conflict copies written in one round are pushed by the next.
    for _ in 0..3 {
        for dir in &dirs {
            e.ok(&["sync", &arg(dir), &url]);
        }
    }
    assert_same_tree(&dirs[0], &dirs[1]);
    assert_same_tree(&dirs[0], &dirs[2]);
    e.ok(&["check", &url]);
}

/// One random create, edit, delete or rename in `dir`.
fn random_edit(rng: &mut impl rand::Rng, dir: &std::path::Path, names: &[&str], n: usize) {
    let name = names[rng.random_range(0..names.len())];
    let path = dir.join(name);
    match rng.random_range(0..6) {
        0 => {
            let _ = fs::remove_file(&path);
        }
        1 if path.exists() => {
            let to = dir.join(names[rng.random_range(0..names.len())]);
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::rename(&path, to).unwrap();
        }
        2 if name.ends_with(".bin") => random_file(&path, rng.random_range(0..3 * MIB), n as u64),
        _ => {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, format!("{} edit {n}\n", dir.display())).unwrap();
        }
    }
}

#[test]
fn kill_9_at_twenty_points_of_a_600_mib_push_on_garage() {
    let s3 = S3Env::from_env();
    let e = sandbox(&s3, None);
    let bucket = S3Env::unique_bucket("crash");
    e.ok(&["create", &bucket]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(s3.store(&bucket, &s3.endpoint));
    let size = || -> u64 {
        use coffer_engine::store::ObjectStore;
        rt.block_on(store.list(""))
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum()
    };
    crate::crash::kill_and_resume(&e, &format!("s3://{bucket}"), 0..50, &size);
}

/// Issue 5's acceptance scenario on Garage: two daemons (`--poll 2`) keep two
/// folders converged; then the store is unreachable for 40 s (the proxy resets
/// every connection) while 20 files are added on one side, a directory is created
/// on the other and a file is deleted; both folders are identical within 60 s of
/// the store's return, and neither daemon died (both stop on SIGTERM with exit 0).
#[test]
fn two_daemons_on_garage_ride_out_a_40_second_outage() {
    use crate::watch_cli::{
        change_both_while_offline, converge_after_the_outage, daemon_on, exchange_a_file, stop,
    };
    let s3 = S3Env::from_env();
    let proxy = FaultProxy::start(&s3.endpoint, Faults::default(), 5);
    let e = sandbox(&s3, Some(&proxy.url()));
    let bucket = S3Env::unique_bucket("watch");
    e.ok(&["create", &bucket]);
    let store = format!("s3://{bucket}");
    let (a, b) = (e.path("a"), e.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("gone-later.txt"), "old\n").unwrap();
    let (da, db) = (daemon_on(&e, &a, &store, 2), daemon_on(&e, &b, &store, 2));
    exchange_a_file(&a, &b);

    proxy.set_faults(Faults {
        reset: 1.0,
        ..Faults::default()
    });
    let outage = Instant::now();
    change_both_while_offline(&a, &b);
    std::thread::sleep(Duration::from_secs(35).saturating_sub(outage.elapsed()));
    // a's daemon is inside a step retrying the store; the changes are journaled all
    // the same (status reads what the daemon recorded).
    let st = e.ok(&["status", &arg(&a), "--json"]);
    let st: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert!(st["pending"].as_u64().unwrap() >= 20, "{st}");
    std::thread::sleep(Duration::from_secs(40).saturating_sub(outage.elapsed()));
    let resets = proxy.injected().get("reset").copied().unwrap_or(0);
    assert!(
        resets > 0,
        "the daemons never tried the store during the outage"
    );
    proxy.set_faults(Faults::default());

    converge_after_the_outage(&a, &b);
    let (la, lb) = (stop(da), stop(db));
    assert!(
        la.contains("stopped") && lb.contains("stopped"),
        "{la}\n{lb}"
    );
    assert_same_tree(&a, &b);
}

#[test]
fn clones_pushing_at_the_same_moment_on_garage_lose_no_commit() {
    let s3 = S3Env::from_env();
    let e = sandbox(&s3, None);
    let bucket = S3Env::unique_bucket("clones");
    e.ok(&["create", &bucket]);
    crate::identity::race_clones(&e, &format!("s3://{bucket}"), 2);
    e.ok(&["check", &format!("s3://{bucket}")]);
}

/// A device ten minutes ahead on Garage (SigV4 allows 15): its commits are
/// stamped with the server's `Date`, every edit is kept (see
/// `identity::skewed_edits_in`).
#[test]
fn a_device_ten_minutes_ahead_on_garage_is_corrected_by_the_server_clock() {
    let s3 = S3Env::from_env();
    let e = sandbox(&s3, None);
    let bucket = S3Env::unique_bucket("skew");
    e.ok(&["create", &bucket]);
    crate::identity::skewed_edits_in(&e, &format!("s3://{bucket}"), "+10m");
}
