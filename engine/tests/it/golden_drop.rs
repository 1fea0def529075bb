//! A version-1 partner drop (`fixtures/drop-v1/`: a repository made by
//! `coffer init` (Argon2id m=19 MiB t=2 p=1, the passphrase below), a drop
//! made by `coffer drop create store acme --expires 2099-01-01T00:00:00Z`,
//! its token, and what `coffer drop push TOKEN expected/site1 --device-name
//! site1` wrote). The token must keep parsing, the drop must keep pulling
//! byte-identical, and its commit and blob must be what `DESIGN.md` §4c
//! says, byte for byte — the MAC, the blob AAD and the chunk id computed here
//! from that text alone.

use coffer_engine::crypto::keyring::Keyring;
use coffer_engine::drops::format::DropCommit;
use coffer_engine::drops::token::DropToken;
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, LocalStore, ObjectStore};
use coffer_engine::{Access, Error, ManualClock, Unlock};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

const PASSPHRASE: &str = "coffer-drop-v1-fixture";
const DROP: &str = "8fd9b97dcf9db6031531c7f90980babd";
const DEVICE: &str = "d411d97374333fad1627a2b211cb8674";
const EXPIRES: u64 = 4_070_908_800_000; // 2099-01-01T00:00:00Z

fn dir() -> PathBuf {
    super::fixture("drop-v1")
}

fn token() -> DropToken {
    DropToken::read_file(&dir().join("acme.drop-token")).unwrap()
}

async fn open() -> Repository {
    let store: DynStore = Arc::new(LocalStore::open(dir().join("store"), false).unwrap());
    let home = tempfile::tempdir().unwrap();
    let keyring = Keyring::new(home.path());
    let mut ask = || Ok(Zeroizing::new(PASSPHRASE.to_string()));
    let warn = |_: &Error| {};
    let how = Unlock {
        keyring: Some(&keyring),
        kms: None,
        ask: &mut ask,
        warn: &warn,
    };
    let access = Access {
        identity: None,
        clock: Arc::new(ManualClock::at(EXPIRES - 1)),
    };
    Repository::open_with_access(store, how, access)
        .await
        .unwrap()
}

fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_drop_pulls_byte_identical() {
    let t = token();
    assert_eq!(
        (t.drop.to_hex().as_str(), t.name.as_str(), t.expires_ms),
        (DROP, "acme", Some(EXPIRES))
    );
    let repo = open().await;
    assert_eq!(t.repo, repo.id());
    let info = coffer_engine::find_drop(&repo, "acme").await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let r = coffer_engine::pull_drop(&repo, &info, out.path(), None)
        .await
        .unwrap();
    assert!(r.scan.problems.is_empty(), "{:?}", r.scan.problems);
    assert_eq!(r.written, 2);
    assert_eq!(files(out.path()), files(&dir().join("expected")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_commit_and_blob_are_what_design_4c_says() {
    let t = token();
    let store = LocalStore::open(dir().join("store"), false).unwrap();
    let key = format!("drop/{DROP}/log/{DEVICE}/0000000000000000");
    let object = store.get(&key).await.unwrap();
    // §4c: age ciphertext || MAC, MAC = keyed BLAKE3 (write key) of
    // "coffer-drop1" || 0x02 || drop id || device id || seq (u64 BE) || ciphertext.
    let (ciphertext, mac) = object.split_at(object.len() - 32);
    assert!(ciphertext.starts_with(b"age-encryption.org/v1\n-> X25519 "));
    let mut h = blake3::Hasher::new_keyed(&t.write_key);
    h.update(b"coffer-drop1");
    h.update(&[2]);
    h.update(&hex::decode(DROP).unwrap());
    h.update(&hex::decode(DEVICE).unwrap());
    h.update(&0u64.to_be_bytes());
    h.update(ciphertext);
    assert_eq!(h.finalize().as_bytes(), mac);
    // The owner's record holds the age identity that opens it.
    let repo = open().await;
    let drop = coffer_engine::format::id::DropId::from_hex(DROP).unwrap();
    let record = coffer_engine::drops::record::read_record(&repo, &drop)
        .await
        .unwrap()
        .unwrap();
    let identity: age::x25519::Identity = record.identity.parse().unwrap();
    let plain = age::decrypt(&identity, ciphertext).unwrap();
    let commit: DropCommit = postcard::from_bytes(&plain).unwrap();
    assert_eq!(
        (commit.version, commit.seq, commit.device_name.as_str()),
        (1, 0, "site1")
    );
    assert_eq!(commit.prev.0, [0; 32]);
    // A blob: nonce || XChaCha20-Poly1305 || tag under the pack key, AAD =
    // "coffer-drop1" || 0x01 || drop id || pack id || chunk id; the chunk id
    // is keyed BLAKE3 under derive_key("coffer-drop1 2026-12 dedup key", write key).
    let file = commit
        .files
        .iter()
        .find(|f| f.path == "sub/scan.raw")
        .unwrap();
    let dedup = blake3::derive_key("coffer-drop1 2026-12 dedup key", &t.write_key[..]);
    let mut data = Vec::new();
    for c in &file.chunks {
        let pack_key = commit.packs.iter().find(|p| p.pack == c.pack).unwrap().key;
        let sealed = store
            .get_range(
                &format!("drop/{DROP}/data/{}", c.pack),
                c.offset..c.offset + u64::from(c.len),
            )
            .await
            .unwrap();
        let mut aad = b"coffer-drop1".to_vec();
        aad.push(1);
        aad.extend_from_slice(&hex::decode(DROP).unwrap());
        aad.extend_from_slice(c.pack.as_bytes());
        aad.extend_from_slice(c.id.as_bytes());
        let chunk = coffer_engine::crypto::envelope_open(&pack_key, &aad, &sealed).unwrap();
        assert_eq!(
            blake3::keyed_hash(&dedup, &chunk).as_bytes(),
            c.id.as_bytes()
        );
        data.extend_from_slice(&chunk);
    }
    assert_eq!(
        data,
        std::fs::read(dir().join("expected/site1/sub/scan.raw")).unwrap()
    );
}
