//! A version-4 key slot, kind `passphrase-grant` (`fixtures/grant-v4/`: a
//! repository's `config`, its owner slot, and a grant made by `coffer grant
//! add --expires 2099-01-01T00:00:00Z` on host `vm`, Argon2id m=19 MiB t=2
//! p=1, with the passphrase below). It must keep opening until it expires and
//! be refused after, and its seal, grant and MAC must be what `DESIGN.md` §4b
//! says, byte for byte — computed here from that text alone.

use coffer_engine::crypto::keyring::Keyring;
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, LocalStore};
use coffer_engine::{Access, Error, ManualClock, Unlock};
use std::sync::Arc;
use zeroize::Zeroizing;

const PASSPHRASE: &str = "coffer-grant-v4-fixture";
const REPO: &str = "9b97966a5416c4c50a846ff93521925f";
const SLOT: &str = "d3a5c97cf4e3ddc2ff789f7907706e97";
const CREATED: u64 = 1_796_458_849_635;
const EXPIRES: u64 = 4_070_908_800_000; // 2099-01-01T00:00:00Z

fn dir() -> std::path::PathBuf {
    super::fixture("grant-v4")
}

fn slot_json() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir().join("keys").join(SLOT)).unwrap()).unwrap()
}

async fn open_at(now: u64) -> coffer_engine::Result<Repository> {
    let store: DynStore = Arc::new(LocalStore::open(dir(), false).unwrap());
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
        clock: Arc::new(ManualClock::at(now)),
    };
    Repository::open_with_access(store, how, access).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_4_grant_opens_until_it_expires() {
    let repo = open_at(EXPIRES - 1).await.unwrap();
    assert_eq!(repo.id().to_hex(), REPO);
    let (slot, expires) = repo.grant().unwrap();
    assert_eq!((slot.to_hex().as_str(), expires), (SLOT, EXPIRES));
    let err = open_at(EXPIRES).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("this grant expired on 2099-01-01T00:00:00Z (key slot {SLOT})")
    );
}

/// §4b's seal, from the text alone: (identity, kek, AAD, wrapped).
fn unseal(slot: &serde_json::Value) -> (age::x25519::Identity, [u8; 32], Vec<u8>, Vec<u8>) {
    // The seal: Argon2id of the passphrase, XChaCha20-Poly1305 with AAD =
    // "coffer1" || 6 || repository id || slot id || created (u64 BE) ||
    // host length (u8) || host || expires (u64 BE).
    let salt = hex::decode(slot["salt"].as_str().unwrap()).unwrap();
    let params = argon2::Params::new(19456, 2, 1, Some(32)).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut kek = [0u8; 32];
    argon
        .hash_password_into(PASSPHRASE.as_bytes(), &salt, &mut kek)
        .unwrap();
    let (repo, id) = (hex::decode(REPO).unwrap(), hex::decode(SLOT).unwrap());
    let mut aad = b"coffer1".to_vec();
    aad.push(6);
    for part in [
        &repo[..],
        &id,
        &CREATED.to_be_bytes(),
        &[2],
        b"vm",
        &EXPIRES.to_be_bytes(),
    ] {
        aad.extend_from_slice(part);
    }
    let wrapped = hex::decode(slot["wrapped"].as_str().unwrap()).unwrap();
    let plain = coffer_engine::crypto::envelope_open(&kek, &aad, &wrapped).unwrap();
    let identity: age::x25519::Identity = std::str::from_utf8(&plain).unwrap().parse().unwrap();
    (identity, kek, aad, wrapped)
}

#[test]
fn a_version_4_grant_matches_the_design() {
    let slot = slot_json();
    let fields: Vec<&str> = slot
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(fields.len(), 13, "{fields:?}");
    assert_eq!(
        (slot["version"].as_u64(), slot["kind"].as_str()),
        (Some(4), Some("passphrase-grant"))
    );
    assert_eq!(
        (slot["created"].as_u64(), slot["expires"].as_u64()),
        (Some(CREATED), Some(EXPIRES))
    );

    let (identity, kek, aad, wrapped) = unseal(&slot);
    let (repo, id) = (hex::decode(REPO).unwrap(), hex::decode(SLOT).unwrap());
    let recipient = identity.to_public().to_string();
    assert_eq!(slot["recipient"].as_str(), Some(recipient.as_str()));
    // An expiry moved by a day no longer opens.
    let mut later = aad.clone();
    let n = later.len();
    later[n - 8..].copy_from_slice(&(EXPIRES + 86_400_000).to_be_bytes());
    assert!(coffer_engine::crypto::envelope_open(&kek, &later, &wrapped).is_err());

    // §4a: its grant of the root is an age file of the root key.
    let grant = std::fs::read(
        dir()
            .join("grants/0000000000000000-0000000000000000")
            .join(SLOT),
    )
    .unwrap();
    let root = age::decrypt(&identity, &grant).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("config")).unwrap()).unwrap();
    let check = blake3::derive_key("coffer v2 2026-12 key check", &root);
    assert_eq!(
        config["key_check"].as_str(),
        Some(hex::encode(&check[..16]).as_str())
    );

    // The MAC, keyed from the root.
    let key = blake3::derive_key("coffer v4 2026-12 grant slot mac key", &root);
    let mut m = b"coffer grant slot\0".to_vec();
    for part in [
        &repo[..],
        &id,
        &[16],
        b"passphrase-grant",
        &[62],
        recipient.as_bytes(),
    ] {
        m.extend_from_slice(part);
    }
    for part in [
        &CREATED.to_be_bytes()[..],
        &[2],
        b"vm",
        &EXPIRES.to_be_bytes(),
    ] {
        m.extend_from_slice(part);
    }
    let mac = blake3::keyed_hash(&key, &m).to_hex();
    assert_eq!(slot["mac"].as_str(), Some(mac.as_str()));
}
