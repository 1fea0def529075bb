//! Every decoder of untrusted bytes, fed arbitrary bytes and mutations of valid
//! objects: each must return `Ok` or an error — never panic, loop or allocate
//! without bound. Sealed objects are sealed here with the test's own key, so the
//! decoders behind the AEAD are reached (what a device holding the key, or a
//! bug in one, could write). Bounded: a few hundred cases per decoder.

use coffer_engine::crypto::MasterKey;
use coffer_engine::crypto::epoch::SlotIdentity;
use coffer_engine::crypto::grantslot::GrantSlot;
use coffer_engine::crypto::keyslot::{KdfParams, KeySlot, StoredSlot};
use coffer_engine::crypto::{Keys, Kind};
use coffer_engine::folder::Folder;
use coffer_engine::format::checkpoint::Checkpoint;
use coffer_engine::format::commit::Commit;
use coffer_engine::format::config::RepoConfig;
use coffer_engine::format::id::{DeviceId, PackId, RepoId, SlotId};
use coffer_engine::format::pack::{Footer, open_trailer};
use coffer_engine::journal::Journal;
use coffer_engine::progress::NoProgress;
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, MemoryStore, layout};
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};

/// A repository with one pushed commit; its config, slot and commit plaintext.
struct Fixture {
    repo: Repository,
    config: Vec<u8>,
    slot: Vec<u8>,
    commit_plain: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store: DynStore = Arc::new(MemoryStore::new());
            let repo = Repository::init(store.clone(), b"pw", KdfParams::MINIMUM, None)
                .await
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("d")).unwrap();
            std::fs::write(dir.path().join("d/f.txt"), "some data").unwrap();
            std::os::unix::fs::symlink("d/f.txt", dir.path().join("link")).unwrap();
            let folder = Folder::open(dir.path(), repo.id(), "memory:", false).unwrap();
            coffer_engine::sync::push::push(&repo, &folder, &Default::default(), &NoProgress)
                .await
                .unwrap();
            let get = |key: String| {
                let store = store.clone();
                async move { store.get(&key).await.unwrap().to_vec() }
            };
            let log = store.list(layout::LOG_PREFIX).await.unwrap();
            let (device, seq) =
                layout::parse_device_seq(&log[0].key[layout::LOG_PREFIX.len()..]).unwrap();
            let sealed = get(log[0].key.clone()).await;
            let commit_plain = repo
                .keys()
                .open(Kind::Commit, &log_identity(&device, seq), &sealed)
                .unwrap();
            let slots = store.list(layout::KEYS_PREFIX).await.unwrap();
            Fixture {
                config: get(layout::CONFIG.to_string()).await,
                slot: get(slots[0].key.clone()).await,
                commit_plain,
                repo,
            }
        })
    })
}

fn log_identity(device: &DeviceId, seq: u64) -> Vec<u8> {
    let mut id = device.as_bytes().to_vec();
    id.extend_from_slice(&seq.to_be_bytes());
    id
}

fn keys() -> Arc<Keys> {
    fixture().repo.keys()
}

/// `valid` with `edits` applied: (position, kind, byte) — overwrite, insert,
/// delete, or truncate there.
fn mutate(valid: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut out = valid.to_vec();
    for &(pos, kind, byte) in edits {
        if out.is_empty() {
            out.push(byte);
            continue;
        }
        let at = pos % out.len();
        match kind % 4 {
            0 => out[at] = byte,
            1 => out.insert(at, byte),
            2 => {
                out.remove(at);
            }
            _ => out.truncate(at),
        }
    }
    out
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec(any::<(usize, u8, u8)>(), 1..8)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn open_commit(plain: &[u8]) {
    let device = DeviceId::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
    let sealed = keys().seal(Kind::Commit, &log_identity(&device, 1), plain);
    let _ = Commit::open(&keys(), &device, 1, &sealed);
}

fn open_checkpoint(plain: &[u8]) {
    let device = DeviceId::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
    let sealed = keys().seal(Kind::Checkpoint, &log_identity(&device, 3), plain);
    let _ = Checkpoint::open(&fixture().repo, &device, 3, &sealed);
}

/// A version-4 passphrase grant (passphrase `pw`) as JSON.
fn grant_slot() -> &'static [u8] {
    static G: OnceLock<Vec<u8>> = OnceLock::new();
    G.get_or_init(|| {
        let (repo, slot) = (RepoId::random(), SlotId::random());
        let g = GrantSlot::create_passphrase(
            &SlotIdentity::generate(),
            &MasterKey::generate(),
            (b"pw", KdfParams::MINIMUM),
            (&repo, &slot),
            (1_796_000_000_000, "vm", 1_797_000_000_000),
        )
        .unwrap();
        serde_json::to_vec_pretty(&g).unwrap()
    })
}

/// Every check a reader makes of a grant (Argon2 only with cheap parameters).
fn use_grant(bytes: &[u8]) {
    let Ok(StoredSlot::Grant(g)) = StoredSlot::parse(bytes, "fuzz") else {
        return;
    };
    let (repo, slot) = (RepoId::random(), SlotId::random());
    let _ = g.check("fuzz");
    let _ = g.authentic(&MasterKey::generate(), &repo, &slot);
    let _ = g.expired(u64::MAX);
    if g.params()
        .is_some_and(|p| p.m_cost_kib <= 64 * 1024 && p.t_cost <= 3)
    {
        let _ = g.open(b"pw", &repo, &slot);
    }
}

