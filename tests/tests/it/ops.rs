//! Running coffer as a service: `watch --listen` serves a status page (checked
//! in headless Chromium), `/metrics` (parsed by Prometheus' reference parser and
//! checked against what happened), `/events` (SSE) and `/healthz`; and the
//! `--json` events of every long command, line by line, against one schema.

use crate::{arg, env};
use coffer_tests::env::Env;
use coffer_tests::http;
use coffer_tests::proxy::{FaultProxy, Faults};
use coffer_tests::s3::S3Env;
use coffer_tests::tools::{self, prometheus_sample};
use coffer_tests::tree::{assert_same_tree, random_file};
use serde_json::Value;
use std::fs;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Checks one event line against the schema of the README ("JSON events").
pub fn check_event(line: &str, command: &str) -> Value {
    let v: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    assert_eq!(v["command"], command, "{line}");
    let time = v["time"]
        .as_str()
        .unwrap_or_else(|| panic!("no time: {line}"));
    assert!(humantime::parse_rfc3339(time).is_ok(), "bad time: {line}");
    let uint = |k: &str| assert!(v[k].is_u64(), "{k} is not a count: {line}");
    let text = |k: &str| assert!(v[k].is_string(), "{k} is not a string: {line}");
    let opt_uint = |k: &str| assert!(v[k].is_null() || v[k].is_u64(), "{k}: {line}");
    match v["type"]
        .as_str()
        .unwrap_or_else(|| panic!("no type: {line}"))
    {
        "progress" => {
            let phases = ["scan", "upload", "logs", "download", "verify"];
            assert!(phases.contains(&v["phase"].as_str().unwrap()), "{line}");
            uint("bytes_done");
            uint("items_done");
            opt_uint("bytes_total");
            opt_uint("items_total");
            assert!(v["bytes_per_second"].is_number(), "{line}");
            assert!(v["eta_seconds"].is_null() || v["eta_seconds"].is_number());
            assert!(v["done"].is_boolean(), "{line}");
        }
        "warning" => text("message"),
        "error" => {
            text("message");
            assert!(v["fatal"].is_boolean(), "{line}");
        }
        "conflict" => {
            text("path");
            text("copy");
        }
        "summary" => {
            assert!(v["ok"].is_boolean(), "{line}");
            assert!(v["duration_seconds"].is_number(), "{line}");
            if let Some(p) = v.get("push") {
                for k in [
                    "commits",
                    "changes",
                    "bytes_read",
                    "bytes_uploaded",
                    "chunks",
                ] {
                    assert!(p[k].is_u64(), "push.{k}: {line}");
                }
            }
            if let Some(p) = v.get("prune") {
                for k in [
                    "packs_in_store",
                    "packs_referenced",
                    "packs_deleted",
                    "bytes_deleted",
                    "packs_marked",
                    "bytes_marked",
                    "reclaimable_bytes",
                ] {
                    assert!(p[k].is_u64(), "prune.{k}: {line}");
                }
                assert!(p["dry_run"].is_boolean(), "{line}");
            }
            if let Some(p) = v.get("pull") {
                for k in [
                    "commits",
                    "files_written",
                    "bytes_written",
                    "conflict_copies",
                ] {
                    assert!(p[k].is_u64(), "pull.{k}: {line}");
                }
            }
        }
        "state" => {
            let states = ["in_sync", "syncing", "failing"];
            assert!(states.contains(&v["state"].as_str().unwrap()), "{line}");
            uint("pending_changes");
            assert!(v["store_reachable"].is_boolean(), "{line}");
        }
        other => panic!("unknown event type {other:?}: {line}"),
    }
    v
}

/// Every stdout line of a `--json` command, checked; the last must be its summary.
fn events_of(stdout: &str, command: &str) -> Vec<Value> {
    let events: Vec<Value> = stdout.lines().map(|l| check_event(l, command)).collect();
    let last = events
        .last()
        .unwrap_or_else(|| panic!("{command}: no event"));
    assert_eq!(last["type"], "summary", "{command}: {stdout}");
    events
}

