//! `kill -9` at random points of a big push: every rerun resumes, nothing the store
//! acknowledged is sent again, and the repository ends complete and verified.

use crate::{arg, env};
use coffer_tests::env::Env;
use coffer_tests::tree::{assert_same_tree, du, random_file};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fs;
use std::process::Stdio;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

#[test]
fn kill_9_at_twenty_points_of_a_600_mib_push_on_a_local_store() {
    let e = env();
    let store = arg(&e.path("store"));
    e.ok(&["init", &store]);
    let local = e.path("store");
    kill_and_resume(&e, &store, 60..250, &|| du(&local));
}

/// Pushes ~600 MiB into `store` (initialized), killing the push with SIGKILL after
/// a random delay in `delay_ms` until 20 kills landed, then finishes it and checks
/// the result. `stored` measures the store's size.
pub fn kill_and_resume(
    e: &Env,
    store: &str,
    delay_ms: std::ops::Range<u64>,
    stored: &dyn Fn() -> u64,
) {
    let src = e.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    for i in 0..6 {
        random_file(&src.join(format!("big-{i}.bin")), 100 * MIB, 100 + i);
    }
    for i in 0..200 {
        fs::write(
            src.join("sub").join(format!("small-{i}.txt")),
            format!("{i}\n").repeat(50),
        )
        .unwrap();
    }
    let data = du(&src);

    // Only kills that land while the push is uploading count (the store grew during
    // that run); a run killed before it uploads anything proves nothing.
    let mut rng = SmallRng::seed_from_u64(9);
    let (mut kills, mut runs) = (0u64, 0);
    while kills < 20 {
        runs += 1;
        assert!(
            runs < 300,
            "only {kills} kills landed mid-upload in {runs} runs"
        );
        let size_before = stored();
        let mut child = e
            .cmd()
            .args(["push", "src", store])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(delay_ms.clone())));
        let finished = child.try_wait().unwrap().is_some();
        assert!(
            !finished,
            "the push completed after {kills} mid-upload kills"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if stored() > size_before {
            kills += 1;
        }
    }
    let before = stored();
    e.ok(&["push", "src", store]);
    let after = stored();
    assert!(
        after <= data + kills * 64 * MIB,
        "store holds {} MiB for {} MiB of data after {kills} kills",
        after / MIB,
        data / MIB
    );

    eprintln!(
        "{kills} kills in {runs} runs; {} MiB stored before the last run, {} MiB after, for {} MiB of data",
        before / MIB,
        after / MIB,
        data / MIB
    );
    let r = e.ok(&["push", "src", store]);
    assert!(r.stderr.contains("nothing to push"), "{}", r.stderr);
    assert_eq!(stored(), after, "a no-change push uploaded something");
    e.ok(&["check", store, "--read-data"]);
    let dst = e.path("dst");
    e.ok(&["pull", store, &arg(&dst)]);
    assert_same_tree(&src, &dst);
}
