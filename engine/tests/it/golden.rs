//! Golden fixtures: objects written by earlier versions that every later one
//! must read (and the KMS key slot of `fixtures/slot-kms/`, opened through a
//! stand-in that answers only the request `DESIGN.md` §4 documents). A repository written by format v1 (`fixtures/v1-repo/`, passphrase
//! `coffer-v1-fixture`) must stay readable by every later version. It holds two
//! commits of one device: `hello.txt` (rewritten), `dir/data.bin` (300,000 bytes of
//! `(i * 7) % 251`), an empty `dir/empty`, a symlink `link -> hello.txt`, and
//! `run.sh` (0755), deleted by the second commit.

use coffer_engine::check::check;
use coffer_engine::crypto::keyring::Keyring;
use coffer_engine::crypto::keyslot::KeySlot;
use coffer_engine::crypto::kms::KmsSlot;
use coffer_engine::crypto::{Keys, MasterKey};
use coffer_engine::format::commit::Entry;
use coffer_engine::format::path::RepoPath;
use coffer_engine::progress::NoProgress;
use coffer_engine::repo::Repository;
use coffer_engine::store::{DynStore, LocalStore};
use coffer_engine::sync::pull::restore::stream_file;
use coffer_engine::sync::pull::view::RepoView;
use coffer_engine::{KeyWrapper, KmsContext, KmsError, Unlock};
use std::sync::Arc;
use zeroize::Zeroizing;

const PASSPHRASE: &str = "coffer-v1-fixture";

/// The KMS slot fixture (`fixtures/slot-kms/`): its slot id, when it was made,
/// and the master key moto's `Decrypt` gave for it.
const SLOT_KMS_ID: &str = "0be31accc3b1201aa762520a3a0ab224";
const SLOT_KMS_CREATED: u64 = 1_796_400_172_812;
const SLOT_KMS_MASTER: &str = "c5170cf304056c96b6d7285d2cf2a972d9f145bff869a100136cd395b214b142";

async fn open() -> Repository {
    let store: DynStore = Arc::new(LocalStore::open(super::fixture("v1-repo"), false).unwrap());
    let home = tempfile::tempdir().unwrap();
    let mut ask = || Ok(Zeroizing::new(PASSPHRASE.to_string()));
    Repository::open(store, &Keyring::new(home.path()), &mut ask)
        .await
        .unwrap()
}

