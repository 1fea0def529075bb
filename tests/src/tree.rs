//! Deterministic test trees and exact comparison (content, kind, permission bits,
//! symlink targets), ignoring `.coffer/`.

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One node of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File { mode: u32, size: u64, hash: String },
    Dir { mode: u32 },
    Symlink { target: PathBuf },
}

/// Relative path → node, for every entry below `root` except `.coffer/`.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if rel.as_os_str().is_empty() && name == ".coffer" {
            continue;
        }
        let r = rel.join(&name);
        let m = entry.metadata().unwrap();
        let mode = m.mode() & 0o7777;
        if m.file_type().is_symlink() {
            out.insert(
                r,
                Node::Symlink {
                    target: fs::read_link(entry.path()).unwrap(),
                },
            );
        } else if m.is_dir() {
            out.insert(r.clone(), Node::Dir { mode });
            walk(root, &r, out);
        } else {
            let hash = blake3::hash(&fs::read(entry.path()).unwrap())
                .to_hex()
                .to_string();
            out.insert(
                r,
                Node::File {
                    mode,
                    size: m.len(),
                    hash,
                },
            );
        }
    }
}

/// Panics with the first differences if the trees differ.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let (a, b) = (snapshot(expected), snapshot(actual));
    if a == b {
        return;
    }
    let mut diffs = Vec::new();
    for (p, n) in &a {
        match b.get(p) {
            None => diffs.push(format!("missing: {}", p.display())),
            Some(m) if m != n => {
                diffs.push(format!("differs: {} expected {n:?} got {m:?}", p.display()))
            }
            _ => {}
        }
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        diffs.push(format!("unexpected: {}", p.display()));
    }
    diffs.truncate(20);
    panic!(
        "trees differ ({} vs {}):\n{}",
        expected.display(),
        actual.display(),
        diffs.join("\n")
    );
}

/// Writes `len` pseudo-random bytes (incompressible) from `seed` to `path`.
pub fn random_file(path: &Path, len: u64, seed: u64) {
    use std::io::Write;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

/// Overwrites `len` bytes at `offset` of `path` with fresh random bytes.
pub fn overwrite(path: &Path, offset: u64, len: usize, seed: u64) {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    SmallRng::seed_from_u64(seed).fill_bytes(&mut buf);
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(&buf, offset)
        .unwrap();
}

/// Names that stress encodings and parsing.
pub const ODD_NAMES: &[&str] = &[
    "with space",
    "ünïcödé-ñame",
    "日本語のファイル",
    "emoji-🦀",
    "-leading-dash",
    "trailing.dot.",
    "quote'n\"double",
    "back\\slash",
    "semi;colon&amp",
    "..two-dots-prefix",
    "%41%2F-percent",
    "tab\there",
];

/// The shape of a mixed tree.
#[derive(Debug, Clone, Copy)]
pub struct MixedSpec {
    pub small_files: usize,
    pub big_file: u64,
    pub medium_files: usize,
    pub seed: u64,
}

/// A tree with nested dirs, empty files and dirs, odd names, one big file, many
/// small files, a few medium ones, executable and read-only modes, and symlinks.
/// Returns the path of the big file.
pub fn mixed_tree(root: &Path, spec: MixedSpec) -> PathBuf {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    fs::create_dir_all(root.join("deep/a/b/c/d/e")).unwrap();
    fs::create_dir_all(root.join("empty-dir/also-empty")).unwrap();
    fs::write(root.join("empty-file"), b"").unwrap();
    fs::write(root.join("deep/a/b/c/d/e/leaf.txt"), b"deep leaf\n").unwrap();
    for (i, name) in ODD_NAMES.iter().enumerate() {
        let dir = root.join("odd").join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(format!("{name}.txt")),
            format!("file {i} named {name}\n"),
        )
        .unwrap();
    }
    let exe = root.join("bin/tool.sh");
    fs::create_dir_all(exe.parent().unwrap()).unwrap();
    fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let ro = root.join("readonly.txt");
    fs::write(&ro, b"do not touch\n").unwrap();
    fs::set_permissions(&ro, fs::Permissions::from_mode(0o444)).unwrap();
    let private = root.join("private.key");
    fs::write(&private, b"secret-ish\n").unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("bin/tool.sh", root.join("link-to-tool")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling-link")).unwrap();
    for i in 0..spec.small_files {
        let dir = root.join(format!("small/{:02}", i % 50));
        fs::create_dir_all(&dir).unwrap();
        let len = rng.random_range(0..8192usize);
        let mut data = vec![0u8; len];
        if i % 3 == 0 {
            data.iter_mut()
                .enumerate()
                .for_each(|(j, b)| *b = b"text line "[j % 10]);
        } else {
            rng.fill_bytes(&mut data);
        }
        fs::write(dir.join(format!("f{i:05}.dat")), data).unwrap();
    }
    for i in 0..spec.medium_files {
        let len = rng.random_range(100_000..3_000_000u64);
        random_file(
            &root.join(format!("medium-{i}.bin")),
            len,
            spec.seed ^ (i as u64 + 1),
        );
    }
    let big = root.join("big/data.bin");
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    random_file(&big, spec.big_file, spec.seed.wrapping_mul(31));
    big
}

/// Total bytes of the regular files below `root` (a store directory, say).
/// Files and directories that vanish while it walks (a running server's
/// temporary files) are skipped, not an error.
pub fn du(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && d != root => continue,
            Err(e) => panic!("du {}: {e}", d.display()),
        };
        for entry in entries {
            let meta = match entry.and_then(|e| Ok((e.path(), e.metadata()?))) {
                Ok(found) => found,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("du {}: {e}", d.display()),
            };
            match meta {
                (path, meta) if meta.is_dir() => stack.push(path),
                (_, meta) => total += meta.len(),
            }
        }
    }
    total
}

/// Every regular file below `root`, as paths.
pub fn files(root: &Path) -> Vec<PathBuf> {
    snapshot(root)
        .into_iter()
        .filter(|(_, n)| matches!(n, Node::File { .. }))
        .map(|(p, _)| root.join(p))
        .collect()
}
