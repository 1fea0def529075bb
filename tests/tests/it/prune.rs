//! `coffer prune` through the binary (DESIGN.md §11): it reclaims what killed
//! pushes left, as much as its dry run said; kill -9 at any point leaves a
//! repository `check --read-data` accepts, and a rerun finishes; on Garage,
//! through a proxy injecting SlowDown and resets, it runs while two `watch`
//! daemons keep changing their folders and loses nothing.

use crate::watch_cli::{daemon_on, same, stop, within};
use crate::{arg, env};
use coffer_tests::env::Env;
use coffer_tests::proxy::{FaultProxy, Faults};
use coffer_tests::s3::S3Env;
use coffer_tests::tree::{assert_same_tree, random_file};
use serde_json::Value;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// `prune` with a test grace (allowed by `COFFER_TEST_SHORT_GRACE`), `--json`:
/// its report.
fn prune(e: &Env, store: &str, grace: &str, extra: &[&str]) -> Value {
    let mut args = vec!["prune", store, "--grace", grace, "--json"];
    args.extend_from_slice(extra);
    let r = e.ok(&args);
    // Every line is an event of the README's schema; the last is the summary.
    let events: Vec<Value> = r
        .stdout
        .lines()
        .map(|line| crate::ops::check_event(line, "prune"))
        .collect();
    let v = events.last().cloned().unwrap_or_default();
    assert_eq!(v["type"], "summary", "{}", r.stdout);
    v["prune"].clone()
}

fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
}

