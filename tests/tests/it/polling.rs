//! What a sync step costs in store requests (`DESIGN.md` §6b), counted by the
//! fault proxy in front of the project's Garage: a `coffer sync` that finds
//! nothing new is 3 requests however many devices and commits the repository
//! has, and one that finds another device's commit lists only that log.

use crate::env;
use coffer_tests::env::Env;
use coffer_tests::proxy::{FaultProxy, Faults, Logged};
use coffer_tests::s3::S3Env;
use std::fs;

/// A request as `"LIST prefix"`, `"GET key"`, `"PUT key"`..., keys relative to
/// the bucket.
fn describe(r: &Logged, bucket: &str) -> String {
    let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
    let key = path
        .trim_start_matches('/')
        .trim_start_matches(bucket)
        .trim_start_matches('/');
    let listing = query.split('&').any(|p| p == "list-type=2");
    if r.method == "GET" && listing {
        let prefix = query
            .split('&')
            .find_map(|p| p.strip_prefix("prefix="))
            .unwrap_or("");
        return format!("LIST {}", prefix.replace("%2F", "/"));
    }
    format!("{} {key}", r.method)
}

/// The requests the proxy saw while `run` ran.
fn requests_of(proxy: &FaultProxy, bucket: &str, run: impl FnOnce()) -> Vec<String> {
    let before = proxy.log().len();
    run();
    proxy.log()[before..]
        .iter()
        .map(|r| describe(r, bucket))
        .collect()
}

/// A machine of `e`'s sandbox reaching Garage through the proxy.
fn machine(e: &Env, s3: &S3Env, proxy: &FaultProxy, name: &str) -> Env {
    let mut m = e.machine(name);
    s3.configure(&mut m, &proxy.url());
    m
}

#[test]
fn a_sync_that_finds_nothing_new_costs_three_requests_whatever_the_history() {
    let s3 = S3Env::from_env();
    let proxy = FaultProxy::start(&s3.endpoint, Faults::default(), 24);
    let sandbox = env();
    let e = machine(&sandbox, &s3, &proxy, "a");
    let bucket = S3Env::unique_bucket("polling");
    e.ok(&["create", &bucket]);
    let store = format!("s3://{bucket}");
    let machines: Vec<Env> = (0..4)
        .map(|i| machine(&e, &s3, &proxy, &format!("m{i}")))
        .collect();
    for (i, m) in machines.iter().enumerate() {
        for round in 0..3 {
            fs::create_dir_all(m.path("dir")).unwrap();
            fs::write(m.path(&format!("dir/m{i}.txt")), format!("round {round}")).unwrap();
            m.ok(&["sync", "dir", &store]);
        }
    }
    let a = &machines[0];
    a.ok(&["sync", "dir"]);

    let idle = requests_of(&proxy, &bucket, || {
        a.ok(&["sync", "dir"]);
    });
    assert_eq!(
        idle,
        ["GET config", "LIST epochs/", "LIST head/"],
        "{idle:?}"
    );

    let b = &machines[1];
    fs::write(b.path("dir/m1.txt"), "round 3").unwrap();
    b.ok(&["sync", "dir"]);
    let b_log = format!("LIST log/{}/", device_of(b));
    let grown = requests_of(&proxy, &bucket, || {
        a.ok(&["sync", "dir"]);
    });
    assert!(grown.contains(&b_log), "{grown:?}");
    assert!(!grown.iter().any(|r| r == "LIST log/"), "{grown:?}");
    assert_eq!(fs::read_to_string(a.path("dir/m1.txt")).unwrap(), "round 3");
}

/// The device id of `m`'s folder `dir`, from `coffer status --json`.
fn device_of(m: &Env) -> String {
    let out = m.ok(&["status", "dir", "--json"]).stdout;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    v["device"].as_str().unwrap().to_string()
}
