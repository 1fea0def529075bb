//! coffer on a 3-node Garage cluster (`scripts/garage cluster up`,
//! replication factor 3) that loses nodes: kill -9 during a push, a node down
//! under two watch daemons, and a device's node gone for good while the device
//! goes on through the others (endpoint failover).

use crate::watch_cli::{
    change_both_while_offline, converge_after_the_outage, daemon_on, exchange_a_file, stop, within,
};
use crate::{arg, env};
use coffer_tests::cluster::Cluster;
use coffer_tests::s3::S3Env;
use coffer_tests::tree::{MixedSpec, assert_same_tree, mixed_tree, overwrite};
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// Creates a bucket through the nodes the sandbox is configured with.
fn bucket(e: &coffer_tests::env::Env, name: &str) -> String {
    let bucket = S3Env::unique_bucket(name);
    e.ok(&["create", &bucket]);
    bucket
}

/// 300 MiB (a 280 MiB file and ~20 MiB of others) pushed through node 1 at
/// 30 MB/s, so that the push lasts ~10 s: node 2 is killed once it holds 40 MiB
/// of it and started again once node 1 took 60 MiB more without it.
#[test]
fn a_push_through_node_1_rides_out_node_2_killed_and_restarted() {
    let c = Cluster::from_env();
    let mut e = env();
    c.configure(&mut e, &[1]);
    let src = e.path("src");
    mixed_tree(
        &src,
        MixedSpec {
            small_files: 400,
            big_file: 280 * MIB,
            medium_files: 6,
            seed: 24,
        },
    );
    let bucket = bucket(&e, "cluster-push");
    let store = format!("s3://{bucket}");
    let node2 = c.data_bytes(2);
    let push = e
        .cmd()
        .args(["push", "src", &store, "--limit-upload", "30M", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let limit = Duration::from_secs(60);
    within(limit, "node 2 holds 40 MiB of the push", || {
        c.data_bytes(2) >= node2 + 40 * MIB
    });
    let down = c.kill(2);
    let node1 = c.data_bytes(1);
    within(limit, "node 1 takes 60 MiB more with node 2 down", || {
        c.data_bytes(1) >= node1 + 60 * MIB
    });
    let mut push = push;
    assert!(
        push.try_wait().unwrap().is_none(),
        "the push ended before node 2 came back: the scenario needs a slower push"
    );
    down.start();
    let out = push.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "push failed: {stderr}");

    e.ok(&["check", &bucket, "--read-data"]);
    let mut other = e.machine("node3");
    c.configure(&mut other, &[3]);
    let dst = other.path("dst");
    other.ok(&["pull", &bucket, &arg(&dst)]);
    assert_same_tree(&src, &dst);
}

/// Device a watches through nodes 1 then 3, device b through nodes 2 then 3.
/// Node 1 is down for 40 s — longer than the breaker's longest skip (30 s), so
/// a's daemon probes it several times and keeps working through node 3: both
/// folders converge while it is down, and again once it is back.
#[test]
fn two_watch_daemons_on_different_nodes_converge_while_a_node_is_down() {
    let c = Cluster::from_env();
    let mut e = env();
    c.configure(&mut e, &[1, 3]);
    let bucket = bucket(&e, "cluster-watch");
    let store = format!("s3://{bucket}");
    let mut eb = e.machine("b");
    c.configure(&mut eb, &[2, 3]);
    let (a, b) = (e.path("a"), eb.path("b"));
    fs::create_dir_all(&a).unwrap();
    fs::write(a.join("gone-later.txt"), "old\n").unwrap();
    e.ok(&["push", &arg(&a), &store]);
    let (da, db) = (daemon_on(&e, &a, &store, 1), daemon_on(&eb, &b, &store, 1));
    exchange_a_file(&a, &b);

    let outage = Duration::from_secs(40);
    let down = c.kill(1);
    let since = Instant::now();
    change_both_while_offline(&a, &b);
    converge_after_the_outage(&a, &b);
    // The outage lasts its full length, whatever the convergence took.
    std::thread::sleep(outage.saturating_sub(since.elapsed()));
    fs::write(a.join("late.txt"), "written with node 1 down\n").unwrap();
    within(Duration::from_secs(30), "a late file reaches b", || {
        b.join("late.txt").exists()
    });
    down.start();
    exchange_a_file(&a, &b);
    let (la, lb) = (stop(da), stop(db));
    assert!(la.contains("did not answer"), "{la}");
    assert!(!lb.contains("did not answer"), "{lb}");
    assert_same_tree(&a, &b);
}

/// A device that names all three nodes pushes through node 1; node 1 dies for
/// good. Its next push, `check --read-data`, its bucket listing and another
/// device's pull go on through nodes 2 and 3 with no change of configuration.
#[test]
fn a_device_goes_on_through_the_other_nodes_when_its_node_dies_for_good() {
    let c = Cluster::from_env();
    let mut e = env();
    c.configure(&mut e, &[1, 2, 3]);
    let src = e.path("src");
    let big = mixed_tree(
        &src,
        MixedSpec {
            small_files: 300,
            big_file: 12 * MIB,
            medium_files: 2,
            seed: 31,
        },
    );
    let bucket = bucket(&e, "cluster-gone");
    let store = format!("s3://{bucket}");
    let first = e.ok(&["push", "src", &store]);
    assert!(!first.stderr.contains("did not answer"), "{}", first.stderr);

    let _gone = c.kill(1);
    overwrite(&big, 5 * MIB, 100_000, 7);
    fs::write(src.join("after-node-1.txt"), "pushed through the others\n").unwrap();
    let second = e.ok(&["push", "src", &store]);
    assert!(
        second.stderr.contains("did not answer"),
        "{}",
        second.stderr
    );
    e.ok(&["check", &bucket, "--read-data"]);
    // Bucket administration, which has no failover, goes to a node that answers.
    let buckets = e.ok(&["list"]);
    assert!(
        buckets.stdout.lines().any(|l| l == bucket),
        "{}",
        buckets.stdout
    );

    // Another device, given the same three endpoints on the command line.
    let mut other = e.machine("other");
    c.configure(&mut other, &[1, 2, 3]);
    other.unset("AWS_ENDPOINT_URL");
    let dst = other.path("dst");
    other.ok(&[
        "--endpoint",
        &c.endpoints(&[1, 2, 3]),
        "pull",
        &bucket,
        &arg(&dst),
    ]);
    assert_same_tree(&src, &dst);
}
