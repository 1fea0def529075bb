//! Bandwidth limits of the real program on a local store and on Garage: the
//! wall time of a limited push and pull follows the rate.

use crate::{arg, env};
use coffer_tests::tree::{assert_same_tree, random_file};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// The figure: 100 MiB at 5 MiB/s take 20 s ± 10 %.
#[test]
fn a_100_mib_push_at_5_mib_per_s_takes_20_s() {
    let e = env();
    std::fs::create_dir_all(e.path("src")).unwrap();
    random_file(&e.path("src/big"), 100 * MIB, 11);
    e.ok(&["init", "store"]);
    let t = Instant::now();
    e.ok(&["push", "src", "store", "--limit-upload", "5M"]);
    let took = t.elapsed();
    eprintln!("100 MiB push at --limit-upload 5M: {took:.2?}");
    assert!(
        (Duration::from_secs(18)..=Duration::from_secs(22)).contains(&took),
        "took {took:?}"
    );
}

#[test]
fn a_20_mib_pull_at_4_mib_per_s_takes_5_s() {
    let e = env();
    std::fs::create_dir_all(e.path("src")).unwrap();
    random_file(&e.path("src/big"), 20 * MIB, 12);
    e.ok(&["init", "store"]);
    e.ok(&["push", "src", "store"]);
    let other = e.machine("b");
    let dst = other.path("dst");
    let t = Instant::now();
    other.ok(&[
        "pull",
        &arg(&e.path("store")),
        &arg(&dst),
        "--limit-download",
        "4M",
    ]);
    let took = t.elapsed();
    eprintln!("20 MiB pull at --limit-download 4M: {took:.2?}");
    assert_same_tree(&e.path("src"), &dst);
    assert!(
        (Duration::from_secs(4)..=Duration::from_secs(7)).contains(&took),
        "took {took:?}"
    );
}

#[test]
fn a_bad_rate_is_one_clear_line() {
    let e = env();
    let run = e.fails(&["init", "store", "--limit-upload", "12X"]);
    assert!(
        run.stderr.contains(
            "--limit-upload \"12X\": expected a rate like 10M, 500K or off, \
             or a schedule like \"08:00,10M 19:00,off\""
        ),
        "{}",
        run.stderr
    );
}

/// On S3 (the project's Garage) the limit works inside the request bodies: a
/// 20 MiB push at 4 MiB/s and a pull of it at 4 MiB/s each take about 5 s
/// (asserted with a wide margin; the lower bound is the limit itself).
#[test]
fn limits_hold_on_garage_in_both_directions() {
    let s3 = coffer_tests::s3::S3Env::from_env();
    let mut e = env();
    s3.configure(&mut e, &s3.endpoint);
    let bucket = coffer_tests::s3::S3Env::unique_bucket("bwlimit");
    e.ok(&["create", &bucket]);
    std::fs::create_dir_all(e.path("src")).unwrap();
    random_file(&e.path("src/big"), 20 * MIB, 13);
    let store = format!("s3://{bucket}");
    let window = Duration::from_secs(4)..=Duration::from_secs(9);
    let t = Instant::now();
    e.ok(&["push", "src", &store, "--limit-upload", "4M"]);
    let took = t.elapsed();
    eprintln!("20 MiB push to Garage at --limit-upload 4M: {took:.2?}");
    assert!(window.contains(&took), "push took {took:?}");
    let dst = e.path("dst");
    let t = Instant::now();
    e.ok(&["pull", &store, &arg(&dst), "--limit-download", "4M"]);
    let took = t.elapsed();
    eprintln!("20 MiB pull from Garage at --limit-download 4M: {took:.2?}");
    assert_same_tree(&e.path("src"), &dst);
    assert!(window.contains(&took), "pull took {took:?}");
}