/// Polls `cond` every 200 ms for up to `limit`.
fn within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `watch --listen 127.0.0.1:0` daemon, its stderr collected as it comes.
struct Daemon {
    child: Child,
    base: String,
    stderr: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(e: &Env, dir: &Path, store: &str, extra: &[&str]) -> Daemon {
        let mut child = e
            .cmd()
            .args([
                "watch",
                &arg(dir),
                store,
                "--poll",
                "2",
                "--debounce-ms",
                "200",
            ])
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let (pipe, log) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("status page on ").nth(1) {
                    let _ = tx.send(rest.split('/').take(3).collect::<Vec<_>>().join("/"));
                }
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no address: {}", stderr.lock().unwrap()));
        Daemon {
            child,
            base,
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn status(&self) -> Value {
        let r = http::get(&self.url("/api/status"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).unwrap()
    }

    fn metrics(&self) -> Value {
        let r = http::get(&self.url("/metrics"), None);
        assert_eq!(r.status, 200);
        assert!(r.content_type.contains("openmetrics-text"), "{r:?}");
        tools::parse_prometheus(&r.body)
    }

    fn wait_state(&self, state: &str, limit: Duration) {
        within(limit, &format!("state {state}"), || {
            self.status()["state"] == state
        });
    }

    fn stop(mut self) -> String {
        assert!(self.child.try_wait().unwrap().is_none(), "the daemon died");
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        assert!(status.success(), "exit {status:?}: {stderr}");
        stderr
    }
}

fn sample(m: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    prometheus_sample(m, name, labels).unwrap_or(0.0)
}

/// Objects and bytes in `bucket`.
fn bucket_usage(s3: &S3Env, bucket: &str) -> (u64, u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use coffer_engine::store::ObjectStore;
        let store = s3.store(bucket, &s3.endpoint).await;
        let all = store.list("").await.unwrap();
        // Head markers are replaced, not added: left out of the count.
        let counted = all.iter().filter(|o| !o.key.starts_with("head/")).count();
        (counted as u64, all.iter().map(|o| o.size).sum())
    })
}

/// Lines received so far.
fn drain(rx: &mpsc::Receiver<String>, into: &mut Vec<Value>) {
    while let Ok(line) = rx.try_recv() {
        into.push(check_event(&line, "watch"));
    }
}

/// Two daemons on Garage through the fault proxy: what the metrics count is
/// what reached the bucket; the page (in Chromium) shows "in sync" after a
/// change, "failing" within one poll of an outage and "in sync" again after
/// it, with the conflict copy the outage's concurrent edits made; `/events`
/// carries it all; `/healthz` follows.
#[test]
fn status_page_metrics_and_events_follow_two_daemons_through_an_outage() {
    let s3 = S3Env::from_env();
    let proxy = FaultProxy::start(&s3.endpoint, Faults::default(), 7);
    let mut e = env();
    s3.configure(&mut e, &proxy.url());
    let bucket = S3Env::unique_bucket("ops");
    e.ok(&["create", &bucket]);
    let store = format!("s3://{bucket}");
    let (a, b) = (e.path("a"), e.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let before = bucket_usage(&s3, &bucket);
    let (da, db) = (
        Daemon::start(&e, &a, &store, &[]),
        Daemon::start(&e, &b, &store, &[]),
    );
    let events = http::events(&da.url("/events"));
    da.wait_state("in_sync", Duration::from_secs(60));
    db.wait_state("in_sync", Duration::from_secs(60));
    let before_copy = change_and_copy(&da, &db, &a, &b);
    counters_match_the_bucket(&da, &db, (&s3, &bucket), before, &before_copy);
    outage_with_concurrent_edits(&proxy, &da, &a, &b);
    let written = the_conflict_everywhere(&proxy, &da, &db, &a);
    events_tell_it_all(&events, written);
    let (la, lb) = (da.stop(), db.stop());
    assert!(
        la.contains("stopped") && lb.contains("stopped"),
        "{la}\n{lb}"
    );
}

/// A change: 3 MiB and a copy of it (deduplicated), reaching b; the page shows
/// "in sync" (screenshot). Returns the metrics of a before the copy.
fn change_and_copy(da: &Daemon, db: &Daemon, a: &Path, b: &Path) -> Value {
    random_file(&a.join("big.bin"), 3 << 20, 1);
    fs::write(a.join("shared.txt"), "first\n").unwrap();
    within(Duration::from_secs(60), "big.bin reaches b", || {
        fs::read(b.join("big.bin")).ok() == fs::read(a.join("big.bin")).ok()
    });
    da.wait_state("in_sync", Duration::from_secs(30));
    let shot = tools::artifacts_dir().join("status-page-in-sync.png");
    let page = tools::page_check(&da.base, "in sync", Some("#state"), Some(&shot), secs(30));
    assert!(page.ok, "{page:?}");
    let before_copy = da.metrics();
    fs::copy(a.join("big.bin"), a.join("copy.bin")).unwrap();
    within(Duration::from_secs(60), "copy.bin reaches b", || {
        b.join("copy.bin").exists() && da.status()["pending_changes"] == 0
    });
    db.wait_state("in_sync", Duration::from_secs(30));
    da.wait_state("in_sync", Duration::from_secs(30));
    before_copy
}

/// The counters against the bucket (`before`: its objects but head markers,
/// and its bytes, before the daemons started) and each other.
fn counters_match_the_bucket(
    da: &Daemon,
    db: &Daemon,
    (s3, bucket): (&S3Env, &str),
    before: (u64, u64),
    before_copy: &Value,
) {
    let (ma, mb) = (da.metrics(), db.metrics());
    let after = bucket_usage(s3, bucket);
    let up = |name: &str| sample(&ma, name, &[]) + sample(&mb, name, &[]);
    assert_eq!(
        up("coffer_store_uploaded_bytes_total") as u64,
        after.1 - before.1,
        "bytes uploaded by both daemons = bytes added to the bucket"
    );
    let objects = |m: &Value| -> f64 {
        ["pack", "commit", "checkpoint", "key", "config", "other"]
            .iter()
            .map(|k| sample(m, "coffer_store_uploaded_objects_total", &[("kind", k)]))
            .sum()
    };
    assert_eq!((objects(&ma) + objects(&mb)) as u64, after.0 - before.0);
    let pushed = sample(&ma, "coffer_commits_pushed_total", &[]);
    assert!(pushed >= 2.0, "a pushed {pushed} commits");
    let pulled = sample(&mb, "coffer_commits_pulled_total", &[]);
    assert!(
        pulled >= pushed,
        "b pulled {pulled} commits, a pushed {pushed}"
    );
    let dedup = sample(&ma, "coffer_chunks_deduplicated_total", &[])
        - sample(before_copy, "coffer_chunks_deduplicated_total", &[]);
    assert!(dedup >= 1.0, "copy.bin's chunks were deduplicated: {dedup}");
    let copy_upload = sample(&ma, "coffer_store_uploaded_bytes_total", &[])
        - sample(before_copy, "coffer_store_uploaded_bytes_total", &[]);
    assert!(copy_upload < 256.0 * 1024.0, "a copy uploads metadata only");
    assert!(sample(&mb, "coffer_files_pulled_total", &[]) >= 3.0);
    assert_eq!(sample(&ma, "coffer_store_reachable", &[]), 1.0);
    assert_eq!(sample(&ma, "coffer_pending_changes", &[]), 0.0);
    assert!(sample(&ma, "coffer_upload_window", &[]) >= 1.0);
    assert!(sample(&ma, "coffer_last_success_timestamp_seconds", &[]) > 1.7e9);
    let steps = sample(
        &ma,
        "coffer_step_duration_seconds_count",
        &[("kind", "sync")],
    );
    assert!(steps >= 3.0, "{steps}");
    assert_eq!(http::get(&da.url("/healthz"), None).status, 200);
}

/// An outage: "failing" within one poll, both edit shared.txt meanwhile, then
/// "in sync" after it and identical folders.
fn outage_with_concurrent_edits(proxy: &FaultProxy, da: &Daemon, a: &Path, b: &Path) {
    proxy.set_faults(Faults {
        reset: 1.0,
        ..Faults::default()
    });
    // Within one poll (2 s): the poll's first request fails. The margin is
    // for a loaded machine.
    da.wait_state("failing", secs(15));
    let page = tools::page_check(&da.base, "failing", Some("#state"), None, secs(20));
    assert!(page.ok, "{page:?}");
    fs::write(a.join("shared.txt"), "edited on a\n").unwrap();
    fs::write(b.join("shared.txt"), "edited on b\n").unwrap();
    within(secs(30), "healthz fails", || {
        http::get(&da.url("/healthz"), None).status == 503
    });
    assert_eq!(da.status()["store_reachable"], false);
    proxy.set_faults(Faults::default());
    let shot = tools::artifacts_dir().join("status-page-after-outage.png");
    let page = tools::page_check(&da.base, "in sync", Some("#state"), Some(&shot), secs(90));
    assert!(page.ok, "{page:?}");
    within(secs(60), "both folders converge", || {
        same(a, b) && da.status()["state"] == "in_sync"
    });
}

/// The conflict copy: on disk, on the page, in the metrics; every reset the
/// proxy injected counted. Returns the conflict copies a wrote.
fn the_conflict_everywhere(proxy: &FaultProxy, da: &Daemon, db: &Daemon, a: &Path) -> f64 {
    let conflicts: Vec<String> = fs::read_dir(a)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("conflict"))
        .collect();
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    let st = da.status();
    let listed: Vec<&str> = st["conflict_copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [conflicts[0].as_str()]);
    let page = tools::page_check(&da.base, &conflicts[0], Some("#conflicts"), None, secs(20));
    assert!(page.ok, "{page:?}");
    phone_page_matches_the_state(da);
    let (ma, mb) = (da.metrics(), db.metrics());
    // The copy is written by each device that derives it in a pull (one or
    // both, as the pulls interleave); a device that gets it as a pushed file
    // does not count it.
    let written = sample(&ma, "coffer_conflicts_total", &[]);
    let total = written + sample(&mb, "coffer_conflicts_total", &[]);
    assert!(
        (1.0..=2.0).contains(&total),
        "{total} conflict copies written"
    );
    let resets = |m: &Value| sample(m, "coffer_store_retries_total", &[("reason", "reset")]);
    let injected = proxy.injected().get("reset").copied().unwrap_or(0);
    assert!(injected > 0);
    assert_eq!(
        (resets(&ma) + resets(&mb)) as u64,
        injected,
        "every reset counted"
    );
    assert_eq!(http::get(&da.url("/healthz"), None).status, 200);

    written
}

/// What a's `/events` carried: summaries, one conflict event per copy a wrote,
/// failing then in_sync, upload progress.
fn events_tell_it_all(events: &mpsc::Receiver<String>, written: f64) {
    let mut seen = Vec::new();
    drain(events, &mut seen);
    let of = |t: &str| seen.iter().filter(|v| v["type"] == t).count();
    assert!(of("summary") >= 3, "{seen:?}");
    assert_eq!(
        of("conflict") as f64,
        written,
        "one conflict event per copy"
    );
    let states: Vec<&str> = seen
        .iter()
        .filter(|v| v["type"] == "state")
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    let failing = states.iter().position(|s| *s == "failing").unwrap();
    assert!(states[failing..].contains(&"in_sync"), "{states:?}");
    assert!(
        seen.iter()
            .any(|v| v["type"] == "progress" && v["phase"] == "upload" && v["done"] == true),
        "upload progress"
    );
}

/// On a phone-sized viewport the page fits its width, logs no error, and
/// shows the numbers of `/api/status`.
fn phone_page_matches_the_state(d: &Daemon) {
    let shot = tools::artifacts_dir().join("status-page-phone.png");
    let eval = "({pending: document.getElementById('pending').textContent, \
        devices: document.querySelectorAll('#devices tr').length, \
        conflicts: document.querySelectorAll('#conflicts a').length, \
        fits: document.documentElement.scrollWidth <= window.innerWidth})";
    let page = tools::page_check_with(
        &d.base,
        "in sync",
        &tools::PageOptions {
            selector: Some("#state"),
            screenshot: Some(&shot),
            timeout: secs(30),
            viewport: Some((390, 844)),
            expect_no_console_errors: true,
            eval: Some(eval),
        },
    );
    assert!(page.ok, "{page:?}");
    let shown = page.eval.unwrap();
    let st = d.status();
    let pending = format!("{} change(s)", st["pending_changes"]);
    assert_eq!(shown["pending"], pending.as_str(), "{shown}");
    let devices = st["devices"].as_array().unwrap().len();
    assert_eq!(shown["devices"], devices, "{shown}");
    assert!(devices >= 2, "both devices listed: {st}");
    assert_eq!(
        shown["conflicts"],
        st["conflict_copies"].as_array().unwrap().len()
    );
    assert_eq!(shown["fits"], true, "no sideways scrolling on a phone");
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub(crate) fn same(a: &Path, b: &Path) -> bool {
    coffer_tests::tree::snapshot(a) == coffer_tests::tree::snapshot(b)
}

/// `--json` on push, pull, sync, get, restore, check and watch: every line is
/// an event of the schema, the summary counts what happened, a failure is a
/// fatal error event; a remote `--listen` needs a private token, and the token
/// guards every route.
#[test]
fn json_events_of_every_long_command_and_the_token_guard() {
    let e = env();
    let src = e.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    random_file(&src.join("d/one.bin"), 300_000, 3);
    fs::write(src.join("two.txt"), "two\n").unwrap();
    e.ok(&["init", "store"]);

    let push = e.ok(&["push", "src", "store", "--json"]);
    let ev = events_of(&push.stdout, "push");
    let s = &ev.last().unwrap()["push"];
    assert_eq!(
        (s["changes"].as_u64(), s["commits"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(s["bytes_read"], 300_004);
    assert!(
        ev.iter()
            .any(|v| v["type"] == "progress" && v["phase"] == "upload"),
        "{}",
        push.stdout
    );
    let pull = e.ok(&["pull", "store", "dst", "--json"]);
    let ev = events_of(&pull.stdout, "pull");
    assert_eq!(ev.last().unwrap()["pull"]["files_written"], 2);
    assert_eq!(ev.last().unwrap()["pull"]["bytes_written"], 300_004);
    assert_same_tree(&src, &e.path("dst"));
    fs::write(src.join("three.txt"), "3\n").unwrap();
    let sync = e.ok(&["sync", "src", "--json"]);
    let last = events_of(&sync.stdout, "sync").pop().unwrap();
    assert_eq!(last["push"]["changes"], 1);
    assert_eq!(last["ok"], true);
    let get = e.ok(&["get", "store", "d", &arg(&e.path("got")), "--json"]);
    assert_eq!(
        events_of(&get.stdout, "get").pop().unwrap()["export"]["files"],
        1
    );
    fs::create_dir_all(e.path("restored")).unwrap();
    let r = e.ok(&[
        "restore", "store", ".", "--at", "now", "--to", "restored", "--json",
    ]);
    let last = events_of(&r.stdout, "restore").pop().unwrap();
    assert_eq!(last["export"]["files"], 3);
    let check = e.ok(&["check", "store", "--read-data", "--json"]);
    let last = events_of(&check.stdout, "check").pop().unwrap();
    assert_eq!(last["check"]["errors"].as_array().unwrap().len(), 0);
    assert_eq!(last["ok"], true);
    let to_stdout = e.fails(&["get", "store", "two.txt", "-", "--json"]);
    let v = check_event(to_stdout.stdout.trim(), "get");
    assert!(v["message"].as_str().unwrap().contains("--json"), "{v}");

    // A failure: one fatal error event, exit non-zero, one line on stderr.
    let bad = e.fails(&["push", "src", "nowhere/store", "--json"]);
    let lines: Vec<Value> = bad.stdout.lines().map(|l| check_event(l, "push")).collect();
    assert_eq!(lines.len(), 1, "{}", bad.stdout);
    assert_eq!(
        (&lines[0]["type"], &lines[0]["fatal"]),
        (&"error".into(), &true.into())
    );
    assert_eq!(bad.stderr.trim().lines().count(), 1, "{}", bad.stderr);

    watch_json_and_token(&e);
}

/// `watch --json` prints events as they happen; the token guards the routes.
fn watch_json_and_token(e: &Env) {
    let remote = e.fails(&["watch", "src", "--listen", "0.0.0.0:0"]);
    assert!(
        remote.stderr.contains("--listen-allow-remote"),
        "{}",
        remote.stderr
    );
    let token_file = e.path("token");
    // As `openssl rand -base64` makes them: `+`, `/` and `=` travel
    // percent-encoded in a query.
    let token = "s3cr3t+t0ken/0123456789==";
    fs::write(&token_file, format!("{token}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = e
        .cmd()
        .args([
            "watch",
            "src",
            "--poll",
            "1",
            "--json",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--listen-token-file", &arg(&token_file)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    while !line.contains("status page on") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no address");
    }
    let base = line.split("status page on ").nth(1).unwrap();
    let base = base.split('/').take(3).collect::<Vec<_>>().join("/");
    for path in ["/", "/metrics", "/api/status", "/healthz", "/events"] {
        assert_eq!(
            http::get(&format!("{base}{path}"), None).status,
            401,
            "{path}"
        );
    }
    let ok = http::get(&format!("{base}/api/status"), Some(token));
    assert_eq!(ok.status, 200);
    let q = "?token=s3cr3t%2Bt0ken%2F0123456789%3D%3D";
    assert_eq!(http::get(&format!("{base}/metrics{q}"), None).status, 200);
    let wrong = "?token=s3cr3t%2Bt0ken%2F0123456789%3D";
    assert_eq!(
        http::get(&format!("{base}/metrics{wrong}"), None).status,
        401
    );
    fs::write(e.path("src/four.txt"), "4\n").unwrap();
    let deadline = Instant::now() + secs(30);
    let mut pushed_four = false;
    while !pushed_four {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("a summary pushing four.txt");
        let v = check_event(&line, "watch");
        pushed_four = v["type"] == "summary" && v["push"]["changes"] == 1;
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}
