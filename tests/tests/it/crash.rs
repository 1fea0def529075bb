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
    kill_and_resume(&e, &store, 0..150, &|| du(&local));
}

/// Pushes ~600 MiB into `store` (initialized), killing it with SIGKILL 20 times —
/// each time once the store has grown, plus a random delay in `delay_ms` — then
/// finishes it and checks the result. `stored` measures the store's size.
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

    // Each run is killed once the store has grown (so mid-upload, whatever the
    // machine's speed), after a further random delay.
    let mut rng = SmallRng::seed_from_u64(9);
    let mut kills = 0u64;
    while kills < 20 {
        let size_before = stored();
        let mut child = e
            .cmd()
            .args(["push", "src", store])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while stored() <= size_before {
            assert!(
                child.try_wait().unwrap().is_none(),
                "a push finished without uploading (after {kills} kills)"
            );
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "a push made no progress"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(delay_ms.clone())));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the push completed after {kills} kills"
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
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
        "{kills} kills; {} MiB stored before the last run, {} MiB after, for {} MiB of data",
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