fn p(s: &str) -> RepoPath {
    RepoPath::new(s.as_bytes().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_v1_repository_reads_and_verifies() {
    let repo = open().await;
    let view = RepoView::load(&repo, None, &NoProgress).await.unwrap();
    assert!(view.errors.is_empty(), "{:?}", view.errors);
    assert_eq!(view.commits.len(), 2);
    let merged = view.merged().unwrap();
    let names: Vec<String> = merged.keys().map(|k| k.display()).collect();
    assert_eq!(
        names,
        ["dir", "dir/data.bin", "dir/empty", "hello.txt", "link"]
    );
    assert!(
        matches!(&merged[&p("link")].entry, Entry::Symlink { target, .. } if target == b"hello.txt")
    );

    let mut out = Vec::new();
    let Entry::File(hello) = &merged[&p("hello.txt")].entry else {
        panic!("not a file")
    };
    stream_file(&repo, &view.journal, &p("hello.txt"), hello, &mut out)
        .await
        .unwrap();
    assert_eq!(out, b"hello again\n");

    let Entry::File(data) = &merged[&p("dir/data.bin")].entry else {
        panic!("not a file")
    };
    let mut out = Vec::new();
    stream_file(&repo, &view.journal, &p("dir/data.bin"), data, &mut out)
        .await
        .unwrap();
    let expected: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert!(out == expected, "dir/data.bin content");

    let report = check(&repo, true, None, &NoProgress).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.errors);
    assert_eq!(report.packs_verified, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_v1_history_is_reachable() {
    let repo = open().await;
    let view = RepoView::load(&repo, None, &NoProgress).await.unwrap();
    let first = view.commits[0].hlc.millis();
    let past = RepoView::load_at(&repo, first, None, &NoProgress)
        .await
        .unwrap();
    let merged = past.merged().unwrap();
    assert!(
        merged.contains_key(&p("run.sh")),
        "run.sh existed after the first commit"
    );
    let Entry::File(f) = &merged[&p("run.sh")].entry else {
        panic!("not a file")
    };
    assert_eq!(f.mode, 0o755);
}

/// Chunking parameters live in `config`: a repository made with the 1 MiB-average
/// defaults of format v1's first release keeps cutting with them (so its devices
/// keep deduplicating against each other), whatever today's default is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_v1_repository_keeps_its_chunker_parameters() {
    use coffer_engine::chunk::chunker::ChunkerParams;
    let repo = open().await;
    let old = ChunkerParams {
        min: 256 * 1024,
        avg: 1024 * 1024,
        max: 4 * 1024 * 1024,
        normalization: 2,
    };
    assert_eq!(*repo.chunker().params(), old);
    assert_ne!(ChunkerParams::DEFAULT, old);
    let mut data = vec![0u8; 24 << 20];
    blake3::Hasher::new().finalize_xof().fill(&mut data);
    let lengths: Vec<usize> = repo
        .chunker()
        .chunks_resyncing(&data[..], None, Vec::new())
        .map(|c| c.unwrap().len())
        .collect();
    assert_eq!(lengths.iter().sum::<usize>(), data.len());
    let (last, rest) = lengths.split_last().unwrap();
    assert!(*last <= old.max as usize);
    assert!(
        rest.iter()
            .all(|&n| (old.min as usize..=old.max as usize).contains(&n)),
        "{lengths:?}"
    );
}

/// A format-1 config has no MAC, so a folder pins the config it synced with: a
/// store that later edits the chunker parameters is refused, not obeyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_v1_config_edited_in_the_store_is_refused_by_a_folder_that_synced() {
    use coffer_engine::folder::Folder;
    use coffer_engine::store::{MemoryStore, ObjectStore, layout};
    let fixture = LocalStore::open(super::fixture("v1-repo"), false).unwrap();
    let store: DynStore = Arc::new(MemoryStore::new());
    for meta in fixture.list("").await.unwrap() {
        let bytes = fixture.get(&meta.key).await.unwrap();
        store.put(&meta.key, bytes).await.unwrap();
    }
    let home = tempfile::tempdir().unwrap();
    let keyring = Keyring::new(home.path());
    let mut ask = || Ok(Zeroizing::new(PASSPHRASE.to_string()));
    let repo = Repository::open(store.clone(), &keyring, &mut ask)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = Folder::open(dir.path(), repo.id(), "memory:", false).unwrap();
    coffer_engine::sync::pull::pull(&repo, &folder, &NoProgress)
        .await
        .unwrap();
    drop(folder);

    let mut config = repo.config().clone();
    config.chunker.min /= 2;
    let json = serde_json::to_vec(&config).unwrap();
    store.put(layout::CONFIG, json.into()).await.unwrap();
    let mut never = || -> coffer_engine::Result<Zeroizing<String>> { panic!("keyring") };
    let edited = Repository::open(store, &keyring, &mut never).await.unwrap();
    let folder = Folder::open(dir.path(), edited.id(), "memory:", false).unwrap();
    let err = coffer_engine::sync::pull::pull(&edited, &folder, &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("chunker parameters changed"), "{err}");
    let err = coffer_engine::sync::push::push(&edited, &folder, &Default::default(), &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("chunker parameters changed"), "{err}");
}

/// A version-2 key slot (`fixtures/slot-v2/`: a repository's `config` and its one
/// slot, made by `coffer init` on host `vm` with the passphrase below). It must
/// keep opening, its record must read back exactly, and its seal must be what
/// `DESIGN.md` §4 says, byte for byte — computed here from that text alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_v2_opens_and_matches_the_design() {
    const SLOT_V2_PASSPHRASE: &str = "coffer-slot-v2-fixture";
    let root = super::fixture("slot-v2");
    let store: DynStore = Arc::new(LocalStore::open(&root, false).unwrap());
    let home = tempfile::tempdir().unwrap();
    let mut ask = || Ok(Zeroizing::new(SLOT_V2_PASSPHRASE.to_string()));
    let repo = Repository::open(store.clone(), &Keyring::new(home.path()), &mut ask)
        .await
        .unwrap();
    let slots = Repository::list_slots(&store).await.unwrap();
    assert_eq!(slots.len(), 1);
    let slot = &slots[0];
    assert_eq!(slot.id.to_hex(), "5ee6f35c33bd68c045037122c6884791");
    assert_eq!(slot.created, Some(1_796_398_021_450));
    assert_eq!(slot.host.as_deref(), Some("vm"));
    assert!(slot.usable());

    // DESIGN.md §4: Argon2id of the passphrase, then XChaCha20-Poly1305 with
    // AAD = "coffer1" || 6 || repository id || slot id || created (u64 BE) ||
    // host length (u8) || host.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("keys").join(slot.id.to_hex())).unwrap())
            .unwrap();
    let salt = hex::decode(json["salt"].as_str().unwrap()).unwrap();
    let wrapped = hex::decode(json["wrapped"].as_str().unwrap()).unwrap();
    let params = argon2::Params::new(19456, 2, 1, Some(32)).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut kek = [0u8; 32];
    argon
        .hash_password_into(SLOT_V2_PASSPHRASE.as_bytes(), &salt, &mut kek)
        .unwrap();
    let mut aad = b"coffer1".to_vec();
    aad.push(6);
    aad.extend_from_slice(repo.id().as_bytes());
    aad.extend_from_slice(slot.id.as_bytes());
    aad.extend_from_slice(&1_796_398_021_450u64.to_be_bytes());
    aad.push(2);
    aad.extend_from_slice(b"vm");
    let master = coffer_engine::crypto::envelope_open(&kek, &aad, &wrapped).unwrap();
    let master = MasterKey::from_bytes(master.try_into().unwrap());
    assert_eq!(
        Keys::derive(&master).chunker_seed(),
        repo.keys().chunker_seed()
    );

    // The record is bound: the same slot claiming another host does not open.
    let mut edited = json.clone();
    edited["host"] = "elsewhere".into();
    let edited: KeySlot = serde_json::from_value(edited).unwrap();
    let opened = edited.open(SLOT_V2_PASSPHRASE.as_bytes(), &repo.id(), &slot.id);
    assert_eq!(opened.unwrap(), None);
}

