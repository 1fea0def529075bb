//! How many bytes an edit makes a push send, over many repository keys.
//!
//! ```text
//! cargo run --release -p coffer-engine --example edit_cost -- [overwrite|insert|both|peer] [--plain] [--level N] [--avg KIB] [KEYS]
//! ```
//! A 40 MiB pseudo-random file is chunked with the default parameters and a gear table
//! seeded per key; then either 1 MiB at 10 MiB is overwritten or 100 bytes are
//! inserted there (`both`: the overwrite is pushed first, then 100 bytes are inserted
//! at 5 MiB, and the second step is measured; `peer`: the `scripts/bench-peers`
//! edit, 1 MiB overwritten at 10 MiB and 100 bytes inserted at 30 MiB, in one
//! step), and the new version is chunked again
//! — resyncing on the old boundaries as `push` does, or plainly with `--plain`.
//! Prints the distribution of the bytes in chunks the old version did not have
//! (what a push would upload). `--level N` sets the FastCDC normalization level
//! (default: the repository default); `--avg KIB` sets the average chunk size, with
//! min = avg / 4 and max = avg × 4 as in the default.

use coffer_engine::chunk::chunker::{Chunker, ChunkerParams};
use std::collections::HashSet;

const MIB: usize = 1 << 20;

fn pseudo_random(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (s >> 33) as u8
        })
        .collect()
}

fn lengths(c: &Chunker, data: &[u8], previous: Vec<u64>) -> Vec<usize> {
    c.chunks_resyncing(data, None, previous)
        .map(|r| r.map(|b| b.len()))
        .collect::<Result<_, _>>()
        .unwrap_or_default()
}

fn ends_of(lengths: &[usize]) -> Vec<u64> {
    lengths
        .iter()
        .scan(0u64, |at, &n| {
            *at += n as u64;
            Some(*at)
        })
        .collect()
}

/// Bytes of `new`'s chunks whose content is not a chunk of `old` (itself cut as
/// resyncing on `older` when given, as a previous push would have).
fn fresh_bytes(c: &Chunker, older: Option<&[u8]>, old: &[u8], new: &[u8], resync: bool) -> usize {
    let previous = match older {
        Some(o) if resync => ends_of(&lengths(c, o, Vec::new())),
        _ => Vec::new(),
    };
    let mut known = HashSet::new();
    let mut ends = Vec::new();
    let mut at = 0;
    for n in lengths(c, old, previous) {
        known.insert(blake3::hash(&old[at..at + n]));
        at += n;
        ends.push(at as u64);
    }
    let mut fresh = 0;
    let mut at = 0;
    for n in lengths(c, new, if resync { ends } else { Vec::new() }) {
        if !known.contains(&blake3::hash(&new[at..at + n])) {
            fresh += n;
        }
        at += n;
    }
    fresh
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let insert = args.iter().any(|a| a == "insert");
    let both = args.iter().any(|a| a == "both");
    let peer = args.iter().any(|a| a == "peer");
    let flag = |name: &str| -> Option<u32> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1)?.parse().ok()
    };
    let level = flag("--level").map_or(ChunkerParams::DEFAULT.normalization, |l| l as u8);
    let params = match flag("--avg") {
        Some(kib) => ChunkerParams {
            min: kib * 256,
            avg: kib * 1024,
            max: kib * 4096,
            normalization: level,
        },
        None => ChunkerParams {
            normalization: level,
            ..ChunkerParams::DEFAULT
        },
    };
    let avg = params.avg;
    let resync = !args.iter().any(|a| a == "--plain");
    let keys: u64 = args
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || !args[i - 1].starts_with("--"))
        .find_map(|(_, a)| a.parse().ok())
        .unwrap_or(299);

    let first = pseudo_random(7, 40 * MIB);
    let mut old = first.clone();
    let older = both.then_some(first.as_slice());
    if insert {
        old.splice(10 * MIB..10 * MIB, [42u8; 100]);
    } else {
        old[10 * MIB..11 * MIB].copy_from_slice(&pseudo_random(99, MIB));
    }
    if peer {
        old.splice(30 * MIB..30 * MIB, [42u8; 100]);
    }
    let (old, new) = if both {
        let mut new = old.clone();
        new.splice(5 * MIB..5 * MIB, [42u8; 100]);
        (old, new)
    } else {
        (first.clone(), old)
    };
    let mut costs: Vec<usize> = (1..=keys)
        .map(|k| {
            let c = Chunker::new(params, k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            fresh_bytes(&c, older, &old, &new, resync)
        })
        .collect();
    costs.sort_unstable();
    let mib = |i: usize| costs[i.min(costs.len() - 1)] as f64 / MIB as f64;
    let n = costs.len();
    println!(
        "{} ({}, level {level}, avg {} KiB), {n} keys: median {:.2} MiB, p90 {:.2}, p99 {:.2}, max {:.2}; >= 4 MiB: {}",
        if peer {
            "1 MiB overwrite + 100-byte insert"
        } else if both {
            "100-byte insert after a pushed 1 MiB overwrite"
        } else if insert {
            "100-byte insert"
        } else {
            "1 MiB overwrite"
        },
        if resync { "resync" } else { "plain" },
        avg / 1024,
        mib(n / 2),
        mib(n * 9 / 10),
        mib(n * 99 / 100),
        mib(n - 1),
        costs.iter().filter(|&&c| c >= 4 * MIB).count()
    );
}