/// Leaves packs no commit names: pushes of `count` folders of 30 MiB each
/// (1 MiB packs), each killed with SIGKILL once 6 MiB of packs arrived, whose folders are then gone
/// (a machine that died). `stored` measures the store's `data/`.
fn leave_orphans(e: &Env, store: &str, count: u64, stored: &dyn Fn() -> u64) {
    for i in 0..count {
        let dir = e.path(&format!("dead-{i}"));
        fs::create_dir_all(&dir).unwrap();
        random_file(&dir.join("big.bin"), 30 * MIB, 700 + i);
        let before = stored();
        let mut child = e
            .cmd()
            .args(["push", &arg(&dir), store, "--pack-mib", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while stored() < before + 6 * MIB && child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the push stalled"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// A store with orphans and one live folder `live` pushed; returns the data's path.
fn local_with_orphans(e: &Env) -> (String, std::path::PathBuf) {
    let store = arg(&e.path("store"));
    e.ok(&["init", &store]);
    let data = e.path("store").join("data");
    leave_orphans(e, &store, 3, &|| packs_size(&data));
    let live = e.path("live");
    fs::create_dir_all(&live).unwrap();
    random_file(&live.join("kept.bin"), 5 * MIB, 1);
    e.ok(&["push", &arg(&live), &store]);
    (store, data)
}

/// Bytes of the packs of a local store (0 while it has none; objects that
/// appear or go during the walk are skipped).
fn packs_size(data: &std::path::Path) -> u64 {
    let Ok(fans) = fs::read_dir(data) else {
        return 0;
    };
    fans.flatten()
        .filter_map(|fan| fs::read_dir(fan.path()).ok())
        .flat_map(|packs| packs.flatten())
        .filter_map(|p| p.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn check_clean(e: &Env, store: &str) {
    let r = e.ok(&["check", store, "--read-data"]);
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(said.contains(": no errors"), "{said}");
}

#[test]
fn prune_reclaims_what_killed_pushes_left_within_5_percent_of_its_dry_run() {
    let mut e = env();
    e.set("COFFER_TEST_SHORT_GRACE", "1");
    let (store, data) = local_with_orphans(&e);
    let before = packs_size(&data);
    let dry = prune(&e, &store, "0s", &["--dry-run"]);
    let estimate = num(&dry, "reclaimable_bytes");
    assert!(estimate > 8 * MIB, "{dry}");
    assert_eq!(packs_size(&data), before, "a dry run deleted something");
    assert!(
        fs::read_dir(e.path("store").join("gc")).is_err(),
        "a dry run wrote a mark"
    );

    let marked = prune(&e, &store, "0s", &[]);
    assert_eq!(num(&marked, "bytes_marked"), estimate, "{marked}");
    assert_eq!(num(&marked, "packs_deleted"), 0);
    let swept = prune(&e, &store, "0s", &[]);
    let reclaimed = before - packs_size(&data);
    let diff = reclaimed.abs_diff(estimate);
    assert!(
        diff * 20 <= estimate,
        "reclaimed {reclaimed}, estimated {estimate}: {swept}"
    );
    assert_eq!(
        num(&swept, "packs_in_store") - num(&swept, "packs_deleted"),
        num(&swept, "packs_referenced")
    );

    check_clean(&e, &store);
    let back = e.path("back");
    e.ok(&["pull", &store, &arg(&back)]);
    assert_same_tree(&e.path("live"), &back);
}

#[test]
fn kill_9_of_prune_at_several_points_leaves_a_checked_repository_and_a_rerun_finishes() {
    let mut e = env();
    e.set("COFFER_TEST_SHORT_GRACE", "1");
    let (store, _) = local_with_orphans(&e);
    let delays = [0, 2, 4, 6, 8, 10, 13, 16, 20, 30];
    kill_prune_at(&e, &store, &delays, 3);
}

#[test]
fn kill_9_of_prune_at_ten_points_on_garage() {
    let s3 = S3Env::from_env();
    let mut e = env();
    s3.configure(&mut e, &s3.endpoint);
    e.set("COFFER_TEST_SHORT_GRACE", "1");
    let bucket = S3Env::unique_bucket("prunekill");
    e.ok(&["create", &bucket]);
    let store = format!("s3://{bucket}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let direct = rt.block_on(s3.store(&bucket, &s3.endpoint));
    let size = || -> u64 {
        use coffer_engine::store::ObjectStore;
        rt.block_on(direct.list("data/"))
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum()
    };
    leave_orphans(&e, &store, 3, &size);
    let live = e.path("live");
    fs::create_dir_all(&live).unwrap();
    random_file(&live.join("kept.bin"), 5 * MIB, 1);
    e.ok(&["push", &arg(&live), &store]);
    let delays = [0, 3, 6, 9, 12, 16, 20, 25, 35, 50];
    kill_prune_at(&e, &store, &delays, 4);
}

/// Runs `prune --grace 0s` on `store` (with orphans and the folder `live`
/// pushed) once per delay, killing it with SIGKILL after that many ms: after
/// each kill `check --read-data` is clean; at least `running` kills must find
/// prune running; then reruns finish: only named packs remain, `live` pulls back.
fn kill_prune_at(e: &Env, store: &str, delays: &[u64], running: usize) {
    let mut killed_running = 0;
    for (i, &delay_ms) in delays.iter().enumerate() {
        let mut child = e
            .cmd()
            .args(["prune", store, "--grace", "0s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        check_clean(e, store);
        if i == 2 {
            // A push between kills finds its uploads intact (or sends them again).
            fs::write(e.path("live").join("later.txt"), "after a kill\n").unwrap();
            e.ok(&["push", &arg(&e.path("live")), store]);
        }
    }
    assert!(
        killed_running >= running,
        "only {killed_running} kill(s) found prune running"
    );
    prune(e, store, "0s", &[]);
    let done = prune(e, store, "0s", &[]);
    assert_eq!(
        num(&done, "packs_in_store") - num(&done, "packs_deleted"),
        num(&done, "packs_referenced"),
        "{done}"
    );
    let last = prune(e, store, "0s", &[]);
    assert_eq!(
        (num(&last, "packs_marked"), num(&last, "packs_deleted")),
        (0, 0),
        "{last}"
    );
    check_clean(e, store);
    let back = e.path("back");
    e.ok(&["pull", store, &arg(&back)]);
    assert_same_tree(&e.path("live"), &back);
}

/// Issue 19's acceptance scenario on Garage, bounded: orphans of killed pushes,
/// then three rounds in which both daemons' folders change while prune marks
/// and, after the grace, sweeps; the proxy injects SlowDown and resets.
#[test]
fn prune_on_garage_while_two_daemons_keep_changing_their_folders_loses_nothing() {
    let s3 = S3Env::from_env();
    let proxy = FaultProxy::start(
        &s3.endpoint,
        Faults {
            slow_down: 0.03,
            reset: 0.02,
            ..Faults::default()
        },
        19,
    );
    let mut e = env();
    s3.configure(&mut e, &proxy.url());
    e.set("COFFER_TEST_SHORT_GRACE", "1");
    let bucket = S3Env::unique_bucket("prune");
    e.ok(&["create", &bucket]);
    let store = format!("s3://{bucket}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let direct = rt.block_on(s3.store(&bucket, &s3.endpoint));
    let size = || -> u64 {
        use coffer_engine::store::ObjectStore;
        rt.block_on(direct.list(""))
            .unwrap()
            .iter()
            .map(|o| o.size)
            .sum()
    };
    leave_orphans(&e, &store, 2, &size);

    let (a, b) = (e.path("a"), e.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    let (da, db) = (daemon_on(&e, &a, &store, 1), daemon_on(&e, &b, &store, 1));
    let mut deleted = 0;
    for round in 0..3u64 {
        random_file(&a.join(format!("a-{round}.bin")), 3 * MIB, 10 + round);
        random_file(&b.join(format!("b-{round}.bin")), 3 * MIB, 20 + round);
        fs::write(a.join("shared.txt"), format!("round {round}\n")).unwrap();
        prune(&e, &store, "4s", &[]);
        std::thread::sleep(Duration::from_secs(5));
        deleted += num(&prune(&e, &store, "4s", &[]), "packs_deleted");
    }
    within(Duration::from_secs(60), "both folders converge", || {
        same(&a, &b) && b.join("a-2.bin").exists() && a.join("b-2.bin").exists()
    });
    let (la, lb) = (stop(da), stop(db));
    assert!(
        deleted >= 2,
        "the orphans were not swept ({deleted} packs deleted)\n{la}\n{lb}"
    );
    let check = e.ok(&["check", &store, "--read-data"]);
    assert!(
        check.stdout.contains("no errors") || check.stderr.contains("no errors"),
        "{}{}",
        check.stdout,
        check.stderr
    );
    assert_same_tree(&a, &b);
    let back = e.path("back");
    e.ok(&["pull", &store, &arg(&back)]);
    assert_same_tree(&a, &back);
}