/// Stands in for KMS with what moto's `Decrypt` gave for the fixture: it
/// answers only the exact request `DESIGN.md` §4 describes.
#[derive(Debug)]
struct FixtureKms {
    key_id: String,
    blob: Vec<u8>,
    context: Vec<(&'static str, String)>,
    master: [u8; 32],
    asked: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl KeyWrapper for FixtureKms {
    async fn wrap(&self, key_id: &str, _: &[u8], _: &KmsContext) -> Result<Vec<u8>, KmsError> {
        panic!("opening the fixture encrypts nothing (asked for {key_id})")
    }

    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        context: &KmsContext,
    ) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if key_id != self.key_id || ciphertext != self.blob || *context != self.context {
            return Err(KmsError {
                action: "Decrypt",
                key_id: key_id.into(),
                reason: "InvalidCiphertextException: ".into(),
                denied: true,
            });
        }
        Ok(Zeroizing::new(self.master.to_vec()))
    }
}

/// A KMS key slot (`fixtures/slot-kms/`: a repository's `config` and its one
/// slot, made by `coffer init --kms alias/coffer-fixture` on host `vm` against
/// moto). Its bytes must be what `DESIGN.md` §4 says (field order included),
/// and opening it must ask KMS for exactly the documented `Decrypt`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_kms_opens_with_the_documented_request() {
    let root = super::fixture("slot-kms");
    let store: DynStore = Arc::new(LocalStore::open(&root, false).unwrap());
    let slots = Repository::list_slots(&store).await.unwrap();
    assert_eq!(slots.len(), 1);
    let slot = &slots[0];
    assert_eq!(slot.id.to_hex(), SLOT_KMS_ID);
    assert_eq!(slot.kind.as_deref(), Some("kms"));
    assert_eq!(slot.key_id.as_deref(), Some("alias/coffer-fixture"));
    assert_eq!(slot.created, Some(SLOT_KMS_CREATED));
    assert_eq!(slot.host.as_deref(), Some("vm"));
    assert!(slot.usable() && slot.kdf.is_none());

    let bytes = std::fs::read(root.join("keys").join(SLOT_KMS_ID)).unwrap();
    let parsed: KmsSlot = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(serde_json::to_vec_pretty(&parsed).unwrap(), bytes);
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let names: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
    let config = Repository::read_config(&store).await.unwrap();
    let kms = FixtureKms {
        key_id: "alias/coffer-fixture".into(),
        blob: hex::decode(json["wrapped"].as_str().unwrap()).unwrap(),
        context: vec![
            ("coffer-repository", config.repo_id().unwrap().to_hex()),
            ("coffer-slot", SLOT_KMS_ID.into()),
            ("coffer-origin", format!("{SLOT_KMS_CREATED} vm")),
        ],
        master: hex::decode(SLOT_KMS_MASTER).unwrap().try_into().unwrap(),
        asked: Default::default(),
    };
    let warn = |e: &coffer_engine::Error| panic!("{e}");
    let mut never = || -> coffer_engine::Result<Zeroizing<String>> { panic!("no passphrase") };
    let how = Unlock {
        keyring: None,
        kms: Some(&kms),
        ask: &mut never,
        warn: &warn,
    };
    let repo = Repository::open_with(store.clone(), how).await.unwrap();
    assert_eq!(kms.asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    let master = MasterKey::from_bytes(kms.master);
    assert_eq!(
        Keys::derive(&master).chunker_seed(),
        repo.keys().chunker_seed()
    );

    // The record is bound through the context: an edited host asks KMS for
    // another context, which it refuses.
    let mut edited = parsed;
    edited.host = "elsewhere".into();
    let err = edited.open(&kms, &repo.id(), &slot.id).await.unwrap_err();
    assert!(
        err.to_string().contains("InvalidCiphertextException"),
        "{err}"
    );
}