/// A drop commit's plaintext, sealed (age + MAC) as a partner would, and
/// opened by the owner's decoder.
fn use_drop_commit(plain: &[u8]) {
    use coffer_engine::drops::format::{commit_mac, open_commit};
    use coffer_engine::format::id::DropId;
    static ID: OnceLock<age::x25519::Identity> = OnceLock::new();
    let id = ID.get_or_init(age::x25519::Identity::generate);
    let (drop, dev, auth) = (DropId([1; 16]), DeviceId([2; 16]), [3u8; 32]);
    let mut object = age::encrypt(&id.to_public(), plain).unwrap();
    let mac = commit_mac(&auth, &drop, &dev, 0, &object);
    object.extend_from_slice(&mac);
    let _ = open_commit(&object, (&drop, &dev, 0), id, &auth, "fuzz");
    let _ = open_commit(plain, (&drop, &dev, 0), id, &auth, "fuzz");
}

fn drop_commit_plain() -> Vec<u8> {
    use coffer_engine::drops::format::{ChunkRef, DropCommit, DropFile, PackKey};
    use coffer_engine::format::id::{ChunkId, CommitHash, DropId};
    let c = DropCommit {
        version: 1,
        drop: DropId([1; 16]),
        device: DeviceId([2; 16]),
        device_name: "site".into(),
        seq: 0,
        prev: CommitHash([0; 32]),
        time_ms: 5,
        packs: vec![PackKey {
            pack: PackId([4; 32]),
            key: [5; 32],
        }],
        files: vec![DropFile {
            path: "a/b".into(),
            size: 3,
            mode: 0o644,
            mtime_ms: 9,
            chunks: vec![ChunkRef {
                id: ChunkId([6; 32]),
                pack: PackId([4; 32]),
                offset: 0,
                len: 43,
            }],
        }],
    };
    postcard::to_allocvec(&c).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn drop_commit_and_token_decoders_never_panic(raw in bytes(400), e in edits()) {
        use coffer_engine::drops::token::DropToken;
        use_drop_commit(&raw);
        use_drop_commit(&mutate(&drop_commit_plain(), &e));
        let _ = DropToken::parse(&raw, "fuzz");
        let token = std::fs::read(super::fixture("drop-v1").join("acme.drop-token")).unwrap();
        let _ = DropToken::parse(&mutate(&token, &e), "fuzz");
    }

    #[test]
    fn grant_slot_decode_never_panics(raw in bytes(400), e in edits()) {
        let _ = StoredSlot::parse(&raw, "fuzz");
        use_grant(&raw);
        use_grant(&mutate(grant_slot(), &e));
    }

    #[test]
    fn config_parse_never_panics(raw in bytes(400), e in edits()) {
        let _ = RepoConfig::parse(&raw, "fuzz");
        let _ = RepoConfig::parse(&mutate(&fixture().config, &e), "fuzz");
    }

    #[test]
    fn key_slot_decode_never_panics(raw in bytes(400), e in edits()) {
        let _ = serde_json::from_slice::<KeySlot>(&raw);
        if let Ok(slot) = serde_json::from_slice::<KeySlot>(&mutate(&fixture().slot, &e)) {
            // Opening runs Argon2 with the slot's parameters: only cheap ones here
            // (the bounds on expensive ones are tested in `keyslot`).
            if slot.params.m_cost_kib <= 64 * 1024 && slot.params.t_cost <= 3 {
                let _ = slot.open(b"pw", &RepoId::random(), &SlotId::random());
            }
        }
    }

    #[test]
    fn commit_decode_never_panics(raw in bytes(600), e in edits(), codec in 0u8..3) {
        open_commit(&raw);
        let mut framed = vec![1, codec];
        framed.extend_from_slice(&raw);
        open_commit(&framed);
        let zstd_framed = [&[1u8, 1][..], &zstd::bulk::compress(&raw, 1).unwrap()].concat();
        open_commit(&zstd_framed);
        open_commit(&mutate(&fixture().commit_plain, &e));
    }

    #[test]
    fn checkpoint_decode_never_panics(raw in bytes(600)) {
        open_checkpoint(&raw);
        open_checkpoint(&[&[1u8][..], &zstd::bulk::compress(&raw, 1).unwrap()].concat());
    }

    #[test]
    fn pack_footer_and_trailer_decode_never_panic(
        footer in bytes(64), trailer in bytes(600), count in any::<u32>()
    ) {
        let id = PackId([9; 32]);
        let sealed = keys().seal(Kind::PackFooter, id.as_bytes(), &footer);
        let _ = Footer::open(&keys(), &id, &sealed);
        let f = Footer { blob_count: count % 64, blobs_len: 0, padding_len: 0, trailer_len: 0 };
        let sealed = keys().seal(Kind::PackTrailer, id.as_bytes(), &trailer);
        let _ = open_trailer(&keys(), &id, &f, &sealed);
        let f = Footer { blob_count: count, ..f };
        let _ = open_trailer(&keys(), &id, &f, &sealed);
    }

    #[test]
    fn journal_rows_decode_never_panics(raw in bytes(200)) {
        let _ = Journal::decode_stat(&raw);
    }
}