/// A rotated repository (`fixtures/rotated/`, made by `coffer init` with the
/// passphrase below and Argon2id m=19 MiB t=2 p=1 on host `vm`, a push of
/// `a.txt`, `coffer key rotate`, a push of `b.txt`). It must keep opening, and
/// every new object must be what `DESIGN.md` §4 and §4a say, byte for byte —
/// computed by the tests below from that text alone.
struct Rotated {
    dir: std::path::PathBuf,
}

const ROTATED_PASSPHRASE: &str = "coffer-rotated-fixture";
const ROTATED_REPO: &str = "885dcf16f66429f3c2c6e1e618ab8d88";
const ROTATED_SLOT: &str = "dfad382ad9307824409a676874afa0d6";
const ROTATED_EPOCH: &str = "0000000000000001-4d53bf45a9b82691";

impl Rotated {
    fn new() -> Rotated {
        Rotated {
            dir: super::fixture("rotated"),
        }
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(rel)).unwrap()
    }

    fn json(&self, rel: &str) -> serde_json::Value {
        serde_json::from_slice(&self.read(rel)).unwrap()
    }

    /// `"coffer1" || kind || parts...`.
    fn aad(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut aad = b"coffer1".to_vec();
        aad.push(kind);
        parts.iter().for_each(|p| aad.extend_from_slice(p));
        aad
    }

    /// §4 version 3: the slot's identity, sealed like a version-2 slot's key.
    fn identity(&self) -> age::x25519::Identity {
        let slot = self.json(&format!("keys/{ROTATED_SLOT}"));
        assert_eq!(slot.as_object().unwrap().len(), 12, "{slot}");
        let salt = hex::decode(slot["salt"].as_str().unwrap()).unwrap();
        let params = argon2::Params::new(19456, 2, 1, Some(32)).unwrap();
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut kek = [0u8; 32];
        argon
            .hash_password_into(ROTATED_PASSPHRASE.as_bytes(), &salt, &mut kek)
            .unwrap();
        let created = slot["created"].as_u64().unwrap().to_be_bytes();
        let (repo, id) = (
            hex::decode(ROTATED_REPO).unwrap(),
            hex::decode(ROTATED_SLOT).unwrap(),
        );
        let aad = Self::aad(6, &[&repo, &id, &created, &[2], b"vm"]);
        let wrapped = hex::decode(slot["wrapped"].as_str().unwrap()).unwrap();
        let plain = coffer_engine::crypto::envelope_open(&kek, &aad, &wrapped).unwrap();
        let identity: age::x25519::Identity = std::str::from_utf8(&plain).unwrap().parse().unwrap();
        let recipient = identity.to_public().to_string();
        assert_eq!(slot["recipient"].as_str(), Some(recipient.as_str()));
        identity
    }

    /// §4a: the grant of `epoch` is an age file of its key.
    fn granted(&self, identity: &age::x25519::Identity, epoch: &str) -> Vec<u8> {
        let file = self.read(&format!("grants/{epoch}/{ROTATED_SLOT}"));
        age::decrypt(identity, &file).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_repository_opens_verifies_and_restores() {
    let store: DynStore = Arc::new(LocalStore::open(Rotated::new().dir, false).unwrap());
    let home = tempfile::tempdir().unwrap();
    let mut ask = || Ok(Zeroizing::new(ROTATED_PASSPHRASE.to_string()));
    let repo = Repository::open(store.clone(), &Keyring::new(home.path()), &mut ask)
        .await
        .unwrap();
    assert_eq!(repo.id().to_hex(), ROTATED_REPO);
    assert_eq!(repo.epoch().to_string(), ROTATED_EPOCH);
    let report = check(&repo, true, None, &NoProgress).await.unwrap();
    assert!(report.is_ok() && report.commits == 2, "{report:?}");
    let view = RepoView::load(&repo, None, &NoProgress).await.unwrap();
    let merged = view.merged().unwrap();
    let files = [
        ("a.txt", "before the rotation\n"),
        ("b.txt", "after the rotation\n"),
    ];
    for (path, text) in files {
        let Entry::File(file) = &merged[&p(path)].entry else {
            panic!("{path} is not a file")
        };
        let mut out = Vec::new();
        stream_file(&repo, &view.journal, &p(path), file, &mut out)
            .await
            .unwrap();
        assert_eq!(out, text.as_bytes(), "{path}");
    }
}

#[test]
fn a_rotated_repository_slot_grants_and_mac_match_the_design() {
    let f = Rotated::new();
    let identity = f.identity();
    let root = f.granted(&identity, "0000000000000000-0000000000000000");
    let check_key = blake3::derive_key("coffer v2 2026-12 key check", &root);
    let config = f.json("config");
    let want = hex::encode(&check_key[..16]);
    assert_eq!(config["key_check"].as_str(), Some(want.as_str()));
    // The slot's MAC, keyed from the root.
    let mac_key = blake3::derive_key("coffer v3 2026-12 slot mac key", &root);
    let mut m = b"coffer slot\0".to_vec();
    m.extend_from_slice(&hex::decode(ROTATED_REPO).unwrap());
    m.extend_from_slice(&hex::decode(ROTATED_SLOT).unwrap());
    m.push(10);
    m.extend_from_slice(b"passphrase");
    m.extend_from_slice(identity.to_public().to_string().as_bytes());
    let mac = blake3::keyed_hash(&mac_key, &m).to_hex();
    let slot = f.json(&format!("keys/{ROTATED_SLOT}"));
    assert_eq!(slot["mac"].as_str(), Some(mac.as_str()));
}

#[test]
fn a_rotated_repository_record_and_commits_match_the_design() {
    let f = Rotated::new();
    let identity = f.identity();
    let root = f.granted(&identity, "0000000000000000-0000000000000000");
    let epoch1 = f.granted(&identity, ROTATED_EPOCH);
    // The record seals the older keys (postcard: count, then level, id, key).
    let record = f.json(&format!("epochs/{ROTATED_EPOCH}"));
    let aead1 = blake3::derive_key("coffer v1 2026-11 aead key", &epoch1);
    let created = record["created"].as_u64().unwrap().to_be_bytes();
    let repo = hex::decode(ROTATED_REPO).unwrap();
    let id = hex::decode("4d53bf45a9b82691").unwrap();
    let aad = Rotated::aad(7, &[&repo, &1u64.to_be_bytes(), &id, &created, &[2], b"vm"]);
    let keys = hex::decode(record["keys"].as_str().unwrap()).unwrap();
    let list = coffer_engine::crypto::envelope_open(&aead1, &aad, &keys).unwrap();
    let mut want = vec![1u8, 0];
    want.extend_from_slice(&[0u8; 8]);
    want.extend_from_slice(&root);
    assert_eq!(list, want);
    // The commit after the rotation: its nonce starts with epoch 1's tag and it
    // opens under epoch 1's AEAD key; the one before, under the root's.
    let device = "f41ee65b7db78c0f0cf6c690a9224f0c";
    let tag = blake3::derive_key("coffer v3 2026-12 epoch nonce tag", &epoch1);
    let aead0 = blake3::derive_key("coffer v1 2026-11 aead key", &root);
    for (seq, key, tagged) in [(1u64, aead0, false), (2, aead1, true)] {
        let sealed = f.read(&format!("log/{device}/{seq:016x}"));
        assert_eq!(sealed[..8] == tag[..8], tagged, "commit {seq}");
        let aad = Rotated::aad(4, &[&hex::decode(device).unwrap(), &seq.to_be_bytes()]);
        coffer_engine::crypto::envelope_open(&key, &aad, &sealed).unwrap();
    }
}
